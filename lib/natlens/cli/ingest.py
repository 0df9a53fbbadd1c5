"""`natlens ingest CAPTURE... --out DIR [--json]`: captures -> Parquet packet tables."""

from __future__ import annotations

import argparse
import json
import sys
import time

from natlens.capture import open_capture, write_parquet
from natlens.capture.link import LINKTYPE_NAMES
from natlens.cli.progress import byte_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="read pcap/pcapng captures into Parquet packet tables",
        description="Read pcap/pcapng captures into Parquet packet tables (one per capture, "
        "<label>.packets.parquet) with a tally of every record not decoded (<label>.tally.json).",
    )
    p.add_argument("captures", nargs="+", metavar="CAPTURE", help="pcap or pcapng file")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the Parquet files")
    p.add_argument("--json", action="store_true", help="print the per-capture tallies as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one is drawn only on a terminal, for captures of 32 MiB or more)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for path in args.captures:  # check every input before doing any work
        open_capture(path)
    tallies = []
    for path in args.captures:
        started = time.perf_counter()
        with byte_progress(path, disable=args.no_progress) as progress:
            info = write_parquet(path, args.out, progress=progress)
        for warning in info.warnings:
            print(f"natlens: warning: {warning}", file=sys.stderr)
        tallies.append(info.to_dict())
        if not args.json:
            print(_summary(info, time.perf_counter() - started, args.out))
    if args.json:
        print(json.dumps(tallies, indent=2))
    return 0


def _summary(info, seconds: float, out: str) -> str:
    links = ", ".join(LINKTYPE_NAMES.get(lt, f"linktype {lt}") for lt in info.linktypes)
    lines = [
        f"{info.path}: {info.format} ({links}), {info.size:,} bytes",
        f"  records {info.records:,}  decoded {info.decoded:,}  skipped "
        f"{info.records - info.decoded:,}  in {seconds:.2f} s",
    ]
    for reason, count in info.skipped.items():
        lines.append(f"    {reason:<18} {count:>10,}")
    if info.first_ts_ns is not None:
        from datetime import datetime, timezone

        first = datetime.fromtimestamp(info.first_ts_ns / 1e9, timezone.utc)
        last = datetime.fromtimestamp(info.last_ts_ns / 1e9, timezone.utc)
        lines.append(f"  time {first:%Y-%m-%d %H:%M:%S.%f} .. {last:%H:%M:%S.%f} UTC")
    lines.append(f"  -> {out}/{info.label}.packets.parquet")
    return "\n".join(lines)
