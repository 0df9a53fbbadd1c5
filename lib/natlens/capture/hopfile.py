"""Hop files: the packets journey_hops shows, one file per capture (or per span of one), on disk.

Why: a big incident's packets do not fit in memory beside its connections, and a report shows
the hops of a few journeys. A hop file is Arrow IPC written as the capture is decoded and read
back a few batches at a time (rows_of) or whole (read_hops). Only these packet columns are kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from natlens.capture.schema import ARROW_SCHEMA, CODED_TEXT

# The packet columns journey_hops shows, kept on disk (findings.captures.HopPackets); the rest of the packet table is not kept.
HOP_PACKET_COLUMNS = ["ts_ns", "src", "dst", "sport", "dport", "tcp_flags", "seq", "ack", "payload_len",
                      "ip_id", "direction", "ifindex", "icmp_type", "icmp_code", "icmp_orig_src", "icmp_orig_dst",
                      "icmp_orig_sport", "icmp_orig_dport"]
_HOP_SCHEMA = pa.schema([ARROW_SCHEMA.field(c) for c in HOP_PACKET_COLUMNS])
_HOP_IPC = pa.ipc.IpcWriteOptions(compression="lz4", emit_dictionary_deltas=True)  # a dictionary only grows
HOP_BATCH = 65_536  # packets per batch of a hop file: what one journey's lookup reads at most per batch
_HOP_BATCH_KEY = b"natlens.hop_batch"  # in a hop file's schema metadata: its batch size


class HopWriter:
    """Writes one hop file: packets as Arrow IPC (lz4) in batches of ``batch`` rows, all but the last
    (the size is in the schema's metadata), so that row i is in batch i // batch and a journey's
    lookup reads only the batches that hold its packets. Why not Parquet: IPC is written in half
    the time, and a hop file is written once and read for a few journeys. Text is kept as codes
    into one dictionary per column that only grows (written as deltas), plain or coded text
    (capture.CODED_SCHEMA) alike: no string is made per packet, and rows_of and read_hops give
    the text back."""

    def __init__(self, path: Path, schema: pa.Schema = _HOP_SCHEMA, batch: int = HOP_BATCH):
        self._text = [f.name for f in schema if f.type == pa.string() or pa.types.is_dictionary(f.type)]
        fields = [pa.field(f.name, CODED_TEXT) if f.name in self._text else f for f in schema]
        coded = pa.schema(fields, metadata={**(schema.metadata or {}), _HOP_BATCH_KEY: str(batch).encode()})
        self._out = pa.ipc.new_file(str(path), coded, options=_HOP_IPC)
        self._batch = batch
        self._held: pa.Table | None = None  # rows short of a whole batch, until more come (text as codes)
        self._codes: dict[str, dict[str, int]] = {n: {} for n in self._text}  # each column's text -> code
        self._words: dict[str, pa.Array] = {n: pa.array([], pa.string()) for n in self._text}  # code -> text

    def write(self, table: pa.Table) -> None:
        """Append the rows of ``table``."""
        table = self._as_codes(table)
        held = table if self._held is None else pa.concat_tables([self._held, table])
        whole = len(held) // self._batch * self._batch
        for at in range(0, whole, self._batch):
            self._out.write_table(self._with_text(held.slice(at, self._batch)))
        self._held = held.slice(whole)

    def _as_codes(self, table: pa.Table) -> pa.Table:
        """The text columns as int32 codes into this file's dictionaries (null stays null)."""
        for name in self._text:
            known, chunks = self._codes[name], []
            for chunk in table[name].chunks:
                coded = chunk if pa.types.is_dictionary(chunk.type) else pc.dictionary_encode(chunk)
                words = coded.dictionary.to_pylist()
                code = np.fromiter((known.setdefault(w, len(known)) for w in words), np.int32, len(words))
                chunks.append(pc.take(pa.array(code, pa.int32()), coded.indices))
            table = table.set_column(table.schema.get_field_index(name), name, pa.chunked_array(chunks, pa.int32()))
        return table

    def _with_text(self, rows: pa.Table) -> pa.Table:
        """Rows of codes as one batch whose text columns carry the dictionaries as they are now."""
        rows = rows.combine_chunks()
        for name in self._text:
            if len(self._words[name]) != len(self._codes[name]):  # made anew only when it grew
                self._words[name] = pa.array(list(self._codes[name]), pa.string())
            text = pa.DictionaryArray.from_arrays(rows[name].chunk(0) if rows[name].num_chunks
                                                  else pa.array([], pa.int32()), self._words[name])
            rows = rows.set_column(rows.schema.get_field_index(name), name, text)
        return rows

    def close(self) -> None:
        """Write the last rows and the file's footer."""
        if self._held is not None and len(self._held):
            self._out.write_table(self._with_text(self._held))
        self._held = None
        self._out.close()

    def __enter__(self) -> HopWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _text_of(table: pa.Table) -> pa.Table:
    """A hop file's rows with their text as strings."""
    return table.cast(pa.schema([pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f
                                 for f in table.schema], metadata=table.schema.metadata))


def rows_of(files: list[Path], rows: np.ndarray) -> pa.Table:
    """Rows ``rows`` (sorted) of the hop files one after the other, reading only the batches that
    hold them."""
    tables, first = [], 0
    for f in files:
        with pa.OSFile(str(f)) as source:
            reader = pa.ipc.open_file(source)
            size = int(reader.schema.metadata[_HOP_BATCH_KEY])
            last = reader.num_record_batches - 1
            n = last * size + reader.get_batch(last).num_rows if last >= 0 else 0
            here = rows[(rows >= first) & (rows < first + n)] - first
            batch = here // size
            tables += [pa.Table.from_batches([reader.get_batch(b).take(pa.array(here[batch == b] - b * size))])
                       for b in np.unique(batch)]
        first += n
    return _text_of(pa.concat_tables(tables))


def read_hops(files: list[Path]) -> pa.Table:
    """The hop files one after the other, as one table."""
    tables = []
    for f in files:
        with pa.OSFile(str(f)) as source:
            tables.append(pa.ipc.open_file(source).read_all())
    return _text_of(pa.concat_tables(tables))
