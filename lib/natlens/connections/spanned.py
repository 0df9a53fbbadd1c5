"""One big capture made into connection records on several cores: its spans decoded apart and
split by flow into part files, then each part made into records apart (connections.parts).

Why: a capture of hundreds of MB is decoded and turned into connections at the speed of one
core when read as one table. These are the jobs the worker processes run; they need the capture
and connections layers only, so a worker is ready as soon as those are loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from natlens.capture import ARROW_SCHEMA, CaptureInfo, Span, iter_tables, plain, written_behind
from natlens.capture.hopfile import HOP_PACKET_COLUMNS, HopWriter
from natlens.connections import CONNECTION_PACKET_COLUMNS, flow_parts, part_records

# A part file is written and read once, within seconds: uncompressed. lz4 made it 4.4 times smaller
# (39 against 174 bytes a packet, while the capture is read) but took ~0.5 s of a 7 s analysis of
# 5M packets, mostly in the memory its decompression touched anew.
_PART_IPC = pa.ipc.IpcWriteOptions(compression=None)


def span_hops(hop_file: Path, r: int | str) -> Path:
    """The hop file of span ``r`` (after the first, which writes ``hop_file`` itself)."""
    return hop_file.with_name(f"{hop_file.stem}-{r}.arrow")


def records_of_part(files: list[tuple[Path, int]] | None, node: str, label: str, capture_end_ns: int | None,
                    progress=None) -> tuple:
    """The records of one part split_span wrote, from each span's file of it with the capture row of
    the span's first packet (None: of no packet), as connections.merged takes them."""
    if files is None:
        packets, rows = ARROW_SCHEMA.empty_table().select(CONNECTION_PACKET_COLUMNS), np.zeros(0, dtype=np.int64)
        packets = packets.to_pandas(types_mapper=pd.ArrowDtype)
    else:
        tables = []
        for file, first in files:
            with pa.OSFile(str(file)) as source:
                t = plain(pa.ipc.open_stream(source).read_all())
            tables.append(t.set_column(t.schema.get_field_index("row"), "row", pc.add(t["row"], first)))
            file.unlink()
        table = pa.concat_tables(tables)
        del tables
        packets = table.to_pandas(types_mapper=pd.ArrowDtype, split_blocks=True, self_destruct=True)
        del table
        rows = packets.pop("row").to_numpy(dtype=np.int64)
    return part_records(packets, rows, node=node, capture=label, capture_end_ns=capture_end_ns)


def split_span(path: Path, hop_file: Path, parts: int, where: Path, span: Span | None = None,
               progress=None) -> tuple[int, CaptureInfo]:
    """The columns connections are made from, of the capture or of its ``span``, split by 5-tuple
    (connections.flow_parts) into ``parts`` Arrow files in the new directory ``where``, with each
    packet's row in what was read; the number of packets and what was read holds."""
    where.mkdir()
    writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
    done = 0

    def take(chunk: pa.Table) -> None:
        nonlocal done
        part = flow_parts(chunk, parts)
        order = np.argsort(part, kind="stable")
        rows = chunk.select(CONNECTION_PACKET_COLUMNS).append_column("row", pa.array(np.arange(done, done + len(chunk))))
        rows, part = _reordered(rows, order), part[order]
        bounds = np.searchsorted(part, np.arange(parts + 1))
        for k in range(parts):
            if bounds[k + 1] > bounds[k]:
                if k not in writers:  # Arrow IPC: written and read back once, at the speed of a copy
                    # (a stream: each chunk's text has its own dictionary)
                    writers[k] = pa.ipc.new_stream(where / f"{k}.arrow", rows.schema, options=_PART_IPC)
                writers[k].write_table(rows.slice(bounds[k], bounds[k + 1] - bounds[k]))
        done += len(chunk)

    try:
        info = decoded(path, hop_file, progress, take, span, coded=True)
    finally:
        for w in writers.values():
            w.close()
    return done, info


def _reordered(table: pa.Table, order: np.ndarray) -> pa.Table:
    """``table.take(order)``, with each all-null column made anew rather than gathered (a TCP
    capture's ICMP, VLAN and tunnel columns: a third of the time of the take)."""
    at = pa.array(order)
    return pa.table([pa.nulls(len(order), c.type) if c.null_count == len(c) else c.take(at) for c in table.columns],
                    schema=table.schema)


def decoded(path: Path, hop_file: Path, progress, take: Callable[[pa.Table], object],
            span: Span | None = None, coded: bool = False) -> CaptureInfo:
    """Decode the capture (or its ``span``) chunk by chunk, each chunk given to ``take`` (``coded``:
    its text as dictionaries, capture.CODED_SCHEMA); the columns journey_hops shows go into
    ``hop_file`` as they come, written behind (capture.written_behind)."""
    info = None
    with HopWriter(hop_file) as hops, written_behind(hops.write) as put:
        for item in iter_tables(path, path.stem, progress=progress, span=span, coded=coded):
            if isinstance(item, CaptureInfo):
                info = item
                break
            put(item.select(HOP_PACKET_COLUMNS))
            take(item)
    return info
