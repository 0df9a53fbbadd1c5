"""Pasted dumps as a node directory and the CLI take them: iptables -S files per table,
--table for a grep, and what the walk says where the paste leaves rules out."""

from __future__ import annotations

from natlens.cli import main
from natlens.netfilter import NodeRules, load_files, load_node
from natlens.netfilter.iptables import parse_iptables
from natlens.nodefiles import find_node_files

NAT_S = """-P PREROUTING ACCEPT
-P INPUT ACCEPT
-P OUTPUT ACCEPT
-P POSTROUTING ACCEPT
-N KUBE-SERVICES
-N KUBE-SVC-WEB
-N KUBE-MARK-MASQ
-N KUBE-POSTROUTING
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-SERVICES -d 198.18.5.1/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-WEB
-A KUBE-SVC-WEB ! -s 198.18.1.0/24 -d 198.18.5.1/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-WEB -m comment --comment "default/web:http -> 198.18.4.1:8080" -j KUBE-SEP-WEB1
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MASQUERADE --random-fully
"""
FILTER_S = """-P INPUT ACCEPT
-P FORWARD DROP
-P OUTPUT ACCEPT
-N KUBE-FORWARD
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT
"""
SEP = ":KUBE-SEP-WEB1 - [0:0]\n-A KUBE-SEP-WEB1 -p tcp -m tcp -j DNAT --to-destination 198.18.4.1:8080\n"


def _node_dir(tmp_path, files: dict[str, str]):
    d = tmp_path / "node-1"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text)
    return d


def test_a_node_directory_of_iptables_s_files_is_read_together(tmp_path):
    d = _node_dir(tmp_path, {"iptables-S-nat.txt": NAT_S, "iptables-S-filter.txt": FILTER_S})
    f = find_node_files(d)
    assert [p.name for p in f.iptables_parts] == ["iptables-S-filter.txt", "iptables-S-nat.txt"]
    assert f.not_read == []
    n = load_node(d, local_ips=["198.18.2.1"])
    assert set(n.ruleset.tables) == {"nat", "filter"}
    v = n.explain("198.18.1.3", "198.18.5.1", 80, in_iface="cni0")
    # the paste leaves KUBE-SEP-WEB1 out: undecided, naming it; the partial dump is said
    assert v.snat is None and "chain KUBE-SEP-WEB1 is not in the dump" in v.undecided[0]
    assert any("mangle, raw, security" in p for p in v.partial)


def test_an_iptables_save_beside_s_files_is_the_one_read(tmp_path):
    save = "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n"
    d = _node_dir(tmp_path, {"iptables-save.txt": save, "iptables-S-nat.txt": NAT_S})
    f = find_node_files(d)
    assert f.iptables.name == "iptables-save.txt" and f.iptables_parts == []
    assert [p.name for p in f.not_read] == ["iptables-S-nat.txt"]
    assert f.alternates[d / "iptables-S-nat.txt"] == ("iptables", d / "iptables-save.txt")
    assert load_node(d).partial(4) == []


def test_a_filter_policy_the_paste_leaves_out_is_undecided(tmp_path):
    fragment = "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n" \
               "-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT\n"
    p = tmp_path / "grep.txt"
    p.write_text(fragment)
    n = load_files(str(p), local_ips=["198.18.2.1"], table="filter")
    v = n.explain("198.18.1.3", "198.18.6.1", 80, in_iface="cni0", out_iface="eth0")
    assert v.snat is None and "the policy of filter/FORWARD is not in the dump" in v.undecided[0]
    marked = n.explain("198.18.1.3", "198.18.6.1", 80, in_iface="cni0", out_iface="eth0", mark=0x4000)
    assert marked.paths[0].outcome == "forwarded"  # ACCEPTed before the policy is needed


def test_a_complete_dump_has_no_missing_chains():
    rs = parse_iptables("*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j FOO\nCOMMIT\n", "save.txt")
    v = NodeRules(rs, local_ips=["198.18.2.1"]).explain("198.18.1.3", "198.18.6.1", 80, in_iface="cni0")
    assert "target FOO not modelled" in v.undecided[0] and v.partial == []


def test_cli_table_and_partial_lines(tmp_path, capsys):
    p = tmp_path / "nat.txt"
    p.write_text(NAT_S.replace("-j KUBE-SEP-WEB1", "-j KUBE-SEP-WEB1") + SEP.replace(":KUBE-SEP-WEB1 - [0:0]\n",
                                                                                       "-N KUBE-SEP-WEB1\n"))
    args = ["explain", "--iptables", str(p), "--local-ip", "198.18.2.1", "--src", "198.18.1.3",
            "--dst", "198.18.5.1", "--dport", "80", "--in-iface", "cni0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("partial dump: ") and "DNAT: 198.18.4.1:8080" in out
    assert main(args + ["--table", "filter"]) == 2
    assert "nat" in capsys.readouterr().err
    d = _node_dir(tmp_path, {"iptables-S-nat.txt": NAT_S})
    assert main(["explain", "--node", str(d), "--table", "nat", "--services"]) == 2
    assert "iptables-S-<table>.txt" in capsys.readouterr().err
    assert main(["explain", "--iptables", str(p), "--iptables", str(d / "iptables-S-nat.txt"),
                 "--table", "nat", "--services"]) == 2
