"""Capture-layer speed and memory, against dpkt and tshark in the same run.

Generates a 1,000,000-packet Ethernet/IPv4/TCP capture (cached under
$NATLENS_BENCH_DIR, default /tmp/natlens-bench), then prints packets/s for:
  natlens read_capture (in-memory table), natlens ingest (incl. Parquet write),
  a per-packet dpkt decode loop of the same fields, and `tshark -T fields`
and the ratios. Then the peak memory of streaming ingest for a 1x and a 3x file:
it stays flat because ingest holds one chunk at a time.

    python bench/bench_capture.py [--packets N] [--skip-tshark] [--skip-memory]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import dpkt  # noqa: E402
import gen_capture  # noqa: E402

from natlens.capture import read_capture, write_parquet  # noqa: E402

BENCH_DIR = Path(os.environ.get("NATLENS_BENCH_DIR", "/tmp/natlens-bench"))


def capture(packets: int) -> Path:
    path = BENCH_DIR / f"tcp-{packets}.pcap"
    if not path.exists():
        BENCH_DIR.mkdir(parents=True, exist_ok=True)
        print(f"generating {path} ...", flush=True)
        gen_capture.generate(path, packets)
    return path


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def dpkt_loop(path: Path) -> int:
    """The same fields natlens extracts, decoded packet by packet with dpkt."""
    rows = 0
    cols = {k: [] for k in ("ts", "src", "dst", "id", "ttl", "len", "p", "sport", "dport",
                            "flags", "seq", "ack", "win", "tsval", "tsecr", "plen")}
    with open(path, "rb") as fh:
        for ts, frame in dpkt.pcap.Reader(fh):
            eth = dpkt.ethernet.Ethernet(frame)
            ip = eth.data
            if not isinstance(ip, dpkt.ip.IP):
                continue
            cols["ts"].append(ts)
            cols["src"].append(socket.inet_ntoa(ip.src))
            cols["dst"].append(socket.inet_ntoa(ip.dst))
            cols["id"].append(ip.id)
            cols["ttl"].append(ip.ttl)
            cols["len"].append(ip.len)
            cols["p"].append(ip.p)
            tcp = ip.data
            if isinstance(tcp, dpkt.tcp.TCP):
                cols["sport"].append(tcp.sport)
                cols["dport"].append(tcp.dport)
                cols["flags"].append(tcp.flags)
                cols["seq"].append(tcp.seq)
                cols["ack"].append(tcp.ack)
                cols["win"].append(tcp.win)
                tsval = tsecr = None
                for kind, data in dpkt.tcp.parse_opts(tcp.opts):
                    if kind == dpkt.tcp.TCP_OPT_TIMESTAMP and len(data) == 8:
                        tsval, tsecr = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:], "big")
                cols["tsval"].append(tsval)
                cols["tsecr"].append(tsecr)
                cols["plen"].append(len(tcp.data))
            rows += 1
    return rows


def tshark_run(path: Path) -> int | None:
    if shutil.which("tshark") is None:
        return None
    fields = ["frame.time_epoch", "ip.src", "ip.dst", "ip.id", "ip.ttl", "ip.len", "ip.proto",
              "tcp.srcport", "tcp.dstport", "tcp.flags", "tcp.seq_raw", "tcp.ack_raw",
              "tcp.window_size_value", "tcp.options.timestamp.tsval",
              "tcp.options.timestamp.tsecr", "tcp.len"]
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-o", "tcp.analyze_sequence_numbers:FALSE"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return out.count(b"\n")


def peak_rss_of_ingest(path: Path) -> tuple[float, float]:
    """Peak RSS (MiB) of a fresh process streaming `path` to Parquet, and its wall time."""
    # VmHWM, not ru_maxrss: Linux carries the parent's peak across exec into ru_maxrss.
    code = ("import sys,tempfile;from natlens.capture import write_parquet;"
            "write_parquet(sys.argv[1], tempfile.mkdtemp());"
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         check=True).stdout
    return int(out.strip()) / 1024, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--skip-tshark", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    a = ap.parse_args()
    path = capture(a.packets)
    size = path.stat().st_size
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"capture: {path} ({a.packets:,} packets, {size / 2**20:.0f} MiB)\n")

    n = a.packets
    read_capture(path)  # warm the page cache
    t_mem = timed(lambda: read_capture(path), repeat=3)
    out = tempfile.mkdtemp(prefix="natlens-bench-")
    t_pq = timed(lambda: write_parquet(path, out, overwrite=True), repeat=3)  # rewrites on purpose
    shutil.rmtree(out, ignore_errors=True)
    t_dpkt = timed(lambda: dpkt_loop(path))
    t_tshark = None
    if not a.skip_tshark and shutil.which("tshark"):
        t_tshark = timed(lambda: tshark_run(path))

    rows = [("natlens read_capture (in-memory DataFrame)", t_mem),
            ("natlens ingest (incl. Parquet write)", t_pq),
            ("dpkt per-packet decode loop", t_dpkt)]
    if t_tshark is not None:
        rows.append(("tshark -T fields", t_tshark))
    else:
        print("(tshark skipped: --skip-tshark)" if a.skip_tshark else "(tshark not installed: skipped)")
    print(f"{'':44} {'seconds':>8} {'packets/s':>12} {'vs dpkt':>8}")
    for name, t in rows:
        print(f"{name:44} {t:8.2f} {n / t:12,.0f} {t_dpkt / t:7.1f}x")
    if t_tshark is not None:
        print(f"\nnatlens ingest vs tshark: {t_tshark / t_pq:.1f}x")

    if not a.skip_memory:
        big = capture(3 * a.packets)
        print("\nstreaming ingest, peak RSS of a fresh process (chunk bound: 64 MiB of file):")
        for p in (path, big):
            rss, wall = peak_rss_of_ingest(p)
            print(f"  {p.name:24} {p.stat().st_size / 2**20:7.0f} MiB file -> peak RSS {rss:6.0f} MiB "
                  f"({wall:.1f} s)")


if __name__ == "__main__":
    main()
