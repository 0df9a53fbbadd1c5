"""pcapng with many sections or many interfaces: natlens's time and peak memory against
capinfos and against the previous reader (commit d0f7205), in the same run.

Cases (cached under $NATLENS_BENCH_DIR, default /tmp/natlens-bench):
  sections:   N sections, each a Section Header + Interface Description + one small
              Enhanced Packet Block (default 1,000,000)
  interfaces: one section of M Interface Description Blocks (default 400,000), then
              packets on every 4th interface (M / 4 of them)
Each reader runs in a fresh subprocess: wall time, and peak RSS as VmHWM (not
ru_maxrss, which Linux carries across exec from the parent).

    python bench/bench_pcapng.py [--sections N] [--interfaces M] [--base REV] [--skip-base]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from natlens.capture.write import Interface, pcapng_section

BENCH_DIR = Path(os.environ.get("NATLENS_BENCH_DIR", "/tmp/natlens-bench"))
REPO = Path(__file__).resolve().parent.parent
FRAME = bytes(12) + b"\x08\x00" + bytes(46)  # 60-byte Ethernet frame, content irrelevant
READ = ("import sys,time;from natlens.capture import read_capture;t=time.perf_counter();"
        "c=read_capture(sys.argv[1]);t=time.perf_counter()-t;i=c.info;"
        "h=[l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0];"
        "print(t,h,i.records,i.sections,i.interfaces,len(i.linktypes))")


def sections_file(n: int) -> Path:
    path = BENCH_DIR / f"sections-{n}.pcapng"
    if not path.exists():
        BENCH_DIR.mkdir(parents=True, exist_ok=True)
        one = pcapng_section([Interface(1)], [(0, 1_700_000_000_000_000_000, FRAME)])
        with open(path, "wb") as fh:
            for done in range(0, n, 10_000):
                fh.write(one * min(10_000, n - done))
    return path


def interfaces_file(m: int) -> Path:
    path = BENCH_DIR / f"interfaces-{m}.pcapng"
    if not path.exists():
        BENCH_DIR.mkdir(parents=True, exist_ok=True)
        ifaces = [Interface(1 if i % 2 else 113) for i in range(m)]
        pkts = [(i, 1_700_000_000_000_000_000 + i, FRAME) for i in range(0, m, 4)]
        path.write_bytes(pcapng_section(ifaces, pkts))
    return path


def natlens_run(path: Path, pythonpath: str, timeout: float) -> tuple[float, float, str] | str:
    """(seconds inside the reader, peak RSS MiB, tally) of a fresh process, or why not."""
    env = dict(os.environ, PYTHONPATH=pythonpath)
    try:
        out = subprocess.run([sys.executable, "-c", READ, str(path)], capture_output=True,
                             text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"over the {timeout:.0f} s limit"
    if out.returncode:
        return "failed: " + (out.stderr.strip().splitlines() or ["?"])[-1]
    t, hwm, *tally = out.stdout.split()
    return float(t), int(hwm) / 1024, "records/sections/interfaces/linktypes " + "/".join(tally)


def capinfos_run(path: Path, timeout: float) -> tuple[float, float] | str:
    """capinfos -c (packet count): its default listing of every section's interfaces is
    quadratic in size (76 GB for 20,000 sections), so the listing goes to /dev/null."""
    if shutil.which("capinfos") is None:
        return "capinfos not installed"
    start = time.perf_counter()
    try:
        out = subprocess.run(["/usr/bin/time", "-f", "%M", "capinfos", "-c", str(path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"over the {timeout:.0f} s limit"
    wall = time.perf_counter() - start
    if out.returncode:
        return "capinfos failed: " + out.stderr.strip()[-200:]
    return wall, int(out.stderr.strip().splitlines()[-1]) / 1024


def base_tree(rev: str) -> tuple[str, str | None]:
    """PYTHONPATH of the code at `rev` (git archive + its C helper built), or why not."""
    tmp = tempfile.mkdtemp(prefix="natlens-base-")
    try:
        arch = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True)
        tar = Path(tmp) / "base.tar"
        tar.write_bytes(arch.stdout)
        with tarfile.open(tar) as tf:
            tf.extractall(tmp, filter="data")
        subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=tmp,
                       capture_output=True, check=True)
    except (subprocess.CalledProcessError, OSError, tarfile.TarError) as exc:
        return "", f"cannot set up {rev}: {exc}"
    return str(Path(tmp) / "lib"), None


def machine() -> str:
    with open("/proc/cpuinfo") as fh:
        model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")),
                     platform.machine())
    return (f"{model}, nproc {os.cpu_count()}, Python {platform.python_version()}, "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def report(name: str, path: Path, base: str | None, why_not: str | None, timeout: float) -> None:
    print(f"\n{name}: {path.name} ({path.stat().st_size / 2**20:.0f} MiB)")
    ours = natlens_run(path, str(REPO / "lib"), timeout)
    if isinstance(ours, str):
        print(f"  natlens: {ours}")
        return
    print(f"  natlens   {ours[0]:8.2f} s  peak RSS {ours[1]:7.0f} MiB  ({ours[2]})")
    cap = capinfos_run(path, timeout)
    if isinstance(cap, str):
        print(f"  capinfos: {cap}")
    else:
        print(f"  capinfos  {cap[0]:8.2f} s  peak RSS {cap[1]:7.0f} MiB  "
              f"-> natlens takes {ours[0] / cap[0]:.2f}x its time, {ours[1] / cap[1]:.2f}x its memory")
    if why_not:
        print(f"  previous: skipped ({why_not})")
        return
    old = natlens_run(path, base, timeout)
    if isinstance(old, str):
        print(f"  previous: {old}")
    else:
        print(f"  previous  {old[0]:8.2f} s  peak RSS {old[1]:7.0f} MiB  ({old[2]}) "
              f"-> {old[0] / ours[0]:.0f}x faster now, {old[1] / ours[1]:.1f}x less memory")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", type=int, default=1_000_000)
    ap.add_argument("--interfaces", type=int, default=400_000)
    ap.add_argument("--base", default="d0f7205", help="the previous approach's commit")
    ap.add_argument("--skip-base", action="store_true")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per run")
    a = ap.parse_args()
    print("machine:", machine())
    base, why_not = ("", "--skip-base") if a.skip_base else base_tree(a.base)
    if not why_not:
        print(f"previous approach: {a.base} from git archive, PYTHONPATH={base}")
    report("many sections", sections_file(a.sections), base, why_not, a.timeout)
    report("many interfaces", interfaces_file(a.interfaces), base, why_not, a.timeout)
    if base:
        shutil.rmtree(Path(base).parent, ignore_errors=True)


if __name__ == "__main__":
    main()
