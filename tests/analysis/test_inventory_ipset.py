"""No cluster/ and no iptables dump: services from the ipsets alone, in either format.

The fallback had a parser of its own that read only `ipset save`, skipped the IPv6 sets
(KUBE-6-*) and tied only TCP NodePorts; it now uses the netfilter model's ipset parser.
"""

from __future__ import annotations

from analysis_helpers import reshape, samples_dir

from natlens.bundle import load_bundle
from natlens.inventory import build_inventory

LIST = """\
Name: KUBE-LOAD-BALANCER
Type: hash:ip,port
Revision: 6
Header: family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x14e0714a
Size in memory: 400
References: 2
Number of entries: 2
Members:
198.19.0.10,tcp:80
198.19.0.20,udp:53

Name: KUBE-LOAD-BALANCER-LOCAL
Type: hash:ip,port
Revision: 6
Header: family inet hashsize 1024 maxelem 65536
Size in memory: 200
References: 1
Number of entries: 1
Members:
198.19.0.10,tcp:80

Name: KUBE-6-LOAD-BALANCER
Type: hash:ip,port
Revision: 6
Header: family inet6 hashsize 1024 maxelem 65536
Size in memory: 200
References: 1
Number of entries: 1
Members:
fd00:19::10,tcp:443

Name: KUBE-6-LOAD-BALANCER-LOCAL
Type: hash:ip,port
Revision: 6
Header: family inet6 hashsize 1024 maxelem 65536
Size in memory: 200
References: 1
Number of entries: 1
Members:
fd00:19::10,tcp:443

Name: KUBE-NODE-PORT-UDP
Type: bitmap:port
Revision: 3
Header: range 0-65535
Size in memory: 8264
References: 1
Number of entries: 1
Members:
30053
"""


def test_ipset_list_with_ipv6_sets_and_a_udp_node_port(tmp_path):
    d = reshape(samples_dir() / "loopback-local", tmp_path / "incident", cluster=False)
    for node in ("node-1", "node-2"):
        (d / "nodes" / node / "iptables-save.txt").unlink()
        (d / "nodes" / node / "ipset-save.txt").write_text(LIST)
    inv = build_inventory(load_bundle(d))
    assert inv.vips() == {("198.19.0.10", 80, "tcp"), ("198.19.0.20", 53, "udp"), ("fd00:19::10", 443, "tcp")}
    svc = inv.services.set_index(["lb_ip", "proto"])
    assert svc.loc[("198.19.0.10", "tcp"), "policy"] == "Local"
    assert svc.loc[("198.19.0.20", "udp"), "policy"] == "Cluster"
    assert svc.loc[("fd00:19::10", "tcp"), "policy"] == "Local"
    assert svc.loc[("198.19.0.20", "udp"), "node_port"] == 30053  # the only UDP NodePort, the only UDP VIP
    assert inv.service("198.18.0.11", 30053, "udp")["lb_ip"] == "198.19.0.20"
    assert any("NodePort 30053" in n and "nodes/node-1/ipset-save.txt" in n for n in inv.inferred)


def test_ipset_save_still_reads(tmp_path):
    d = reshape(samples_dir() / "loopback-local", tmp_path / "incident", cluster=False)
    for node in ("node-1", "node-2"):
        (d / "nodes" / node / "iptables-save.txt").unlink()
    inv = build_inventory(load_bundle(d))
    assert inv.vips() == {("198.19.0.10", 80, "tcp")}
    row = inv.services.iloc[0]
    assert (row["policy"], row["node_port"]) == ("Local", 30080)


def test_unreadable_ipsets_are_a_note(tmp_path):
    d = reshape(samples_dir() / "loopback-local", tmp_path / "incident", cluster=False)
    for node in ("node-1", "node-2"):
        (d / "nodes" / node / "iptables-save.txt").unlink()
    f = d / "nodes" / "node-1" / "ipset-save.txt"
    f.write_text("add KUBE-LOAD-BALANCER 198.19.0.10,tcp:80\n")
    inv = build_inventory(load_bundle(d))
    assert any(n.startswith(f"node-1: the ipsets could not be read ({f}:1") for n in inv.inferred)
    assert inv.vips() == {("198.19.0.10", 80, "tcp")}  # from node-2
