"""`natlens ingest CAPTURE... --out DIR [--json] [--force]`: captures -> Parquet packet tables.

Each capture's outputs are named after its path relative to the common parent directory
of all the inputs, without the capture suffix (a/node-1/any.pcap and a/node-2/any.pcap
-> DIR/node-1/any.*, DIR/node-2/any.*), so captures that share a file name in different
directories cannot overwrite each other. Two inputs that would still share a name, and
outputs that already exist (without --force), are refused before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from natlens.cli.progress import worth_bars
from natlens.errors import NatlensError
from natlens.parallel import each_file

if TYPE_CHECKING:
    from natlens.capture import CaptureInfo
# natlens.capture (numpy, pandas, pyarrow) is loaded where it is used: building the command
# line's parser must not load it, or an analysis could not start its worker processes first


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="read pcap/pcapng captures into Parquet packet tables",
        description="Read pcap/pcapng captures into Parquet packet tables (one per capture, "
        "DIR/NAME.packets.parquet) with a tally of every record not decoded (DIR/NAME.tally.json). "
        "NAME is the capture's path relative to the common parent directory of all the captures, "
        "without the capture suffix (node-1/any.pcap and node-2/any.pcap -> node-1/any and "
        "node-2/any; one capture: just its name); it is also the capture's label. Inputs that "
        "would share a NAME, and outputs that exist already, are refused before anything is "
        "written.",
    )
    p.add_argument("captures", nargs="+", metavar="CAPTURE", help="pcap or pcapng file")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the Parquet files")
    p.add_argument("--json", action="store_true", help="print the per-capture tallies as JSON")
    p.add_argument("--force", action="store_true",
                   help="overwrite output files that already exist (default: refuse, exit 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: one per capture on a terminal when the captures hold 32 MiB or more)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="ingest N captures at once, one process each (default: one per core when they hold "
                   "64 MiB or more, else 1)")
    p.set_defaults(func=run)


def output_names(paths: list[str]) -> list[str]:
    """Each capture's output name and label: its path relative to the common parent
    directory of all of them (absolute, symlinks resolved), without the capture suffix,
    with "/" between directories. Raises NatlensError naming both inputs when two are the
    same file (by any path, symlinks too) or map to the same name (any.pcap and
    any.pcapng side by side)."""
    from natlens.capture.reader import default_label  # noqa: PLC0415

    parents = [Path(p).absolute().parent.resolve() for p in paths]
    common = Path(os.path.commonpath(parents))
    names: list[str] = []
    seen: dict[str, str] = {}
    files: dict[tuple[int, int], str] = {}
    for path, parent in zip(paths, parents, strict=True):
        st = os.stat(path)
        same = files.setdefault((st.st_dev, st.st_ino), path)
        if same != path:
            raise NatlensError(f"{same} and {path} are the same file; give it once")
        rel = PurePosixPath(*parent.relative_to(common).parts)
        name = str(rel / default_label(path))
        if name in seen:
            raise NatlensError(f"{seen[name]} and {path} would both be written as {name!r}; "
                               "rename one or ingest them separately")
        seen[name] = path
        names.append(name)
    return names


def _check_outputs(out: str, names: list[str]) -> None:
    """Refuse, before anything is written, an output file that exists already."""
    from natlens.capture import output_paths  # noqa: PLC0415

    for name in names:
        for target in output_paths(out, name):
            if os.path.lexists(target):
                raise NatlensError("output file exists; not overwritten (use --force to replace it)",
                                   path=str(target))


def _check_out_dir(out: str) -> None:
    """--out must be a directory or not exist yet (it is made)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise NatlensError("--out is not a directory", path=out)


def run(args: argparse.Namespace) -> int:
    from natlens.capture import open_capture, output_paths  # noqa: PLC0415

    for path in args.captures:  # check every input before doing any work
        open_capture(path)
    _check_out_dir(args.out)
    names = output_names(args.captures)
    if not args.force:
        _check_outputs(args.out, names)
    files = [Path(c) for c in args.captures]
    bars = not args.no_progress and worth_bars(files)
    done = each_file(_ingest_one, [(str(f), args.out, name, args.force) for f, name in zip(files, names, strict=True)],
                     files, jobs=args.jobs, progress=bars)
    tallies = []
    for (info, seconds), name, path in zip(done, names, args.captures, strict=True):
        if isinstance(info, str):  # not written: said after the captures that were
            tallies.append({"path": path, "error": info})
            continue
        for warning in info.warnings:
            print(f"natlens: warning: {warning}", file=sys.stderr)
        tallies.append(info.to_dict())
        if not args.json:
            print(_summary(info, seconds, output_paths(args.out, name)[0]))
    if args.json:
        print(json.dumps(tallies, indent=2))
    failed = [t["error"] for t in tallies if "error" in t]
    for error in failed:
        print(f"natlens: error: {error}", file=sys.stderr)
    if failed:
        print(f"natlens: {len(failed)} of {len(files)} captures not ingested (the others are written)", file=sys.stderr)
        return 2
    return 0


def _ingest_one(path: str, out: str, name: str, overwrite: bool, progress=None) -> tuple[CaptureInfo | str, float]:
    """One capture to Parquet (in a worker process when there are several): its tally, or why it
    was not written (the other captures go on), and seconds."""
    from natlens.capture import write_parquet  # noqa: PLC0415

    started = time.perf_counter()
    try:
        info = write_parquet(path, out, name, name=name, overwrite=overwrite, progress=progress)
    except NatlensError as exc:  # one naming the capture says which; one naming an output needs it said
        said = str(exc) if exc.path == path else f"{path} not ingested: {exc}"
        return said, time.perf_counter() - started
    return info, time.perf_counter() - started


def _summary(info, seconds: float, table: Path) -> str:
    from natlens.capture.link import LINKTYPE_NAMES  # noqa: PLC0415

    links = ", ".join(LINKTYPE_NAMES.get(lt, f"linktype {lt}") for lt in info.linktypes)
    layout = (f", {info.sections:,} section(s), {info.interfaces:,} interface(s)"
              if info.format == "pcapng" else "")
    lines = [
        f"{info.path}: {info.format} ({links}{layout}), {info.size:,} bytes",
        f"  records {info.records:,}  decoded {info.decoded:,}  skipped "
        f"{info.records - info.decoded:,}  in {seconds:.2f} s",
    ]
    for reason, count in info.skipped.items():
        nbytes = info.skipped_bytes.get(reason)
        lines.append(f"    {reason:<18} {count:>10,}" + (f"  ({nbytes:,} bytes in no record)" if nbytes else ""))
    for name, count in info.anomalies.items():
        lines.append(f"  flagged {name:<20} {count:>8,} records (see the anomaly column)")
    if info.first_ts_ns is not None:
        from datetime import datetime, timezone

        first = datetime.fromtimestamp(info.first_ts_ns / 1e9, timezone.utc)
        last = datetime.fromtimestamp(info.last_ts_ns / 1e9, timezone.utc)
        lines.append(f"  time {first:%Y-%m-%d %H:%M:%S.%f} .. {last:%H:%M:%S.%f} UTC")
    lines.append(f"  -> {table}")
    return "\n".join(lines)
