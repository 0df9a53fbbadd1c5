"""parse_iptables: what users paste instead of iptables-save.

Every dump below is real output of iptables 1.8.9 (nf_tables, and legacy where named),
captured in a throwaway network namespace with addresses from 198.18.0.0/15:

    nat:      OUTPUT/POSTROUTING -> KUBE-SERVICES / KUBE-POSTROUTING, a KUBE-SVC-TEST ->
              KUBE-SEP-TEST (DNAT 198.19.1.5:8080) for 198.18.0.10:80, KUBE-MARK-MASQ
    filter:   FORWARD policy DROP, a REJECT of 198.18.5.0/24 from veth0, INPUT ->
              KUBE-FIREWALL (drops non-loopback traffic to 127.0.0.0/8)
    mangle:   PREROUTING MARK for 198.18.0.10; raw: OUTPUT CT --notrack for 198.18.0.11;
    security: OUTPUT ACCEPT for 198.18.9.40 (lo carries 198.18.9.1/24; a few UDP packets
              sent to 198.18.9.2, 127.0.0.1 and 198.18.9.40 gave the counters)
    legacy:   nat PREROUTING -> KUBE-SERVICES -> KUBE-SEP-LEG (DNAT 198.19.2.7:5353) for
              198.18.0.20:53/udp, MASQUERADE of 198.19.0.0/16; filter INPUT -i lo ACCEPT,
              OUTPUT REJECT of 198.18.0.30:443/tcp

What the captures show of ``-S``: a listing starts with a -P line for every built-in
chain of its table, in hook order, even chains (and, with iptables-nft, tables) that
hold no rule or do not exist in the kernel (``nft list table ip mangle`` had only
PREROUTING); then -N per user chain (sorted), then the rules; ``-v`` puts ``-c PKTS
BYTES`` after the -P policy and before a rule's -j; ``iptables -S CHAIN`` prints only
that chain (its -P line, or -N). iptables-nft writes "# Warning: iptables-legacy tables
present" to stderr when legacy tables exist (pasted with 2>&1, it is the first line).
"""

from __future__ import annotations

import pytest

from natlens.errors import NatlensError
from natlens.netfilter.generate import Service, kube_proxy_iptables
from natlens.netfilter.iptables import (
    ALL_TABLES,
    Ruleset,
    merge_rulesets,
    parse_iptables,
    parse_iptables_save,
)
from natlens.netfilter.node import NodeRules

# iptables-nft -S
NFT_S = """-P INPUT ACCEPT
-P FORWARD DROP
-P OUTPUT ACCEPT
-N KUBE-FIREWALL
-A INPUT -j KUBE-FIREWALL
-A FORWARD -s 198.18.5.0/24 -i veth0 -o eth+ -j REJECT --reject-with icmp-port-unreachable
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
"""

# iptables-nft -t nat -S
NFT_NAT_S = """-P PREROUTING ACCEPT
-P INPUT ACCEPT
-P OUTPUT ACCEPT
-P POSTROUTING ACCEPT
-N KUBE-MARK-MASQ
-N KUBE-POSTROUTING
-N KUBE-SEP-TEST
-N KUBE-SERVICES
-N KUBE-SVC-TEST
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SEP-TEST -s 198.19.1.5/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-TEST -p tcp -m tcp -j DNAT --to-destination 198.19.1.5:8080
-A KUBE-SERVICES -d 198.18.0.10/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-TEST
-A KUBE-SVC-TEST ! -s 198.19.0.0/16 -d 198.18.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-TEST -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-TEST
"""

# iptables-nft -t nat -S -v 2>&1 (legacy tables present too), a few packets later
NFT_NAT_S_V = """# Warning: iptables-legacy tables present, use iptables-legacy to see them
-P PREROUTING ACCEPT -c 0 0
-P INPUT ACCEPT -c 0 0
-P OUTPUT ACCEPT -c 0 0
-P POSTROUTING ACCEPT -c 0 0
-N KUBE-MARK-MASQ
-N KUBE-POSTROUTING
-N KUBE-SEP-TEST
-N KUBE-SERVICES
-N KUBE-SVC-TEST
-A OUTPUT -m comment --comment "kubernetes service portals" -c 5 220 -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -c 5 220 -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -c 0 0 -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -c 5 220 -j RETURN
-A KUBE-POSTROUTING -c 0 0 -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -c 0 0 -j MASQUERADE --random-fully
-A KUBE-SEP-TEST -s 198.19.1.5/32 -c 0 0 -j KUBE-MARK-MASQ
-A KUBE-SEP-TEST -p tcp -m tcp -c 0 0 -j DNAT --to-destination 198.19.1.5:8080
-A KUBE-SERVICES -d 198.18.0.10/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -c 0 0 -j KUBE-SVC-TEST
-A KUBE-SVC-TEST ! -s 198.19.0.0/16 -d 198.18.0.10/32 -p tcp -m tcp --dport 80 -c 0 0 -j KUBE-MARK-MASQ
-A KUBE-SVC-TEST -m statistic --mode random --probability 0.50000000000 -c 0 0 -j KUBE-SEP-TEST
"""

# iptables-nft -t security -S
NFT_SECURITY_S = """-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-A OUTPUT -d 198.18.9.40/32 -j ACCEPT
"""

# iptables-nft -t mangle -S: all five -P lines, though nft's table holds PREROUTING only
NFT_MANGLE_S = """-P PREROUTING ACCEPT
-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-P POSTROUTING ACCEPT
-A PREROUTING -d 198.18.0.10/32 -j MARK --set-xmark 0x1/0xffffffff
"""

# for t in raw mangle nat filter security; do iptables-nft -t $t -S -v; done
NFT_ALL_S_V = """-P PREROUTING ACCEPT -c 0 0
-P OUTPUT ACCEPT -c 0 0
-A OUTPUT -d 198.18.0.11/32 -c 0 0 -j CT --notrack
-P PREROUTING ACCEPT -c 0 0
-P INPUT ACCEPT -c 0 0
-P FORWARD ACCEPT -c 0 0
-P OUTPUT ACCEPT -c 0 0
-P POSTROUTING ACCEPT -c 0 0
-A PREROUTING -d 198.18.0.10/32 -c 0 0 -j MARK --set-xmark 0x1/0xffffffff
-P PREROUTING ACCEPT -c 0 0
-P INPUT ACCEPT -c 0 0
-P OUTPUT ACCEPT -c 0 0
-P POSTROUTING ACCEPT -c 0 0
-N KUBE-MARK-MASQ
-N KUBE-POSTROUTING
-N KUBE-SEP-TEST
-N KUBE-SERVICES
-N KUBE-SVC-TEST
-A OUTPUT -m comment --comment "kubernetes service portals" -c 3 132 -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -c 3 132 -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -c 0 0 -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -c 3 132 -j RETURN
-A KUBE-POSTROUTING -c 0 0 -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -c 0 0 -j MASQUERADE --random-fully
-A KUBE-SEP-TEST -s 198.19.1.5/32 -c 0 0 -j KUBE-MARK-MASQ
-A KUBE-SEP-TEST -p tcp -m tcp -c 0 0 -j DNAT --to-destination 198.19.1.5:8080
-A KUBE-SERVICES -d 198.18.0.10/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -c 0 0 -j KUBE-SVC-TEST
-A KUBE-SVC-TEST ! -s 198.19.0.0/16 -d 198.18.0.10/32 -p tcp -m tcp --dport 80 -c 0 0 -j KUBE-MARK-MASQ
-A KUBE-SVC-TEST -m statistic --mode random --probability 0.50000000000 -c 0 0 -j KUBE-SEP-TEST
-P INPUT ACCEPT -c 0 0
-P FORWARD DROP -c 0 0
-P OUTPUT ACCEPT -c 0 0
-N KUBE-FIREWALL
-A INPUT -c 6 348 -j KUBE-FIREWALL
-A FORWARD -s 198.18.5.0/24 -i veth0 -o eth+ -c 0 0 -j REJECT --reject-with icmp-port-unreachable
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -c 0 0 -j DROP
-P INPUT ACCEPT -c 0 0
-P FORWARD ACCEPT -c 0 0
-P OUTPUT ACCEPT -c 0 0
-A OUTPUT -d 198.18.9.40/32 -c 1 44 -j ACCEPT
"""

# iptables-nft-save -c, at the same moment as NFT_ALL_S_V
NFT_SAVE_C = """# Generated by iptables-nft-save v1.8.9 (nf_tables) on Tue Dec  1 13:44:07 2026
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
[0:0] -A PREROUTING -d 198.18.0.10/32 -j MARK --set-xmark 0x1/0xffffffff
COMMIT
# Completed on Tue Dec  1 13:44:07 2026
# Generated by iptables-nft-save v1.8.9 (nf_tables) on Tue Dec  1 13:44:07 2026
*security
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
[1:44] -A OUTPUT -d 198.18.9.40/32 -j ACCEPT
COMMIT
# Completed on Tue Dec  1 13:44:07 2026
# Generated by iptables-nft-save v1.8.9 (nf_tables) on Tue Dec  1 13:44:07 2026
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
[0:0] -A OUTPUT -d 198.18.0.11/32 -j CT --notrack
COMMIT
# Completed on Tue Dec  1 13:44:07 2026
# Generated by iptables-nft-save v1.8.9 (nf_tables) on Tue Dec  1 13:44:07 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
[6:348] -A INPUT -j KUBE-FIREWALL
[0:0] -A FORWARD -s 198.18.5.0/24 -i veth0 -o eth+ -j REJECT --reject-with icmp-port-unreachable
[0:0] -A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
COMMIT
# Completed on Tue Dec  1 13:44:07 2026
# Generated by iptables-nft-save v1.8.9 (nf_tables) on Tue Dec  1 13:44:07 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SEP-TEST - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-TEST - [0:0]
[3:132] -A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
[3:132] -A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
[0:0] -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
[3:132] -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
[0:0] -A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
[0:0] -A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
[0:0] -A KUBE-SEP-TEST -s 198.19.1.5/32 -j KUBE-MARK-MASQ
[0:0] -A KUBE-SEP-TEST -p tcp -m tcp -j DNAT --to-destination 198.19.1.5:8080
[0:0] -A KUBE-SERVICES -d 198.18.0.10/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-TEST
[0:0] -A KUBE-SVC-TEST ! -s 198.19.0.0/16 -d 198.18.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ
[0:0] -A KUBE-SVC-TEST -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-TEST
COMMIT
# Completed on Tue Dec  1 13:44:07 2026
"""

# iptables-nft -S INPUT -v: one chain of the default table
NFT_S_INPUT_V = """-P INPUT ACCEPT -c 0 0
-A INPUT -c 6 348 -j KUBE-FIREWALL
"""

# iptables-nft -t nat -S KUBE-SVC-TEST
NFT_NAT_S_SVC = """-N KUBE-SVC-TEST
-A KUBE-SVC-TEST ! -s 198.19.0.0/16 -d 198.18.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-TEST -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-TEST
"""

# iptables-nft-save | grep KUBE
NFT_SAVE_GREP_KUBE = """:KUBE-FIREWALL - [0:0]
-A INPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SEP-TEST - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-TEST - [0:0]
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SEP-TEST -s 198.19.1.5/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-TEST -p tcp -m tcp -j DNAT --to-destination 198.19.1.5:8080
-A KUBE-SERVICES -d 198.18.0.10/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-TEST
-A KUBE-SVC-TEST ! -s 198.19.0.0/16 -d 198.18.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-TEST -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-TEST
"""

# for t in filter nat; do iptables-nft -t $t -S; done | grep KUBE
NFT_S_GREP_KUBE = """-N KUBE-FIREWALL
-A INPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-N KUBE-MARK-MASQ
-N KUBE-POSTROUTING
-N KUBE-SEP-TEST
-N KUBE-SERVICES
-N KUBE-SVC-TEST
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SEP-TEST -s 198.19.1.5/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-TEST -p tcp -m tcp -j DNAT --to-destination 198.19.1.5:8080
-A KUBE-SERVICES -d 198.18.0.10/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-TEST
-A KUBE-SVC-TEST ! -s 198.19.0.0/16 -d 198.18.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-TEST -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-TEST
"""

# iptables-legacy -S -v
LEGACY_S_V = """-P INPUT ACCEPT -c 0 0
-P FORWARD ACCEPT -c 0 0
-P OUTPUT ACCEPT -c 4 232
-A INPUT -i lo -c 4 232 -j ACCEPT
-A OUTPUT -d 198.18.0.30/32 -p tcp -m tcp --dport 443 -c 0 0 -j REJECT --reject-with tcp-reset
"""

# iptables-legacy-save -c, at the same moment
LEGACY_SAVE_C = """# Generated by iptables-save v1.8.9 on Tue Dec  1 13:44:08 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [4:232]
[4:232] -A INPUT -i lo -j ACCEPT
[0:0] -A OUTPUT -d 198.18.0.30/32 -p tcp -m tcp --dport 443 -j REJECT --reject-with tcp-reset
COMMIT
# Completed on Tue Dec  1 13:44:08 2026
# Generated by iptables-save v1.8.9 on Tue Dec  1 13:44:08 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [2:88]
:POSTROUTING ACCEPT [2:88]
:KUBE-SEP-LEG - [0:0]
:KUBE-SERVICES - [0:0]
[0:0] -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
[0:0] -A POSTROUTING -s 198.19.0.0/16 ! -o lo -j MASQUERADE
[0:0] -A KUBE-SEP-LEG -p udp -j DNAT --to-destination 198.19.2.7:5353
[0:0] -A KUBE-SERVICES -d 198.18.0.20/32 -p udp -m udp --dport 53 -j KUBE-SEP-LEG
COMMIT
# Completed on Tue Dec  1 13:44:08 2026
"""

# for t in raw mangle nat filter security; do iptables-legacy -t $t -S; done: the
# empty raw and mangle listings follow each other with nothing between their -P lines
LEGACY_ALL_S = """-P PREROUTING ACCEPT
-P OUTPUT ACCEPT
-P PREROUTING ACCEPT
-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-P POSTROUTING ACCEPT
-P PREROUTING ACCEPT
-P INPUT ACCEPT
-P OUTPUT ACCEPT
-P POSTROUTING ACCEPT
-N KUBE-SEP-LEG
-N KUBE-SERVICES
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -s 198.19.0.0/16 ! -o lo -j MASQUERADE
-A KUBE-SEP-LEG -p udp -j DNAT --to-destination 198.19.2.7:5353
-A KUBE-SERVICES -d 198.18.0.20/32 -p udp -m udp --dport 53 -j KUBE-SEP-LEG
-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-A INPUT -i lo -j ACCEPT
-A OUTPUT -d 198.18.0.30/32 -p tcp -m tcp --dport 443 -j REJECT --reject-with tcp-reset
-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
"""

# kube-proxy 1.28's filter table in iptables mode; with the generated nat table below
# it loads into iptables-nft-restore, and grep KUBE-SERVICES of iptables-nft-save then
# prints exactly what the test greps here.
KUBE_FILTER = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SERVICES - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A INPUT -j KUBE-FIREWALL
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-SERVICES -d 198.19.0.20/32 -p tcp -m comment --comment "default/noep:http has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable
COMMIT
"""


def kube_proxy_dump() -> str:
    """kube-proxy's filter table and a generated nat table, as iptables-nft-save prints them."""
    svcs = [Service("default/web:http", "198.19.0.10", 80, node_port=30080,
                    endpoints=[("198.18.1.5", 8080, True), ("198.18.2.6", 8080, False)]),
            Service("kube-system/dns:dns", "198.19.0.53", 53, proto="udp",
                    endpoints=[("198.18.1.7", 53, True)])]
    return KUBE_FILTER + kube_proxy_iptables(svcs, cluster_cidr="198.18.0.0/17").iptables


def grep(text: str, word: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if word in line)


def shape(rs: Ruleset, table: str) -> dict:
    """A table as chain -> (policy, counters, declared, [(describe, text, counters, index)]).

    A user chain's counters are left out: iptables-save writes [0:0] for it, -S -v
    nothing (the kernel counts packets for rules and policies only).
    """
    return {name: (ch.policy, ch.counters if ch.policy else None, ch.declared,
                   [(r.describe(), r.text, r.counters, r.index) for r in ch.rules])
            for name, ch in rs.tables[table].items()}


# --- iptables -S, one table -------------------------------------------------------------

def test_S_of_the_default_table_is_filter():
    rs = parse_iptables(NFT_S, "n1/iptables-S.txt")
    assert rs.format == "iptables -S" and rs.tables_given == {"filter"} and list(rs.tables) == ["filter"]
    f = rs.tables["filter"]
    assert list(f) == ["INPUT", "FORWARD", "OUTPUT", "KUBE-FIREWALL"]
    assert f["FORWARD"].policy == "DROP" and f["KUBE-FIREWALL"].policy is None
    assert all(ch.declared for ch in f.values())
    rej = f["FORWARD"].rules[0]
    assert (rej.table, rej.chain, rej.lineno, rej.index, rej.path) == ("filter", "FORWARD", 6, 1, "n1/iptables-S.txt")
    assert rej.in_iface == (False, "veth0") and rej.target == "REJECT"
    assert rs.notes == ["n1/iptables-S.txt:1: table filter inferred for lines 1-7 from the -P lines of "
                        "INPUT FORWARD OUTPUT at lines 1-3 and the REJECT target at line 6"]
    assert rs.partial == ["n1/iptables-S.txt: iptables -S of table filter only: mangle, nat, raw, "
                          "security not given"]


def test_S_of_nat_lists_every_built_in_chain_even_unused():
    rs = parse_iptables(NFT_NAT_S, "nat.txt")
    nat = rs.tables["nat"]
    assert [c for c in nat if c in ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")] == [
        "PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]
    assert nat["PREROUTING"].rules == [] and nat["PREROUTING"].policy == "ACCEPT"
    assert [r.target for r in nat["KUBE-SEP-TEST"].rules] == ["KUBE-MARK-MASQ", "DNAT"]
    assert rs.notes == ["nat.txt:1: table nat inferred for lines 1-20 from the -P lines of PREROUTING "
                        "INPUT OUTPUT POSTROUTING at lines 1-4"]
    assert rs.partial == ["nat.txt: iptables -S of table nat only: filter, mangle, raw, security not given"]


def test_S_v_counters_and_the_nft_warning_line():
    rs = parse_iptables(NFT_NAT_S_V, "nat-v.txt")
    nat = rs.tables["nat"]
    out = nat["OUTPUT"].rules[0]
    assert out.counters == (5, 220) and "-c" not in out.text.split()
    assert out.text == '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
    assert nat["OUTPUT"].counters == (0, 0) and nat["KUBE-MARK-MASQ"].rules[0].counters == (0, 0)
    assert rs.backend == "nf_tables"  # only iptables-nft prints that warning
    assert rs.notes[0] == ("nat-v.txt:1: # Warning: iptables-legacy tables present, use "
                           "iptables-legacy to see them")
    plain = shape(parse_iptables(NFT_NAT_S), "nat")  # without -v: the same rules, no counters
    assert {k: [(d, t, i) for d, t, _, i in rules] for k, (_, _, _, rules) in shape(rs, "nat").items()} == {
        k: [(d, t, i) for d, t, _, i in rules] for k, (_, _, _, rules) in plain.items()}
    assert all(c is None for _, counters, _, rules in plain.values() for c in [counters] + [r[2] for r in rules])


def test_legacy_S_v_policy_counters():
    rs = parse_iptables(LEGACY_S_V, "legacy.txt")
    f = rs.tables["filter"]
    assert f["OUTPUT"].counters == (4, 232) and f["INPUT"].counters == (0, 0)
    assert f["INPUT"].rules[0].counters == (4, 232) and f["INPUT"].rules[0].text == "-A INPUT -i lo -j ACCEPT"
    assert rs.backend == "unknown"  # -S does not say which backend printed it


def test_security_listing_is_taken_as_filter_and_says_so():
    rs = parse_iptables(NFT_SECURITY_S, "sec.txt")
    assert list(rs.tables) == ["filter"]
    assert rs.notes == ["sec.txt:1: table filter taken for lines 1-4: its -P lines (INPUT FORWARD OUTPUT) "
                        "are those of filter and of security; iptables -S lists filter unless given -t security"]
    given = parse_iptables(NFT_SECURITY_S, "sec.txt", table="security")
    assert list(given.tables) == ["security"] and given.notes == []
    named = parse_iptables(NFT_SECURITY_S, "n1/iptables-S-security.txt")
    assert list(named.tables) == ["security"]
    assert named.notes == ["n1/iptables-S-security.txt:1: table security inferred for lines 1-4 from "
                           "the file name iptables-S-security.txt"]


def test_mangle_listing_with_one_chain_used():
    rs = parse_iptables(NFT_MANGLE_S, "mangle.txt")
    m = rs.tables["mangle"]
    assert list(m) == ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]
    assert [len(c.rules) for c in m.values()] == [1, 0, 0, 0, 0]
    assert m["PREROUTING"].rules[0].target_args == ["--set-xmark", "0x1/0xffffffff"]


# --- several listings ---------------------------------------------------------------------

def test_concatenated_listings_of_all_five_tables():
    rs = parse_iptables(NFT_ALL_S_V, "all.txt")
    assert list(rs.tables) == ["raw", "mangle", "nat", "filter", "security"]
    assert rs.format == "iptables -S" and rs.tables_given == ALL_TABLES
    assert rs.partial == []  # every table given, each whole, no jump leaves the dump
    assert rs.tables["raw"]["OUTPUT"].rules[0].target == "CT"
    assert rs.tables["security"]["OUTPUT"].rules[0].counters == (1, 44)
    assert rs.notes[0] == ("all.txt:1: table raw inferred for lines 1-3 from the -P lines of "
                           "PREROUTING OUTPUT at lines 1-2")
    assert rs.notes[-1] == ("all.txt:37: table security taken for lines 37-40: its -P lines (INPUT FORWARD "
                            "OUTPUT) are those of filter and of security; filter is the listing at lines 30-36")


def test_empty_listings_back_to_back_split_by_hook_order():
    rs = parse_iptables(LEGACY_ALL_S, "legacy-all.txt")
    assert list(rs.tables) == ["raw", "mangle", "nat", "filter", "security"]
    assert list(rs.tables["raw"]) == ["PREROUTING", "OUTPUT"]
    assert list(rs.tables["mangle"]) == ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]
    assert rs.tables["nat"]["KUBE-SEP-LEG"].rules[0].target_args == ["--to-destination", "198.19.2.7:5353"]
    assert rs.tables["filter"]["OUTPUT"].rules[0].target == "REJECT"
    assert rs.tables["security"]["INPUT"].rules == [] and rs.partial == []


def test_two_filter_security_listings_are_filter_then_security():
    empty = "".join(LEGACY_ALL_S.splitlines(keepends=True)[-3:])  # iptables -t security -S, no rules
    rs = parse_iptables(NFT_SECURITY_S + empty, "fs.txt")
    assert list(rs.tables) == ["filter", "security"]
    assert rs.tables["filter"]["OUTPUT"].rules[0].text == "-A OUTPUT -d 198.18.9.40/32 -j ACCEPT"
    assert rs.notes[1] == ("fs.txt:5: table security taken for lines 5-7: its -P lines (INPUT FORWARD "
                           "OUTPUT) are those of filter and of security; filter is the listing at lines 1-4")


def test_the_same_table_listed_twice_is_an_error():
    with pytest.raises(NatlensError) as e:
        parse_iptables(NFT_NAT_S + NFT_NAT_S, "twice.txt")
    assert str(e.value).startswith("twice.txt:21: chain PREROUTING of table nat declared twice (lines 1 and 21)")


# --- the same rules in both formats --------------------------------------------------------

def test_save_and_S_give_equal_chains_and_rules():
    save = parse_iptables_save(NFT_SAVE_C, "save.txt")
    listing = parse_iptables(NFT_ALL_S_V, "S.txt")
    assert set(save.tables) == set(listing.tables) == ALL_TABLES
    for t in ALL_TABLES:
        assert shape(listing, t) == shape(save, t), t
    legacy = parse_iptables(LEGACY_S_V, "S.txt")
    assert shape(legacy, "filter") == shape(parse_iptables_save(LEGACY_SAVE_C), "filter")
    plain = parse_iptables(NFT_NAT_S)  # without -v: no counters, the same rules
    assert [(n, [r.describe() for r in c.rules]) for n, c in plain.tables["nat"].items()] == [
        (n, [r.describe() for r in c.rules]) for n, c in save.tables["nat"].items()]


@pytest.mark.parametrize("text", [NFT_SAVE_C, LEGACY_SAVE_C, kube_proxy_dump(), ""])
def test_parse_iptables_of_a_complete_save_is_parse_iptables_save(text):
    rs = parse_iptables(text, "save.txt")
    assert rs == parse_iptables_save(text, "save.txt")
    assert rs.format == "iptables-save" and rs.partial == [] and rs.tables_given is None


def test_save_text_and_a_table_argument():
    assert list(parse_iptables(grep_tables(NFT_SAVE_C, "nat"), "s.txt", table="nat").tables) == ["nat"]
    with pytest.raises(NatlensError) as e:
        parse_iptables(NFT_SAVE_C, "s.txt", table="nat")
    assert str(e.value) == "s.txt:2: table nat was given, but the text has table mangle (*mangle)"


def grep_tables(save: str, table: str) -> str:
    """The *table ... COMMIT block of one table of an iptables-save text."""
    out, keep = [], False
    for line in save.splitlines():
        keep = keep or line == f"*{table}"
        if keep:
            out.append(line)
            if line == "COMMIT":
                break
    return "\n".join(out) + "\n"


# --- fragments ------------------------------------------------------------------------------

def test_grep_of_a_kube_proxy_save_mixing_nat_and_filter_kube_services():
    full = parse_iptables_save(kube_proxy_dump(), "full.txt")
    text = grep(kube_proxy_dump(), "KUBE-SERVICES")
    rs = parse_iptables(text, "grep.txt")
    assert rs.format == "fragment" and rs.tables_given == {"filter", "nat"}
    assert rs.notes == [
        "grep.txt:1: table filter inferred for lines 1-4 from the REJECT target at line 4",
        "grep.txt:5: table nat inferred for lines 5-10 from the built-in chain PREROUTING at line 6 "
        "and kube-proxy's nat chain KUBE-SVC-7485D1F351A79493 at line 8"]
    for t in ("filter", "nat"):  # each KUBE-SERVICES is its own table's, whole
        assert [r.describe() for r in rs.tables[t]["KUBE-SERVICES"].rules] == [
            r.describe() for r in full.tables[t]["KUBE-SERVICES"].rules]
        assert rs.tables[t]["KUBE-SERVICES"].declared
    fwd = rs.tables["filter"]["FORWARD"]
    assert not fwd.declared and fwd.policy is None and len(fwd.rules) == 1
    assert rs.partial == [
        "grep.txt: no *table headers: a fragment of iptables-save (a grep?); rules it left out are not walked",
        "grep.txt: rules of tables filter, nat only: mangle, raw, security not given",
        "grep.txt:2: rules for chain FORWARD without its declaration (table filter; a built-in chain: its "
        "policy is unknown)",
        "grep.txt:3: rules for chain OUTPUT without its declaration (table filter; a built-in chain: its "
        "policy is unknown)",
        "grep.txt:6: rules for chain PREROUTING without its declaration (table nat; a built-in chain: its "
        "policy is unknown)",
        "grep.txt:7: rules for chain OUTPUT without its declaration (table nat; a built-in chain: its "
        "policy is unknown)",
        "grep.txt: jumps to chains not in the dump: KUBE-SVC-7485D1F351A79493, KUBE-SVC-F7E240AEFC263717, "
        "KUBE-NODEPORTS"]
    assert NodeRules(rs).check() == 8  # the walker takes it: every rule compiles


def test_grep_kube_of_the_whole_kube_proxy_save():
    text = grep(kube_proxy_dump(), "KUBE")
    rs = parse_iptables(text, "grep.txt")
    full = parse_iptables_save(kube_proxy_dump())
    assert rs.notes[0] == ("grep.txt:1: table filter inferred for lines 1-22 from the DROP target at "
                           "line 18 and the REJECT target at line 22")
    assert rs.notes[1].startswith("grep.txt:23: table nat inferred for lines 23-")
    assert rs.notes[1].endswith("from the MASQUERADE target at line 41")
    assert "-j MASQUERADE" in text.splitlines()[40]
    nat = rs.tables["nat"]
    for name, ch in full.tables["nat"].items():
        if name.startswith("KUBE-"):
            assert [r.describe() for r in nat[name].rules] == [r.describe() for r in ch.rules]
    assert rs.partial[-1] == "grep.txt: and 1 more chains with rules but no declaration"


def test_real_grep_whose_filter_part_cannot_be_told():
    for text, name in ((NFT_SAVE_GREP_KUBE, "save-grep.txt"), (NFT_S_GREP_KUBE, "S-grep.txt")):
        with pytest.raises(NatlensError) as e:
            parse_iptables(text, name)
        assert str(e.value) == (
            f"{name}:1: cannot tell the table of lines 1-3 (chains KUBE-FIREWALL, INPUT): it could be "
            "filter, mangle or security; give the table (--table on the CLI, or name the file "
            "iptables-S-<table>.txt); split the text by table first")
    lines = NFT_SAVE_GREP_KUBE.splitlines(keepends=True)
    filt = parse_iptables("".join(lines[:3]), "f.txt", table="filter")
    assert filt.tables["filter"]["KUBE-FIREWALL"].declared and not filt.tables["filter"]["INPUT"].declared
    assert filt.notes == []
    nat = parse_iptables("".join(lines[3:]), "n.txt")
    assert nat.notes == ["n.txt:1: table nat inferred for lines 1-16 from the MASQUERADE target at line 11"]
    assert shape(nat, "nat")["KUBE-SVC-TEST"] == shape(parse_iptables(NFT_NAT_S), "nat")["KUBE-SVC-TEST"]
    s_nat = parse_iptables("".join(NFT_S_GREP_KUBE.splitlines(keepends=True)[3:]), "n.txt")
    assert s_nat.partial[0] == ("n.txt: iptables -S lines without a listing's -P lines: a fragment "
                                "(a grep?); rules it left out are not walked")


def test_a_chain_declared_again_starts_the_next_table():
    # grep -E '^:KUBE-SERVICES|MASQUERADE': filter's declaration, then nat's and a nat rule
    text = grep_any(kube_proxy_dump(), ":KUBE-SERVICES ", "MASQUERADE")
    assert text.splitlines()[:2] == [":KUBE-SERVICES - [0:0]"] * 2
    with pytest.raises(NatlensError) as e:
        parse_iptables(text, "g.txt")  # filter's KUBE-SERVICES alone: no table to tell
    assert str(e.value).startswith("g.txt:1: cannot tell the table of line 1 (chains KUBE-SERVICES)")
    rs = parse_iptables(text.split("\n", 1)[1], "g.txt")
    assert list(rs.tables) == ["nat"] and rs.tables["nat"]["KUBE-SERVICES"].declared


def grep_any(text: str, *words: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if any(w in line for w in words))


def test_S_of_one_chain():
    with pytest.raises(NatlensError) as e:
        parse_iptables(NFT_S_INPUT_V, "input.txt")
    assert "input.txt:1: cannot tell the table of lines 1-2" in str(e.value)
    assert "filter, mangle, nat or security" in str(e.value)
    rs = parse_iptables(NFT_S_INPUT_V, "input.txt", table="filter")
    assert rs.format == "iptables -S"
    assert rs.tables["filter"]["INPUT"].rules[0].counters == (6, 348)
    assert rs.partial == [
        "input.txt:1: iptables -S listing with the policies of INPUT only (iptables -S CHAIN?): the other "
        "chains of table filter are not given",
        "input.txt: iptables -S of table filter only: mangle, nat, raw, security not given",
        "input.txt: jumps to chains not in the dump: KUBE-FIREWALL"]
    svc = parse_iptables(NFT_NAT_S_SVC, "svc.txt")
    assert svc.notes == ["svc.txt:1: table nat inferred for lines 1-3 from kube-proxy's nat chain "
                         "KUBE-SVC-TEST at line 1"]
    assert svc.format == "fragment" and svc.partial[-1] == (
        "svc.txt: jumps to chains not in the dump: KUBE-MARK-MASQ, KUBE-SEP-TEST")


def test_a_jump_ties_a_block_to_a_known_table():
    text = ("-N DNS-REDIR\n-A DNS-REDIR -p udp -j DNAT --to-destination 198.19.2.7:5353\n"
            "-N LOCAL-DNS\n-A LOCAL-DNS -d 198.18.0.20/32 -j DNS-REDIR\n")
    rs = parse_iptables(text, "tie.txt")
    assert list(rs.tables) == ["nat"] and list(rs.tables["nat"]) == ["DNS-REDIR", "LOCAL-DNS"]
    assert rs.notes[1] == ("tie.txt:3: table nat inferred for lines 3-4 from the jump to DNS-REDIR at "
                           "line 4 (a chain of lines 1-2)")


def test_commit_in_a_fragment_ends_a_table_and_missing_jumps_are_capped():
    text = "".join(f"-A FOO -j KUBE-SEP-{i}\n" for i in range(7)) + "COMMIT\n-A BAR -j REJECT\n"
    rs = parse_iptables(text, "c.txt")
    assert list(rs.tables) == ["nat", "filter"]
    assert rs.partial[-1] == ("c.txt: jumps to chains not in the dump: KUBE-SEP-0, KUBE-SEP-1, "
                              "KUBE-SEP-2, KUBE-SEP-3, KUBE-SEP-4 and 2 more")
    assert rs.partial[0].startswith("c.txt: only rule lines, no *table headers")


# --- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text,where,what", [
    ("-P INPUT RETURN\n", ":1", "bad policy 'RETURN' for chain INPUT (ACCEPT or DROP)"),
    ("-P KUBE-FOO ACCEPT\n", ":1", "-P KUBE-FOO: only built-in chains have a policy"),
    ("-P INPUT ACCEPT -c x 0\n", ":1", "bad counters"),
    ("-P INPUT\n", ":1", "bad policy line"),
    ("-N A B\n", ":1", "bad chain line"),
    ("-P INPUT ACCEPT\n-A INPUT -s 198.18.0.300 -j ACCEPT\n", ":2", "bad address"),
    ("-P INPUT ACCEPT\n-D INPUT 1\n", ":2", "unrecognised line '-D INPUT 1'"),
    ("Chain INPUT (policy ACCEPT)\n", ":1", "iptables -L output?"),
    ("-A X -j ACCEPT\n*nat\nCOMMIT\n", ":1", "outside a *table ... COMMIT block"),
    (NFT_NAT_S + "-A FORWARD -j REJECT\n", ":1", "cannot be one table: the REJECT target at line 21 "
                                                 "points to filter, but the -P lines"),
])
def test_bad_paste_names_file_and_line(text, where, what):
    with pytest.raises(NatlensError) as e:
        parse_iptables(text, "paste.txt")
    assert str(e.value).startswith(f"paste.txt{where}: ") and what in str(e.value)


def test_undecidable_table_names_the_rules_and_how_to_give_it():
    text = "\n-N FOO\n-A FOO -s 198.18.0.1/32 -j ACCEPT\n"
    with pytest.raises(NatlensError) as e:
        parse_iptables(text, "x.txt")
    assert str(e.value) == ("x.txt:2: cannot tell the table of lines 2-3 (chains FOO): it could be "
                            "filter, mangle, nat, raw or security; give the table (--table on the CLI, "
                            "or name the file iptables-S-<table>.txt)")
    assert e.value.path == "x.txt" and e.value.where == "2"
    assert list(parse_iptables(text, "x.txt", table="raw").tables) == ["raw"]
    assert list(parse_iptables(text, "node/iptables-S-mangle.txt").tables) == ["mangle"]


def test_a_table_argument_the_text_contradicts():
    with pytest.raises(NatlensError) as e:
        parse_iptables(NFT_NAT_S, "nat.txt", table="filter")
    assert str(e.value).startswith("nat.txt:1: lines 1-20 cannot be one table: ")
    assert "the -P lines of PREROUTING INPUT OUTPUT POSTROUTING at lines 1-4 points to nat, " \
           "but the given table filter to filter" in str(e.value)
    with pytest.raises(NatlensError) as e:
        parse_iptables(NFT_NAT_S_SVC.replace("KUBE-MARK-MASQ", "DNAT --to-destination 198.19.1.5"),
                       "f.txt", table="filter")
    assert "the DNAT target at line 2 points to nat" in str(e.value)
    with pytest.raises(NatlensError, match="unknown table 'nta'"):
        parse_iptables(NFT_NAT_S, "nat.txt", table="nta")


# --- merge_rulesets -------------------------------------------------------------------------

def node_parts() -> dict[str, Ruleset]:
    raw = "".join(NFT_ALL_S_V.splitlines(keepends=True)[:3])
    texts = {"filter": NFT_S, "nat": NFT_NAT_S, "mangle": NFT_MANGLE_S, "security": NFT_SECURITY_S, "raw": raw}
    return {t: parse_iptables(text, f"n1/iptables-S-{t}.txt") for t, text in texts.items()}


def test_merge_per_table_files_of_a_node():
    parts = node_parts()
    two = merge_rulesets([parts["nat"], parts["filter"]], "n1")
    assert list(two.tables) == ["nat", "filter"] and two.tables_given == {"filter", "nat"}
    assert two.format == "iptables -S"
    assert two.partial == ["n1: iptables -S of tables filter, nat only: mangle, raw, security not given"]
    assert two.tables["nat"]["KUBE-SEP-TEST"].rules[1].where == "n1/iptables-S-nat.txt:17"
    assert two.tables["filter"]["FORWARD"].rules[0].where == "n1/iptables-S-filter.txt:6"
    assert two.notes == parts["nat"].notes + parts["filter"].notes
    five = merge_rulesets(list(parts.values()), "n1")
    assert five.tables_given == ALL_TABLES and five.partial == []
    assert set(five.tables) == ALL_TABLES and five.tables["security"]["OUTPUT"].rules[0].text == (
        "-A OUTPUT -d 198.18.9.40/32 -j ACCEPT")


def test_merge_keeps_other_reasons_and_refuses_a_table_twice():
    parts = node_parts()
    frag = parse_iptables(NFT_NAT_S_SVC, "n1/svc.txt")
    with pytest.raises(NatlensError) as e:
        merge_rulesets([parts["nat"], parts["filter"], frag], "n1")
    assert str(e.value) == "n1: table nat is in both n1/iptables-S-nat.txt and n1/svc.txt"
    rest = [p for t, p in parts.items() if t != "nat"]
    merged = merge_rulesets([*rest, frag], "n1")
    assert merged.format == "fragment" and merged.tables_given == ALL_TABLES
    assert merged.partial == [p for p in frag.partial if "only:" not in p]
    assert merged.partial[0].startswith("n1/svc.txt: iptables -S lines without")
    with_save = merge_rulesets([parse_iptables(LEGACY_SAVE_C, "save.txt"), parts["mangle"]], "n1")
    assert with_save.tables_given is None and with_save.partial == []
    with pytest.raises(NatlensError, match="no iptables dumps to merge"):
        merge_rulesets([], "n1")


def test_kube_proxys_filter_only_chains_tell_the_filter_table():
    text = (":KUBE-FORWARD - [0:0]\n:KUBE-PROXY-FIREWALL - [0:0]\n"
            '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD\n'
            "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n")
    rs = parse_iptables(text, "grep.txt")
    assert set(rs.tables) == {"filter"}
    assert "kube-proxy's filter chain KUBE-FORWARD at line 1" in rs.notes[0]
    # KUBE-FIREWALL is the kubelet's in filter and kube-proxy's in nat before 1.19: no evidence
    with pytest.raises(NatlensError):
        parse_iptables(text.replace("KUBE-FORWARD", "KUBE-FIREWALL").replace("KUBE-PROXY-FIREWALL", "X"), "g.txt")
