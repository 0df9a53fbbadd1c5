"""A hostname-only ingress (AWS's NLB/ELB) gets the address the captures show its load balancer at
(natlens.journeys.ingress), by one rule: a SYN to an address that is nobody's in the cluster, on the
Service's port, that also arrived at a node's NodePort of that Service."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from analysis_helpers import samples_dir

from natlens.findings import analyze
from natlens.inventory import NODE_COLUMNS, POD_COLUMNS, SERVICE_COLUMNS, Inventory
from natlens.journeys.ingress import match_hostname_ingress

HOST = "web-0123456789.elb.us-east-1.amazonaws.com"


def _inventory(hostname: str | None = HOST, lb_ip: str | None = None) -> Inventory:
    nodes = pd.DataFrame([{"name": f"node-{i}", "internal_ip": f"198.18.0.1{i}", "addresses": (f"198.18.0.1{i}",),
                           "pod_cidr": f"198.18.1{5 + i}.0/24", "pod_cidrs": (f"198.18.1{5 + i}.0/24",),
                           "source": "t", "provider_id": f"aws:///us-east-1a/i-000{i}", "cloud": "aws"}
                          for i in (1, 2)], columns=NODE_COLUMNS)
    svc = {"namespace": "default", "name": "web", "type": "LoadBalancer", "cluster_ip": "198.18.128.10",
           "cluster_ips": ("198.18.128.10",), "lb_ip": lb_ip, "port": 80, "proto": "tcp", "node_port": 30080,
           "target_port": 8080, "policy": "Local", "source": "cluster/services.json", "ip_mode": None,
           "lb_hostname": hostname, "lb_class": None,
           "lb_annotations": (("service.beta.kubernetes.io/aws-load-balancer-type", "external"),)}
    return Inventory(nodes=nodes, pods=pd.DataFrame(columns=POD_COLUMNS),
                     services=pd.DataFrame([svc], columns=SERVICE_COLUMNS))


def _conn(capture: str, n: int, orig: str, resp: str, isn: int, orig_dir: str | None = "out") -> dict:
    (oh, op), (rh, rp) = orig.rsplit(":", 1), resp.rsplit(":", 1)
    return {"capture": capture, "node": capture.split("/")[0], "uid": f"{capture}#{n}", "orig_h": oh,
            "orig_p": int(op), "resp_h": rh, "resp_p": int(rp), "proto": "tcp", "client_isn": isn,
            "syn_ts": 1000.0 + n, "ts": 1000.0 + n, "orig_dir": orig_dir}


def _conns(*rows: dict) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    return df.astype({"client_isn": "Int64"})


def test_the_address_a_syn_left_for_and_whose_copy_reached_a_nodeport_is_the_vip():
    inv = _inventory()
    conns = _conns(_conn("node-1/eth0", 0, "198.18.16.100:40446", "10.0.5.5:80", 111),
                   _conn("node-2/eth0", 0, "198.18.16.100:40446", "198.18.0.12:30080", 111, "in"),
                   _conn("node-1/eth0", 1, "198.18.16.100:40450", "10.0.5.5:80", 222),
                   _conn("node-1/eth0", 2, "198.18.16.100:40450", "198.18.0.11:30080", 222, "in"))
    out = match_hostname_ingress(conns, inv)
    row = out.services.iloc[0]
    assert row["lb_ip"] == "10.0.5.5" and row["source"] == "captures" and row["lb_hostname"] == HOST
    assert out.vips() == {("10.0.5.5", 80, "tcp")}
    assert out.service("10.0.5.5", 80)["name"] == "web"
    line = out.inferred[-1]
    for part in ("default/web", HOST, "10.0.5.5", "node-1/eth0 saw 198.18.16.100:40446 -> 10.0.5.5:80 leave node-1",
                 "client ISN 111", "node-2's NodePort of the Service, 198.18.0.12:30080", "2 connection(s)"):
        assert part in line, (part, line)
    # a new inventory: the one passed in is unchanged
    assert pd.isna(inv.services.iloc[0]["lb_ip"]) and inv.vips() == set() and inv.inferred == []


def test_no_match_without_the_same_syn_at_a_nodeport():
    inv = _inventory()
    conns = _conns(_conn("node-1/eth0", 0, "198.18.16.100:40446", "10.0.5.5:80", 111),
                   _conn("node-2/eth0", 0, "198.18.16.100:40446", "198.18.0.12:30080", 999, "in"),  # other ISN
                   _conn("node-1/eth0", 1, "198.18.16.100:40450", "10.0.5.5:81", 222),  # not the port
                   _conn("node-2/eth0", 1, "198.18.16.100:40450", "198.18.0.12:30080", 222, "in"),
                   _conn("node-1/eth0", 2, "198.18.16.100:40460", "10.0.5.5:80", 333),
                   _conn("node-2/eth0", 2, "198.18.16.100:40460", "198.18.0.12:30081", 333, "in"))  # other NodePort
    out = match_hostname_ingress(conns, inv)
    assert pd.isna(out.services.iloc[0]["lb_ip"]) and out.vips() == set()
    assert "no capture shows" in out.inferred[-1] and HOST in out.inferred[-1]


@pytest.mark.parametrize("dst", ["198.18.128.10",  # the cluster IP
                                 "198.18.17.10",  # a pod (inside node-2's pod CIDR)
                                 "198.18.0.12",  # a node
                                 "127.0.0.1"])
def test_an_address_of_the_cluster_is_never_taken(dst):
    conns = _conns(_conn("node-1/eth0", 0, "198.18.16.100:40446", f"{dst}:80", 111),
                   _conn("node-2/eth0", 0, "198.18.16.100:40446", "198.18.0.12:30080", 111, "in"))
    out = match_hostname_ingress(conns, _inventory())
    assert pd.isna(out.services.iloc[0]["lb_ip"])


def test_two_candidate_addresses_are_ambiguous_and_none_is_taken():
    conns = _conns(_conn("node-1/eth0", 0, "198.18.16.100:40446", "10.0.5.5:80", 111),
                   _conn("node-2/eth0", 0, "198.18.16.100:40446", "198.18.0.12:30080", 111, "in"),
                   _conn("node-1/eth0", 1, "198.18.16.100:40450", "10.0.6.6:80", 222),
                   _conn("node-2/eth0", 1, "198.18.16.100:40450", "198.18.0.12:30080", 222, "in"))
    out = match_hostname_ingress(conns, _inventory())
    assert pd.isna(out.services.iloc[0]["lb_ip"]) and out.vips() == set()
    line = out.inferred[-1]
    assert "2 candidate addresses" in line and "10.0.5.5" in line and "10.0.6.6" in line and "ambiguous" in line


def test_an_inventory_without_a_hostname_only_ingress_is_returned_as_it_is():
    inv = _inventory(hostname=None, lb_ip="198.19.0.10")
    conns = _conns(_conn("node-1/eth0", 0, "198.18.16.100:40446", "10.0.5.5:80", 111),
                   _conn("node-2/eth0", 0, "198.18.16.100:40446", "198.18.0.12:30080", 111, "in"))
    assert match_hostname_ingress(conns, inv) is inv
    assert match_hostname_ingress(pd.DataFrame(), _inventory()).inferred == []


def test_analyze_finds_the_vip_of_a_hostname_only_ingress_from_the_captures(tmp_path):
    """loopback-local with its ingress rewritten to a hostname: the same VIP, the same loopbacks."""
    d = tmp_path / "hostname"
    shutil.copytree(samples_dir() / "loopback-local", d)
    path = d / "cluster" / "services.json"
    doc = json.loads(path.read_text())
    doc["items"][0]["status"]["loadBalancer"]["ingress"] = [{"hostname": HOST}]
    path.write_text(json.dumps(doc))
    original, a = analyze(samples_dir() / "loopback-local"), analyze(d)
    assert a.inventory.vips() == {("198.19.0.10", 80, "tcp")}
    assert a.inventory.services.iloc[0]["source"] == "captures"
    assert any(HOST in x and "load-balancer address 198.19.0.10 from the captures" in x for x in a.inferred)
    assert len(a.loopback) == len(original.loopback) > 0
    assert len(a.service_journeys) == len(original.service_journeys)
