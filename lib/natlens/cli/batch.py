"""`natlens batch INCIDENTS_DIR [--jobs N] [--out DIR]`: reports for many incidents in parallel."""

from __future__ import annotations

import argparse
import os
import sys

from natlens.cli.cluster import scheduler_of
from natlens.cli.report import add_common, command_line


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch",
        help="make the reports of every incident bundle in a directory, in parallel",
        description="Report every incident bundle under INCIDENTS_DIR (each in its own process), "
        "then write index.html and summary.csv / summary.parquet into --out. Keeps going past "
        "failing incidents and exits 1 naming each of them and why.",
    )
    p.add_argument("incidents", metavar="INCIDENTS_DIR", help="directory of incident bundles")
    p.add_argument("--out", default="reports", metavar="DIR", help="output directory (default reports)")
    p.add_argument("--jobs", "-j", type=int, default=min(4, os.cpu_count() or 1), metavar="N",
                   help="parallel worker processes (default: min(4, CPUs))")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (there is none unless stderr is a terminal)")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from natlens.errors import NatlensError
    from natlens.report.batch import run_batch

    if args.jobs < 1:
        raise NatlensError(f"--jobs must be at least 1, not {args.jobs}")
    with scheduler_of(args) as scheduler:
        r = run_batch(args.incidents, args.out, jobs=args.jobs, anonymize=args.anonymize,
                      key_file=args.key_file, cell_timeout=args.cell_timeout,
                      progress=not args.no_progress and sys.stderr.isatty(), notebook=args.notebook,
                      command=command_line(args), scheduler=scheduler)
    n = len(r.table)
    print(f"{r.index}  ({n - len(r.failures)} of {n} incidents reported in {r.seconds:.1f} s)")
    if r.failures:
        print(f"natlens: {len(r.failures)} of {n} incidents failed:", file=sys.stderr)
        for name, why in r.failures:
            print(f"  {name}: {why}", file=sys.stderr)
        return 1
    return 0
