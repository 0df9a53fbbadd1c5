"""Dask distributed (natlens.cluster): a LocalCluster of two workers gives the analysis one
process gives, on every sample and on a generated 4-capture incident; errors are one line;
the packets a worker kept are read through it and removed when no longer shown."""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
from analysis_helpers import samples_dir

from natlens import cluster
from natlens.errors import NatlensError
from natlens.findings import analyze
from natlens.findings.captures import HopPackets

SAMPLES = sorted(p.name for p in samples_dir().iterdir() if p.is_dir())
GEN = Path(__file__).resolve().parents[2] / "bench" / "gen_capture.py"


@pytest.fixture(scope="module")
def scheduler():
    with cluster.local_cluster(2) as address:
        yield address


def _same(one, two) -> None:
    assert json.dumps(one.summary(), default=str) == json.dumps(two.summary(), default=str)
    pd.testing.assert_frame_equal(one.journeys, two.journeys)
    pd.testing.assert_frame_equal(one.connections, two.connections)


@pytest.mark.parametrize("sample", SAMPLES)
def test_a_cluster_gives_the_analysis_one_process_gives(sample, scheduler):
    here, there = analyze(samples_dir() / sample), analyze(samples_dir() / sample, scheduler=scheduler)
    _same(here, there)
    assert all(h.worker and h.scheduler == scheduler for h in there._hops.values())  # kept on the workers
    for jid in here.journeys["journey"]:
        pd.testing.assert_frame_equal(here.journey_hops(jid), there.journey_hops(jid))


@pytest.fixture(scope="module")
def incident(tmp_path_factory) -> Path:
    """Two nodes, two generated captures each (different connection lengths and seeds)."""
    spec = importlib.util.spec_from_file_location("gen_capture", GEN)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    root = tmp_path_factory.mktemp("incident")
    for i, (node, eth) in enumerate([(n, e) for n in ("node-a", "node-b") for e in ("eth0", "eth1")]):
        (root / "nodes" / node).mkdir(parents=True, exist_ok=True)
        gen.generate(root / "nodes" / node / f"{eth}.pcap", 20_000 + 5_000 * i, per_conn=(10, 100)[i % 2], seed=i)
    return root


def test_a_cluster_gives_the_analysis_of_a_generated_four_capture_incident(incident, scheduler):
    here, there = analyze(incident), analyze(incident, scheduler=scheduler, progress=True)
    assert len(there.inputs) == 4 and sum(c["records"] for c in there.inputs) == 4 * 20_000 + 5_000 * 6
    _same(here, there)
    row = there.connections.index[len(there.connections) // 2]
    cap = there.connections.at[row, "capture"]
    pd.testing.assert_frame_equal(here._hops[cap].in_connections(), there._hops[cap].in_connections())


def _kept() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("natlens-hops-*/*.arrow"))


def test_a_bad_capture_on_a_cluster_is_the_error_one_process_gives_and_leaves_no_file(tmp_path, scheduler):
    b = tmp_path / "b"
    shutil.copytree(samples_dir() / "mixed", b)
    (next((b / "nodes").iterdir()) / "zz.pcap").write_bytes(b"not a capture at all, just text" * 4)
    before = _kept()
    with pytest.raises(NatlensError) as here:
        analyze(b)
    with pytest.raises(NatlensError) as there:
        analyze(b, scheduler=scheduler)
    assert str(here.value) == str(there.value) and "zz.pcap" in str(there.value)
    gc.collect()
    deadline = time.monotonic() + 20  # a job still running when the error came removes its file when it ends
    while not _kept() <= before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _kept() <= before


def test_the_packets_a_worker_kept_go_when_their_analysis_goes(scheduler):
    a = analyze(samples_dir() / "mixed", scheduler=scheduler)
    paths = [f for h in a._hops.values() for f in h.files]
    assert paths and all(p.exists() for p in paths)  # the workers are on this machine
    del a
    gc.collect()  # a finalizer asks for the removal; the next call into the cluster does it
    analyze(samples_dir() / "cluster-ok", scheduler=scheduler)
    assert not any(p.exists() for p in paths)


def test_letting_go_of_a_cluster_removes_what_this_process_left_on_it(scheduler):
    a = analyze(samples_dir() / "mixed", scheduler=scheduler)
    paths = [f for h in a._hops.values() for f in h.files]
    cluster.forget(scheduler)  # as the CLI does when its run ends, the Analysis still alive
    assert not any(p.exists() for p in paths)
    del a
    gc.collect()  # nothing left to remove, and no new client is made to remove it


def _report(path, progress=None):
    for _ in range(5):
        progress(path.stat().st_size // 5)
    progress(path.stat().st_size % 5)
    return path.name


def test_workers_report_every_byte_read_to_the_bars(tmp_path, scheduler):
    files = []
    for i, n in enumerate((1234, 98765, 5)):
        files.append(tmp_path / f"c{i}")
        files[-1].write_bytes(b"x" * n)
    seen = {i: 0 for i in range(3)}

    def advance(i):
        return lambda n: seen.__setitem__(i, seen[i] + n)

    assert cluster.each_file_on(scheduler, _report, [(f,) for f in files], files, advance) == ["c0", "c1", "c2"]
    assert seen == {0: 1234, 1: 98765, 2: 5}


def test_a_file_no_worker_sees_says_where_the_bundle_must_be(tmp_path, scheduler):
    missing = tmp_path / "elsewhere.pcap"
    with pytest.raises(NatlensError, match=r"elsewhere.pcap: not found on any of the 2 Dask worker\(s\).*same path"):
        cluster.each_file_on(scheduler, _report, [(missing,)], [missing], lambda i: None)


class _Cluster:
    """A client whose workers each see some files (a node directory on a worker's own disk)."""

    def __init__(self, sees: dict[str, set[str]]) -> None:
        self.sees = sees

    def run(self, fn, files):
        return {w: [f in seen for f in files] for w, seen in self.sees.items()}


def test_a_capture_is_read_by_the_workers_that_see_it():
    c = _Cluster({"tcp://w1:1": {"/b/nodes/n1/eth0.pcap", "/b/nodes/shared.pcap"},
                  "tcp://w2:1": {"/b/nodes/n2/eth0.pcap", "/b/nodes/shared.pcap"}})
    files = [Path("/b/nodes/n1/eth0.pcap"), Path("/b/nodes/n2/eth0.pcap"), Path("/b/nodes/shared.pcap")]
    assert cluster.placement(c, files) == [["tcp://w1:1"], ["tcp://w2:1"], None]  # None: any worker
    with pytest.raises(NatlensError, match=r"/b/nodes/n3/eth0.pcap: not found on any of the 2"):
        cluster.placement(c, [*files, Path("/b/nodes/n3/eth0.pcap")])


def test_every_worker_of_a_local_cluster_sees_the_bundle(scheduler):
    files = sorted((samples_dir() / "mixed").rglob("*.pcap"))
    assert files and cluster.placement(cluster.client(scheduler), files) == [None] * len(files)


def test_packets_of_a_worker_that_has_gone_are_a_one_line_error(scheduler):
    hops = HopPackets([Path("/nowhere/h.arrow")], np.zeros(3, dtype=np.int64), worker="tcp://127.0.0.1:1",
                      scheduler=scheduler)
    with pytest.raises(NatlensError, match="Dask worker tcp://127.0.0.1:1 has gone"):
        hops.of(0)


def test_no_scheduler_at_the_address_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(NatlensError, match=f"--scheduler tcp://127.0.0.1:{port}: no Dask scheduler answers there"):
        analyze(samples_dir() / "mixed", scheduler=f"tcp://127.0.0.1:{port}")


def _die(path, progress=None):
    os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer does


def test_a_worker_killed_is_a_one_line_error_naming_what_was_not_read(tmp_path):
    f = tmp_path / "big.pcap"
    f.write_bytes(b"x")
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), cluster.local_cluster(1) as s, \
            pytest.raises(NatlensError, match="a Dask worker died .* while reading .*big.pcap") as e:
        cluster.each_file_on(s, _die, [(f,)], [f], lambda i: None)
    assert "\n" not in str(e.value)


def test_workers_must_be_one_or_more():
    with pytest.raises(NatlensError, match="--workers must be 1 or more, not 0"), cluster.local_cluster(0):
        pass


def test_without_dask_the_cluster_options_say_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now fails
    with pytest.raises(NatlensError, match="need Dask: pip install dask distributed"):
        cluster.client("tcp://127.0.0.1:8786")


def test_a_cluster_without_a_worker_is_a_one_line_error_not_a_wait(tmp_path, monkeypatch):
    import distributed

    monkeypatch.setattr(cluster, "WORKERLESS_S", 1)
    f = tmp_path / "c.pcap"
    f.write_bytes(b"x")
    with distributed.LocalCluster(n_workers=0, dashboard_address="127.0.0.1:0") as empty:
        with pytest.raises(NatlensError, match="the Dask cluster has no worker .start one: dask worker tcp://"):
            cluster.each_file_on(empty.scheduler_address, _report, [(f,)], [f], lambda i: None)
        cluster.forget(empty.scheduler_address)


def test_a_capture_placed_on_one_worker_is_read_there(scheduler, monkeypatch):
    workers = sorted(cluster.client(scheduler).nthreads())
    assert len(workers) == 2
    monkeypatch.setattr(cluster, "placement", lambda c, files: [[workers[1]]] * len(files))
    a = analyze(samples_dir() / "mixed", scheduler=scheduler)
    assert {h.worker for h in a._hops.values()} == {workers[1]}


def test_captures_that_are_links_keep_their_own_names_on_a_cluster(incident, tmp_path, scheduler):
    """A bundle whose captures link elsewhere (two names for one file, as the bench's): each is
    labelled by its own name on the workers too, never by the file it links to."""
    node = tmp_path / "linked" / "nodes" / "node-a"
    node.mkdir(parents=True)
    target = incident / "nodes" / "node-a" / "eth0.pcap"
    for name in ("eth0.pcap", "eth1.pcap"):
        (node / name).symlink_to(target)
    here, there = analyze(tmp_path / "linked"), analyze(tmp_path / "linked", scheduler=scheduler)
    _same(here, there)
    assert sorted(there._hops) == ["node-a/eth0", "node-a/eth1"]
    there.write(tmp_path / "out")  # one uid per record: the conn.log joins on it


def _trim_threshold():
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_local_workers_keep_mallocs_own_trim_threshold(scheduler):
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536: every freed block went back to the system
    and came back at a page fault each (a fifth of a big capture's reading time)."""
    assert set(cluster.client(scheduler).run(_trim_threshold).values()) == {None}
    assert "MALLOC_TRIM_THRESHOLD_" not in cluster.worker_environ()


def test_an_analysis_on_one_machine_never_loads_distributed():
    """Loading distributed costs ~0.4 s per process; only a cluster run needs it."""
    script = ("import sys; from natlens.findings import analyze; "
              f"analyze({str(samples_dir() / SAMPLES[0])!r}); print('distributed' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
