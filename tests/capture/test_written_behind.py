"""capture.written_behind: tables are written on a second thread in the order put, one in
flight, and a failed write is raised, not lost."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pytest

from natlens.capture import written_behind


def test_tables_are_written_in_order_on_another_thread():
    seen, threads = [], set()

    def write(t):
        time.sleep(0.01)
        seen.append(t["x"][0].as_py())
        threads.add(threading.get_ident())

    with written_behind(write) as put:
        for i in range(20):
            put(pa.table({"x": [i]}))
    assert seen == list(range(20)) and threading.get_ident() not in threads


def test_a_failed_write_is_raised():
    def write(t):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), written_behind(write) as put:
        put(pa.table({"x": [1]}))
        put(pa.table({"x": [2]}))
