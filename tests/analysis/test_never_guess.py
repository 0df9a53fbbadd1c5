"""Missing evidence gives "unknown", never a definite yes/no (review of journeys/findings).

Each case is a copy of a lab sample with files removed, so the truth is known from its
ground-truth/connections.jsonl while the bundle no longer shows it.
"""

from __future__ import annotations

import shutil

import pytest
from analysis_helpers import samples_dir

from natlens.findings import analyze


def _copy(tmp_path, sample: str, *remove: str):
    d = tmp_path / sample
    shutil.copytree(samples_dir() / sample, d)
    for pattern in remove:
        for f in d.glob(pattern):
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    return d


def test_loopback_not_ruled_out_when_the_syn_came_back_to_an_unknown_address(tmp_path):
    # no cluster/, no ip-addr.json: node IPs are unknown, so the SYN's copy coming back to
    # nodeIP:NodePort names no node; it came back all the same, so "no" would be wrong
    a = analyze(_copy(tmp_path, "loopback-local", "cluster", "nodes/*/ip-addr.json"))
    j = a.journeys
    assert len(j) == 20
    failed = j[j["outcome"] == "timed out"]
    assert len(failed) == 11  # truth: 11 loopbacks, all failed
    assert (failed["loopback"] != "no").all()
    assert "came back" in failed["loopback_evidence"].iloc[0]
    # the 9 established ones left the NIC and nothing came back: "no" stays
    assert (j.loc[j["outcome"] == "established", "loopback"] == "no").all()


def test_client_node_is_not_the_capturing_node_by_default(tmp_path):
    # only node-2 (the backend) captured, no cluster/: the client's pod IP is in no
    # inventory; its connections arriving at node-2's NodePort are not node-2's own
    a = analyze(_copy(tmp_path, "loopback-local", "cluster", "nodes/node-1"))
    j = a.journeys
    assert len(j) == 9
    assert j["client_node"].isna().all()
    assert (j["loopback"] == "unknown").all()
    assert a.summary()["loopback"]["hits"] == 0
    (row,) = a.summary()["snat"]
    assert row["source_node"] == "unknown" and row["connections"] == 9


def test_snat_unknown_when_the_node_ip_is_unknown(tmp_path):
    # only node-1's eth0 capture, no cluster/, no ip-addr: the source on the NIC is the node IP
    # (all 20 SNATed), but nothing says whether that address is the pod's or the node's
    d = _copy(tmp_path, "cluster-ok", "cluster", "nodes/*/ip-addr*", "nodes/node-2",
              "nodes/node-1/any.pcap", "nodes/node-1/conntrack.txt")
    a = analyze(d)
    j = a.journeys
    assert len(j) == 20
    assert (j["snat"] == "unknown").all()
    assert "neither a known pod IP" in j["snat_evidence"].iloc[0]
    (row,) = a.summary()["snat"]
    assert row["snat"] == 0 and row["ratio"] is None


@pytest.mark.parametrize("sample", ["cluster-ok", "loopback-local"])
def test_full_samples_still_decide(sample):
    j = analyze(samples_dir() / sample).journeys
    assert (j["snat"] != "unknown").all() and (j["loopback"] != "unknown").all()


def test_host_network_clients_are_their_own_snat_row(tmp_path):
    # eth0 captures only; node-1's conntrack says half of the nodeIP:port -> VIP connections
    # were opened by the node itself (host network), the other half SNATed from the pod
    import re

    d = _copy(tmp_path, "cluster-ok", "nodes/*/any.pcap")
    ct = d / "nodes" / "node-1" / "conntrack.txt"
    pat = re.compile(r"src=198\.18\.16\.100 dst=(198\.19\.0\.10) sport=\d+ "
                     r"(dport=80 src=198\.19\.0\.10 dst=(198\.18\.0\.11) sport=80 dport=(\d+))")
    out, k = [], 0
    for line in ct.read_text().splitlines():
        m = pat.search(line)
        if m and k % 2 == 0:
            line = line.replace(m.group(0), f"src={m.group(3)} dst={m.group(1)} sport={m.group(4)} {m.group(2)}")
        k += bool(m)
        out.append(line)
    assert k == 20
    ct.write_text("\n".join(out) + "\n")
    a = analyze(d)
    j = a.journeys
    assert j["client_is_node"].sum() == 10
    assert (j.loc[j["client_is_node"], "snat"] == "unknown").all()
    assert (j.loc[~j["client_is_node"], "snat"] == "yes").all()
    rows = {r["host_network"]: r for r in a.summary()["snat"]}
    assert set(rows) == {"yes", "no"}
    assert rows["yes"]["connections"] == rows["no"]["connections"] == 10
    assert rows["no"]["snat"] == 10
    # the rules are asked about the node's own packet (nat/OUTPUT), not a pod's via cni0
    assert "generated on the node" in rows["yes"]["rule_trace"][0]
    assert "via cni0" in rows["no"]["rule_trace"][0]


def test_a_connection_without_its_client_record_is_counted_and_kept(tmp_path):
    from analysis_helpers import pcap_file, tcp

    d = tmp_path / "stray"
    shutil.copytree(samples_dir() / "loopback-local" / "cluster", d / "cluster")
    (d / "nodes" / "node-1").mkdir(parents=True)
    t0 = 1_800_000_000.0
    pod, vip = ("198.18.16.100", 41000), ("198.19.0.10", 80)
    pcap_file(d / "nodes" / "node-1" / "eth0.pcap", [
        (t0, tcp(*pod, *vip, 0x02, 1000)), (t0 + 0.001, tcp(*vip, *pod, 0x12, 5000, 1001)),
        (t0 + 0.002, tcp(*pod, *vip, 0x10, 1001, 5001)),
        # the capture missed this one's SYN: only the VIP's SYN-ACK to the pod
        (t0 + 1.0, tcp(*vip, pod[0], 41002, 0x12, 7000, 2001))])
    a = analyze(d)
    j = a.journeys
    assert len(j) == 2 and j["client_uid"].isna().sum() == 1
    stray = j[j["client_uid"].isna()].iloc[0]
    assert stray["proto"] == "tcp" and stray["service"] == "198.19.0.10:80/tcp"
    assert stray["outcome"] == "unknown" and stray["snat"] == "unknown"
    assert any("1 connection seen without the client's own record" in x and "1 of them" in x
               for x in a.summary()["inputs"]["inferred"])
    assert a.summary()["connections"]["total"] == 2


def test_conflicting_conntrack_entries_for_one_tuple_decide_nothing(tmp_path):
    # eth0 captures only: SNAT comes from node-1's conntrack. Give one SNATed tuple a second
    # entry in which the node itself opened it (an older connection on the same tuple)
    import re

    d = _copy(tmp_path, "cluster-ok", "nodes/*/any.pcap")
    ct = d / "nodes" / "node-1" / "conntrack.txt"
    lines = ct.read_text().splitlines()
    pat = re.compile(r"src=198\.18\.16\.100 dst=198\.19\.0\.10 sport=\d+ "
                     r"(dport=80 src=198\.19\.0\.10 dst=198\.18\.0\.11 sport=80 dport=(\d+))")
    m = next(m for m in map(pat.search, lines) if m)
    lines.insert(0, f"tcp      6 60 TIME_WAIT src=198.18.0.11 dst=198.19.0.10 sport={m.group(2)} {m.group(1)} "
                    "[ASSURED] mark=0 use=1")
    ct.write_text("\n".join(lines) + "\n")
    j = analyze(d).journeys
    amb = j[j["snat_evidence"].str.contains("name different clients", regex=False)]
    assert len(amb) == 1
    row = amb.iloc[0]
    # conntrack decides nothing for it, and cannot name its pod; the TTL on the NIC still shows
    # the node forwarded it (a pod's connection, SNATed)
    assert f"198.18.0.11:{m.group(2)}" == f"{row['client_h']}:{row['client_p']}"
    assert row["snat"] == "yes" and "TTL 63" in row["snat_evidence"]
    assert (j.drop(amb.index)["snat_evidence"].str.contains("conntrack entry: SNATed", regex=False)).all()


def test_a_bug_in_the_netfilter_model_is_raised_not_a_note(monkeypatch):
    from natlens import netfilter
    from natlens.errors import NatlensError

    def bad_dump(path):
        raise NatlensError("unsupported table", path=path)

    monkeypatch.setattr(netfilter, "load_node", bad_dump)
    a = analyze(samples_dir() / "cluster-ok")  # bad input: a note, the analysis goes on
    assert all(r is None for r in a.snat["predicted_by_rules"])
    assert any("unsupported table" in x for x in a.summary()["inputs"]["inferred"])

    def bug(path):
        raise AttributeError("'NodeRules' object has no attribute 'walker_for'")

    monkeypatch.setattr(netfilter, "load_node", bug)
    with pytest.raises(AttributeError):
        analyze(samples_dir() / "cluster-ok")
