"""Words made once per distinct combination of values (_grouped.per_distinct, concat_rows) and
the other big-table helpers (is_in, contains, the paused collector):
the same result as a call per row, by position, missing values passed on as they are."""

from __future__ import annotations

import numpy as np
import pandas as pd

from natlens._grouped import concat_rows, distinct_text, per_distinct, rows_where


def test_per_distinct_is_a_call_per_row_made_once_per_combination():
    a = pd.Series(["x", "y", "x", None, "x", "y"], index=[10, 11, 12, 13, 14, 15])  # not a RangeIndex
    b = np.array([1, 1, 2, 1, 1, 1], dtype=object)
    calls = []

    def fn(u, v):
        calls.append((u, v))
        return (u, v)  # a tuple is one value, not a sequence to spread

    got = per_distinct(fn, a, b)
    assert list(got) == list(zip(a.tolist(), b.tolist(), strict=True))
    assert len(calls) == 4  # (x,1) (y,1) (x,2) (None,1)


def test_per_distinct_keeps_missing_values_apart_from_the_others():
    got = per_distinct(lambda v: "missing" if pd.isna(v) else f"<{v}>", pd.Series([np.nan, 3.0, np.nan, 3.0]))
    assert list(got) == ["missing", "<3.0>", "missing", "<3.0>"]


def test_concat_rows_is_pandas_text_addition():
    a = pd.Series(["n1/eth0", "n1/eth0", "n2/any", None], dtype=object)
    b = pd.Series(["S0", "SF", "S0", "S0"]).astype(str)
    want = (a + ": " + b + "!").tolist()
    got = concat_rows([a, ": ", b, "!"])
    assert list(got[:3]) == want[:3]
    assert pd.isna(got[3]) and pd.isna(want[3])  # a missing part: missing, as adding pandas text is


def test_distinct_text_is_the_set_of_every_present_value_as_text():
    for dtype in ("str", object):
        col = pd.Series(["node-1", None, "node-2", "node-1", np.nan], dtype=dtype)
        assert distinct_text(col) == {"node-1", "node-2"}
    assert distinct_text(pd.Series([5, 5, 7])) == {"5", "7"}
    assert distinct_text(pd.Series([], dtype="str")) == set()


def test_rows_where_is_the_frame_itself_when_every_row_is_kept():
    f = pd.DataFrame({"a": [1, 2, 3], "t": ["x", "y", "z"]})
    assert rows_where(f, pd.Series([True] * 3)) is f
    some = rows_where(f, pd.Series([True, False, True]))
    assert some is not f and some["t"].tolist() == ["x", "z"] and len(f) == 3
    assert rows_where(f, pd.Series([False] * 3)).empty


def test_shared_text_keeps_the_values_and_makes_each_distinct_one_once():
    from natlens._grouped import shared_text
    col = pd.Series(["J1", None, "J2", "J1", "J2"], dtype="str")
    got = shared_text(col)
    assert got[0] == "J1" and got[2] == got[4] == "J2" and pd.isna(got[1]) and got.dtype == object
    assert got[0] is got[3] and got[2] is got[4]
    assert got.tolist()[2:] == col.to_numpy(dtype=object).tolist()[2:]


def test_is_in_is_pandas_isin_for_text_of_either_kind_and_missing_values():
    from natlens._grouped import is_in
    for dtype in ("str", object):
        values = pd.Series(["J1", "J2", None, "J3", "J1"], dtype=dtype)
        for wanted in (["J1", "J3", "J3"], pd.Series(["J2", None], dtype=dtype), [], ["J9"]):
            got = is_in(values, wanted)
            assert got.dtype == bool
            assert got.tolist() == values.isin(list(wanted)).tolist(), (dtype, wanted)
    assert is_in(pd.Series([], dtype="str"), ["J1"]).tolist() == []


def test_contains_finds_the_needle_in_text_and_never_in_a_missing_value():
    from natlens._grouped import contains
    for dtype in ("str", object):
        values = pd.Series(["node opened it (conntrack)", None, "pod 198.18.0.7", ""], dtype=dtype)
        assert contains(values, "conntrack").tolist() == [True, False, False, False]
        assert contains(values, ":").tolist() == [False] * 4
    assert contains(pd.Series(["fe80::1", "198.18.0.1", np.nan], dtype=object), ":").tolist() == [True, False, False]


def test_is_in_of_values_arrow_cannot_hold_as_one_type_is_still_isin():
    from natlens._grouped import is_in
    values = pd.Series(["J1", 7, None, ("a", 1)], dtype=object)
    assert is_in(values, [7, "J1"]).tolist() == [True, True, False, False]
    assert is_in(values, [None]).tolist() == values.isin([None]).tolist()


def test_the_collector_is_paused_inside_the_block_and_as_it_was_after():
    import gc

    from natlens._memory import collector_paused
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    try:
        with collector_paused():
            raise KeyError("x")
    except KeyError:
        pass
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # a caller's own pause is kept
    finally:
        gc.enable()


def test_journey_lists_are_the_values_cut_at_each_group_start():
    from natlens.journeys.assemble import _lists
    values = pd.Series(["a", "b", "c", "d"], dtype="str")
    assert _lists(values, np.array([1, 3])) == [["a"], ["b", "c"], ["d"]]
    assert _lists(values, np.array([], dtype=np.int64)) == [["a", "b", "c", "d"]]
