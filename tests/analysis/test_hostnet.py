"""host_network and SNAT from the TTL on the node's NIC (natlens.journeys.hostnet).

Hand-built placed records (as natlens.journeys.client.place_records makes them) for the
rule, then the samples: a NIC-only capture of a Cluster Service shows every connection
leaving with the node's IP, and the TTL one less than 64 says the node forwarded it.
"""

from __future__ import annotations

import pandas as pd
import pytest
from analysis_helpers import nic_only, samples_dir

from natlens.findings import analyze
from natlens.inventory import NODE_COLUMNS, POD_COLUMNS, SERVICE_COLUMNS, Inventory
from natlens.journeys import Decision, classify_host_network, snat_from_ttl
from natlens.journeys.hostnet import host_network_and_snat, ttl_readings

POD, NODE1, VIP, NODE6, VIP6 = "198.18.16.100", "198.18.0.11", "198.19.0.10", "fd00::11", "fd00:19::10"
INV = Inventory(
    nodes=pd.DataFrame([{"name": "node-1", "internal_ip": NODE1, "addresses": [NODE1, NODE6],
                         "pod_cidr": "198.18.16.0/24", "pod_cidrs": ["198.18.16.0/24"], "source": "t"}],
                       columns=NODE_COLUMNS),
    pods=pd.DataFrame([{"namespace": "d", "name": "client", "ip": POD, "ips": [POD], "node": "node-1",
                        "host_network": False, "source": "t"}], columns=POD_COLUMNS),
    services=pd.DataFrame(columns=SERVICE_COLUMNS))
CT = "nodes/node-1/conntrack.txt"


def rec(jn: int, ttl: int | None, *, src: str = f"{NODE1}:5000", dst: str = f"{VIP}:80",
        node: str = "node-1", capture: str = "eth0", egress: bool = True, n: int | None = None) -> dict:
    """One placed record of journey jn whose client is its first source (src "addr:port")."""
    (sh, sp), (dh, dp) = (x.rsplit(":", 1) for x in (src, dst))
    is_node = sh in (NODE1, NODE6)
    return {"jn": jn, "_t": float(jn), "uid": f"{node}/{capture}#{jn if n is None else n}", "node": node,
            "capture": f"{node}/{capture}", "orig_h": sh, "orig_p": int(sp), "resp_h": dh, "resp_p": int(dp),
            "orig_ttl": pd.NA if ttl is None else ttl, "orig_dir": None, "pre_lb": dh in (VIP, VIP6),
            "on_client": node == "node-1", "egress": egress, "from_client": True,
            "hop": f"{node}/{capture}: {src} -> {dst}", "j_client_h": sh, "j_client_p": int(sp),
            "j_client_node_ip": NODE6 if ":" in sh else NODE1, "j_client_is_node": is_node}


def placed(*rows: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(records, client table) of the journeys of these records (the client: the first record's)."""
    r = pd.DataFrame(rows)
    r["orig_ttl"] = r["orig_ttl"].astype("Int64")
    first = r.drop_duplicates("jn").set_index("jn")
    cl = pd.DataFrame({"client_h": first["orig_h"], "client_p": first["orig_p"], "client_node": "node-1",
                       "client_node_ip": first["j_client_node_ip"], "client_is_node": first["j_client_is_node"],
                       "vip": first["resp_h"], "vport": first["resp_p"], "proto": "tcp"})
    return r, cl


def unknown_snat(cl: pd.DataFrame, evidence: dict[int, str] | None = None) -> Decision:
    """classify_snat's answer for node-IP sources: unknown (evidence: what conntrack said)."""
    ev = pd.Series("the first capture point already shows the node's IP as the source", index=cl.index,
                   dtype=object)
    for j, e in (evidence or {}).items():
        ev[j] = e
    return Decision(pd.Series("unknown", index=cl.index, dtype=object), ev,
                    {"snat_to": pd.Series(None, index=cl.index, dtype=object)})


def decide(*rows: dict, conntrack: dict[int, str] | None = None, fixes: pd.DataFrame | None = None):
    r, cl = placed(*rows)
    fixes = fixes if fixes is not None else pd.DataFrame(columns=["client_h", "client_p", "client_is_node"])
    return host_network_and_snat(r, cl, INV, unknown_snat(cl, conntrack), fixes)


# --- the rule -----------------------------------------------------------------------------
def test_ttl_63_with_the_initial_64_learned_from_the_nodes_own_connection_is_a_snated_pod():
    own = f"{CT}:3: the node itself opened {NODE1}:4000 -> {VIP}:80 (a host-network client)"
    host, snat = decide(rec(0, 64, src=f"{NODE1}:4000"), rec(1, 63, src=f"{NODE1}:26680"),
                        conntrack={0: own})
    assert (host.value[0], snat.value[0]) == ("yes", "unknown")  # conntrack's word, SNAT not applicable
    assert host.evidence[0] == own
    assert (host.value[1], snat.value[1], snat.detail["snat_to"][1]) == ("no", "yes", f"{NODE1}:26680")
    ev = host.evidence[1]
    assert ev.startswith(f"node-1/eth0: {NODE1}:26680 -> {VIP}:80: TTL 63, one less than the initial TTL 64")
    assert "forwarded by the node" in ev and "learned from node-1/eth0#0" in ev and "assumed" not in ev
    assert snat.evidence[1].startswith(f"node-1/eth0: {NODE1}:26680 -> {VIP}:80 (left with the node IP")
    assert "SNATed" in snat.evidence[1] and "learned from node-1/eth0#0" in snat.evidence[1]


def test_ttl_63_without_the_nodes_own_traffic_is_forwarded_by_the_assumed_initial_64():
    host, snat = decide(rec(0, 63, src=f"{NODE1}:26680"))
    assert (host.value[0], snat.value[0], snat.detail["snat_to"][0]) == ("no", "yes", f"{NODE1}:26680")
    assert "TTL 63, one less than the initial TTL 64" in host.evidence[0]
    assert "initial TTL assumed: one of the common initial values 64/128/255" in host.evidence[0]
    assert "no connection of the node's own in this capture" in host.evidence[0]


def test_ttl_64_is_the_node_itself_and_snat_does_not_apply():
    host, snat = decide(rec(0, 64))
    assert (host.value[0], snat.value[0]) == ("yes", "unknown")
    assert "TTL 64, the initial TTL itself: sent by the node itself" in host.evidence[0]
    assert snat.detail["snat_to"].isna()[0] and "SNAT does not apply" in snat.evidence[0]


@pytest.mark.parametrize(("ttl", "host", "initial"), [(127, "no", 128), (128, "yes", 128),
                                                      (254, "no", 255), (255, "yes", 255)])
def test_the_other_common_initial_ttls(ttl, host, initial):
    r, cl = placed(rec(0, ttl))
    t = ttl_readings(r, cl)
    assert t.initial[0] == initial
    d, snat = decide(rec(0, ttl))
    assert d.value[0] == host and snat.value[0] == ("yes" if host == "no" else "unknown")


def test_a_ttl_that_fits_no_initial_value_stays_unknown():
    host, snat = decide(rec(0, 60))
    assert (host.value[0], snat.value[0]) == ("unknown", "unknown")
    assert "TTL 60, neither a common initial value (64/128/255) nor one less" in host.evidence[0]
    assert "cannot tell whether the node sent or forwarded it" in host.evidence[0]
    assert "TTL 60" in snat.evidence[0]  # the reason SNAT stays unknown names it


def test_a_ttl_that_fits_neither_the_learned_initial_nor_one_less_stays_unknown():
    own = f"{CT}:3: the node itself opened {NODE1}:4000 -> {VIP}:80"
    host, snat = decide(rec(0, 64, src=f"{NODE1}:4000"), rec(1, 62), conntrack={0: own})
    assert (host.value[1], snat.value[1]) == ("unknown", "unknown")
    assert "TTL 62, neither the initial TTL 64 nor one less" in host.evidence[1]


def test_own_connections_with_different_ttls_teach_nothing():
    own = f"{CT}:3: the node itself opened it"
    host, _ = decide(rec(0, 64, src=f"{NODE1}:4000"), rec(1, 60, src=f"{NODE1}:4001"),
                     rec(2, 63), conntrack={0: own, 1: own})
    assert host.value[2] == "no"
    assert "left with different TTLs (60, 64)" in host.evidence[2] and "assumed" in host.evidence[2]


def test_ipv6_hop_limit():
    host, snat = decide(rec(0, 63, src=f"{NODE6}:5000", dst=f"{VIP6}:80"))
    assert (host.value[0], snat.value[0]) == ("no", "yes")
    assert "hop limit 63, one less than the initial hop limit 64" in host.evidence[0]
    host, _ = decide(rec(0, 64, src=f"{NODE6}:5000", dst=f"{VIP6}:80"))
    assert host.value[0] == "yes" and "initial hop limit itself" in host.evidence[0]


def test_a_pod_ip_source_is_no_and_its_ttl_is_not_read():
    r, cl = placed(rec(0, 63, src=f"{POD}:40000"))
    d = classify_host_network(r, cl, inventory=INV)
    assert d.value[0] == "no"
    assert d.evidence[0] == (f"the client's source {POD} is a pod's address (not its node's IP {NODE1}): "
                             "a pod's connection")
    assert ttl_readings(r, cl).sent.isna()[0]  # only a node-IP source's TTL says who sent it


def test_a_ttl_seen_off_the_clients_nic_says_nothing():
    # another node's capture, or a record inside the node: the hops between are not known
    for row in (rec(0, 63, node="node-2"), rec(0, 63, egress=False)):
        host, snat = decide(row)
        assert (host.value[0], snat.value[0]) == ("unknown", "unknown")
        assert "no capture on the node's NIC shows the TTL" in host.evidence[0]


def test_conntrack_beats_the_ttl_and_the_disagreement_is_named():
    named = f"{CT}:7: {POD}:40000 -> {VIP}:80 left as {NODE1}:5000 (the node's conntrack entry: SNATed)"
    fixes = pd.DataFrame({"client_h": [POD], "client_p": [40000], "client_is_node": [False]}, index=[0])
    host, _ = decide(rec(0, 64), conntrack={0: named}, fixes=fixes)
    assert host.value[0] == "no"
    assert host.evidence[0].startswith(named) and "the TTL says otherwise: " in host.evidence[0]


def test_an_address_natlens_cannot_place_is_unknown():
    r, cl = placed(rec(0, 63, src="203.0.113.9:5000"))
    cl["client_node_ip"] = None
    d = classify_host_network(r, cl, inventory=INV)
    assert d.value[0] == "unknown" and "neither a known pod IP nor a node IP" in d.evidence[0]


def test_snat_from_ttl_leaves_a_decided_journey_alone():
    r, cl = placed(rec(0, 63))
    done = Decision(pd.Series(["no"], index=cl.index), pd.Series(["seen"], index=cl.index),
                    {"snat_to": pd.Series([None], index=cl.index, dtype=object)})
    host = classify_host_network(r, cl, inventory=INV)
    assert host.value[0] == "no"
    d = snat_from_ttl(done, host, ttl_readings(r, cl))
    assert (d.value[0], d.evidence[0]) == ("no", "seen")


# --- the samples --------------------------------------------------------------------------
def _without_conntrack(d):
    for ct in d.glob("nodes/*/conntrack.txt"):
        ct.unlink()
    return d


def test_records_carry_the_ttl_their_originator_sent():
    a = analyze(samples_dir() / "cluster-ok")
    c = a.connections
    to_vip = c[(c["resp_h"] == VIP) & (c["node"] == "node-1")]
    assert set(to_vip.loc[to_vip["orig_h"] == POD, "orig_ttl"]) == {64}  # inside the node
    assert set(to_vip.loc[to_vip["orig_h"] == NODE1, "orig_ttl"]) == {63}  # on its NIC, forwarded


@pytest.mark.parametrize("conntrack", [False, True])
def test_nic_only_cluster_service_is_snated_every_time(tmp_path, conntrack):
    d = nic_only("cluster-ok", tmp_path / "c")
    if not conntrack:
        _without_conntrack(d)
    a = analyze(d)
    j = a.journeys
    assert len(j) == 20 and (j["snat"] == "yes").all() and (j["host_network"] == "no").all()
    if not conntrack:  # the TTL decides; the journey's client stays what the NIC showed
        assert (j["client_h"] == NODE1).all() and j["snat_to"].str.startswith(NODE1 + ":").all()
        assert j["snat_evidence"].str.contains("TTL 63, one less than the initial TTL 64").all()
        assert j["host_network_evidence"].str.contains("initial TTL assumed").all()
    else:  # conntrack names the pod
        assert (j["client_h"] == POD).all() and j["host_network_evidence"].str.contains("conntrack").all()
    (row,) = a.summary()["snat"]
    assert (row["host_network"], row["policy"], row["ratio"]) == ("no", "Cluster", 1.0)
    assert (row["connections"], row["snat"], row["no_snat"], row["unknown"]) == (20, 20, 0, 0)
    assert row["predicted_by_rules"] is True


def test_nic_only_local_service_is_not_snated(tmp_path):
    a = analyze(_without_conntrack(nic_only("loopback-local", tmp_path / "l")))
    j = a.journeys
    assert (j["snat"] == "no").all() and (j["host_network"] == "no").all() and (j["client_h"] == POD).all()
    assert j["host_network_evidence"].str.contains("is a pod's address").all()
    (row,) = a.summary()["snat"]
    assert (row["host_network"], row["ratio"], row["snat"], row["no_snat"], row["unknown"]) == (
        "no", 0.0, 0, 20, 0)


@pytest.mark.parametrize("sample", ["cluster-ok", "loopback-local", "mixed"])
def test_full_samples_are_pods_and_the_rows_counts_agree(sample):
    a = analyze(samples_dir() / sample)
    assert (a.journeys["host_network"] == "no").all()
    for row in a.summary()["snat"]:
        assert row["host_network"] == "no"
        assert row["snat"] + row["no_snat"] + row["unknown"] == row["connections"]
        assert row["unknown"] == 0 and row["ratio"] == (1.0 if row["policy"] == "Cluster" else 0.0)
