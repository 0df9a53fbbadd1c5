"""Grouped-array helpers: per-group firsts, lasts, running maxima and joins over sorted numpy arrays.

Why: connections and journeys both work on rows sorted by a group id (a flow, a
connection, a journey) and need "the first row of each group where ...", without a
Python loop per group. Private to natlens; no knowledge of packets or Kubernetes.
Every function takes ``gid``: non-decreasing group ids 0..n-1, one per row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_SHIFT = np.int64(1) << np.int64(36)  # per-group offset for grouped running maxima


def first_where(gid: np.ndarray, mask: np.ndarray, n: int, last: bool = False) -> np.ndarray:
    """Row index of the first (or last) row of each of the n groups where mask holds; -1 if none."""
    out = np.full(n, -1, dtype=np.int64)
    idx = np.flatnonzero(mask)
    if idx.size:
        g = gid[idx]
        keep = np.ones(idx.size, dtype=bool)
        if last:
            np.not_equal(g[1:], g[:-1], out=keep[:-1])
        else:
            np.not_equal(g[1:], g[:-1], out=keep[1:])
        out[g[keep]] = idx[keep]
    return out


def last_where(gid: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """Row index of the last row of each of the n groups where mask holds; -1 if none."""
    return first_where(gid, mask, n, last=True)


def grouped_cummax(values: np.ndarray, gid: np.ndarray) -> np.ndarray:
    """Running maximum that restarts at each group (|values| < 2**35)."""
    off = gid.astype(np.int64) * _SHIFT
    return np.maximum.accumulate(values + off) - off


def group_ids(*keys) -> np.ndarray:
    """Each row's group over ``keys`` (arrays or Series of one length), numbered 0.. in order of
    first appearance: what ``DataFrame.groupby(keys, sort=False).ngroup()`` gives, a null being a
    value of its own. Why: groupby builds a hash table of every key tuple; factorizing one key at
    a time into one code is three to four times faster."""
    ids = None  # None: every row in one group so far
    for key in keys:
        if _one_value(key):
            continue
        codes, distinct = pd.factorize(key, use_na_sentinel=False)
        if len(distinct) > 1:  # codes < len(distinct): (group so far, code) <-> one integer
            ids = codes.astype(np.int64) if ids is None else pd.factorize(ids * len(distinct) + codes)[0]
    return np.zeros(len(keys[0]), dtype=np.int64) if ids is None else ids


def _one_value(key) -> bool:
    """Whether a numpy integer key holds one value in every row (a capture's VLAN, VNI or interface
    column, often): it adds nothing to a group, and seeing so is cheaper than factorizing it."""
    return (isinstance(key, np.ndarray) and key.dtype.kind in "iub" and key.size > 0
            and key.min() == key.max())


def group_order(group: np.ndarray, *then: np.ndarray) -> np.ndarray:
    """The rows by ``group`` (ids >= 0), then by each of ``then`` in turn, ties in row order: what
    ``np.lexsort((*reversed(then), group))`` gives. Why not lexsort: rows usually come already in
    ``then``'s order (a capture's time order), and group ids sort by 16-bit radix passes, ten
    times faster than a comparison sort of every key."""
    within = None if _in_order(then) else np.lexsort(then[::-1])
    order = _radix_order(group if within is None else group[within])
    return order if within is None else within[order]


def _in_order(keys: tuple[np.ndarray, ...]) -> bool:
    """Whether the rows are already sorted by ``keys`` (first key first); ties may stay as they are."""
    if not keys or len(keys[0]) < 2:
        return True
    tied = None  # the rows whose earlier keys equal the next row's (None: every row)
    for key in keys:
        step = np.diff(key) if tied is None else np.diff(key)[tied]
        if (step < 0).any():
            return False
        same = step == 0
        if not same.any():
            return True
        tied = same if tied is None else np.flatnonzero(tied)[same]
    return True


def _radix_order(ids: np.ndarray) -> np.ndarray:
    """A stable argsort of non-negative integers: numpy radix-sorts 16-bit integers, so ids below
    2**32 take two such passes (low half, then high), larger ones a comparison sort."""
    if not ids.size or ids.min() < 0 or ids.max() >= 1 << 32:
        return np.argsort(ids, kind="stable")
    ids = ids.astype(np.int64, copy=False)
    if ids.max() < 1 << 16:
        return np.argsort(ids.astype(np.uint16), kind="stable")
    order = np.argsort((ids & 0xFFFF).astype(np.uint16), kind="stable")
    return order[np.argsort((ids[order] >> 16).astype(np.uint16), kind="stable")]


def take(arr: np.ndarray, idx: np.ndarray, fill) -> np.ndarray:
    """arr[idx] where idx >= 0, else fill (idx as returned by first_where)."""
    return np.where(idx >= 0, arr[np.maximum(idx, 0)], fill)


def join_groups(gid: np.ndarray, chars: np.ndarray, n: int, sep: str = "") -> np.ndarray:
    """The strings of each of the n groups concatenated in row order ("" for an empty group)."""
    out = np.full(n, "", dtype=object)
    if not len(gid):
        return out
    parts = chars.astype(str).tolist()
    lens = np.fromiter((len(x) for x in parts), dtype=np.int64, count=len(parts)) + len(sep)
    text = sep.join(parts) + sep
    ends = np.cumsum(lens)
    starts = ends - lens
    every = np.ones(len(gid), dtype=bool)
    first, last = first_where(gid, every, n), last_where(gid, every, n)
    has = np.flatnonzero(first >= 0)
    a, b = starts[first[has]], ends[last[has]] - len(sep)
    out[has] = [text[i:j] for i, j in zip(a.tolist(), b.tolist(), strict=True)]
    return out


def per_distinct(fn, *cols) -> np.ndarray:
    """``fn(*values)`` of each row of the columns (Series or arrays, all as long; by position),
    called once per distinct combination of values: the words of a table repeat a lot, and a
    Python call per row is slow."""
    cols = [c if isinstance(c, pd.Series) else pd.Series(c) for c in cols]
    key = np.zeros(len(cols[0]), dtype=np.int64)
    for col in cols:
        codes, uniques = pd.factorize(col)  # missing: -1
        key = pd.factorize(key * (len(uniques) + 1) + codes + 1)[0]
    distinct, first = np.unique(key, return_index=True)
    values = [c.iloc[first].to_numpy(dtype=object) for c in cols]  # each distinct row's own values
    out = np.empty(len(distinct), dtype=object)
    for k, row in zip(distinct.tolist(), zip(*values, strict=True), strict=True):  # one by one: a value may be a tuple
        out[k] = fn(*row)
    return out[key]


def distinct_text(values: pd.Series) -> set[str]:
    """The distinct values of a column as text, missing ones left out: each distinct value made
    text once (a set of every row's text costs a Python object per row: 0.6 s for 500,000 rows
    of pandas' Arrow text)."""
    return {str(v) for v in pd.unique(values.dropna())}


def concat_rows(parts: list) -> np.ndarray:
    """Row-wise concatenation of string parts (arrays of strings, all as long, or one str for
    every row; at least one array), each distinct combination joined once (per_distinct). A row
    with a missing part is missing (NaN), as adding pandas text is."""
    fixed = [p if isinstance(p, str) else None for p in parts]
    varied = [k for k, p in enumerate(parts) if not isinstance(p, str)]

    def join(*values) -> str | float:
        text = list(fixed)
        for k, v in zip(varied, values, strict=True):
            if not isinstance(v, str):
                return np.nan
            text[k] = v
        return "".join(text)

    return per_distinct(join, *(parts[k] for k in varied))


def is_in(values: pd.Series, wanted) -> np.ndarray:
    """``values.isin(wanted)`` as a bool array (missing matches missing, as in isin), by
    Arrow's hashed lookup: pandas' isin of Arrow text takes ~2.6 s for 500,000 journey ids in
    500,000 and a pandas index ~0.4 s, this ~0.15 s. Values Arrow cannot hold as one type
    (mixed Python objects) are looked up in a pandas index."""
    wanted = wanted if isinstance(wanted, pd.Series) else pd.Series(list(wanted), dtype=object)
    try:
        have, want = pa.array(values, from_pandas=True), pa.array(wanted, from_pandas=True)
        return pc.is_in(have, value_set=want.cast(have.type)).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        hit = pd.Index(pd.unique(wanted.dropna())).get_indexer(values) >= 0
        return hit | values.isna().to_numpy() if wanted.isna().any() else hit


def contains(values: pd.Series, needle: str) -> np.ndarray:
    """Whether each value is text holding ``needle`` (missing: False): an object column is
    searched value by value, as making it Arrow text to search it costs more than the search
    (500,000 SNAT evidence texts: ~0.4 s against ~0.03 s)."""
    if values.dtype != object:
        return values.str.contains(needle, regex=False).fillna(False).to_numpy(dtype=bool)
    return np.fromiter((isinstance(v, str) and needle in v for v in values.to_numpy()), dtype=bool, count=len(values))


def rows_where(frame: pd.DataFrame, keep: pd.Series | np.ndarray) -> pd.DataFrame:
    """``frame[keep]``, or ``frame`` itself when every row is kept: selecting rows copies every
    column, and a big incident's tables often keep them all (500,000 journeys: ~300 MiB)."""
    return frame if bool(keep.all()) else frame[keep]


def shared_text(values: pd.Series) -> np.ndarray:
    """The column as an object array in which equal values are one Python object (missing:
    NaN): ``to_numpy(dtype=object)`` of a text column makes a new string per row (1.5 million
    rows of journey ids: ~90 MiB)."""
    codes, uniques = pd.factorize(values)
    return np.append(np.asarray(uniques, dtype=object), np.nan)[codes]
