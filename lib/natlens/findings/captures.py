"""Every capture of a bundle -> connection records, with what each capture holds and lacks.

Why: the analysis needs, per capture, its connection records (natlens.connections),
the packets of each record for the hop-by-hop view (on disk: a big incident's packets
do not fit in memory; only the columns connections are made from are held, once), and the accounting that proves
nothing was lost (records = decoded + skipped; decoded = packets in connections +
not_in_connections). Warnings say where a capture may miss packets.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from natlens._memory import give_back
from natlens.bundle import Bundle
from natlens.capture import ARROW_SCHEMA, CaptureInfo, combined, spans
from natlens.capture.hopfile import HOP_PACKET_COLUMNS, read_hops, rows_of
from natlens.cluster import later_on_worker, on_worker, this_worker
from natlens.connections import CONNECTION_PACKET_COLUMNS, connections_with_index, merged
from natlens.connections.spanned import decoded, records_of_part, span_hops, split_span
from natlens.parallel import Workers, cores, each_file, worker_count

PART_BYTES = 128 << 20  # a capture this big or bigger is made into records in parts of about this size


@dataclass
class HopPackets:
    """The packets journey_hops shows of one capture, kept on disk, not in memory.

    Why: a big incident's packets do not fit in memory beside its connections; a report
    shows the hops of a few journeys. ``files`` are hop files (capture.hopfile) of HOP_PACKET_COLUMNS, one
    row per packet of the capture's table, in its order (more than one: a big capture's spans,
    read apart); ``conn`` is the connection row of each
    packet (-1: none). Files written by a Dask worker stay on its disk: ``worker`` is its
    address and ``scheduler`` its cluster's (None: this machine wrote them), and they are read there.
    """

    files: list[Path]
    conn: np.ndarray
    worker: str | None = None
    scheduler: str | None = None

    def __post_init__(self) -> None:
        # kept for the analysis's life, one per packet: 4 bytes a packet, not 8, where that holds
        if self.conn.dtype != np.int32 and (not self.conn.size or int(self.conn.max()) < 2**31):
            self.conn = self.conn.astype(np.int32)

    def of(self, row: int) -> pd.DataFrame:
        """The packets of connection ``row`` (and the ICMP errors about it), in capture order."""
        rows = np.flatnonzero(self.conn == row)
        if not rows.size:
            return pd.DataFrame(columns=HOP_PACKET_COLUMNS)
        return self._where_kept(rows_of, self.files, rows).to_pandas(types_mapper=pd.ArrowDtype)

    def in_connections(self) -> pd.DataFrame:
        """Every packet that is in a connection (or an ICMP error about one), in capture order."""
        table = self._where_kept(read_hops, self.files)
        return table.filter(pa.array(self.conn >= 0)).to_pandas(types_mapper=pd.ArrowDtype)

    def _where_kept(self, fn, *args):
        """``fn(*args)`` where the file is: here, or on the Dask worker that wrote it."""
        if self.worker is None or self.scheduler is None:
            return fn(*args)
        return on_worker(self.scheduler, self.worker, fn, *args)


def remove_hops(files: list[Path], worker: str | None, scheduler: str | None) -> None:
    """Delete hop files where they are kept: here, or on their Dask worker at the next call into the
    cluster (a finalizer calls this; a worker that has gone took them with it; a cluster this
    process let go of was cleaned then: cluster.forget)."""
    if worker is None or scheduler is None:
        for f in files:
            f.unlink(missing_ok=True)
    else:
        later_on_worker(scheduler, worker, remove_hops, files, None, None)


@dataclass
class CaptureSet:
    """What natlens read from the captures of one bundle."""

    inputs: list[dict] = field(default_factory=list)  # summary.json's inputs.captures[], in order
    connections: pd.DataFrame = field(default_factory=pd.DataFrame)
    hops: dict[str, HopPackets] = field(default_factory=dict)  # capture label -> its packets on disk
    ifnames: dict[tuple[str, int], str] = field(default_factory=dict)  # (node, ifindex) -> name
    warnings: list[str] = field(default_factory=list)


def read_captures(bundle: Bundle, progress: bool | str | Path = False, jobs: int | None = 1,
                  scheduler: str | None = None) -> CaptureSet:
    """Read every capture of every node: in ``jobs`` processes at once (None: natlens.parallel's
    default for the size of the captures), or on the Dask cluster at ``scheduler``, with one
    progress bar per capture if asked. The result does not depend on where it was read."""
    todo = [(n, c) for n in bundle.nodes for c in n.captures]
    call = f"natlens-{uuid.uuid4().hex[:12]}"  # this call's hop files: their names start with it
    spill = None if scheduler else hop_dir()  # None: each Dask worker's own
    files = [c.absolute() if scheduler else c for _, c in todo]  # a worker's working directory is not ours (a link stays a link: its name is the label)
    # one capture at a time here: a big one's parts are made into records on every core asked for
    part_jobs = (jobs or cores()) if not scheduler and worker_count(jobs, files) == 1 else 1
    ones = each_file(read_one, [(n.name, bundle.display_path(n, c), f, spill, call, part_jobs)
                                for (n, c), f in zip(todo, files, strict=True)],
                     files, jobs=jobs, progress=progress, scheduler=scheduler,
                     undo=functools.partial(remove_call, call, spill))  # a failed analysis leaves no hop file
    return _gathered(todo, ones, scheduler)


def _gathered(todo: list, ones: list[OneCapture], scheduler: str | None) -> CaptureSet:
    """The captures' results as one CaptureSet, in the bundle's order."""
    out = CaptureSet()
    for (node, _), one in zip(todo, ones, strict=True):
        out.ifnames.update({(node.name, k): v for k, v in node.ifnames().items()})
        out.inputs.append(one.input)
        one.hops.scheduler = scheduler if one.hops.worker else None
        out.hops[one.label] = one.hops
        # no longer shown: no longer kept (at exit, the hop directories go as a whole)
        weakref.finalize(one.hops, remove_hops, one.hops.files, one.hops.worker, one.hops.scheduler).atexit = False
        out.warnings += one.warnings
    # a capture with no connection has an all-object table: concatenated, it would make UInt64
    # and Int64 columns object (and orig_hash unwritable to Parquet)
    tables = [o.connections for o in ones if len(o.connections)] or [o.connections for o in ones[:1]]
    out.connections = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return out


def remove_call(call: str, spill: Path | None) -> None:
    """Delete the hop files of the read_captures call ``call`` in ``spill`` (None: this process's hop_dir)."""
    for f in (spill or hop_dir()).glob(f"{call}-*.arrow"):
        f.unlink(missing_ok=True)


@dataclass
class OneCapture:
    """What one capture file gave: its label, inputs entry, records, packets on disk, warnings."""

    label: str
    input: dict
    connections: pd.DataFrame
    hops: HopPackets
    warnings: list[str]


def read_one(node: str, file: str, path: Path, spill: Path | None, call: str, part_jobs: int = 1,
             progress=None) -> OneCapture:
    """One capture's connection records, with its accounting (``file``: the path summary.json
    names); the packets journey_hops shows go to a hop file (capture.hopfile) in ``spill`` (None: this
    process's hop_dir, on a Dask worker), named after the read_captures ``call``; a big capture's
    parts are made into records in ``part_jobs`` processes. ``progress`` is called with the bytes
    read as reading goes."""
    label = f"{node}/{path.stem}"
    fd, name = tempfile.mkstemp(prefix=f"{call}-{node}-{path.stem}-", suffix=".arrow", dir=spill or hop_dir())
    os.close(fd)
    try:
        conns, idx, info, hop_files = _records(path, Path(name), progress, node, label, part_jobs)
    except BaseException:
        remove_hops([Path(name), *Path(name).parent.glob(span_hops(Path(name), "*").name)], None, None)
        raise  # an unreadable capture leaves no file behind
    give_back()  # the packets are gone: the next capture or stage starts from what is kept
    warnings = list(info.warnings)
    if info.dropped:
        warnings.append(f"{path}: the capturing host dropped {info.dropped:,} packets (pcapng "
                        "interface statistics): records there may miss handshakes or retransmissions")
    entry = {"node": node, "file": file, "records": int(info.records),
             "decoded": int(info.decoded), "skipped": dict(info.skipped), "connections": len(conns),
             "not_in_connections": dict(conns.attrs.get("skipped", {})),
             # for findings.quality (not in summary.json's inputs.captures):
             "label": label, "first_ts": None if info.first_ts_ns is None else info.first_ts_ns / 1e9,
             "last_ts": None if info.last_ts_ns is None else info.last_ts_ns / 1e9,
             "unread_bytes": int(info.unread_bytes), "dropped": info.dropped,
             "skipped_bytes": dict(info.skipped_bytes), "anomalies": dict(info.anomalies),
             "damaged": [dict(d) for d in info.damaged]}
    # the index also gives an ICMP error the row of the record it is about (connections.icmp):
    # journey_hops shows it among the connection's packets
    return OneCapture(label, entry, conns, HopPackets(hop_files, idx, worker=this_worker()), warnings)


def _records(path: Path, hop_file: Path, progress, node: str, label: str, part_jobs: int = 1
             ) -> tuple[pd.DataFrame, np.ndarray, CaptureInfo, list[Path]]:
    """The capture's connection records, each packet's record, what the capture holds and the hop
    files of its packets: from one table of its packets, or, for a capture of PART_BYTES or more,
    from parts of it made into records apart, ``part_jobs`` processes at once (connections.parts:
    a part in memory at a time), after its spans are decoded apart (capture.spans), as many at once."""
    parts = -(-path.stat().st_size // PART_BYTES) if path.is_file() else 1
    if parts <= 1:
        packets, info = _packets(path, hop_file, progress)
        conns, idx = connections_with_index(packets, node=node, capture=label, capture_end_ns=info.last_ts_ns)
        return conns, idx, info, [hop_file]
    parts = -(-parts // part_jobs) * part_jobs  # a whole number of rounds: no core waits for a last part
    where = Path(tempfile.mkdtemp(prefix=f"{hop_file.stem}-parts-", dir=hop_file.parent))
    try:
        with Workers() as kept:  # the processes that decode the spans make the parts into records
            kept.start(part_jobs)
            cuts = spans(path, part_jobs)
            hop_files = [hop_file] + [span_hops(hop_file, r) for r in range(1, len(cuts))]
            split = each_file(split_span, [(path, h, parts, where / str(r), cut)
                                           for r, (h, cut) in enumerate(zip(hop_files, cuts, strict=True))],
                              [path] * len(cuts), jobs=part_jobs, progress=progress, kept=kept)
            firsts = np.cumsum([0] + [n for n, _ in split])  # the capture row of each span's first packet
            files = [[(f, int(first)) for r, first in enumerate(firsts[:-1]) if (f := where / str(r) / f"{k}.arrow").exists()]
                     for k in range(parts)]
            made = each_file(records_of_part, [(f or None, node, label, split[-1][1].last_ts_ns) for f in files],
                             [f[0][0] if f else path for f in files], jobs=part_jobs, kept=kept)
            conns, idx = merged(made, int(firsts[-1]), label)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return conns, idx, combined([info for _, info in split]), hop_files


def _packets(path: Path, hop_file: Path, progress=None) -> tuple[pd.DataFrame, CaptureInfo]:
    """The columns connections are made from, as one table."""
    chunks = []
    info = decoded(path, hop_file, progress, lambda chunk: chunks.append(chunk.select(CONNECTION_PACKET_COLUMNS)))
    table = pa.concat_tables(chunks) if chunks else ARROW_SCHEMA.empty_table().select(CONNECTION_PACKET_COLUMNS)
    chunks.clear()
    return table.to_pandas(types_mapper=pd.ArrowDtype, split_blocks=True, self_destruct=True), info


@functools.cache
def hop_dir() -> Path:
    """The private directory for the hop packets of this process's analyses (in $TMPDIR, about
    30 bytes per packet): a file goes when its Analysis does, the directory at exit, and the
    directory of a process that died without its exit (killed) when the next one starts."""
    for old in Path(tempfile.gettempdir()).glob("natlens-hops-*-*") if Path("/proc/self").is_dir() else ():
        pid = old.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    d = Path(tempfile.mkdtemp(prefix=f"natlens-hops-{os.getpid()}-"))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d
