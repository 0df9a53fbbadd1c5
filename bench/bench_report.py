"""Report speed: the sample report (budget 30 s) and a batch of 8 incidents, --jobs 1 vs 2.

    python bench/bench_report.py [--incidents 8] [--jobs 2]

Prints, all measured in this process on this machine:
  * the sample report's wall time, against the 30 s budget and against a baseline run of
    an empty notebook (kernel start + papermill: the floor every report pays);
  * the batch wall time with --jobs 1 and with --jobs N, and the speed-up (target >= 1.6x
    for N=2 on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from natlens.report.batch import run_batch
from natlens.report.execute import execute
from natlens.report.run import build_report

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"
BUDGET_S = 30.0


def _baseline(tmp: Path) -> float:
    nb = new_notebook(cells=[new_code_cell("x = 1", metadata={"tags": ["parameters"]})])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(tmp / "empty.ipynb"))
    t = time.perf_counter()
    r = execute(tmp / "empty.ipynb", tmp / "empty.out.ipynb", {}, cwd=tmp, log=tmp / "empty.log")
    assert r.ok, r.error
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--incidents", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    samples = sorted(p for p in SAMPLES.iterdir() if (p / "nodes").is_dir())
    sample = SAMPLES / "loopback-local"
    with tempfile.TemporaryDirectory(prefix="natlens-bench-report-") as t:
        tmp = Path(t)
        base = _baseline(tmp)
        t0 = time.perf_counter()
        r = build_report(sample, tmp / "sample")
        one = time.perf_counter() - t0
        assert r.ok, r.error
        print(f"sample report ({sample.name}): {one:.1f} s  = {one / BUDGET_S:.2f} of the "
              f"{BUDGET_S:.0f} s budget, {one / base:.1f}x an empty notebook ({base:.1f} s)")

        inc = tmp / "incidents"
        inc.mkdir()
        for i in range(args.incidents):  # the shipped samples, round robin, under new names
            os.symlink(samples[i % len(samples)], inc / f"{i:02d}-{samples[i % len(samples)].name}")
        times = {}
        for jobs in (1, args.jobs):
            t0 = time.perf_counter()
            b = run_batch(inc, tmp / f"batch-j{jobs}", jobs=jobs, progress=False)
            times[jobs] = time.perf_counter() - t0
            assert not b.failures, b.failures
            print(f"batch of {args.incidents} incidents, --jobs {jobs}: {times[jobs]:.1f} s "
                  f"({times[jobs] / args.incidents:.1f} s per incident)")
        speedup = times[1] / times[args.jobs]
        print(f"speed-up --jobs {args.jobs} vs --jobs 1: {speedup:.2f}x (target >= 1.6x), "
              f"on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
