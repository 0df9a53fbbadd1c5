"""Read every capture of a corpus with natlens and compare its record count with capinfos.

For real-world and deliberately malformed captures (tcpdump's and libpcap's test suites,
from the Debian source packages: `curl -O http://deb.debian.org/debian/pool/main/t/tcpdump/
tcpdump_4.99.3.orig.tar.gz`, likewise libpcap_1.10.3): natlens must never raise or hang,
and where capinfos reads the whole file the records must agree. Where they differ the
line says why natlens counted what it did (resynchronized, cut short, anomalies).

    python bench/check_corpus.py DIR [--timeout 60] [--show-agreeing]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout


def capinfos(path: Path) -> tuple[int | None, str]:
    """capinfos' packet count, and its complaint if it could not read the whole file."""
    out = subprocess.run(["capinfos", "-c", "-M", str(path)], capture_output=True, text=True)
    count = next((int(line.split(":")[1].strip()) for line in out.stdout.splitlines()
                  if "Number of packets" in line), None)
    return count, out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""


def natlens(path: Path, timeout: float) -> tuple[dict, float]:
    """natlens's tally of the file, {"error": ...} for a refused file, {"crash": ...}
    for an exception or no answer within `timeout` seconds."""
    from natlens.capture import read_capture
    from natlens.errors import NatlensError

    start = time.perf_counter()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(timeout))
    try:
        i = read_capture(path).info
        got = {"records": i.records, "skipped": i.skipped, "skipped_bytes": i.skipped_bytes,
               "anomalies": i.anomalies, "resyncs": i.resyncs}
    except NatlensError as e:
        got = {"error": str(e)}
    except Timeout:
        got = {"crash": f"no answer in {timeout:.0f} s"}
    except Exception as e:  # noqa: BLE001 - any exception is a bug to report
        got = {"crash": f"{type(e).__name__}: {e}"}
    finally:
        signal.alarm(0)
    return got, time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--show-agreeing", action="store_true")
    args = ap.parse_args()
    files = sorted(p for p in args.corpus.rglob("*") if p.suffix in (".pcap", ".pcapng", ".cap") and p.is_file())
    tally = {"files": len(files), "agree": 0, "differ_capinfos_complete": 0, "differ_capinfos_error": 0,
             "natlens_error": 0, "crash": 0}
    slowest = (0.0, "")
    for path in files:
        got, took = natlens(path, args.timeout)
        slowest = max(slowest, (took, str(path)))
        want, complaint = capinfos(path)
        if "crash" in got:
            tally["crash"] += 1
            print(f"CRASH {path}: {got['crash']}")
            continue
        if "error" in got:
            tally["natlens_error"] += 1
            if want:
                print(f"error {path}: natlens refused ({got['error']}), capinfos read {want}")
            continue
        if got["records"] == want and not complaint:
            tally["agree"] += 1
            if args.show_agreeing:
                print(f"ok    {path}: {want}")
            continue
        key = "differ_capinfos_error" if complaint else "differ_capinfos_complete"
        tally[key] += 1
        print(f"{'DIFF ' if not complaint else 'diff '} {path}: natlens {got['records']} "
              f"(skipped {got['skipped']}, bytes {got['skipped_bytes']}, resyncs {got['resyncs']}, "
              f"anomalies {got['anomalies']}), capinfos {want}{' — ' + complaint if complaint else ''}")
    print(json.dumps(tally))
    print(f"slowest: {slowest[0]:.2f} s {slowest[1]}")
    return 1 if tally["crash"] or tally["differ_capinfos_complete"] else 0


if __name__ == "__main__":
    sys.exit(main())
