"""The Analysis: everything natlens found in one incident, and the views built on it.

Why: the CLI, the report and a user's notebook all start from this one object, so
what they show is the same numbers; nothing here reads the bundle again.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from natlens._memory import give_back
from natlens.bundle import Bundle
from natlens.connections.zeek_log import conn_log_columns, write_conn_log
from natlens.errors import NatlensError
from natlens.findings.captures import HopPackets
from natlens.findings.hops import journey_hops
from natlens.findings.paths import PROBLEM_COLUMNS
from natlens.findings.scope import Scope
from natlens.findings.summary import build_summary
from natlens.inventory import Inventory
from natlens.netfilter import NodeRules

LATENCY_COLUMNS = ["journey", "path", "handshake_ms", "connect_ms", "first_byte_ms"]


@dataclass
class Analysis:
    """One incident's findings.

    ``journeys`` holds every journey; ``service_journeys`` the ones to a load-balancer
    Service (every TCP journey when no VIP is known) and in ``scope`` (the Services and time
    window asked for, findings.scope; None: no scope), which the SNAT table, loopback hits,
    latency, problems, capture quality, load balancer, verdict and summary are about.
    """

    incident: str
    inputs: list[dict]
    inferred: list[str]
    inventory: Inventory
    connections: pd.DataFrame
    journeys: pd.DataFrame
    service_journeys: pd.DataFrame
    snat: pd.DataFrame
    loopback: pd.DataFrame
    latency: pd.DataFrame
    verdict: dict
    offsets: dict[str, float] = field(default_factory=dict)
    records: pd.DataFrame | None = None
    bundle: Bundle | None = None
    warnings: list[str] = field(default_factory=list)  # partial input, for stderr (also in inferred)
    quality: list[dict] = field(default_factory=list)  # per capture, findings.quality
    problems: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PROBLEM_COLUMNS))
    uncaptured: list[str] = field(default_factory=list)  # nodes no capture covers
    mechanisms: list = field(default_factory=list)  # findings.mechanism: what the client nodes' rules do
    lb: list = field(default_factory=list)  # findings.lb: how each Service's load balancer picks a backend
    scope: Scope | None = None  # findings.scope: the Services and window every finding is about; None: all
    _hops: dict[str, HopPackets] = field(default_factory=dict, repr=False)  # capture label -> packets on disk

    def summary(self) -> dict:
        """summary.json, DESIGN.md section 5 plus the keys documented in natlens.findings."""
        return build_summary(self.incident, self.inputs, self.inferred,
                             self.bundle.not_read if self.bundle is not None else [],
                             self.service_journeys, self.snat, self.loopback, self.latency, self.verdict,
                             self.quality, self.problems, self.uncaptured,
                             [m.to_dict() for m in self.mechanisms], [f.to_dict() for f in self.lb],
                             scope=self.scope.to_dict() if self.scope is not None else None)

    def write(self, out_dir: str | Path) -> list[Path]:
        """summary.json and the tables as Parquet in `out_dir`, for scripts and notebooks that
        build on them: connections, journeys (every journey), service_journeys (those the
        summary counts), snat, latency, problems; and the connections again as a Zeek
        conn.log (``conn.log``, natlens.connections.zeek_log), so Zeek tooling reads them,
        with each record's interface name and journey. Returns the files written."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "summary.json"]
        written[0].write_text(json.dumps(self.summary(), indent=2) + "\n", encoding="utf-8")
        names = ("connections", "journeys", "service_journeys", "snat", "latency", "problems")
        tables = [out / f"{name}.parquet" for name in names]

        def write_tables() -> None:
            for name, path in zip(names, tables, strict=True):
                if name == "service_journeys" and _same_frame(self.service_journeys, self.journeys):
                    shutil.copyfile(out / "journeys.parquet", path)  # every journey counts: the same file
                else:
                    _to_parquet(getattr(self, name), path)

        with ThreadPoolExecutor(1) as pool:  # pyarrow writes without the GIL while the conn.log is worded
            parquet = pool.submit(write_tables)
            log = write_conn_log(self._conn_log_records(), out / "conn.log")
            parquet.result()
        return [*written, *tables, log]

    def _conn_log_records(self) -> pd.DataFrame:
        """Every connection record (the columns its conn.log reads), with the journey and interface
        name (``point``) the journeys gave it where they did (matched on uid: no record is dropped
        or repeated)."""
        if self.records is None or not {"uid", "journey", "point"} <= set(self.records.columns):
            return self.connections
        extra = self.records[["uid", "journey", "point"]].drop_duplicates("uid").set_index("uid")
        uids = self.connections["uid"]  # a record no journey has: missing
        conns = self.connections[conn_log_columns(self.connections)]
        return conns.assign(**{c: extra[c].reindex(uids).to_numpy(dtype=object) for c in extra.columns})

    def journey_hops(self, journey_id: str) -> pd.DataFrame:
        """Every packet of one journey, all capture points, on one clock, in time order, except
        that an effect never shows before its cause: where two nodes' clocks could not be put
        on one, the hop is placed after its cause and its note says so.

        ``ts`` float seconds / ``ts_ns`` int ns since the epoch (UTC), clock offsets subtracted
        (DESIGN.md section 4), like every other table; ``point`` the interface where the capture
        names it (an ``any`` capture's veth, cni0, eth0; None when unknown); ``note`` says what
        the hop is, and for a failed journey which row is the last capture point of its SYN and
        of its SYN-ACK. KeyError
        for a journey id that is not in ``journeys``.
        """
        row = self.journeys[self.journeys["journey"] == journey_id]
        if row.empty or self.records is None:
            raise KeyError(journey_id)
        rec = self.records[self.records["journey"] == journey_id]
        return journey_hops(row.iloc[0], rec, self._hops, self.offsets,
                            self.inventory)

    def rules(self, node: str) -> NodeRules:
        """The node's netfilter model, as the analysis read it. NatlensError naming the bundle
        when it has no such node, or the file when its dumps are missing or unreadable."""
        names = [n.name for n in self.bundle.nodes] if self.bundle is not None else []
        if node not in names:
            raise NatlensError(f"no node {node!r} in the bundle (nodes: {', '.join(names) or 'none'})",
                               path=str(self.bundle.path / "nodes") if self.bundle else None)
        return self.bundle.node(node).rules()


PARQUET_ROWS = 32_768  # rows of a table made Arrow at once when it is written


def _to_parquet(frame: pd.DataFrame, path: Path) -> None:
    """``frame.to_parquet(path, index=False)``, its rows made Arrow a slice at a time: a table's
    text as Arrow costs its bytes again (the journeys of 500,000 connections: ~420 MiB at once,
    ~70 MiB in slices). The file reads back as the frame, attrs included, as pandas writes it."""
    if len(frame) <= PARQUET_ROWS:
        frame.to_parquet(path, index=False)
        return
    schema = pa.Schema.from_pandas(_typed_rows(frame), preserve_index=False)
    if frame.attrs:  # where pandas keeps them
        schema = schema.with_metadata({**schema.metadata, b"PANDAS_ATTRS": json.dumps(frame.attrs).encode()})
    with pq.ParquetWriter(path, schema, compression="snappy") as writer:
        for start in range(0, len(frame), PARQUET_ROWS):
            rows = frame.iloc[start:start + PARQUET_ROWS]
            writer.write_table(pa.Table.from_pandas(rows, schema=schema, preserve_index=False))
            give_back()  # else Arrow's pool keeps each slice's memory: +205 MiB for those journeys, not +67


def _typed_rows(frame: pd.DataFrame, each: int = 2) -> pd.DataFrame:
    """The first row and the first ``each`` rows where each column has a value: its Arrow types are
    the whole frame's (pyarrow infers an object column's type from its values, and inferring it
    from every row made each text column Arrow whole: ~180 MiB for 500,000 journeys)."""
    rows = {0}
    for _, col in frame.items():
        rows.update(np.flatnonzero(col.notna().to_numpy())[:each].tolist())
    return frame.iloc[sorted(rows)]


def _same_frame(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """``a`` holds what ``b`` holds, in the same order and types, so it writes as ``b`` does."""
    return len(a) == len(b) and a.columns.equals(b.columns) and a.attrs == b.attrs and a.equals(b)
