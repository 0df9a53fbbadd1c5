"""Capture layer: pcap/pcapng files -> the packet table (DESIGN.md section 4).

Knows nothing of Kubernetes. Every record of a file is either a row of the table or
counted in the capture's tally with a reason (CaptureInfo.skipped).

    cap = read_capture("nodes/node-a/eth0.pcap")
    cap.packets      # pandas DataFrame, Arrow dtypes, one row per decoded IP packet
    cap.info         # CaptureInfo: records, decoded, skipped by reason, warnings

    write_parquet("big.pcap", "out/")   # streams in bounded chunks; never overwrites
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from natlens.capture.reader import (
    CHUNK_BYTES,
    CaptureInfo,
    Span,
    combined,
    default_label,
    iter_tables,
    open_capture,
    spans,
)
from natlens.capture.schema import (
    ARROW_SCHEMA,
    CODED_SCHEMA,
    CODED_TEXT,
    COLUMNS,
    PACKETS_SCHEMA,
    SKIP_REASONS,
    plain,
)
from natlens.errors import NatlensError

__all__ = [
    "ARROW_SCHEMA", "CODED_SCHEMA", "CODED_TEXT", "COLUMNS", "PACKETS_SCHEMA", "SKIP_REASONS", "Capture", "CaptureInfo", "Span",
    "combined", "iter_tables", "open_capture", "output_paths", "plain", "read_capture", "read_table", "spans",
    "write_parquet", "written_behind",
]


@dataclass
class Capture:
    """One capture file read into memory."""

    packets: pd.DataFrame
    info: CaptureInfo


def read_table(path: str | os.PathLike, label: str | None = None, *, progress=None,
               chunk_bytes: int = CHUNK_BYTES) -> tuple[pa.Table, CaptureInfo]:
    """The packet table of one capture as a pyarrow Table, and its tally."""
    tables: list[pa.Table] = []
    info = None
    for item in iter_tables(path, label, progress=progress, chunk_bytes=chunk_bytes):
        if isinstance(item, CaptureInfo):
            info = item
        else:
            tables.append(item)
    table = pa.concat_tables(tables) if tables else ARROW_SCHEMA.empty_table()
    return table, info


def read_capture(path: str | os.PathLike, label: str | None = None, *, progress=None,
                 chunk_bytes: int = CHUNK_BYTES) -> Capture:
    """Read a whole capture into a pandas DataFrame with Arrow dtypes.

    `label` names the capture point (default: the file stem, e.g. "eth0").
    """
    table, info = read_table(path, label, progress=progress, chunk_bytes=chunk_bytes)
    return Capture(table.to_pandas(types_mapper=pd.ArrowDtype), info)


def output_paths(out_dir: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """The packet table and tally files write_parquet makes for output `name` in
    `out_dir`: <name>.packets.parquet and <name>.tally.json (`name` may hold
    subdirectories, e.g. "node-1/any")."""
    base = Path(out_dir) / name
    parts = Path(name).parts
    if not parts or ".." in parts or Path(name).is_absolute():
        raise NatlensError(f"output name {name!r} would not be a file inside the output directory",
                           path=str(out_dir))
    return base.with_name(base.name + ".packets.parquet"), base.with_name(base.name + ".tally.json")


@contextlib.contextmanager
def written_behind(write: Callable[[pa.Table], object]) -> Iterator[Callable[[pa.Table], None]]:
    """``put(table)`` calls ``write(table)`` on a second thread, in order, one table in flight:
    the next chunk is decoded while the last is compressed and written (pyarrow writes without
    the GIL), and memory stays bounded. An error in ``write`` is raised by the next put or at the end."""
    pending = None
    with ThreadPoolExecutor(1) as pool:
        def put(table: pa.Table) -> None:
            nonlocal pending
            if pending is not None:
                pending.result()
            pending = pool.submit(write, table)

        yield put
        if pending is not None:
            pending.result()


# dictionaries for the text columns only: numbers compress as well without, at a third less of the write's time
_TEXT = [f.name for f in ARROW_SCHEMA if pa.types.is_string(f.type)]


def _streamed(path: str | os.PathLike, label: str, table_path: Path, progress, chunk_bytes: int) -> CaptureInfo:
    """The capture's packets into the Parquet file ``table_path``, chunk by chunk; its tally."""
    info, writer = None, None

    def write(table: pa.Table) -> None:
        nonlocal writer
        if writer is None:
            writer = pq.ParquetWriter(table_path, ARROW_SCHEMA, compression="zstd", use_dictionary=_TEXT)
        writer.write_table(table)

    try:
        with written_behind(write) as put:
            for item in iter_tables(path, label, progress=progress, chunk_bytes=chunk_bytes):
                if isinstance(item, CaptureInfo):
                    info = item
                    break
                if item.num_rows:  # an ARP-only chunk: nothing to write
                    put(item)
        if writer is None:
            pq.write_table(ARROW_SCHEMA.empty_table(), table_path, compression="zstd")
    finally:
        if writer is not None:
            writer.close()
    return info


def write_parquet(path: str | os.PathLike, out_dir: str | os.PathLike, label: str | None = None,
                  *, name: str | None = None, overwrite: bool = False, progress=None,
                  chunk_bytes: int = CHUNK_BYTES) -> CaptureInfo:
    """Stream a capture into <out_dir>/<name>.packets.parquet and <name>.tally.json
    (`name` defaults to the label, which defaults to the file name without its suffix).

    Memory is bounded by the chunk size, not the file size. An existing output is never
    replaced unless `overwrite`: a NatlensError naming it is raised before anything is
    read or written, so a second capture with the same name cannot silently erase the
    first one's table. One that cannot be written (no space, a directory in its place) is a
    NatlensError naming it, and neither file is left behind.
    """
    label = label or default_label(path)
    table_path, tally_path = output_paths(out_dir, name or label)
    if not overwrite:
        for target in (table_path, tally_path):
            if os.path.lexists(target):
                raise NatlensError("output file exists; not overwritten", path=str(target))
    try:
        table_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NatlensError(f"cannot make the output directory: {exc.strerror}", path=str(table_path.parent)) from None
    try:
        info = _streamed(path, label, table_path, progress, chunk_bytes)
        tally_path.write_text(json.dumps(info.to_dict(), indent=2) + "\n")
    except OSError as exc:  # a full disk, a directory where the table goes: nothing half-written stays
        for target in (table_path, tally_path):
            if target.is_file() or target.is_symlink():
                target.unlink()
        where = exc.filename if isinstance(exc.filename, str) else str(table_path)  # pyarrow's name none
        doing = "cannot write" if where in (str(table_path), str(tally_path)) else "cannot read"
        raise NatlensError(f"{doing}: {os.strerror(exc.errno) if exc.errno else exc}", path=where) from None
    return info
