"""Dual-stack clusters: every address of a node, pod and service maps to it, not only the last one.

kubectl lists a dual-stack node's InternalIPs one per family; keeping only one of them
(the IPv6 one, listed last) lost the node's IPv4 address, so IPv4 captures could not tell
the node from outside and the loopback went unseen. Pods have podIPs, services clusterIPs.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from analysis_helpers import reshape, samples_dir

from natlens.bundle import load_bundle
from natlens.findings import analyze
from natlens.inventory import Inventory, build_inventory


def _edit(path, change):
    doc = json.loads(path.read_text())
    for i, item in enumerate(doc["items"]):
        change(i, item)
    path.write_text(json.dumps(doc))


def _dual_stack(d, first: bool) -> None:
    """Give every node an IPv6 InternalIP and an ExternalIP, pod podIPs and services clusterIPs."""
    def node(i, n):
        v6 = {"type": "InternalIP", "address": f"fd00::{i + 1}"}
        addrs = n["status"]["addresses"]
        addrs.insert(0, v6) if first else addrs.append(v6)
        addrs.append({"type": "ExternalIP", "address": f"203.0.113.{i + 1}"})
        n["spec"]["podCIDRs"] = [*n["spec"].get("podCIDRs", []), f"fd00:10:{i + 1}::/64"]

    def pod(i, p):
        st = p["status"]
        if st.get("podIP") and not p["spec"].get("hostNetwork"):
            st["podIPs"] = [{"ip": st["podIP"]}, {"ip": f"fd00:20::{i + 1}"}]

    def svc(i, s):
        s["spec"]["clusterIPs"] = [s["spec"]["clusterIP"], f"fd00:30::{i + 1}"]

    for kind, change in (("nodes", node), ("pods", pod), ("services", svc)):
        _edit(d / "cluster" / f"{kind}.json", change)


@pytest.mark.parametrize("ipv6_first", [False, True], ids=["ipv6-appended", "ipv6-first"])
def test_loopback_found_on_dual_stack_nodes(tmp_path, ipv6_first):
    src = samples_dir() / "loopback-local"
    d = reshape(src, tmp_path / "dual", keep=lambda n, c: c == "eth0")
    _dual_stack(d, ipv6_first)
    a = analyze(d)
    assert a.summary()["loopback"]["hits"] == 11  # the lab's ground truth: 11 failed, all loopback
    # the same journeys as with the single-stack cluster JSON
    b = analyze(reshape(src, tmp_path / "single", keep=lambda n, c: c == "eth0"))
    cols = ["client_node", "client_h", "client_p", "service", "vip", "vport", "policy", "snat",
            "lb_backend", "loopback", "outcome", "path"]
    pd.testing.assert_frame_equal(a.journeys[cols].reset_index(drop=True), b.journeys[cols].reset_index(drop=True))


def test_every_address_maps_to_its_node_pod_and_service(tmp_path):
    d = tmp_path / "mixed"
    reshape(samples_dir() / "mixed", d)
    _dual_stack(d, first=True)
    inv = build_inventory(load_bundle(d))
    n1 = inv.nodes.set_index("name").loc["node-1"]
    assert n1["internal_ip"] == "198.18.0.11"  # the IPv4 one, though IPv6 is listed first
    assert set(n1["addresses"]) == {"fd00::1", "198.18.0.11", "203.0.113.1"}
    for ip in ("198.18.0.11", "fd00::1", "fd00:0::1", "203.0.113.1"):
        assert inv.node_ip(ip) == "node-1" and inv.node_of(ip) == "node-1" and not inv.is_pod_ip(ip)
    # an IPv6 pod address (podIPs) and an address in the IPv6 pod CIDR
    pods = inv.pods[inv.pods["ips"].map(len) == 2]
    assert len(pods)
    p = pods.iloc[0]
    assert inv.pod(p["ips"][1]).name == p["name"] and inv.node_of(p["ips"][1]) == p["node"]
    assert inv.is_pod_ip(p["ips"][1]) and inv.is_pod_ip(p["ip"])
    assert inv.node_of("fd00:10:2::99") == "node-2" and inv.is_pod_ip("fd00:10:2::99")
    # a service by its second cluster IP; the LB VIPs are unchanged
    web = inv.service("fd00:30::1", 80)
    assert web is not None and web["name"] == "web-local" and web["cluster_ip"] == "198.18.128.10"
    assert inv.service("198.18.128.10", 80)["name"] == "web-local"
    assert inv.vips() == {("198.19.0.10", 80, "tcp"), ("198.19.0.11", 80, "tcp")}


def test_tables_without_the_address_lists_still_work():
    """Callers that build an Inventory with the single-address columns only (bench/)."""
    inv = Inventory(
        nodes=pd.DataFrame({"name": ["node-1"], "internal_ip": ["198.18.0.11"],
                            "pod_cidr": ["198.18.16.0/24"], "source": "test"}),
        pods=pd.DataFrame(columns=["namespace", "name", "ip", "node", "host_network", "source"]),
        services=pd.DataFrame([{"namespace": "default", "name": "web", "type": "LoadBalancer",
                                "cluster_ip": "198.18.128.10", "lb_ip": "198.19.0.10", "port": 80,
                                "proto": "tcp", "node_port": 30080, "target_port": 8080,
                                "policy": "Local", "source": "test"}]))
    assert inv.node_ip("198.18.0.11") == "node-1" and inv.node_of("198.18.16.7") == "node-1"
    assert inv.service("198.19.0.10", 80)["name"] == "web"
    assert inv.service("198.18.0.11", 30080)["name"] == "web"  # the NodePort on a node IP
    assert inv.service("198.18.0.11", 30081) is None
