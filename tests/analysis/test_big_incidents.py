"""Big incidents: captures read in parallel give the same analysis as one by one, the hop
packets kept on disk give the same hops as the packet table, and a payload hash of 2^63
or more is kept exactly (it once stopped ``analyze --out`` writing connections.parquet)."""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from analysis_helpers import samples_dir

import natlens.findings.captures as caps
from natlens.capture import read_capture
from natlens.capture.hopfile import HopWriter
from natlens.connections import CONNECTION_PACKET_COLUMNS, connections
from natlens.errors import NatlensError
from natlens.findings import analyze
from natlens.findings.captures import HopPackets, hop_dir
from natlens.parallel import each_file, worker_count

SAMPLES = sorted(p.name for p in samples_dir().iterdir() if p.is_dir())


@pytest.mark.parametrize("sample", SAMPLES)
def test_two_processes_give_the_analysis_one_gives(sample):
    one, two = (analyze(samples_dir() / sample, jobs=j) for j in (1, 2))
    assert json.dumps(one.summary(), default=str) == json.dumps(two.summary(), default=str)
    pd.testing.assert_frame_equal(one.journeys, two.journeys)
    pd.testing.assert_frame_equal(one.connections, two.connections)
    for jid in one.journeys["journey"]:
        pd.testing.assert_frame_equal(one.journey_hops(jid), two.journey_hops(jid))


def test_hop_packets_come_back_from_every_row_group_they_are_in():
    spill = hop_dir()
    df = pd.DataFrame({"ts_ns": np.arange(25, dtype=np.int64), "src": [f"198.18.0.{i}" for i in range(25)]})
    table = pa.Table.from_pandas(df, preserve_index=False)
    with HopWriter(spill / "h.arrow", table.schema, batch=10) as w:
        for at in (0, 3, 17):  # written in pieces that are no whole batches
            w.write(table.slice(at, {0: 3, 3: 14, 17: 8}[at]))
    conn = np.array([i % 3 - 1 for i in range(25)])  # -1, 0, 1, -1, ...: across all 3 batches
    hops = HopPackets([spill / "h.arrow"], conn)
    for k in (0, 1):
        got = hops.of(k)
        assert got["ts_ns"].tolist() == df["ts_ns"][conn == k].tolist()
        assert got["src"].tolist() == df["src"][conn == k].tolist()
    assert hops.of(7).empty
    assert hops.in_connections()["ts_ns"].tolist() == df["ts_ns"][conn >= 0].tolist()


def test_hop_text_written_as_codes_of_changing_dictionaries_comes_back_as_the_text():
    """Each decoded chunk codes its text with its own dictionary (capture.CODED_SCHEMA); a hop file
    keeps one dictionary per column: every row's text, and every null, must come back as it was."""
    spill = hop_dir()
    words = [["198.18.0.1", "198.18.0.2", None, "198.18.0.1"], ["198.18.0.3", None, "198.18.0.1", "198.18.0.3", "x"]]
    chunks = [pa.table({"ts_ns": pa.array(np.arange(len(w), dtype=np.int64) + 10 * i),
                        "src": pc.dictionary_encode(pa.array(w[::-1] if i else w, pa.string()))})
              for i, w in enumerate(words)]
    schema = pa.schema([("ts_ns", pa.int64()), ("src", pa.string())])
    with HopWriter(spill / "coded.arrow", schema, batch=3) as w:
        for chunk in chunks:
            w.write(chunk)
    want = [*words[0], *words[1][::-1]]
    hops = HopPackets([spill / "coded.arrow"], np.array([0, 1, 0, 1, 0, 1, 0, 1, 0]))
    assert caps.read_hops(hops.files)["src"].to_pylist() == want
    assert caps.read_hops(hops.files).schema.field("src").type == pa.string()
    def text(rows: pd.DataFrame) -> list:
        return [None if pd.isna(x) else x for x in rows["src"]]

    assert text(hops.of(0)) == want[0::2] and text(hops.of(1)) == want[1::2]


def test_a_payload_hash_with_the_top_bit_set_is_kept_exactly(tmp_path):
    big = 2**64 - 3
    t0 = 1_700_000_000_000_000_000
    pk = pd.DataFrame({
        "ts_ns": [t0, t0 + 1000, t0 + 2000, t0 + 3000], "proto": [6] * 4,
        "src": ["198.18.0.1", "198.18.0.2", "198.18.0.1", "198.18.0.1"],
        "dst": ["198.18.0.2", "198.18.0.1", "198.18.0.2", "198.18.0.2"],
        "sport": [40000, 80, 40000, 40000], "dport": [80, 40000, 80, 80],
        "tcp_flags": [0x02, 0x12, 0x10, 0x18], "seq": [100, 900, 101, 101], "ack": [0, 101, 901, 901],
        "payload_len": [0, 0, 0, 5], "ip_len": [60, 60, 52, 57],
        "payload_hash": pd.array([None, None, None, big], dtype="UInt64")})
    conns = connections(pk, capture="n/eth0")
    assert conns["orig_hash"].dtype == "UInt64" and int(conns["orig_hash"].iloc[0]) == big
    conns.to_parquet(tmp_path / "c.parquet", index=False)
    assert int(pd.read_parquet(tmp_path / "c.parquet")["orig_hash"].iloc[0]) == big


def test_jobs_must_be_one_or_more(tmp_path):
    with pytest.raises(NatlensError, match="--jobs must be 1 or more"):
        worker_count(0, [])
    r = subprocess.run([sys.executable, "-m", "natlens", "analyze", str(samples_dir() / "mixed"), "--jobs", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--jobs must be 1 or more" in r.stderr


def test_small_bundles_are_read_in_one_process_and_jobs_never_exceed_captures(tmp_path):
    small = [tmp_path / f"{i}.pcap" for i in range(3)]
    for f in small:
        f.write_bytes(b"\0" * 100)
    assert worker_count(None, small) == 1
    assert worker_count(8, small) == 3
    assert worker_count(2, small) == 2


def test_a_bad_capture_read_in_a_worker_gives_the_error_one_process_gives(tmp_path):
    b = tmp_path / "b"
    shutil.copytree(samples_dir() / "mixed", b)
    bad = next((b / "nodes").iterdir()) / "zz.pcap"
    bad.write_bytes(b"not a capture at all, just text" * 4)
    errors = []
    for jobs in (1, 2):
        with pytest.raises(NatlensError) as e:
            analyze(b, jobs=jobs)
        errors.append((str(e.value), e.value.path, e.value.where, e.value.reason))
    assert errors[0] == errors[1] and str(bad) in errors[0][0]


def test_the_hop_files_go_when_their_analysis_goes():
    a = analyze(samples_dir() / "mixed")
    files = [f for h in a._hops.values() for f in h.files]
    assert files and all(f.is_relative_to(hop_dir()) and f.stat().st_size for f in files)
    assert not a.journey_hops(a.journeys["journey"].iloc[0]).empty
    del a
    gc.collect()
    assert not any(f.exists() for f in files)


def test_an_empty_capture_does_not_turn_the_typed_columns_into_objects(tmp_path):
    b = tmp_path / "b"
    shutil.copytree(samples_dir() / "mixed", b)
    node = next(p for p in (b / "nodes").iterdir() if p.is_dir())
    (node / "empty.pcap").write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # header only
    with_empty, without = analyze(b), analyze(samples_dir() / "mixed")
    assert with_empty.connections.dtypes.to_dict() == without.connections.dtypes.to_dict()
    assert with_empty.connections["orig_hash"].dtype == "UInt64"


def test_the_columns_connections_read_are_all_in_connection_packet_columns(zeek_traces):
    for f in sorted(zeek_traces.rglob("*.pcap")):
        full = read_capture(f).packets
        a = connections(full, capture="x/y")
        b = connections(full[CONNECTION_PACKET_COLUMNS], capture="x/y")
        pd.testing.assert_frame_equal(a, b, obj=str(f))


def test_a_failed_analysis_leaves_no_hop_file(tmp_path):
    b = tmp_path / "b"
    shutil.copytree(samples_dir() / "mixed", b)
    (next((b / "nodes").iterdir()) / "zz.pcap").write_bytes(b"not a capture at all, just text" * 4)
    before = set(hop_dir().rglob("*.arrow"))
    for jobs in (1, 2):
        with pytest.raises(NatlensError):
            analyze(b, jobs=jobs)
        gc.collect()
        assert set(hop_dir().rglob("*.arrow")) <= before


def _die(path, progress=None):
    if path.name == "b":
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer does
    time.sleep(0.5)
    return path.name


def test_a_worker_killed_is_a_one_line_error_naming_what_was_not_read(tmp_path):
    files = [tmp_path / n for n in "ab"]
    for f in files:
        f.write_bytes(b"x")
    with pytest.raises(NatlensError, match="a worker process died .* try --jobs 1") as e:
        each_file(_die, [(f,) for f in files], files, jobs=2)
    assert str(files[1]) in str(e.value) and "\n" not in str(e.value)
    assert each_file(_die, [(files[0],)], files[:1], jobs=2) == ["a"]


def _fail_or_write(path, progress=None):
    if path.name == "a":
        raise NatlensError(f"{path}: bad")
    time.sleep(1.0)
    path.with_suffix(".written").write_text("done")
    return path.name


def test_the_first_error_is_raised_after_the_running_jobs_end(tmp_path):
    # what a running job writes must be there when the caller cleans up after the error
    files = [tmp_path / n for n in "ab"]
    for f in files:
        f.write_bytes(b"x")
    with pytest.raises(NatlensError, match="a: bad"):
        each_file(_fail_or_write, [(f,) for f in files], files, jobs=2)
    assert (tmp_path / "b.written").exists()


def _read_in_steps(path, progress=None):
    for _ in range(3):
        progress(10)
    return path.name


@pytest.mark.parametrize("jobs", [1, 2])
def test_jobs_reading_parts_of_one_file_all_advance_its_one_bar(tmp_path, jobs):
    """A big capture's spans are decoded in processes of their own: their bytes go to the
    bar of the capture (a callable), in whatever process they are read."""
    files = [tmp_path / n for n in "abc"]
    for f in files:
        f.write_bytes(b"x")
    seen = []
    assert each_file(_read_in_steps, [(f,) for f in files], files, jobs=jobs, progress=seen.append) == ["a", "b", "c"]
    assert seen == [10] * 9


def test_hop_packets_keep_record_numbers_in_four_bytes_where_they_fit():
    """One number per packet lives as long as the Analysis: 4 bytes where every record fits."""
    small = HopPackets([], np.array([-1, 0, 5, 2**31 - 1], dtype=np.int64))
    assert small.conn.dtype == np.int32 and small.conn.tolist() == [-1, 0, 5, 2**31 - 1]
    big = HopPackets([], np.array([-1, 2**31], dtype=np.int64))
    assert big.conn.dtype == np.int64 and big.conn.tolist() == [-1, 2**31]
    assert HopPackets([], np.zeros(0, dtype=np.int64)).conn.dtype == np.int32


def _memory_pool(path, progress=None):
    return pa.default_memory_pool().backend_name


def test_workers_take_arrow_buffers_from_malloc_and_this_process_keeps_its_pool(tmp_path):
    """A worker's buffers come from the C library's malloc (parallel.system_memory: mimalloc hands
    freed memory back at once, and the next buffer touches new memory), in a pool of its own and in
    one kept for several steps; this process's pool is not changed."""
    from natlens.parallel import Workers

    files = [tmp_path / "a", tmp_path / "b"]
    for f in files:
        f.write_text("x")
    mine = pa.default_memory_pool().backend_name
    assert each_file(_memory_pool, [(f,) for f in files], files, jobs=2) == ["system", "system"]
    with Workers() as kept:
        kept.start(2)
        assert each_file(_memory_pool, [(f,) for f in files], files, jobs=2, kept=kept) == ["system", "system"]
    assert pa.default_memory_pool().backend_name == mine
