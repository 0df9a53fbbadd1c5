"""_grouped.group_order: the order np.lexsort gives (rows by group, then by each later key,
ties in row order), on rows already in time order and on rows that are not, with group ids
of every size its radix passes handle and beyond. _grouped.group_ids: the groups pandas'
groupby numbers, in the same order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from natlens._grouped import _in_order, group_ids, group_order


@pytest.mark.parametrize("groups", [1, 300, 70_000, 5_000_000_000])  # one pass, two passes, a comparison sort
@pytest.mark.parametrize("rows", ["in time order", "shuffled", "many ties"])
def test_group_order_is_lexsort(groups, rows):
    rng = np.random.default_rng(groups)
    n = 20_000
    group = rng.integers(0, groups, n)
    ts = np.cumsum(rng.integers(0, 3, n))  # a third of the steps are ties
    record = np.arange(n)
    if rows == "shuffled":
        ts = rng.permutation(ts)
    elif rows == "many ties":
        ts, record = ts // 100, rng.permutation(n)
    want = np.lexsort((record, ts, group))
    assert np.array_equal(group_order(group, ts, record), want)
    assert np.array_equal(group_order(group), np.argsort(group, kind="stable"))


def test_rows_in_order_are_told_from_rows_out_of_order_by_a_later_key():
    ts = np.array([1, 1, 2, 2, 3])
    assert _in_order((ts, np.array([5, 6, 0, 1, 0])))
    assert not _in_order((ts, np.array([5, 6, 1, 0, 0])))  # the tie at ts 2 is out of order
    assert not _in_order((np.array([1, 0]),))
    assert _in_order(()) and _in_order((np.array([], dtype=np.int64),))


def test_no_rows_and_one_row():
    assert group_order(np.array([], dtype=np.int64), np.array([], dtype=np.int64)).size == 0
    assert group_order(np.array([4]), np.array([9])).tolist() == [0]


@pytest.mark.parametrize("distinct", [1, 3, 1_000, 60_000])
def test_group_ids_are_groupby_ngroup(distinct):
    rng = np.random.default_rng(distinct)
    n = 50_000
    keys = {"proto": rng.choice([6, 17], n), "lo": rng.integers(0, distinct, n) << 16,
            "hi": rng.integers(0, 2**40, n) % max(distinct // 3, 1), "vlan": np.full(n, -1),
            "name": rng.choice(np.array(["a", "b", None], dtype=object), n)}
    frame = pd.DataFrame(keys)
    want = frame.groupby(list(keys), sort=False, dropna=False).ngroup().to_numpy()
    assert np.array_equal(group_ids(*keys.values()), want)
    assert np.array_equal(group_ids(frame["name"], frame["proto"]),
                          frame.groupby(["name", "proto"], sort=False, dropna=False).ngroup().to_numpy())


def test_group_ids_of_constant_keys_and_no_rows():
    assert group_ids(np.full(4, 7), np.zeros(4)).tolist() == [0, 0, 0, 0]
    assert group_ids(np.array([], dtype=np.int64)).size == 0
    assert group_ids(np.array([5, 5, 2]), np.array([1, 0, 1])).tolist() == [0, 1, 2]
