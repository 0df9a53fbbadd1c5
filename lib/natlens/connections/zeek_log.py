"""The connections table as a Zeek conn.log (Zeek's ASCII/TSV log format).

Why: incident responders already have tooling for Zeek logs (zeek-cut, RITA, Zeek log
readers, SIEM loaders); the same records as natlens' ``connections.parquet`` in Zeek's own
format open there without a converter, and a record can be checked line by line against
Zeek's conn.log of the same capture.

``write_conn_log(table, path)`` writes Zeek's header (``#separator \\x09``,
``#set_separator``, ``#empty_field``, ``#unset_field``, ``#path conn``, ``#open``, ``#fields``,
``#types``), one line per record and ``#close``. ``#open`` / ``#close`` are the wall-clock
times (UTC) of writing, in Zeek's ``%Y-%m-%d-%H-%M-%S`` form.

Zeek's fields (``CONN_FIELDS``), in Zeek's order and with Zeek's types; what natlens does
not know is Zeek's unset ``-`` on every line, never a made-up value:

==============  ===========  ==================================================================
ts              time         first packet (from ``ts_ns``), 6 decimals as Zeek writes a time
uid             string       natlens' ``uid`` (``<capture>#<n>``), not Zeek's ``C...`` form
id.orig_h/_p    addr/port    originator; ``id.resp_h``, ``id.resp_p`` the responder
proto           enum         tcp | udp
service         string       always ``-``: natlens detects no application protocol
duration        interval     ``-`` when 0 (one packet), as Zeek leaves it unset; natlens'
                             duration covers every packet (Zeek stops once both sides closed)
orig_bytes      count        payload bytes (also for one-packet records, where Zeek writes ``-``)
conn_state      string       Zeek's states
local_orig/_resp bool        always ``-``: natlens has no Site::local_nets
missed_bytes    count        always ``-``: natlens counts content gaps only as ``G``/``g`` letters
history         string       Zeek's letters (``-`` when empty, as Zeek)
orig_pkts ...   count        orig_pkts, orig_ip_bytes, resp_pkts, resp_ip_bytes
tunnel_parents  set[string]  always ``-``: natlens records the inner connection of a tunnel and
                             no outer one to refer to (``natlens_vni`` says it was tunnelled)
ip_proto        count        6 (tcp) | 17 (udp), as Zeek 7 logs it
==============  ===========  ==================================================================

Extra fields after Zeek's (``EXTRA_FIELDS``; Zeek's readers take any extra field, as they do
those of Zeek's own policy scripts), each only when the table has its column:

==================  ======  =======================================================
vlan                int     outer VLAN id (``-``: none): Zeek's own field of
                            ``policy/protocols/conn/vlan-logging``, same meaning
natlens_vni         count   VXLAN/Geneve VNI the packets carried (``-``: not tunnelled)
natlens_capture     string  capture label, ``node/label`` in an incident
natlens_node        string  node of the capture (``-``: a lone capture file)
natlens_iface       string  interface name where the capture names it (``point``: eth0,
                            cni0, a veth in an ``any`` capture; from the journeys' records)
natlens_ifindex     count   SLL2 ifindex / pcapng interface id (``-``: unknown)
natlens_journey     string  the journey the record belongs to (``journeys.parquet``)
==================  ======  =======================================================

Strings are escaped as Zeek's writer does: the separator, backslash and other control
characters as ``\\xHH``, an empty string as ``(empty)``, a value equal to ``-`` or
``(empty)`` with its first character escaped. Counts are written as integers; NaN, None and
<NA> are always ``-``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from natlens.errors import NatlensError

SEPARATOR = "\t"
LOG_ROWS = 65_536  # records worded at once
SET_SEPARATOR = ","
EMPTY = "(empty)"
UNSET = "-"
TIME_FORMAT = "%Y-%m-%d-%H-%M-%S"  # Zeek's #open / #close

# (Zeek field, Zeek type, natlens column or None when natlens does not know the value)
CONN_FIELDS: tuple[tuple[str, str, str | None], ...] = (
    ("ts", "time", "ts_ns"),
    ("uid", "string", "uid"),
    ("id.orig_h", "addr", "orig_h"),
    ("id.orig_p", "port", "orig_p"),
    ("id.resp_h", "addr", "resp_h"),
    ("id.resp_p", "port", "resp_p"),
    ("proto", "enum", "proto"),
    ("service", "string", None),
    ("duration", "interval", "duration"),
    ("orig_bytes", "count", "orig_bytes"),
    ("resp_bytes", "count", "resp_bytes"),
    ("conn_state", "string", "conn_state"),
    ("local_orig", "bool", None),
    ("local_resp", "bool", None),
    ("missed_bytes", "count", None),
    ("history", "string", "history"),
    ("orig_pkts", "count", "orig_pkts"),
    ("orig_ip_bytes", "count", "orig_ip_bytes"),
    ("resp_pkts", "count", "resp_pkts"),
    ("resp_ip_bytes", "count", "resp_ip_bytes"),
    ("tunnel_parents", "set[string]", None),
    ("ip_proto", "count", "proto"),
)
EXTRA_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("vlan", "int", "vlan"),
    ("natlens_vni", "count", "vni"),
    ("natlens_capture", "string", "capture"),
    ("natlens_node", "string", "node"),
    ("natlens_iface", "string", "point"),
    ("natlens_ifindex", "count", "iface"),
    ("natlens_journey", "string", "journey"),
)
IP_PROTO = {"tcp": 6, "udp": 17}
NONE_IS_MINUS_ONE = ("vlan", "vni", "iface")  # natlens' "none" in these integer columns
# Control characters, backslash, and the bytes of a file name that are not UTF-8 (Python's
# surrogate escapes U+DC80-U+DCFF), which Zeek writes as \xHH like any non-UTF-8 byte.
_ESCAPED = re.compile("[\x00-\x1f\x7f\\\\\udc80-\udcff]")


def conn_log_fields(table: pd.DataFrame) -> list[tuple[str, str, str | None]]:
    """The (field, type, column) triples a conn.log of `table` has: every Zeek field, then
    each extra field whose column the table holds."""
    return [*CONN_FIELDS, *((f, t, c) for f, t, c in EXTRA_FIELDS if c in table.columns)]


def conn_log_columns(table: pd.DataFrame) -> list[str]:
    """The columns of `table` its conn.log is written from (the others need not be copied)."""
    fields = {c for _, _, c in conn_log_fields(table) if c is not None}
    return [c for c in table.columns if c in fields or c in ("ts_ns", "uid")]


def write_conn_log(table: pd.DataFrame, path: str | Path, *,
                   now: Callable[[], datetime] | None = None) -> Path:
    """Write `table` (natlens' connections, or the journeys' records, which add ``journey``
    and ``point``) to `path` as a Zeek conn.log, one line per record in time order (see the
    module doc for the fields). `now` gives the #open / #close times (default: the UTC wall
    clock). NatlensError naming `path` when the table lacks a column Zeek's fields need, holds
    a negative count or an unknown protocol, or the file cannot be written."""
    path = Path(path)
    fields = conn_log_fields(table)
    missing = [c for _, _, c in fields if c is not None and c not in table.columns]
    if missing:
        raise NatlensError(f"cannot write a conn.log: the connections table has no column "
                           f"{', '.join(dict.fromkeys(missing))}", path=str(path))
    clock = now or (lambda: datetime.now(timezone.utc))
    opened = clock()
    rows = table[conn_log_columns(table)]
    # time order, taken a slice at a time: a sorted copy of a big table would cost as much again
    order = rows["ts_ns"].reset_index(drop=True).sort_values(kind="stable").index.to_numpy()
    header = [
        "#separator " + "".join(f"\\x{ord(ch):02x}" for ch in SEPARATOR),
        f"#set_separator{SEPARATOR}{SET_SEPARATOR}",
        f"#empty_field{SEPARATOR}{EMPTY}",
        f"#unset_field{SEPARATOR}{UNSET}",
        f"#path{SEPARATOR}conn",
        f"#open{SEPARATOR}{opened.strftime(TIME_FORMAT)}",
        "#fields" + "".join(SEPARATOR + f for f, _, _ in fields),
        "#types" + "".join(SEPARATOR + t for _, t, _ in fields),
    ]
    part = path.with_name(path.name + ".part")  # a log that cannot be written whole is not left in part
    try:
        with open(part, "w", encoding="utf-8") as fh:
            fh.write("\n".join(header) + "\n")
            for start in range(0, len(rows), LOG_ROWS):  # a slice at a time: a text cell costs ~60 bytes
                chunk = rows.iloc[order[start:start + LOG_ROWS]]
                columns = [_cells(chunk, f, t, c, path).tolist() for f, t, c in fields]
                fh.write("".join(SEPARATOR.join(cells) + "\n" for cells in zip(*columns, strict=True)))
            fh.write(f"#close{SEPARATOR}{clock().strftime(TIME_FORMAT)}\n")
        part.replace(path)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise NatlensError(f"cannot write the conn.log: {exc.strerror or exc}", path=str(path)) from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return path


def _cells(rows: pd.DataFrame, field: str, ztype: str, column: str | None, path: Path) -> pd.Series:
    """One field of every row as Zeek's text (vectorised: the conn.log of 199,000 records took
    1.7 s on the 2-core test machine under load, against 12.7 s for a per-cell version)."""
    index = rows.index
    if column is None:
        return pd.Series(UNSET, index=index, dtype=object)
    values = rows[column]
    if field == "ts":
        return _times(values)
    if field == "ip_proto":
        values = _ip_protos(values, path)
    if ztype == "interval":
        return _intervals(values)
    if ztype in ("count", "int", "port"):
        return _integers(rows, values, field, column, ztype, path)
    text = _per_value(values, _address if ztype == "addr" else _string)
    if field == "history":  # Zeek leaves an empty history unset
        text[text == EMPTY] = UNSET
    return text


def _per_value(values: pd.Series, render: Callable[[object], str]) -> pd.Series:
    """`render` of each distinct value once (captures, nodes, interfaces repeat a lot); a plain
    string (not empty, nothing to escape, not Zeek's unset or empty mark) is its own text, and
    is not rendered one by one (uids and journey ids are all distinct)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    uniques = np.asarray(uniques, dtype=object)
    marks = (UNSET, EMPTY, "")
    # printable: no control character and no surrogate escape (both escaped, like a backslash)
    plain = np.array([type(u) is str and u.isprintable() and "\\" not in u and u not in marks for u in uniques],
                     dtype=bool)
    out = uniques.copy()
    out[~plain] = [render(u) for u in uniques[~plain]]
    text = np.append(out, UNSET).astype(object)
    return pd.Series(text[codes], index=values.index, dtype=object)  # code -1: NA -> UNSET


def _ip_protos(proto: pd.Series, path: Path) -> pd.Series:
    """tcp -> 6, udp -> 17; another protocol has no place in a connections table."""
    numbers = proto.map(IP_PROTO)
    if numbers.isna().any():
        bad = proto[numbers.isna()].iloc[0]
        raise NatlensError(f"cannot write a conn.log: protocol {bad!r} is neither tcp nor udp",
                           path=str(path))
    return numbers


def _times(ts_ns: pd.Series) -> pd.Series:
    """int ns since the epoch -> ``s.uuuuuu`` (Zeek's time: 6 decimals, rounded to the us)."""
    ints = pd.array(ts_ns, dtype="Int64")
    us = (ints.to_numpy(dtype="int64", na_value=0) + 500) // 1000
    secs = pd.Series(us // 1_000_000, dtype="int64").astype(str)
    frac = pd.Series(us % 1_000_000, dtype="int64").astype(str).str.zfill(6)
    text = (secs + "." + frac).to_numpy(dtype=object)
    text[np.asarray(ints.isna())] = UNSET
    return pd.Series(text, index=ts_ns.index, dtype=object)


def _intervals(seconds: pd.Series) -> pd.Series:
    """Seconds -> ``%.6f``; unset when not a positive finite number (Zeek logs a duration only
    when it is above 0)."""
    v = pd.to_numeric(seconds, errors="coerce").astype(float).to_numpy()
    text = [f"{x:.6f}" if x > 0 and x != np.inf else UNSET for x in v.tolist()]  # NaN > 0 is False
    return pd.Series(text, index=seconds.index, dtype=object)


def _integers(rows: pd.DataFrame, values: pd.Series, field: str, column: str, ztype: str,
              path: Path) -> pd.Series:
    """Integers as integers (never ``20.0``); NA, and natlens' -1 for "none" in vlan, vni and
    iface, unset; a negative count is an error, not a value to pass on."""
    try:
        ints = pd.array(values, dtype="Int64")
    except (TypeError, ValueError) as exc:
        raise NatlensError(f"cannot write a conn.log: column {column} ({field}) is not integer: {exc}",
                           path=str(path)) from exc
    data = ints.to_numpy(dtype="int64", na_value=0)
    unset = np.asarray(ints.isna())
    if column in NONE_IS_MINUS_ONE:
        unset |= data == -1
    negative = ~unset & (data < 0)
    if ztype in ("count", "port") and negative.any():
        at = int(np.flatnonzero(negative)[0])
        uid = rows["uid"].iloc[at] if "uid" in rows else "?"
        raise NatlensError(f"cannot write a conn.log: negative {column} {data[at]} in record {uid}",
                           path=str(path))
    codes, uniques = pd.factorize(data)  # counts and ports repeat: each distinct one worded once
    text = uniques.astype(str).astype(object)[codes]
    text[unset] = UNSET
    return pd.Series(text, index=values.index, dtype=object)


def _address(value: object) -> str:
    return value if isinstance(value, str) and value else UNSET


def _string(value: object) -> str:
    """Zeek's escaping of a string value (unset for None / NaN / <NA>)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return UNSET
    text = str(value)
    if not text:
        return EMPTY
    text = _ESCAPED.sub(lambda m: f"\\x{ord(m.group()) & 0xFF:02x}", text)
    if text in (UNSET, EMPTY):
        return f"\\x{ord(text[0]):02x}" + text[1:]
    return text
