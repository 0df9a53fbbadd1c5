"""`natlens report INCIDENT_DIR [--out DIR] [--anonymize] [--service S] [--start T] [--end T]`:
one incident -> one HTML report."""

from __future__ import annotations

import argparse
import shlex
import sys

from natlens.cli.cluster import add_cluster, scheduler_of
from natlens.cli.progress import worth_a_bar


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="make the self-contained HTML report of one incident bundle",
        description="Run the incident report notebook (papermill) on INCIDENT_DIR and render it to "
        "one self-contained HTML file. Writes report.html, summary.json, the executed notebook "
        "report.ipynb and report.log into --out (default reports/<incident>).",
    )
    p.add_argument("incident", metavar="INCIDENT_DIR", help="incident bundle (DESIGN.md section 2)")
    p.add_argument("--out", metavar="DIR", help="output directory (default reports/<incident>)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (default: one per capture on a terminal when they hold 32 MiB or more)")
    add_common(p)
    add_scope(p, "the report")
    p.set_defaults(func=run)


def add_common(p: argparse.ArgumentParser) -> None:
    """Options shared by `report` and `batch`."""
    p.add_argument("--anonymize", action="store_true",
                   help="map every identifier: IP addresses with Crypto-PAn (prefix-preserving); "
                   "node, pod, namespace, Service and incident names, paths, MAC addresses and "
                   "kube-proxy chain hashes with keyed pseudonyms; leave out incident.yaml's title "
                   "and notes and payload-derived strings")
    p.add_argument("--key-file", metavar="FILE",
                   help="anonymization key (32 bytes or 64 hex chars) for a mapping that is the same "
                   "across reports and incidents; default: a random key per run")
    p.add_argument("--notebook", metavar="FILE",
                   help="run this notebook instead of notebooks/incident_report.ipynb (same "
                   "parameters; it must write summary.json into out_dir)")
    p.add_argument("--cell-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="fail the report when one notebook cell runs longer (default 600)")
    add_cluster(p)


def add_scope(p: argparse.ArgumentParser, what: str) -> None:
    """--service / --start / --end, shared by `report` and `analyze` (natlens.findings.scope)."""
    g = p.add_argument_group("scope", f"narrow {what}: every table, the verdict and summary.json "
                             "are then about these Services' connections in this window only")
    g.add_argument("--service", action="append", default=[], metavar="SERVICE",
                   help="a Service: VIP, VIP:PORT, VIP:PORT/PROTO, NAMESPACE/NAME or NAMESPACE/NAME:PORT "
                   "(e.g. 198.19.0.10:80/tcp, default/web-local); repeatable; default: every Service")
    g.add_argument("--start", default="", metavar="TIME",
                   help="window start: ISO 8601 (UTC unless a zone is given), epoch seconds, or a "
                   "time of day on the captures' UTC date (when they span one day); default: the "
                   "first packet")
    g.add_argument("--end", default="", metavar="TIME", help="window end, as --start; default: the last packet")


def command_line(args: argparse.Namespace) -> str:
    """The command line the CLI was run with, as a shell would take it: "natlens report ..."."""
    return shlex.join(["natlens", *getattr(args, "argv", [])])


def run(args: argparse.Namespace) -> int:
    from natlens.errors import NatlensError
    from natlens.report.run import build_report

    with scheduler_of(args) as scheduler:
        r = build_report(args.incident, args.out, anonymize=args.anonymize, key_file=args.key_file,
                         start=args.start, end=args.end, services=args.service, cell_timeout=args.cell_timeout,
                         notebook=args.notebook, command=command_line(args), scheduler=scheduler,
                         progress=not args.no_progress and worth_a_bar(args.incident))
    if r.input_error:  # the notebook's NatlensError: the same one line and exit 2 as any other
        raise NatlensError(r.error or "bad input")
    if not r.ok:
        print(f"natlens: report for {r.incident} failed: {r.error} (log: {r.log})", file=sys.stderr)
        return 1
    print(f"{r.html}  ({r.seconds:.1f} s; summary.json and report.ipynb beside it)")
    return 0
