"""Capture layer: pcap/pcapng files -> the packet table (DESIGN.md section 4).

Knows nothing of Kubernetes. Every record of a file is either a row of the table or
counted in the capture's tally with a reason (CaptureInfo.skipped).

    cap = read_capture("nodes/node-a/eth0.pcap")
    cap.packets      # pandas DataFrame, Arrow dtypes, one row per decoded IP packet
    cap.info         # CaptureInfo: records, decoded, skipped by reason, warnings

    write_parquet("big.pcap", "out/")   # streams in bounded chunks
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from natlens.capture.reader import CHUNK_BYTES, CaptureInfo, iter_tables, open_capture
from natlens.capture.schema import ARROW_SCHEMA, COLUMNS, PACKETS_SCHEMA, SKIP_REASONS

__all__ = [
    "ARROW_SCHEMA", "COLUMNS", "PACKETS_SCHEMA", "SKIP_REASONS", "Capture", "CaptureInfo",
    "iter_tables", "open_capture", "read_capture", "read_table", "write_parquet",
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


def write_parquet(path: str | os.PathLike, out_dir: str | os.PathLike, label: str | None = None,
                  *, progress=None, chunk_bytes: int = CHUNK_BYTES) -> CaptureInfo:
    """Stream a capture into <out_dir>/<label>.packets.parquet and <label>.tally.json.

    Memory is bounded by the chunk size, not the file size.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = None
    writer = None
    target = None
    try:
        for item in iter_tables(path, label, progress=progress, chunk_bytes=chunk_bytes):
            if isinstance(item, CaptureInfo):
                info = item
                break
            if writer is None:
                if not item.num_rows:  # no row to name the file by (an ARP-only chunk)
                    continue
                target = out / f"{item.column('capture')[0].as_py()}.packets.parquet"
                writer = pq.ParquetWriter(target, ARROW_SCHEMA, compression="zstd")
            writer.write_table(item)
        if writer is None:
            target = out / f"{info.label}.packets.parquet"
            pq.write_table(ARROW_SCHEMA.empty_table(), target, compression="zstd")
    finally:
        if writer is not None:
            writer.close()
    (out / f"{info.label}.tally.json").write_text(json.dumps(info.to_dict(), indent=2) + "\n")
    return info
