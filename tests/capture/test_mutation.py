"""Property tests: random damage to valid captures never raises, and every record is
still either a row or counted (records == decoded + sum(skipped))."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus import build
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natlens.capture import read_capture

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, bytes]:
    files = build(tmp_path_factory.mktemp("corpus"))
    return {name: files[name].read_bytes() for name in ("eth-ns-be", "sll2", "multi-le", "multi-be")}


edits = st.lists(
    st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
              st.floats(0, 1, exclude_max=True), st.integers(0, 255), st.integers(1, 8)),
    min_size=1, max_size=6)


def mutate(data: bytes, ops, keep: int) -> bytes:
    """Apply edits after the first `keep` bytes (the file header stays readable)."""
    b = bytearray(data)
    for op, where, value, n in ops:
        if len(b) <= keep:
            break
        i = keep + int(where * (len(b) - keep))
        if op == "flip":
            b[i] ^= 1 << (value % 8)
        elif op == "set":
            b[i:i + n] = bytes([value]) * min(n, len(b) - i)
        elif op == "insert":
            b[i:i] = bytes([value]) * n
        elif op == "delete":
            del b[i:i + n]
        else:
            del b[i:]
    return bytes(b)


def check(path: Path, chunk_bytes: int | None) -> None:
    kw = {"chunk_bytes": chunk_bytes} if chunk_bytes else {}
    cap = read_capture(path, **kw)
    info = cap.info
    assert info.records == info.decoded + sum(info.skipped.values())
    assert info.decoded == len(cap.packets)
    assert cap.packets["record"].is_monotonic_increasing
    assert (cap.packets["record"] < info.records).all()


@SETTINGS
@given(name=st.sampled_from(["eth-ns-be", "sll2"]), ops=edits,
       chunk=st.sampled_from([None, 64, 1000]))
def test_mutated_pcap(originals, tmp_path, name, ops, chunk):
    path = tmp_path / "m.pcap"
    path.write_bytes(mutate(originals[name], ops, keep=24))
    check(path, chunk)


@SETTINGS
@given(name=st.sampled_from(["multi-le", "multi-be"]), ops=edits,
       chunk=st.sampled_from([None, 64, 1000]))
def test_mutated_pcapng(originals, tmp_path, name, ops, chunk):
    """Damage inside any block, including section and interface headers."""
    path = tmp_path / "m.pcapng"
    path.write_bytes(mutate(originals[name], ops, keep=12))
    check(path, chunk)


@SETTINGS
@given(name=st.sampled_from(["eth-ns-be", "multi-be"]), ops=edits)
def test_chunk_size_does_not_change_the_result(originals, tmp_path, name, ops):
    """Reading in tiny chunks (records straddle every boundary) gives the same table and
    tally as one big chunk, on damaged files too."""
    keep = 24 if name.startswith("eth") else 12
    path = tmp_path / "c.bin"
    path.write_bytes(mutate(originals[name], ops, keep=keep))
    whole = read_capture(path)
    small = read_capture(path, chunk_bytes=96)
    assert small.info.skipped == whole.info.skipped
    assert small.info.records == whole.info.records
    assert small.packets.equals(whole.packets)
