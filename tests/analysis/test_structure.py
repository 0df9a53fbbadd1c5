"""Bugs the old structure produced, pinned: records that disagreed with their journey, a
journey_hops that raised IndexError, and readers that each found a node's dumps their own way."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from analysis_helpers import nic_only, samples_dir

from natlens import connections as connections_mod
from natlens import netfilter
from natlens.bundle import load_bundle
from natlens.errors import NatlensError
from natlens.findings import analyze
from natlens.journeys import RECORD_COLUMNS
from natlens.nodefiles import find_node_files

PINNED_RECORD_COLUMNS = [*connections_mod.COLUMNS, "journey", "ts_corr", "point"]


@pytest.fixture
def eth0_only(tmp_path):
    """cluster-ok with only the NICs captured: conntrack.txt names the pods behind the node IP."""
    return nic_only("cluster-ok", tmp_path / "cluster-eth0")


def test_records_are_the_connection_records_plus_journey_and_corrected_time(eth0_only):
    assert RECORD_COLUMNS == PINNED_RECORD_COLUMNS
    a = analyze(eth0_only)
    assert list(a.records.columns) == PINNED_RECORD_COLUMNS
    recs = a.records.set_index("uid")
    for j in a.journeys.itertuples():
        # conntrack named the pod: the journey's client is the pod, the client's record keeps
        # what the NIC showed (the node's IP); nothing in the records says otherwise
        own = recs.loc[j.client_uid]
        assert own["journey"] == j.journey
        assert j.snat == "yes" and j.client_h == "198.18.16.100" and own["orig_h"] == "198.18.0.11"
        assert set(recs.loc[j.uids, "journey"]) == {j.journey}
    assert (a.records["ts_corr"] == a.records["ts"] - a.records["node"].map(a.offsets)).all()


def test_journey_hops_of_any_journey_and_keyerror_for_an_unknown_one(tmp_path, zeek_traces):
    d = tmp_path / "not-a-service"
    shutil.copytree(samples_dir() / "loopback-local" / "cluster", d / "cluster")
    (d / "nodes" / "n").mkdir(parents=True)
    shutil.copy(zeek_traces / "http-get" / "get.pcap", d / "nodes" / "n" / "eth0.pcap")
    a = analyze(d)
    assert a.service_journeys.empty and len(a.journeys) >= 1  # every journey is kept
    hops = a.journey_hops("J0")  # not a Service journey: still its packets, not an IndexError
    assert len(hops) == a.connections.loc[a.connections["uid"] == a.journeys.at[0, "client_uid"],
                                          ["orig_pkts", "resp_pkts"]].sum(axis=1).iloc[0]
    with pytest.raises(KeyError):
        a.journey_hops("J999")
    assert a.summary()["connections"]["total"] == 0  # the summary is about Service journeys
    a.write(tmp_path / "out")  # journeys.parquet: every journey; service_journeys.parquet: none
    assert len(pd.read_parquet(tmp_path / "out" / "journeys.parquet")) == len(a.journeys)
    assert pd.read_parquet(tmp_path / "out" / "service_journeys.parquet").empty
    with pytest.raises(NatlensError, match="no node 'node-9' in the bundle"):
        a.rules("node-9")


@pytest.fixture
def dumps_in_a_subfolder(tmp_path):
    """cluster-ok without cluster/, node-1's dumps moved into nodes/node-1/dumps/."""
    d = tmp_path / "sub"
    shutil.copytree(samples_dir() / "cluster-ok", d, ignore=shutil.ignore_patterns("cluster"))
    node = d / "nodes" / "node-1"
    (node / "dumps").mkdir()
    for name in ("iptables-save.txt", "ipset-save.txt", "ipvsadm.txt"):
        (node / name).rename(node / "dumps" / name)
    return d


def test_a_dump_in_a_subfolder_is_found_by_every_reader(dumps_in_a_subfolder):
    node_dir = dumps_in_a_subfolder / "nodes" / "node-1"
    files = find_node_files(node_dir)
    assert files.iptables == node_dir / "dumps" / "iptables-save.txt" and files.not_read == []
    assert load_bundle(dumps_in_a_subfolder).node("node-1").iptables == files.iptables
    rules = netfilter.load_node(node_dir)  # the netfilter loader finds it too
    assert netfilter.kube_services(rules)
    a = analyze(dumps_in_a_subfolder)
    # the inventory (no cluster/) took the Service from node-1's rules, and the SNAT row was
    # predicted by them
    assert any("netfilter model of node-1" in x for x in a.inferred)
    row = a.snat[a.snat["source_node"] == "node-1"].iloc[0]
    assert bool(row["predicted_by_rules"]) and not row["rule_trace"][0].startswith("node-1: no")


def test_the_shallowest_copy_of_a_dump_wins(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "iptables-save.txt").write_text("*nat\nCOMMIT\n")
    (tmp_path / "old" / "iptables-save.txt").write_text("*nat\nCOMMIT\n")
    (tmp_path / ".DS_Store").write_text("")
    f = find_node_files(tmp_path)
    assert f.iptables == tmp_path / "iptables-save.txt"
    assert f.not_read == [tmp_path / "old" / "iptables-save.txt"]  # listed, not silently dropped


def test_a_capture_in_a_hidden_folder_is_read_and_dotfiles_are_not_listed(tmp_path):
    (tmp_path / ".rotated").mkdir()
    (tmp_path / ".rotated" / "eth0.pcap").write_bytes(b"")
    (tmp_path / ".swp").write_text("")
    f = find_node_files(tmp_path)
    assert f.captures == [tmp_path / ".rotated" / "eth0.pcap"] and f.not_read == []


def test_files_of_a_tarballed_node_are_named_inside_the_bundle(tmp_path):
    import tarfile

    d = tmp_path / "tarred"
    shutil.copytree(samples_dir() / "loopback-local", d)
    with tarfile.open(d / "nodes" / "node-1.tar.gz", "w:gz") as tf:
        tf.add(d / "nodes" / "node-1", arcname="node-1")
    shutil.rmtree(d / "nodes" / "node-1")
    s = analyze(d).summary()
    files = sorted(c["file"] for c in s["inputs"]["captures"])
    assert files == ["nodes/node-1 (tarball)/any.pcap", "nodes/node-1 (tarball)/eth0.pcap",
                     "nodes/node-2/any.pcap", "nodes/node-2/eth0.pcap"]


def test_a_retina_shaped_node_gives_the_rules_its_addresses(tmp_path):
    """Retina's ip-resources.txt reaches the netfilter model too (the model once looked only
    for ip-addr.*), so the rules can decide SNAT for the node's pods."""
    d = tmp_path / "retina"
    shutil.copytree(samples_dir() / "loopback-local", d)
    node = d / "nodes" / "node-1"
    (node / "iptables-save.txt").rename(node / "iptables-rules.txt")
    (node / "ip-addr.json").rename(node / "ip-resources.txt")
    (node / "ip-route.json").unlink()
    assert load_bundle(d).node("node-1").shape == "retina"
    a = analyze(d)
    row = a.snat[a.snat["source_node"] == "node-1"].iloc[0]
    assert row["ratio"] == 0.0 and bool(row["predicted_by_rules"]), row["rule_trace"]


def _as_written(frame: pd.DataFrame, path) -> pd.DataFrame:
    frame.to_parquet(path, index=False)
    return pd.read_parquet(path)


@pytest.mark.parametrize("sample", ["cluster-ok", "mixed"])
def test_each_journey_table_file_is_its_own_frame_written(tmp_path, sample):
    """service_journeys.parquet is the Service journeys, whether they are every journey (the file
    is then journeys.parquet's) or not: here the same rows in another order."""
    a = analyze(samples_dir() / sample)
    # every journey a Service's: one frame, not a copy of every column
    assert (a.service_journeys is a.journeys) == (len(a.service_journeys) == len(a.journeys))
    a.write(tmp_path / "out")
    for name in ("journeys", "service_journeys"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / f"{name}.parquet"),
                                      _as_written(getattr(a, name), tmp_path / "x.parquet"))
    a.service_journeys = a.journeys.iloc[::-1]
    a.write(tmp_path / "rev")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "rev" / "service_journeys.parquet"),
                                  _as_written(a.journeys.iloc[::-1], tmp_path / "x.parquet"))


def test_a_big_table_written_in_slices_reads_back_as_pandas_writes_it(tmp_path, monkeypatch):
    """findings.analysis writes big tables a slice of rows at a time: the same frame, types and
    attrs, also for a column missing in every row of the first slice."""
    from natlens.findings import analysis
    monkeypatch.setattr(analysis, "PARQUET_ROWS", 3)
    f = pd.DataFrame({"a": ["x", None, "y", "z", None, "w", "v"], "n": range(7), "late": [None] * 3 + ["q"] * 4,
                      "hops": [["u", "v"]] * 7, "f": [0.5, None, 1.0, 2.0, 3.0, 4.0, 5.0],
                      "flag": [None] * 4 + [True, False, True], "never": [None] * 7})
    f.attrs = {"packets": 7, "skipped": {"short": 1}}
    analysis._to_parquet(f, tmp_path / "sliced.parquet")
    got = pd.read_parquet(tmp_path / "sliced.parquet")
    pd.testing.assert_frame_equal(got, _as_written(f, tmp_path / "whole.parquet"))
    assert got.attrs == f.attrs and got.loc[3, "late"] == "q"


def test_the_journeys_leave_the_connections_they_are_built_from_as_they_were(eth0_only):
    """join_records shares the connections' columns (pandas copies on write): building the
    journeys adds columns to the records and changes nothing in the connections."""
    from natlens.journeys import build_journeys
    from natlens.journeys.join import join_records
    a = analyze(eth0_only)
    before = a.connections.copy()
    r = join_records(a.connections, a.offsets, {})
    r.loc[r.index[0], "orig_h"] = "198.18.99.99"  # a change to a shared column stays in the records
    build_journeys(a.connections, a.inventory, offsets=a.offsets)
    pd.testing.assert_frame_equal(a.connections, before)
    assert "jn" not in a.connections
