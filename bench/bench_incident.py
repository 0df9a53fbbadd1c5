"""Big incidents: `natlens analyze` and `natlens ingest` as whole processes, against a
per-packet dpkt decode loop of the same fields, and peak memory per packet, in one run.

Cases (captures cached under $NATLENS_BENCH_DIR, default /tmp/natlens-bench, by
bench/gen_capture.py; each bundle is one node directory linking to them):
  tcp-1M, tcp-5M      one capture of 100-packet connections (1,000,000 / 5,000,000 packets);
                      analyze with --jobs 1 and with the default (a capture of 128 MiB or
                      more is decoded in spans, one process per core, and made into records
                      in parts in those processes)
  short-5M            one capture of 10-packet connections from 200 clients: 5-tuples are
                      reused with new ISNs (the slowest traffic for connections)
  4-captures          two nodes x two captures of 1M packets (or --incident-packets each),
                      with --jobs 1, --jobs 2 and on a local Dask cluster of 2 workers (--workers 2)
natlens's modules are compiled to bytecode first, as an installed natlens's are. Each run is a
fresh subprocess; peak RSS is its VmHWM (the main process: exact; B/packet is
that over the packets, meaningful where the main process reads them, i.e. with --jobs 1),
and the peak PSS of it and its worker processes together (sampled every 200 ms). The dpkt loop is
bench_capture.dpkt_loop, timed on the 1M capture before each case (a shared host's speed drifts
over minutes by 10-30%) and scaled per packet (it is linear). With --repeat N every case is run
N times, the dpkt loop timed again before each round; a row gives the median wall time (and
the range), the median loop time and their ratio, and the largest peaks.

    python bench/bench_incident.py [--skip-5m] [--incident-packets N] [--repeat N] [--cases tcp-5M,...]
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_capture import dpkt_loop  # noqa: E402
from bench_pcapng import machine  # noqa: E402
from gen_capture import generate  # noqa: E402

CASES = ("tcp-1M", "tcp-5M", "short-5M", "4-captures")
BENCH_DIR = Path(os.environ.get("NATLENS_BENCH_DIR", "/tmp/natlens-bench"))
RUN = ("import sys,time;from natlens.cli import main;t=time.perf_counter();rc=main(sys.argv[1:]);"
       "t=time.perf_counter()-t;"
       "h=[l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0];"
       "print(rc,t,h)")


def capture(name: str, packets: int, per_conn: int) -> Path:
    """A cached generated capture."""
    path = BENCH_DIR / f"{name}-{packets}.pcap"
    if not path.exists():
        BENCH_DIR.mkdir(parents=True, exist_ok=True)
        generate(path, packets, per_conn=per_conn)
    return path


def bundle(name: str, captures: dict[str, list[Path]]) -> Path:
    """A bundle whose node directories link to the captures: {node: [capture, ...]}."""
    root = BENCH_DIR / f"bundle-{name}"
    for node, files in captures.items():
        d = root / "nodes" / node
        d.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(files):
            link = d / f"eth{i}.pcap"
            if not link.exists():
                link.symlink_to(f)
    return root


def tree_pss(root: int) -> int:
    """Proportional set size in KiB of a process and all its descendants now (PSS: memory a
    forkserver shares with its workers counts once, not once per process)."""
    parent = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/status") as fh:
                fields = dict(ln.split(":", 1) for ln in fh if ":" in ln)
        except OSError:
            continue
        parent[int(d)] = int(fields["PPid"])
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        total += _pss(p)
        todo += [c for c, pp in parent.items() if pp == p]
    return total


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            return next((int(ln.split()[1]) for ln in fh if ln.startswith("Pss:")), 0)
    except OSError:
        return 0


def natlens(*argv: str) -> tuple[float, float, float]:
    """(whole-process wall seconds, the main process's peak RSS MiB (VmHWM), the peak PSS of
    it and its worker processes together, sampled every 200 ms)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", RUN, *argv], stdout=out, stderr=err, text=True)
        peak = 0
        while True:
            peak = max(peak, tree_pss(proc.pid))
            try:
                proc.wait(timeout=0.2)  # returns when it ends, not at the next sample
                break
            except subprocess.TimeoutExpired:
                pass
        wall = time.perf_counter() - t
        out.seek(0)
        err.seek(0)
        out, err = out.read(), err.read()
    rc, _inner, hwm = out.strip().splitlines()[-1].split()
    if rc != "0":
        sys.exit(f"natlens {' '.join(argv)} failed: {err[-2000:]}")
    return wall, int(hwm) / 1024, peak / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-5m", action="store_true", help="only the 1M cases")
    ap.add_argument("--incident-packets", type=int, default=1_000_000, help="packets per capture of 4-captures")
    ap.add_argument("--repeat", type=int, default=1, help="rounds per case (median wall, median loop)")
    ap.add_argument("--cases", default="", help="comma-separated case names to run (default: all)")
    a = ap.parse_args()
    if a.repeat < 1:
        ap.error(f"--repeat must be 1 or more, not {a.repeat}")
    wanted = {c for c in a.cases.split(",") if c}
    if wanted - set(CASES):
        ap.error(f"--cases: no case {', '.join(sorted(wanted - set(CASES)))} (the cases: {', '.join(CASES)})")
    wanted = wanted or set(CASES) - ({"tcp-5M", "short-5M"} if a.skip_5m else set())
    print(machine())
    compiled()
    one_m = capture("tcp", 1_000_000, 100)  # the dpkt loop's, in every case
    makers = {"tcp-1M": lambda: ({"node-1": [one_m]}, 1_000_000),  # a capture is made only for a case run
              "tcp-5M": lambda: ({"node-1": [capture("tcp", 5_000_000, 100)]}, 5_000_000),
              "short-5M": lambda: ({"node-1": [capture("short", 5_000_000, 10)]}, 5_000_000),
              "4-captures": lambda: _incident(capture("tcp", a.incident_packets, 100), a.incident_packets)}
    cases = [(name, *makers[name]()) for name in CASES if name in wanted]
    print("vs dpkt: the case's wall time against the dpkt loop's time for as many packets, the loop\n"
          "timed on the 1M capture just before the case's runs (µs/packet in the case's first line;\n"
          "with --repeat: before each round, and the rows give medians, the peaks their largest)\n")
    print(f"{'case':31} {'packets':>10} {'wall s':>7} {'vs dpkt':>8} {'peak MiB':>9} {'B/packet':>9} "
          f"{'all procs PSS MiB':>17}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, caps, n in cases:
            _case(name, bundle(name, caps), caps, n, one_m, tmp, a.repeat)


def compiled() -> None:
    """natlens's modules compiled to bytecode, as an installed natlens is (pip compiles them): a
    checkout run with PYTHONDONTWRITEBYTECODE set, or just edited, compiles every module it imports
    afresh in each process (~0.35 s for the analysis), which is not what natlens costs."""
    import natlens  # noqa: PLC0415

    if not compileall.compile_dir(Path(natlens.__file__).parent, quiet=1):
        sys.exit("bench: natlens's modules could not be compiled to bytecode")


def _incident(one: Path, n: int) -> tuple[dict[str, list[Path]], int]:
    """Two nodes with two captures each, all of ``one`` (n packets)."""
    return {"node-1": [one, one], "node-2": [one, one]}, 4 * n


def _case(name: str, b: Path, caps: dict[str, list[Path]], n: int, one_m: Path, tmp: str, repeat: int) -> None:
    """The runs of one case, ``repeat`` rounds, the dpkt loop timed before each: one row per run."""
    runs = [("analyze --jobs 1", ["analyze", str(b), "--no-progress", "--jobs", "1", "--out", f"{tmp}/{name}"])]
    if len(caps) == 1:  # one big capture: its parts on both cores (the CLI's default)
        runs.append(("analyze", ["analyze", str(b), "--no-progress"]))
    if len(caps) * len(next(iter(caps.values()))) > 1:
        runs.append(("analyze --jobs 2", ["analyze", str(b), "--no-progress", "--jobs", "2"]))
        runs.append(("analyze --workers 2", ["analyze", str(b), "--no-progress", "--workers", "2"]))
    if len(caps) == 1:
        runs.append(("ingest", ["ingest", str(caps["node-1"][0]), "--out", f"{tmp}/{name}-i", "--force"]))
    loops, got = [], {what: [] for what, _ in runs}
    for _ in range(repeat):
        loops.append(_dpkt_per_packet(one_m))  # again per round: a shared host's speed drifts
        for what, argv in runs:
            got[what].append(natlens(*argv))
    loop = statistics.median(loops)
    print(f"{name}: dpkt per-packet decode loop {loop * 1e6:.2f} µs/packet"
          + (f" (median of {repeat}: {min(loops) * 1e6:.2f}-{max(loops) * 1e6:.2f})" if repeat > 1 else ""))
    for what, results in got.items():
        wall = statistics.median(r[0] for r in results)
        hwm, tree = max(r[1] for r in results), max(r[2] for r in results)
        spread = f"  ({min(r[0] for r in results):.2f}-{max(r[0] for r in results):.2f} s)" if repeat > 1 else ""
        print(f"{name + ' ' + what:31} {n:10,} {wall:7.2f} {loop * n / wall:7.1f}x "
              f"{hwm:9.0f} {hwm * 2**20 / n:9.0f} {tree:17.0f}{spread}")


def _dpkt_per_packet(path: Path) -> float:
    """Seconds per packet of bench_capture.dpkt_loop over the 1M capture, timed now."""
    t = time.perf_counter()
    dpkt_loop(path)
    return (time.perf_counter() - t) / 1_000_000


if __name__ == "__main__":
    main()
