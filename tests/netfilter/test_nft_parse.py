"""nft dumps -> one model: `nft list ruleset` text, `nft -f` command files, `nft -j` JSON.

The samples below are real nft 1.0.6 output: each source (a knftables-shaped command
file, a block-syntax file with the other statement kinds) was loaded with `nft -f` into
a scratch network namespace and listed with `nft list ruleset` and `nft -j list
ruleset`. The tests parse every form and compare them rule by rule: the statements the
text parser builds must be the ones nft itself prints as JSON, since the walk evaluates
that form only. The root test repeats the load-and-list live when it can.
"""

# nft indents the continuation lines of element lists with tabs and then spaces; the
# samples keep its output byte for byte.
# ruff: noqa: E101

from __future__ import annotations

import gc
import json
import os
import subprocess

import pytest
from conftest import netns_unavailable_reason

from natlens.errors import NatlensError
from natlens.netfilter.generate import kube_proxy_nftables, many_services
from natlens.netfilter.nft import NftElement, chain_priority, format_rule, parse_nft

TAB2 = "\t\t"


# kube-proxy's nftables mode as knftables writes it (nft -f input; a trimmed node).
KP_COMMANDS = """\
add table ip kube-proxy { comment "rules for kube-proxy" ; }
add chain ip kube-proxy mark-for-masquerade
add chain ip kube-proxy masquerading
add chain ip kube-proxy services
add chain ip kube-proxy filter-prerouting { type filter hook prerouting priority -110 ; }
add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
add chain ip kube-proxy firewall-check
add chain ip kube-proxy cluster-ips-check
add chain ip kube-proxy reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }
add set ip kube-proxy cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }
add map ip kube-proxy firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }
add map ip kube-proxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }
add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }
add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000
add rule ip kube-proxy masquerading mark and 0x4000 == 0 return
add rule ip kube-proxy masquerading mark set mark xor 0x4000
add rule ip kube-proxy masquerading masquerade fully-random
add rule ip kube-proxy filter-prerouting ct state new jump firewall-check
add rule ip kube-proxy nat-prerouting jump services
add rule ip kube-proxy nat-postrouting jump masquerading
add rule ip kube-proxy firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule ip kube-proxy cluster-ips-check ip daddr { 198.19.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"
add rule ip kube-proxy reject-chain reject
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip kube-proxy services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports
add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add chain ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__198.18.128.1/80
add chain ip kube-proxy endpoint-6OJB2KTY-ns1/svc1/tcp/p80__198.18.128.2/80
add chain ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80
add chain ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80
add set ip kube-proxy affinity-5OJB2KTY-ns1/svc1/tcp/p80__198.18.128.1/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 198.19.0.41 tcp dport 80 ip saddr != 198.18.128.0/17 jump mark-for-masquerade
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__198.18.128.1/80 , 1 : goto endpoint-6OJB2KTY-ns1/svc1/tcp/p80__198.18.128.2/80 }
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__198.18.128.1/80 ip saddr 198.18.128.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__198.18.128.1/80 update @affinity-5OJB2KTY-ns1/svc1/tcp/p80__198.18.128.1/80 { ip saddr }
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__198.18.128.1/80 meta l4proto tcp dnat to 198.18.128.1:80
add rule ip kube-proxy endpoint-6OJB2KTY-ns1/svc1/tcp/p80__198.18.128.2/80 ip saddr 198.18.128.2 jump mark-for-masquerade
add rule ip kube-proxy endpoint-6OJB2KTY-ns1/svc1/tcp/p80__198.18.128.2/80 meta l4proto tcp dnat to 198.18.128.2:80
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 ip saddr 198.18.128.0/17 goto service-ULMVA6XW-ns1/svc1/tcp/p80 comment "short-circuit pod traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local goto service-ULMVA6XW-ns1/svc1/tcp/p80 comment "short-circuit local traffic"
add rule ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr != { 203.0.113.0/25 } drop
add element ip kube-proxy cluster-ips { 198.19.0.41 }
add element ip kube-proxy service-ips { 198.19.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-ips { 198.18.100.1 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 30080 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy no-endpoint-services { 198.19.0.43 . tcp . 80 comment "ns2/svc2:p80" : drop }
add element ip kube-proxy no-endpoint-services { 198.19.0.44 . udp . 53 comment "ns3/svc3:dns" : goto reject-chain }
add element ip kube-proxy firewall-ips { 198.18.100.5 . tcp . 80 comment "ns5/svc5:p80" : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80 }
"""


# `nft list ruleset` after `nft -f` of KP_COMMANDS (nft 1.0.6).
KP_TEXT = """\
table ip kube-proxy {
	comment "rules for kube-proxy"
	set cluster-ips {
		type ipv4_addr
		comment "Active ClusterIPs"
		elements = { 198.19.0.41 }
	}

	map firewall-ips {
		type ipv4_addr . inet_proto . inet_service : verdict
		comment "destinations that are subject to LoadBalancerSourceRanges"
		elements = { 198.18.100.5 . tcp . 80 comment "ns5/svc5:p80" : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80 }
	}

	map no-endpoint-services {
		type ipv4_addr . inet_proto . inet_service : verdict
		comment "vmap to drop or reject packets to services with no endpoints"
		elements = { 198.19.0.44 . udp . 53 comment "ns3/svc3:dns" : goto reject-chain,
			     198.19.0.43 . tcp . 80 comment "ns2/svc2:p80" : drop }
	}

	map service-ips {
		type ipv4_addr . inet_proto . inet_service : verdict
		comment "ClusterIP, ExternalIP and LoadBalancer IP traffic"
		elements = { 198.18.100.1 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80,
			     198.19.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
	}

	map service-nodeports {
		type inet_proto . inet_service : verdict
		comment "NodePort traffic"
		elements = { tcp . 30080 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
	}

	set affinity-5OJB2KTY-ns1/svc1/tcp/p80__198.18.128.1/80 {
		type ipv4_addr
		size 65535
		flags dynamic,timeout
		timeout 3h
	}

	chain mark-for-masquerade {
		meta mark set meta mark | 0x00004000
	}

	chain masquerading {
		meta mark & 0x00004000 == 0x00000000 return
		meta mark set meta mark ^ 0x00004000
		masquerade fully-random
	}

	chain services {
		ip daddr . meta l4proto . th dport vmap @service-ips
		fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports
	}

	chain filter-prerouting {
		type filter hook prerouting priority dstnat - 10; policy accept;
		ct state new jump firewall-check
	}

	chain nat-prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		jump services
	}

	chain nat-postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		jump masquerading
	}

	chain firewall-check {
		ip daddr . meta l4proto . th dport vmap @firewall-ips
	}

	chain cluster-ips-check {
		ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
		ip daddr 198.19.0.0/16 drop comment "Drop traffic to unallocated ClusterIPs"
	}

	chain reject-chain {
		comment "helper for @no-endpoint-services / @no-endpoint-nodeports"
		reject
	}

	chain service-ULMVA6XW-ns1/svc1/tcp/p80 {
		ip daddr 198.19.0.41 tcp dport 80 ip saddr != 198.18.128.0/17 jump mark-for-masquerade
		numgen random mod 2 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__198.18.128.1/80, 1 : goto endpoint-6OJB2KTY-ns1/svc1/tcp/p80__198.18.128.2/80 }
	}

	chain endpoint-5OJB2KTY-ns1/svc1/tcp/p80__198.18.128.1/80 {
		ip saddr 198.18.128.1 jump mark-for-masquerade
		update @affinity-5OJB2KTY-ns1/svc1/tcp/p80__198.18.128.1/80 { ip saddr }
		meta l4proto tcp dnat to 198.18.128.1:80
	}

	chain endpoint-6OJB2KTY-ns1/svc1/tcp/p80__198.18.128.2/80 {
		ip saddr 198.18.128.2 jump mark-for-masquerade
		meta l4proto tcp dnat to 198.18.128.2:80
	}

	chain external-42NFTM6N-ns2/svc2/tcp/p80 {
		ip saddr 198.18.128.0/17 goto service-ULMVA6XW-ns1/svc1/tcp/p80 comment "short-circuit pod traffic"
		fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"
		fib saddr type local goto service-ULMVA6XW-ns1/svc1/tcp/p80 comment "short-circuit local traffic"
	}

	chain firewall-HVFWP5L3-ns5/svc5/tcp/p80 {
		ip saddr != 203.0.113.0/25 drop
	}
}
"""


# `nft -j list ruleset` of the same rule set.
KP_JSON = (
    '{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json'
    '_schema_version": 1}}, {"table": {"family": "ip", "name": "kube-proxy", "handle": 131}},'
    ' {"set": {"family": "ip", "name": "cluster-ips", "table": "kube-proxy", "type": "ipv4_ad'
    'dr", "handle": 10, "comment": "Active ClusterIPs", "elem": ["198.19.0.41"]}}, {"map": {"'
    'family": "ip", "name": "firewall-ips", "table": "kube-proxy", "type": ["ipv4_addr", "ine'
    't_proto", "inet_service"], "handle": 11, "comment": "destinations that are subject to Lo'
    'adBalancerSourceRanges", "map": "verdict", "elem": [[{"elem": {"val": {"concat": ["198.1'
    '8.100.5", "tcp", 80]}, "comment": "ns5/svc5:p80"}}, {"goto": {"target": "firewall-HVFWP5'
    'L3-ns5/svc5/tcp/p80"}}]]}}, {"map": {"family": "ip", "name": "no-endpoint-services", "ta'
    'ble": "kube-proxy", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 12, "'
    'comment": "vmap to drop or reject packets to services with no endpoints", "map": "verdic'
    't", "elem": [[{"elem": {"val": {"concat": ["198.19.0.44", "udp", 53]}, "comment": "ns3/s'
    'vc3:dns"}}, {"goto": {"target": "reject-chain"}}], [{"elem": {"val": {"concat": ["198.19'
    '.0.43", "tcp", 80]}, "comment": "ns2/svc2:p80"}}, {"drop": null}]]}}, {"map": {"family":'
    ' "ip", "name": "service-ips", "table": "kube-proxy", "type": ["ipv4_addr", "inet_proto",'
    ' "inet_service"], "handle": 13, "comment": "ClusterIP, ExternalIP and LoadBalancer IP tr'
    'affic", "map": "verdict", "elem": [[{"concat": ["198.18.100.1", "tcp", 80]}, {"goto": {"'
    'target": "external-42NFTM6N-ns2/svc2/tcp/p80"}}], [{"concat": ["198.19.0.41", "tcp", 80]'
    '}, {"goto": {"target": "service-ULMVA6XW-ns1/svc1/tcp/p80"}}]]}}, {"map": {"family": "ip'
    '", "name": "service-nodeports", "table": "kube-proxy", "type": ["inet_proto", "inet_serv'
    'ice"], "handle": 14, "comment": "NodePort traffic", "map": "verdict", "elem": [[{"concat'
    '": ["tcp", 30080]}, {"goto": {"target": "external-42NFTM6N-ns2/svc2/tcp/p80"}}]]}}, {"se'
    't": {"family": "ip", "name": "affinity-5OJB2KTY-ns1/svc1/tcp/p80__198.18.128.1/80", "tab'
    'le": "kube-proxy", "type": "ipv4_addr", "handle": 33, "size": 65535, "flags": ["timeout"'
    '], "timeout": 10800}}, {"chain": {"family": "ip", "table": "kube-proxy", "name": "mark-f'
    'or-masquerade", "handle": 1}}, {"chain": {"family": "ip", "table": "kube-proxy", "name":'
    ' "masquerading", "handle": 2}}, {"chain": {"family": "ip", "table": "kube-proxy", "name"'
    ': "services", "handle": 3}}, {"chain": {"family": "ip", "table": "kube-proxy", "name": "'
    'filter-prerouting", "handle": 4, "type": "filter", "hook": "prerouting", "prio": -110, "'
    'policy": "accept"}}, {"chain": {"family": "ip", "table": "kube-proxy", "name": "nat-prer'
    'outing", "handle": 5, "type": "nat", "hook": "prerouting", "prio": -100, "policy": "acce'
    'pt"}}, {"chain": {"family": "ip", "table": "kube-proxy", "name": "nat-postrouting", "han'
    'dle": 6, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}, {"chai'
    'n": {"family": "ip", "table": "kube-proxy", "name": "firewall-check", "handle": 7}}, {"c'
    'hain": {"family": "ip", "table": "kube-proxy", "name": "cluster-ips-check", "handle": 8}'
    '}, {"chain": {"family": "ip", "table": "kube-proxy", "name": "reject-chain", "handle": 9'
    '}}, {"chain": {"family": "ip", "table": "kube-proxy", "name": "service-ULMVA6XW-ns1/svc1'
    '/tcp/p80", "handle": 28}}, {"chain": {"family": "ip", "table": "kube-proxy", "name": "en'
    'dpoint-5OJB2KTY-ns1/svc1/tcp/p80__198.18.128.1/80", "handle": 29}}, {"chain": {"family":'
    ' "ip", "table": "kube-proxy", "name": "endpoint-6OJB2KTY-ns1/svc1/tcp/p80__198.18.128.2/'
    '80", "handle": 30}}, {"chain": {"family": "ip", "table": "kube-proxy", "name": "external'
    '-42NFTM6N-ns2/svc2/tcp/p80", "handle": 31}}, {"chain": {"family": "ip", "table": "kube-p'
    'roxy", "name": "firewall-HVFWP5L3-ns5/svc5/tcp/p80", "handle": 32}}, {"rule": {"family":'
    ' "ip", "table": "kube-proxy", "chain": "mark-for-masquerade", "handle": 15, "expr": [{"m'
    'angle": {"key": {"meta": {"key": "mark"}}, "value": {"|": [{"meta": {"key": "mark"}}, 16'
    '384]}}}]}}, {"rule": {"family": "ip", "table": "kube-proxy", "chain": "masquerading", "h'
    'andle": 16, "expr": [{"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, 16'
    '384]}, "right": 0}}, {"return": null}]}}, {"rule": {"family": "ip", "table": "kube-proxy'
    '", "chain": "masquerading", "handle": 17, "expr": [{"mangle": {"key": {"meta": {"key": "'
    'mark"}}, "value": {"^": [{"meta": {"key": "mark"}}, 16384]}}}]}}, {"rule": {"family": "i'
    'p", "table": "kube-proxy", "chain": "masquerading", "handle": 18, "expr": [{"masquerade"'
    ': {"flags": "fully-random"}}]}}, {"rule": {"family": "ip", "table": "kube-proxy", "chain'
    '": "services", "handle": 26, "expr": [{"vmap": {"key": {"concat": [{"payload": {"protoco'
    'l": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th'
    '", "field": "dport"}}]}, "data": "@service-ips"}}]}}, {"rule": {"family": "ip", "table":'
    ' "kube-proxy", "chain": "services", "handle": 27, "expr": [{"match": {"op": "==", "left"'
    ': {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}}, {"match": {"op": '
    '"!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"a'
    'ddr": "127.0.0.0", "len": 8}}}}, {"vmap": {"key": {"concat": [{"meta": {"key": "l4proto"'
    '}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@service-nodeports"}}]'
    '}}, {"rule": {"family": "ip", "table": "kube-proxy", "chain": "filter-prerouting", "hand'
    'le": 19, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new'
    '"}}, {"jump": {"target": "firewall-check"}}]}}, {"rule": {"family": "ip", "table": "kube'
    '-proxy", "chain": "nat-prerouting", "handle": 20, "expr": [{"jump": {"target": "services'
    '"}}]}}, {"rule": {"family": "ip", "table": "kube-proxy", "chain": "nat-postrouting", "ha'
    'ndle": 21, "expr": [{"jump": {"target": "masquerading"}}]}}, {"rule": {"family": "ip", "'
    'table": "kube-proxy", "chain": "firewall-check", "handle": 22, "expr": [{"vmap": {"key":'
    ' {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4prot'
    'o"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@firewall-ips"}}]}},'
    ' {"rule": {"family": "ip", "table": "kube-proxy", "chain": "cluster-ips-check", "handle"'
    ': 23, "comment": "Reject traffic to invalid ports of ClusterIPs", "expr": [{"match": {"o'
    'p": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "@cluster-'
    'ips"}}, {"reject": {"type": "icmp", "expr": "port-unreachable"}}]}}, {"rule": {"family":'
    ' "ip", "table": "kube-proxy", "chain": "cluster-ips-check", "handle": 24, "comment": "Dr'
    'op traffic to unallocated ClusterIPs", "expr": [{"match": {"op": "==", "left": {"payload'
    '": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "198.19.0.0", "le'
    'n": 16}}}}, {"drop": null}]}}, {"rule": {"family": "ip", "table": "kube-proxy", "chain":'
    ' "reject-chain", "handle": 25, "expr": [{"reject": {"type": "icmp", "expr": "port-unreac'
    'hable"}}]}}, {"rule": {"family": "ip", "table": "kube-proxy", "chain": "service-ULMVA6XW'
    '-ns1/svc1/tcp/p80", "handle": 34, "expr": [{"match": {"op": "==", "left": {"payload": {"'
    'protocol": "ip", "field": "daddr"}}, "right": "198.19.0.41"}}, {"match": {"op": "==", "l'
    'eft": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80}}, {"match": {"op"'
    ': "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {'
    '"addr": "198.18.128.0", "len": 17}}}}, {"jump": {"target": "mark-for-masquerade"}}]}}, {'
    '"rule": {"family": "ip", "table": "kube-proxy", "chain": "service-ULMVA6XW-ns1/svc1/tcp/'
    'p80", "handle": 36, "expr": [{"vmap": {"key": {"numgen": {"mode": "random", "mod": 2, "o'
    'ffset": 0}}, "data": {"set": [[0, {"goto": {"target": "endpoint-5OJB2KTY-ns1/svc1/tcp/p8'
    '0__198.18.128.1/80"}}], [1, {"goto": {"target": "endpoint-6OJB2KTY-ns1/svc1/tcp/p80__198'
    '.18.128.2/80"}}]]}}}]}}, {"rule": {"family": "ip", "table": "kube-proxy", "chain": "endp'
    'oint-5OJB2KTY-ns1/svc1/tcp/p80__198.18.128.1/80", "handle": 37, "expr": [{"match": {"op"'
    ': "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "198.18.128.'
    '1"}}, {"jump": {"target": "mark-for-masquerade"}}]}}, {"rule": {"family": "ip", "table":'
    ' "kube-proxy", "chain": "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__198.18.128.1/80", "handle":'
    ' 38, "expr": [{"set": {"op": "update", "elem": {"payload": {"protocol": "ip", "field": "'
    'saddr"}}, "set": "@affinity-5OJB2KTY-ns1/svc1/tcp/p80__198.18.128.1/80"}}]}}, {"rule": {'
    '"family": "ip", "table": "kube-proxy", "chain": "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__198'
    '.18.128.1/80", "handle": 39, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l'
    '4proto"}}, "right": "tcp"}}, {"dnat": {"addr": "198.18.128.1", "port": 80}}]}}, {"rule":'
    ' {"family": "ip", "table": "kube-proxy", "chain": "endpoint-6OJB2KTY-ns1/svc1/tcp/p80__1'
    '98.18.128.2/80", "handle": 40, "expr": [{"match": {"op": "==", "left": {"payload": {"pro'
    'tocol": "ip", "field": "saddr"}}, "right": "198.18.128.2"}}, {"jump": {"target": "mark-f'
    'or-masquerade"}}]}}, {"rule": {"family": "ip", "table": "kube-proxy", "chain": "endpoint'
    '-6OJB2KTY-ns1/svc1/tcp/p80__198.18.128.2/80", "handle": 41, "expr": [{"match": {"op": "='
    '=", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"dnat": {"addr": "198.18.12'
    '8.2", "port": 80}}]}}, {"rule": {"family": "ip", "table": "kube-proxy", "chain": "extern'
    'al-42NFTM6N-ns2/svc2/tcp/p80", "handle": 42, "comment": "short-circuit pod traffic", "ex'
    'pr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, '
    '"right": {"prefix": {"addr": "198.18.128.0", "len": 17}}}}, {"goto": {"target": "service'
    '-ULMVA6XW-ns1/svc1/tcp/p80"}}]}}, {"rule": {"family": "ip", "table": "kube-proxy", "chai'
    'n": "external-42NFTM6N-ns2/svc2/tcp/p80", "handle": 43, "comment": "masquerade local tra'
    'ffic", "expr": [{"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["sad'
    'dr"]}}, "right": "local"}}, {"jump": {"target": "mark-for-masquerade"}}]}}, {"rule": {"f'
    'amily": "ip", "table": "kube-proxy", "chain": "external-42NFTM6N-ns2/svc2/tcp/p80", "han'
    'dle": 44, "comment": "short-circuit local traffic", "expr": [{"match": {"op": "==", "lef'
    't": {"fib": {"result": "type", "flags": ["saddr"]}}, "right": "local"}}, {"goto": {"targ'
    'et": "service-ULMVA6XW-ns1/svc1/tcp/p80"}}]}}, {"rule": {"family": "ip", "table": "kube-'
    'proxy", "chain": "firewall-HVFWP5L3-ns5/svc5/tcp/p80", "handle": 45, "expr": [{"match": '
    '{"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefi'
    'x": {"addr": "203.0.113.0", "len": 25}}}}, {"drop": null}]}}]}'
)


# Block syntax with the statement kinds, priorities and set declarations the parser reads.
MISC_SOURCE = """\
table inet misc {
	set nets { type ipv4_addr; flags interval; elements = { 198.18.0.0/24, 198.18.5.1-198.18.5.9, 198.19.0.1 comment "one host" } }
	set svc { typeof ip daddr . tcp dport; elements = { 198.18.0.1 . 80 comment "web", 198.18.0.2 . 443 } }
	set seen { type ipv4_addr; flags timeout; timeout 1h; elements = { 198.18.0.7 timeout 30m } }
	map marks { typeof meta mark : ct mark; elements = { 0x1 : 0x2 } }
	set ifs { type ifname; flags interval; elements = { "eth0", "veth*" } }
	chain pre { type filter hook prerouting priority raw + 5; policy accept;
		ip saddr 198.18.0.1 ip daddr != 198.18.0.0/16 counter
		tcp sport 1024-65535 tcp dport { 80, 443, 8000-8100 } accept
		tcp flags & (syn|ack) == syn accept
		meta l4proto { tcp, udp } iifname "eth*" oifname "lo" accept
		iifname @ifs meta mark & 0xff00 != 0x100 accept
		ct state established,related accept
		ct state invalid drop
		ct status dnat ct direction reply ct mark 0x5 accept
		ct mark set mark meta mark set ct mark
		fib daddr . iif type local drop
		ip daddr @nets ip daddr . tcp dport @svc accept
		limit rate over 10/minute drop
		log prefix "natlens: " counter packets 5 bytes 10 continue
		update @seen { ip saddr timeout 10s }
		meta l4proto tcp reject with tcp reset
		quota 10 mbytes accept
	}
	chain nat { type nat hook prerouting priority dstnat - 10; policy accept;
		meta l4proto tcp ip daddr 198.18.0.9 dnat ip to 198.18.0.1:80
		dnat ip to ip daddr map { 198.18.0.2 : 198.18.1.2 }
		meta l4proto tcp dnat ip6 to [2001:db8::1]:8080
		meta l4proto tcp redirect to :8080
	}
	chain post { type nat hook postrouting priority srcnat + 5; policy drop;
		masquerade random,persistent
		meta l4proto udp snat ip to 198.18.0.1:1000-2000
	}
	chain forward-filter { type filter hook forward priority filter - 5; policy drop; }
}
table bridge br {
	chain f { type filter hook forward priority filter; policy accept; }
}
table netdev nd {
	chain ing { type filter hook ingress device "lo" priority -500; policy accept; }
}
"""


# `nft -a list ruleset` after `nft -f` of MISC_SOURCE.
MISC_TEXT = """\
table inet misc { # handle 132
	set nets { # handle 5
		type ipv4_addr
		flags interval
		elements = { 198.18.0.0/24, 198.18.5.1-198.18.5.9,
			     198.19.0.1 comment "one host" }
	}

	set svc { # handle 6
		typeof ip daddr . tcp dport
		elements = { 198.18.0.1 . 80 comment "web",
			     198.18.0.2 . 443 }
	}

	set seen { # handle 7
		type ipv4_addr
		size 65535
		flags dynamic,timeout
		timeout 1h
		elements = { 198.18.0.7 timeout 30m expires 29m59s980ms }
	}

	map marks { # handle 8
		typeof meta mark : ct mark
		elements = { 0x00000001 : 0x00000002 }
	}

	set ifs { # handle 9
		type ifname
		flags interval
		elements = { "eth0",
			     "veth*" }
	}

	chain pre { # handle 1
		type filter hook prerouting priority raw + 5; policy accept;
		ip saddr 198.18.0.1 ip daddr != 198.18.0.0/16 counter packets 0 bytes 0 # handle 10
		tcp sport 1024-65535 tcp dport { 80, 443, 8000-8100 } accept # handle 12
		tcp flags syn / syn,ack accept # handle 13
		meta l4proto { tcp, udp } iifname "eth*" oifname "lo" accept # handle 15
		iifname @ifs meta mark & 0x0000ff00 != 0x00000100 accept # handle 16
		ct state established,related accept # handle 17
		ct state invalid drop # handle 18
		ct status dnat ct direction reply ct mark 0x00000005 accept # handle 19
		ct mark set meta mark meta mark set ct mark # handle 20
		fib daddr . iif type local drop # handle 21
		ip daddr @nets ip daddr . tcp dport @svc accept # handle 22
		limit rate over 10/minute drop # handle 23
		log prefix "natlens: " counter packets 5 bytes 10 continue # handle 24
		update @seen { ip saddr timeout 10s } # handle 25
		meta l4proto tcp reject with tcp reset # handle 26
		quota 10 mbytes accept # handle 27
	}

	chain nat { # handle 2
		type nat hook prerouting priority dstnat - 10; policy accept;
		meta l4proto tcp ip daddr 198.18.0.9 dnat ip to 198.18.0.1:80 # handle 28
		dnat ip to ip daddr map { 198.18.0.2 : 198.18.1.2 } # handle 30
		meta l4proto tcp dnat ip6 to [2001:db8::1]:8080 # handle 31
		meta l4proto tcp redirect to :8080 # handle 32
	}

	chain post { # handle 3
		type nat hook postrouting priority srcnat + 5; policy drop;
		masquerade random,persistent # handle 33
		meta l4proto udp snat ip to 198.18.0.1:1000-2000 # handle 34
	}

	chain forward-filter { # handle 4
		type filter hook forward priority filter - 5; policy drop;
	}
}
table bridge br { # handle 133
	chain f { # handle 1
		type filter hook forward priority filter; policy accept;
	}
}
table netdev nd { # handle 134
	chain ing { # handle 1
		type filter hook ingress device "lo" priority -500; policy accept;
	}
}
"""


# `nft -j list ruleset` of the same rule set.
MISC_JSON = (
    '{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json'
    '_schema_version": 1}}, {"table": {"family": "inet", "name": "misc", "handle": 132}}, {"s'
    'et": {"family": "inet", "name": "nets", "table": "misc", "type": "ipv4_addr", "handle": '
    '5, "flags": ["interval"], "elem": [{"prefix": {"addr": "198.18.0.0", "len": 24}}, {"rang'
    'e": ["198.18.5.1", "198.18.5.9"]}, {"elem": {"val": "198.19.0.1", "comment": "one host"}'
    '}]}}, {"set": {"family": "inet", "name": "svc", "table": "misc", "type": ["ipv4_addr", "'
    'inet_service"], "handle": 6, "elem": [{"elem": {"val": {"concat": ["198.18.0.1", 80]}, "'
    'comment": "web"}}, {"concat": ["198.18.0.2", 443]}]}}, {"set": {"family": "inet", "name"'
    ': "seen", "table": "misc", "type": "ipv4_addr", "handle": 7, "size": 65535, "flags": ["t'
    'imeout"], "timeout": 3600, "elem": [{"elem": {"val": "198.18.0.7", "timeout": 1800, "exp'
    'ires": 1799}}]}}, {"map": {"family": "inet", "name": "marks", "table": "misc", "type": "'
    'mark", "handle": 8, "map": "mark", "elem": [[1, 2]]}}, {"set": {"family": "inet", "name"'
    ': "ifs", "table": "misc", "type": "ifname", "handle": 9, "flags": ["interval"], "elem": '
    '["eth0", "veth*"]}}, {"chain": {"family": "inet", "table": "misc", "name": "pre", "handl'
    'e": 1, "type": "filter", "hook": "prerouting", "prio": -295, "policy": "accept"}}, {"cha'
    'in": {"family": "inet", "table": "misc", "name": "nat", "handle": 2, "type": "nat", "hoo'
    'k": "prerouting", "prio": -110, "policy": "accept"}}, {"chain": {"family": "inet", "tabl'
    'e": "misc", "name": "post", "handle": 3, "type": "nat", "hook": "postrouting", "prio": 1'
    '05, "policy": "drop"}}, {"chain": {"family": "inet", "table": "misc", "name": "forward-f'
    'ilter", "handle": 4, "type": "filter", "hook": "forward", "prio": -5, "policy": "drop"}}'
    ', {"rule": {"family": "inet", "table": "misc", "chain": "pre", "handle": 10, "expr": [{"'
    'match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right":'
    ' "198.18.0.1"}}, {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": '
    '"daddr"}}, "right": {"prefix": {"addr": "198.18.0.0", "len": 16}}}}, {"counter": {"packe'
    'ts": 0, "bytes": 0}}]}}, {"rule": {"family": "inet", "table": "misc", "chain": "pre", "h'
    'andle": 12, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "fie'
    'ld": "sport"}}, "right": {"range": [1024, 65535]}}}, {"match": {"op": "==", "left": {"pa'
    'yload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [80, 443, {"range": [80'
    '00, 8100]}]}}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "misc", "chain'
    '": "pre", "handle": 13, "expr": [{"match": {"op": "==", "left": {"&": [{"payload": {"pro'
    'tocol": "tcp", "field": "flags"}}, ["syn", "ack"]]}, "right": "syn"}}, {"accept": null}]'
    '}}, {"rule": {"family": "inet", "table": "misc", "chain": "pre", "handle": 15, "expr": ['
    '{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["tcp", "u'
    'dp"]}}}, {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth*"}},'
    ' {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "lo"}}, {"accept"'
    ': null}]}}, {"rule": {"family": "inet", "table": "misc", "chain": "pre", "handle": 16, "'
    'expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "@ifs"}}, '
    '{"match": {"op": "!=", "left": {"&": [{"meta": {"key": "mark"}}, 65280]}, "right": 256}}'
    ', {"accept": null}]}}, {"rule": {"family": "inet", "table": "misc", "chain": "pre", "han'
    'dle": 17, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["e'
    'stablished", "related"]}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "mi'
    'sc", "chain": "pre", "handle": 18, "expr": [{"match": {"op": "in", "left": {"ct": {"key"'
    ': "state"}}, "right": "invalid"}}, {"drop": null}]}}, {"rule": {"family": "inet", "table'
    '": "misc", "chain": "pre", "handle": 19, "expr": [{"match": {"op": "in", "left": {"ct": '
    '{"key": "status"}}, "right": "dnat"}}, {"match": {"op": "==", "left": {"ct": {"key": "di'
    'rection"}}, "right": "reply"}}, {"match": {"op": "==", "left": {"ct": {"key": "mark"}}, '
    '"right": 5}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "misc", "chain":'
    ' "pre", "handle": 20, "expr": [{"mangle": {"key": {"ct": {"key": "mark"}}, "value": {"me'
    'ta": {"key": "mark"}}}}, {"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"ct": {'
    '"key": "mark"}}}}]}}, {"rule": {"family": "inet", "table": "misc", "chain": "pre", "hand'
    'le": 21, "expr": [{"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["d'
    'addr", "iif"]}}, "right": "local"}}, {"drop": null}]}}, {"rule": {"family": "inet", "tab'
    'le": "misc", "chain": "pre", "handle": 22, "expr": [{"match": {"op": "==", "left": {"pay'
    'load": {"protocol": "ip", "field": "daddr"}}, "right": "@nets"}}, {"match": {"op": "==",'
    ' "left": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"payload": {"pr'
    'otocol": "tcp", "field": "dport"}}]}, "right": "@svc"}}, {"accept": null}]}}, {"rule": {'
    '"family": "inet", "table": "misc", "chain": "pre", "handle": 23, "expr": [{"limit": {"ra'
    'te": 10, "burst": 5, "per": "minute", "inv": true}}, {"drop": null}]}}, {"rule": {"famil'
    'y": "inet", "table": "misc", "chain": "pre", "handle": 24, "expr": [{"log": {"prefix": "'
    'natlens: "}}, {"counter": {"packets": 5, "bytes": 10}}, {"continue": null}]}}, {"rule": '
    '{"family": "inet", "table": "misc", "chain": "pre", "handle": 25, "expr": [{"set": {"op"'
    ': "update", "elem": {"elem": {"val": {"payload": {"protocol": "ip", "field": "saddr"}}, '
    '"timeout": 10}}, "set": "@seen"}}]}}, {"rule": {"family": "inet", "table": "misc", "chai'
    'n": "pre", "handle": 26, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4pro'
    'to"}}, "right": "tcp"}}, {"reject": {"type": "tcp reset"}}]}}, {"rule": {"family": "inet'
    '", "table": "misc", "chain": "pre", "handle": 27, "expr": [{"quota": {"val": 10, "val_un'
    'it": "mbytes"}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "misc", "chai'
    'n": "nat", "handle": 28, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4pro'
    'to"}}, "right": "tcp"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "'
    'field": "daddr"}}, "right": "198.18.0.9"}}, {"dnat": {"family": "ip", "addr": "198.18.0.'
    '1", "port": 80}}]}}, {"rule": {"family": "inet", "table": "misc", "chain": "nat", "handl'
    'e": 30, "expr": [{"dnat": {"family": "ip", "addr": {"map": {"key": {"payload": {"protoco'
    'l": "ip", "field": "daddr"}}, "data": {"set": [["198.18.0.2", "198.18.1.2"]]}}}}}]}}, {"'
    'rule": {"family": "inet", "table": "misc", "chain": "nat", "handle": 31, "expr": [{"matc'
    'h": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"dnat": {"fami'
    'ly": "ip6", "addr": "2001:db8::1", "port": 8080}}]}}, {"rule": {"family": "inet", "table'
    '": "misc", "chain": "nat", "handle": 32, "expr": [{"match": {"op": "==", "left": {"meta"'
    ': {"key": "l4proto"}}, "right": "tcp"}}, {"redirect": {"port": 8080}}]}}, {"rule": {"fam'
    'ily": "inet", "table": "misc", "chain": "post", "handle": 33, "expr": [{"masquerade": {"'
    'flags": ["random", "persistent"]}}]}}, {"rule": {"family": "inet", "table": "misc", "cha'
    'in": "post", "handle": 34, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4p'
    'roto"}}, "right": "udp"}}, {"snat": {"family": "ip", "addr": "198.18.0.1", "port": {"ran'
    'ge": [1000, 2000]}}}]}}, {"table": {"family": "bridge", "name": "br", "handle": 133}}, {'
    '"chain": {"family": "bridge", "table": "br", "name": "f", "handle": 1, "type": "filter",'
    ' "hook": "forward", "prio": -200, "policy": "accept"}}, {"table": {"family": "netdev", "'
    'name": "nd", "handle": 134}}, {"chain": {"family": "netdev", "table": "nd", "name": "ing'
    '", "handle": 1, "type": "filter", "hook": "ingress", "prio": -500, "policy": "accept"}}]'
    '}'
)


# `nft list ruleset 2>&1` of a node where iptables-nft wrote nat and filter rules.
IPT_TEXT = """\
# Warning: table ip nat is managed by iptables-nft, do not touch!
table ip nat {
	chain KUBE-SERVICES {
		ip daddr 198.19.0.10 tcp dport 80 counter packets 0 bytes 0 jump KUBE-MARK-MASQ
	}

	chain KUBE-MARK-MASQ {
		counter packets 0 bytes 0 meta mark set mark or 0x4000
	}

	chain PREROUTING {
		type nat hook prerouting priority dstnat; policy accept;
		 counter packets 0 bytes 0 jump KUBE-SERVICES
	}
}
# Warning: table ip filter is managed by iptables-nft, do not touch!
table ip filter {
	chain FORWARD {
		type filter hook forward priority filter; policy accept;
		xt match physdev counter packets 0 bytes 0 accept
	}
}
table inet mine {
	chain c {
		ct state new accept
	}
}
"""


# `nft -j list ruleset` of the same rule set.
IPT_JSON = (
    '{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json'
    '_schema_version": 1}}, {"table": {"family": "ip", "name": "nat", "handle": 135}}, {"chai'
    'n": {"family": "ip", "table": "nat", "name": "KUBE-SERVICES", "handle": 1}}, {"chain": {'
    '"family": "ip", "table": "nat", "name": "KUBE-MARK-MASQ", "handle": 2}}, {"chain": {"fam'
    'ily": "ip", "table": "nat", "name": "PREROUTING", "handle": 3, "type": "nat", "hook": "p'
    'rerouting", "prio": -100, "policy": "accept"}}, {"rule": {"family": "ip", "table": "nat"'
    ', "chain": "KUBE-SERVICES", "handle": 5, "expr": [{"match": {"op": "==", "left": {"paylo'
    'ad": {"protocol": "ip", "field": "daddr"}}, "right": "198.19.0.10"}}, {"match": {"op": "'
    '==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80}}, {"counte'
    'r": {"packets": 0, "bytes": 0}}, {"jump": {"target": "KUBE-MARK-MASQ"}}]}}, {"rule": {"f'
    'amily": "ip", "table": "nat", "chain": "KUBE-MARK-MASQ", "handle": 6, "expr": [{"counter'
    '": {"packets": 0, "bytes": 0}}, {"xt": {"type": "target", "name": "MARK"}}]}}, {"rule": '
    '{"family": "ip", "table": "nat", "chain": "PREROUTING", "handle": 4, "expr": [{"xt": {"t'
    'ype": "match", "name": "comment"}}, {"counter": {"packets": 0, "bytes": 0}}, {"jump": {"'
    'target": "KUBE-SERVICES"}}]}}, {"table": {"family": "ip", "name": "filter", "handle": 13'
    '6}}, {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "handle": 1, "type'
    '": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}, {"rule": {"family": "ip'
    '", "table": "filter", "chain": "FORWARD", "handle": 2, "expr": [{"xt": {"type": "match",'
    ' "name": "physdev"}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}}, {"ta'
    'ble": {"family": "inet", "name": "mine", "handle": 137}}, {"chain": {"family": "inet", "'
    'table": "mine", "name": "c", "handle": 1}}, {"rule": {"family": "inet", "table": "mine",'
    ' "chain": "c", "handle": 2, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "stat'
    'e"}}, "right": "new"}}, {"accept": null}]}}]}'
)


def _rules(rs):
    return {(r.family, r.table, r.chain, r.index): r for r in rs.rules()}


def _sets(rs):
    """Each set's declaration and elements; nft 1.0.6's JSON omits the dynamic flag."""
    return {(s.family, s.table, s.name): (s.key, s.data, s.flags - {"dynamic"}, s.comment,
                                          sorted(repr((e.key, e.value, e.comment))
                                                 for e in s.elements))
            for t in rs.tables.values() for s in t.sets.values()}


def _chains(rs):
    return {(c.family, c.table, c.name): (c.type, c.hook, c.prio, c.policy)
            for t in rs.tables.values() for c in t.chains.values()}


def _assert_same(a, b, skip=()):
    """Two parses of one rule set hold the same chains, sets and rule statements."""
    ra, rb = _rules(a), _rules(b)
    assert ra.keys() == rb.keys()
    for k in ra:
        if k in skip:
            continue
        assert ra[k].expr == rb[k].expr, (k, ra[k].text)
        assert ra[k].comment == rb[k].comment, k
    assert _sets(a) == _sets(b)
    assert _chains(a) == _chains(b)


# ----------------------------------------------------------------- the three formats


def test_command_file_as_knftables_writes_it():
    rs = parse_nft(KP_COMMANDS, "kp.nft")
    assert rs.format == "commands" and rs.notes == []
    t = rs.tables[("ip", "kube-proxy")]
    assert t.comment == "rules for kube-proxy" and t.managed_by is None
    pre = t.chains["nat-prerouting"]
    assert (pre.type, pre.hook, pre.prio, pre.policy, pre.base) == ("nat", "prerouting", -100,
                                                                    "accept", True)
    assert not t.chains["services"].base
    assert t.chains["reject-chain"].comment.startswith("helper for @no-endpoint-services")
    svc = t.chains["service-ULMVA6XW-ns1/svc1/tcp/p80"]
    first, second = svc.rules
    assert (first.index, second.index) == (1, 2)
    assert first.text == ("ip daddr 198.19.0.41 tcp dport 80 ip saddr != 198.18.128.0/17 "
                          "jump mark-for-masquerade")
    line = KP_COMMANDS.splitlines().index(f"add rule ip kube-proxy {svc.name} {first.text}") + 1
    assert (first.where, first.handle) == (f"kp.nft:{line}", None)
    drop = t.chains["cluster-ips-check"].rules[1]
    assert drop.comment == "Drop traffic to unallocated ClusterIPs"
    # nft stores a one-element anonymous set as its element, and lists it so
    assert drop.expr[0]["match"]["right"] == {"prefix": {"addr": "198.19.0.0", "len": 16}}
    # elements of `add element` commands land in their set, comments included
    nes = t.sets["no-endpoint-services"]
    assert nes.key == ("ipv4_addr", "inet_proto", "inet_service") and nes.data == "verdict"
    assert nes.elements == [
        NftElement({"concat": ["198.19.0.43", "tcp", 80]}, {"drop": None}, "ns2/svc2:p80"),
        NftElement({"concat": ["198.19.0.44", "udp", 53]}, {"goto": {"target": "reject-chain"}},
                   "ns3/svc3:dns")]
    aff = t.sets["affinity-5OJB2KTY-ns1/svc1/tcp/p80__198.18.128.1/80"]
    assert aff.flags == {"dynamic", "timeout"} and not aff.is_map


def test_list_ruleset_text():
    rs = parse_nft(KP_TEXT, "kp.txt")
    assert rs.format == "text"
    t = rs.tables[("ip", "kube-proxy")]
    assert t.comment == "rules for kube-proxy"
    # nft prints -110 on prerouting as "dstnat - 10" and 100 on postrouting as "srcnat"
    assert "priority dstnat - 10;" in KP_TEXT and "priority srcnat;" in KP_TEXT
    assert t.chains["filter-prerouting"].prio == -110
    assert t.chains["nat-postrouting"].prio == 100
    masq = t.chains["masquerading"].rules
    assert [r.text for r in masq] == ["meta mark & 0x00004000 == 0x00000000 return",
                                      "meta mark set meta mark ^ 0x00004000",
                                      "masquerade fully-random"]
    assert masq[0].where == f"kp.txt:{KP_TEXT.splitlines().index(TAB2 + masq[0].text) + 1}"
    assert t.sets["service-ips"].elements[0] == NftElement(
        {"concat": ["198.18.100.1", "tcp", 80]},
        {"goto": {"target": "external-42NFTM6N-ns2/svc2/tcp/p80"}})


def test_json_dump():
    rs = parse_nft(KP_JSON, "kp.json")
    assert rs.format == "json" and rs.notes == []
    t = rs.tables[("ip", "kube-proxy")]
    assert t.comment is None            # nft 1.0.6 -j does not print table comments
    r = t.chains["cluster-ips-check"].rules[0]
    assert (r.lineno, r.comment) == (1, "Reject traffic to invalid ports of ClusterIPs")
    assert f'"handle": {r.handle}, "comment": "{r.comment}"' in KP_JSON
    assert r.text == f'ip daddr @cluster-ips reject comment "{r.comment}"'
    assert r.expr[1] == {"reject": {"type": "icmp", "expr": "port-unreachable"}}
    # a pretty-printed dump names the line each rule object starts on
    pretty = json.dumps(json.loads(KP_JSON), indent=2)
    lines = pretty.splitlines()
    for r in parse_nft(pretty, "kp.json").rules():
        assert lines[r.lineno - 1].strip() == "{" and '"rule"' in lines[r.lineno]
        assert r.where == f"kp.json:{r.lineno}"


def test_a_one_line_json_dump_names_rules_by_handle_and_items_by_index():
    # nft -j prints one line: "kp.json:1" would name every rule alike
    rs = parse_nft(KP_JSON, "kp.json")
    t = rs.tables[("ip", "kube-proxy")]
    r = t.chains["cluster-ips-check"].rules[0]
    assert r.where == f"kp.json: rule handle {r.handle} (ip kube-proxy cluster-ips-check)"
    assert len({r.where for r in rs.rules()}) == rs.rule_count()
    assert t.where == "kp.json: table ip kube-proxy"
    assert t.chains["services"].where == "kp.json: chain ip kube-proxy services"
    assert t.sets["service-ips"].where == "kp.json: map ip kube-proxy service-ips"
    assert t.sets["cluster-ips"].where == "kp.json: set ip kube-proxy cluster-ips"
    # a JSON command file without handles: the index in the "nftables" list
    cmds = json.dumps({"nftables": [{"add": {"table": {"family": "ip", "name": "t"}}},
                                    {"add": {"chain": {"family": "ip", "table": "t", "name": "c"}}},
                                    {"add": {"rule": {"family": "ip", "table": "t", "chain": "c",
                                                      "expr": [{"accept": None}]}}}]})
    (r,) = parse_nft(cmds, "c.json").rules()
    assert (r.where, r.text) == ("c.json: rule nftables[2] (ip t c)", "accept")
    # errors too
    bad = cmds.replace('"chain": "c"', '"chain": "x"')
    with pytest.raises(NatlensError, match=r"^c\.json:nftables\[2\]: rule for unknown chain ip t x"):
        parse_nft(bad, "c.json")
    with pytest.raises(NatlensError, match=r"^c\.json:1:\d+: invalid JSON: "):
        parse_nft(cmds[:-30], "c.json")


def test_the_three_formats_agree_rule_by_rule():
    commands = parse_nft(KP_COMMANDS, "kp.nft")
    text = parse_nft(KP_TEXT, "kp.txt")
    js = parse_nft(KP_JSON, "kp.json")
    assert js.rule_count() == text.rule_count() == commands.rule_count() == 24
    _assert_same(text, js)
    _assert_same(commands, js)


def test_text_to_json_to_text_gives_back_what_nft_prints():
    for r in parse_nft(KP_TEXT, "kp.txt").rules():
        back = format_rule(r.expr, r.family) + (f' comment "{r.comment}"' if r.comment else "")
        assert back == r.text
    for r in parse_nft(MISC_TEXT, "misc.txt").rules():
        assert format_rule(r.expr, r.family) == r.text


def test_other_statement_kinds_agree_with_nft_json():
    text = parse_nft(MISC_TEXT, "misc.txt")
    js = parse_nft(MISC_JSON, "misc.json")
    quota = ("inet", "misc", "pre", 16)
    _assert_same(text, js, skip={quota})
    assert _rules(text)[quota].expr == [{"unparsed": "quota 10 mbytes accept"}]
    assert _rules(js)[quota].expr[0] == {"quota": {"val": 10, "val_unit": "mbytes"}}
    # nft -a prints handles
    pre = text.tables[("inet", "misc")].chains["pre"]
    assert [r.handle for r in pre.rules[:3]] == [10, 12, 13]
    assert [r.handle for r in pre.rules] == [r.handle for r in
                                             js.tables[("inet", "misc")].chains["pre"].rules]


# ----------------------------------------------------------------- declarations


def test_priorities_by_name_and_arithmetic():
    for rs in (parse_nft(MISC_TEXT, "misc.txt"), parse_nft(MISC_JSON, "misc.json")):
        prio = {(c.table, c.name): c.prio for t in rs.tables.values() for c in t.chains.values()}
        assert prio == {("misc", "pre"): -295, ("misc", "nat"): -110, ("misc", "post"): 105,
                        ("misc", "forward-filter"): -5, ("br", "f"): -200, ("nd", "ing"): -500}
    misc = parse_nft(MISC_TEXT, "misc.txt").tables[("inet", "misc")]
    assert (misc.chains["post"].policy, misc.chains["pre"].policy) == ("drop", "accept")
    assert parse_nft(MISC_TEXT, "misc.txt").tables[("netdev", "nd")].chains["ing"].device == "lo"
    assert chain_priority("dstnat - 10") == -110
    assert chain_priority("filter + 5") == 5
    assert chain_priority("-110") == -110
    assert chain_priority("srcnat") == 100
    assert chain_priority("out", "bridge") == 100
    for bad in ("bogus", "out", "dstnat * 2", ""):
        with pytest.raises(ValueError):
            chain_priority(bad)


def test_typeof_resolves_to_type_names():
    text = parse_nft(MISC_TEXT, "misc.txt").tables[("inet", "misc")]
    js = parse_nft(MISC_JSON, "misc.json").tables[("inet", "misc")]
    assert "typeof ip daddr . tcp dport" in MISC_TEXT
    for t in (text, js):
        assert t.sets["svc"].key == ("ipv4_addr", "inet_service")
        assert (t.sets["marks"].key, t.sets["marks"].data) == (("mark",), "mark")
        assert t.sets["marks"].elements == [NftElement(1, 2)]
    rs = parse_nft("add table inet t\nadd set inet t s { typeof meta l4proto . th dport . "
                   "ip6 saddr . ct state ; }\nadd map inet t m { typeof iifname : verdict ; }\n",
                   "typeof.nft")
    sets = rs.tables[("inet", "t")].sets
    assert sets["s"].key == ("inet_proto", "inet_service", "ipv6_addr", "ct_state")
    assert (sets["m"].key, sets["m"].data) == (("ifname",), "verdict")


def test_interval_sets_element_comments_and_timeouts():
    for rs in (parse_nft(MISC_TEXT, "misc.txt"), parse_nft(MISC_JSON, "misc.json")):
        sets = rs.tables[("inet", "misc")].sets
        assert sets["nets"].flags == {"interval"}
        assert sets["nets"].elements == [
            NftElement({"prefix": {"addr": "198.18.0.0", "len": 24}}),
            NftElement({"range": ["198.18.5.1", "198.18.5.9"]}),
            NftElement("198.19.0.1", comment="one host")]
        assert sets["svc"].elements[0] == NftElement({"concat": ["198.18.0.1", 80]},
                                                     comment="web")
        assert sets["seen"].elements == [NftElement("198.18.0.7")]   # timeout/expires skipped
        assert [e.key for e in sets["ifs"].elements] == ["eth0", "veth*"]


def test_iptables_nft_tables_are_marked():
    text = parse_nft(IPT_TEXT, "ipt.txt")
    js = parse_nft(IPT_JSON, "ipt.json")
    for rs in (text, js):
        managed = {k: t.managed_by for k, t in rs.tables.items()}
        assert managed == {("ip", "nat"): "iptables-nft", ("ip", "filter"): "iptables-nft",
                           ("inet", "mine"): None}
    # the text shows iptables-nft's translation where there is one, the JSON the xt statement
    assert text.tables[("ip", "nat")].chains["KUBE-MARK-MASQ"].rules[0].expr[1] == {
        "mangle": {"key": {"meta": {"key": "mark"}},
                   "value": {"|": [{"meta": {"key": "mark"}}, 16384]}}}
    assert js.tables[("ip", "nat")].chains["KUBE-MARK-MASQ"].rules[0].expr[1] == {
        "xt": {"type": "target", "name": "MARK"}}
    fwd = text.tables[("ip", "filter")].chains["FORWARD"].rules[0]
    assert fwd.expr[0] == {"xt": {"type": "match", "name": "physdev"}}
    assert _rules(js)[("ip", "filter", "FORWARD", 1)].expr == fwd.expr
    assert js.tables[("ip", "filter")].chains["FORWARD"].rules[0].text == \
        "xt match physdev counter packets 0 bytes 0 accept"
    # without the warnings (stderr not captured), a table holding xt statements still is
    bare = parse_nft("\n".join(x for x in IPT_TEXT.splitlines() if not x.startswith("#")),
                     "ipt.txt")
    assert bare.tables[("ip", "filter")].managed_by == "iptables-nft"
    assert bare.tables[("ip", "nat")].managed_by is None


# ----------------------------------------------------------------- statements


def test_unparsed_statements_are_kept_with_the_rule():
    rs = parse_nft("add table ip t\nadd chain ip t c\nadd set ip t s { type ipv4_addr ; }\n"
                   'add rule ip t c ip daddr $VIP tcp dport 80 accept comment "vip"\n'
                   "add rule ip t c ip saddr 198.18.0.1 ct count 10 accept\n"
                   "add rule ip t c tcp option maxseg size set 1300\n"
                   "add element ip t s { 198.18.0.1, $MORE }\n", "u.nft")
    vip, count, opt = rs.tables[("ip", "t")].chains["c"].rules
    assert vip.expr == [{"unparsed": "ip daddr $VIP tcp dport 80 accept"}]
    assert vip.comment == "vip" and vip.where == "u.nft:4"
    assert count.expr == [{"match": {"op": "==", "left": {"payload": {"protocol": "ip",
                                                                      "field": "saddr"}},
                                     "right": "198.18.0.1"}},
                          {"unparsed": "ct count 10 accept"}]
    assert opt.expr == [{"unparsed": "tcp option maxseg size set 1300"}]
    s = rs.tables[("ip", "t")].sets["s"]
    assert s.elements == [NftElement("198.18.0.1")] and s.unparsed == ["$MORE"]
    assert any("u.nft:7" in n and "not understood" in n for n in rs.notes)
    # a JSON statement the walk does not know is kept as nft printed it
    js = parse_nft(MISC_JSON, "misc.json")
    assert _rules(js)[("inet", "misc", "pre", 16)].text == \
        'quota {"val": 10, "val_unit": "mbytes"} accept'


P = {"payload": {"protocol": "ip", "field": "saddr"}}
D = {"payload": {"protocol": "ip", "field": "daddr"}}
TH = {"payload": {"protocol": "th", "field": "dport"}}
L4 = {"meta": {"key": "l4proto"}}
MARK = {"meta": {"key": "mark"}}
STATE = {"ct": {"key": "state"}}
FLAGS = {"payload": {"protocol": "tcp", "field": "flags"}}


def _m(left, right, op="=="):
    return {"match": {"op": op, "left": left, "right": right}}


# (a rule as written in a command file, the statements nft -j prints for it); every
# shape here was seen in nft 1.0.6's -j output for the same rule, but queue (no
# nfnetlink_queue here), whose shape is libnftables-json(5)'s.
SHAPES = [
    ("ct state new", [_m(STATE, "new", "in")]),
    ("ct state established,related", [_m(STATE, ["established", "related"], "in")]),
    ("ct state { established, related }", [_m(STATE, {"set": ["established", "related"]})]),
    ("ct state { new }", [_m(STATE, "new", "in")]),
    ("ct state != new", [_m(STATE, "new", "!=")]),
    ("ct state == new", [_m(STATE, "new")]),
    ("ct status dnat ct direction reply", [_m({"ct": {"key": "status"}}, "dnat", "in"),
                                           _m({"ct": {"key": "direction"}}, "reply")]),
    ("ct original ip saddr 198.18.0.1", [_m({"ct": {"key": "ip saddr", "dir": "original"}},
                                            "198.18.0.1")]),
    ("meta l4proto tcp", [_m(L4, "tcp")]),
    ("l4proto 6", [_m(L4, "tcp")]),
    ("meta l4proto { tcp, 17 }", [_m(L4, {"set": ["tcp", "udp"]})]),
    ("th dport 80", [_m(TH, 80)]),
    ("meta l4proto tcp th dport 80", [_m({"payload": {"protocol": "tcp", "field": "dport"}},
                                         80)]),
    ("tcp dport != 23 tcp sport < 1024", [
        _m({"payload": {"protocol": "tcp", "field": "dport"}}, 23, "!="),
        _m({"payload": {"protocol": "tcp", "field": "sport"}}, 1024, "<")]),
    ("tcp flags syn", [_m(FLAGS, "syn", "in")]),
    ("tcp flags syn / fin,syn,rst,ack", [_m({"&": [FLAGS, ["fin", "syn", "rst", "ack"]]},
                                            "syn")]),
    ("tcp flags & (syn|ack) == syn", [_m({"&": [FLAGS, ["syn", "ack"]]}, "syn")]),
    ("mark and 0x4000 == 0", [_m({"&": [MARK, 16384]}, 0)]),
    ("meta mark & 0x0000ff00 != 0x00000100", [_m({"&": [MARK, 65280]}, 256, "!=")]),
    ("mark set mark or 0x4000", [{"mangle": {"key": MARK, "value": {"|": [MARK, 16384]}}}]),
    ("meta mark set meta mark ^ 0x4000", [{"mangle": {"key": MARK,
                                                      "value": {"^": [MARK, 16384]}}}]),
    ("ct mark set mark", [{"mangle": {"key": {"ct": {"key": "mark"}}, "value": MARK}}]),
    ("meta mark 0x1 ct mark 5", [_m(MARK, 1), _m({"ct": {"key": "mark"}}, 5)]),
    ("fib saddr type local", [_m({"fib": {"result": "type", "flags": ["saddr"]}}, "local")]),
    ("fib daddr type local", [_m({"fib": {"result": "type", "flags": ["daddr"]}}, "local")]),
    ("fib daddr . iif type local", [_m({"fib": {"result": "type", "flags": ["daddr", "iif"]}},
                                       "local")]),
    ("fib saddr . iif oif missing", [_m({"fib": {"result": "oif", "flags": ["saddr", "iif"]}},
                                        False)]),
    ("numgen random mod 2 vmap { 0 : goto a , 1 : goto b }", [{"vmap": {
        "key": {"numgen": {"mode": "random", "mod": 2, "offset": 0}},
        "data": {"set": [[0, {"goto": {"target": "a"}}], [1, {"goto": {"target": "b"}}]]}}}]),
    ("numgen inc mod 4 offset 1 4", [_m({"numgen": {"mode": "inc", "mod": 4, "offset": 1}}, 4)]),
    ("ip daddr . meta l4proto . th dport vmap @m",
     [{"vmap": {"key": {"concat": [D, L4, TH]}, "data": "@m"}}]),
    ("meta l4proto . th dport { tcp . 80, 17 . 53 }",
     [_m({"concat": [L4, TH]}, {"set": [{"concat": ["tcp", 80]}, {"concat": ["udp", 53]}]})]),
    ("ip daddr @nodeport-ips", [_m(D, "@nodeport-ips")]),
    ("ip saddr != 198.18.0.0/15", [_m(P, {"prefix": {"addr": "198.18.0.0", "len": 15}}, "!=")]),
    ("ip saddr != { 203.0.113.0/25 }", [_m(P, {"prefix": {"addr": "203.0.113.0", "len": 25}},
                                           "!=")]),
    ("ip saddr 198.18.0.1/32", [_m(P, "198.18.0.1")]),
    ("ip saddr 198.18.0.1-198.18.0.9", [_m(P, {"range": ["198.18.0.1", "198.18.0.9"]})]),
    ("tcp dport { 80, 8000-8100 }", [_m({"payload": {"protocol": "tcp", "field": "dport"}},
                                        {"set": [80, {"range": [8000, 8100]}]})]),
    ('iifname "eth*"', [_m({"meta": {"key": "iifname"}}, "eth*")]),
    ('oifname != { "a", "b" }', [_m({"meta": {"key": "oifname"}}, {"set": ["a", "b"]}, "!=")]),
    ("meta nfproto ipv4 meta pkttype host", [_m({"meta": {"key": "nfproto"}}, "ipv4"),
                                             _m({"meta": {"key": "pkttype"}}, "host")]),
    ("masquerade", [{"masquerade": None}]),
    ("masquerade fully-random", [{"masquerade": {"flags": "fully-random"}}]),
    ("masquerade random,persistent", [{"masquerade": {"flags": ["random", "persistent"]}}]),
    ("meta l4proto tcp masquerade to :1024-2048", [_m(L4, "tcp"), {"masquerade": {
        "port": {"range": [1024, 2048]}}}]),
    ("meta l4proto tcp dnat to 198.18.0.1:80", [_m(L4, "tcp"),
                                                {"dnat": {"addr": "198.18.0.1", "port": 80}}]),
    ("dnat to 198.18.0.1", [{"dnat": {"addr": "198.18.0.1"}}]),
    ("meta l4proto tcp dnat ip to 198.18.0.1-198.18.0.5:80-90", [_m(L4, "tcp"), {"dnat": {
        "family": "ip", "addr": {"range": ["198.18.0.1", "198.18.0.5"]},
        "port": {"range": [80, 90]}}}]),
    ("dnat to ip daddr map { 198.18.0.1 : 198.18.1.1 }", [{"dnat": {"addr": {"map": {
        "key": D, "data": {"set": [["198.18.0.1", "198.18.1.1"]]}}}}}]),
    ("snat to 198.18.0.1 fully-random", [{"snat": {"addr": "198.18.0.1",
                                                    "flags": "fully-random"}}]),
    ("meta l4proto tcp redirect to :8080", [_m(L4, "tcp"), {"redirect": {"port": 8080}}]),
    ("redirect", [{"redirect": None}]),
    ("accept", [{"accept": None}]),
    ("drop", [{"drop": None}]),
    ("return", [{"return": None}]),
    ("continue", [{"continue": None}]),
    ("jump a", [{"jump": {"target": "a"}}]),
    ('goto "service-ULMVA6XW-ns1/svc1/tcp/p80"',
     [{"goto": {"target": "service-ULMVA6XW-ns1/svc1/tcp/p80"}}]),
    ("reject", [{"reject": {"type": "icmp", "expr": "port-unreachable"}}]),
    ("meta l4proto tcp reject with tcp reset", [_m(L4, "tcp"), {"reject": {"type": "tcp reset"}}]),
    ("reject with icmp type host-unreachable", [{"reject": {"type": "icmp",
                                                            "expr": "host-unreachable"}}]),
    ("queue num 3 bypass", [{"queue": {"num": 3, "flags": "bypass"}}]),
    ("counter", [{"counter": {"packets": 0, "bytes": 0}}]),
    ("counter packets 5 bytes 10", [{"counter": {"packets": 5, "bytes": 10}}]),
    ('log prefix "natlens: " level info', [{"log": {"prefix": "natlens: ", "level": "info"}}]),
    ("log level warn", [{"log": None}]),
    ("limit rate 10/second", [{"limit": {"rate": 10, "burst": 5, "per": "second"}}]),
    ("limit rate over 1 mbytes/second", [{"limit": {
        "rate": 1, "burst": 0, "per": "second", "rate_unit": "mbytes", "burst_unit": "bytes",
        "inv": True}}]),
    ("notrack", [{"notrack": None}]),
    ("update @s { ip saddr }", [{"set": {"op": "update", "elem": P, "set": "@s"}}]),
    ("update @s { ip saddr timeout 10s }", [{"set": {"op": "update", "set": "@s", "elem": {
        "elem": {"val": P, "timeout": 10}}}}]),
    ('xt match "physdev" xt target MARK', [{"xt": {"type": "match", "name": "physdev"}},
                                           {"xt": {"type": "target", "name": "MARK"}}]),
]


@pytest.mark.parametrize(("rule", "expr"), SHAPES, ids=[r for r, _ in SHAPES])
def test_statement_shapes(rule, expr):
    rs = parse_nft(f"add table ip t\nadd chain ip t c\nadd rule ip t c {rule}\n", "shape.nft")
    (r,) = rs.rules()
    assert r.expr == expr
    assert r.text == rule
    assert parse_nft(f"table ip t {{\n\tchain c {{\n\t\t{rule}\n\t}}\n}}\n", "t.txt") \
        .tables[("ip", "t")].chains["c"].rules[0].text == rule


def test_format_rule_prints_what_nft_lists():
    assert format_rule([_m({"&": [MARK, 16384]}, 0), {"return": None}]) == \
        "meta mark & 0x00004000 == 0x00000000 return"
    assert format_rule([_m(STATE, ["established", "related"], "in"), {"accept": None}]) == \
        "ct state established,related accept"
    assert format_rule([_m({"meta": {"key": "iifname"}}, "eth*")]) == 'iifname "eth*"'
    assert format_rule([{"dnat": {"family": "ip6", "addr": "2001:db8::1", "port": 80}}]) == \
        "dnat ip6 to [2001:db8::1]:80"
    assert format_rule([{"reject": {"type": "icmpv6", "expr": "port-unreachable"}}], "ip6") == \
        "reject"
    assert format_rule([{"reject": {"type": "icmp", "expr": "port-unreachable"}}], "inet") == \
        "reject with icmp port-unreachable"
    assert format_rule([{"goto": {"target": "a b"}}, {"frob": {"x": 1}}]) == \
        'goto "a b" frob {"x": 1}'


# ----------------------------------------------------------------- commands and errors


def test_flush_delete_and_insert_commands_are_applied():
    rs = parse_nft("""\
add table ip t
add chain ip t a
add chain ip t b
add set ip t s { type ipv4_addr ; }
add rule ip t a accept
flush chain ip t a
add rule ip t a drop
add element ip t s { 198.18.0.1, 198.18.0.2 }
delete element ip t s { 198.18.0.1 }
delete chain ip t b
insert rule ip t a counter
add rule ip t a index 0 return
""", "cmds.nft")
    t = rs.tables[("ip", "t")]
    assert list(t.chains) == ["a"]
    assert [(r.index, r.text, r.lineno) for r in t.chains["a"].rules] == [
        (1, "counter", 11), (2, "return", 12), (3, "drop", 7)]
    assert t.sets["s"].elements == [NftElement("198.18.0.2")]
    assert "cmds.nft: flush chain applied 1 time(s)" in rs.notes


ERRORS = [
    ("table ip t {\n\tchain c {\n\t\taccept\n\t}\n", "t.txt:1:", "never closed"),
    ("table ip t {\n}\n}\n", "t.txt:3:", "'}' without a '{'"),
    ("table ip t {\n\tip saddr 198.18.0.1 drop\n}\n", "t.txt:2:", "a rule outside a chain"),
    ("add table ip t\nadd rule ip t c accept\n", "t.txt:2:", "unknown chain ip t c"),
    ("add chain ip nope c\n", "t.txt:1:", "chain c in unknown table ip nope"),
    ("add table ip t\n\nadd element ip t s { 198.18.0.1 }\n", "t.txt:3:", "unknown set"),
    ("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n", "t.txt:1:", "not an nft rule set"),
    ("table ip t {\n\tchain c {\n\t\ttype filter hook input priority bogus; policy accept;\n"
     "\t}\n}\n", "t.txt:3:", "priority name 'bogus'"),
    ('table ip t {\n\tcomment "open\n}\n', "t.txt:2:", "unterminated quoted string"),
    ("table ip t {\n\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 198.18.0.1,\n",
     "t.txt:4:", "never closed"),
    ('{"nftables": [\n{"table": {"family": "ip", "name": "t"}},\n{"chain": }\n]}', "t.txt:3:",
     "invalid JSON"),
    ('{"ruleset": []}', "t.txt:1:", 'no top-level "nftables" list'),
    ('{"nftables": [\n{"chain": {"family": "ip", "table": "x", "name": "c"}}]}', "t.txt:2:",
     "chain c in unknown table ip x"),
    ('{"nftables": [{"table": {"family": "ip", "name": "t"}},\n'
     '{"rule": {"family": "ip", "table": "t", "chain": "c", "expr": []}}]}', "t.txt:2:",
     "rule for unknown chain ip t c"),
]


@pytest.mark.parametrize(("text", "where", "what"), ERRORS, ids=[w for _, _, w in ERRORS])
def test_errors_name_file_and_line(text, where, what):
    with pytest.raises(NatlensError) as e:
        parse_nft(text, "t.txt")
    assert str(e.value).startswith(where + " ")
    assert what in str(e.value)
    assert "\n" not in str(e.value)


def test_windows_line_ends_a_byte_order_mark_and_device_lists():
    rs = parse_nft("\ufefftable netdev n {\r\n\tchain i {\r\n\t\ttype filter hook ingress "
                   'devices = { "lo", eth0 } priority -500; policy drop;\r\n'
                   "\t\tip saddr 198.18.0.1 drop\r\n\t}\r\n}\r\n", "crlf.txt")
    ch = rs.tables[("netdev", "n")].chains["i"]
    assert (ch.device, ch.prio, ch.policy) == ("lo,eth0", -500, "drop")
    assert [(r.text, r.where) for r in ch.rules] == [("ip saddr 198.18.0.1 drop", "crlf.txt:4")]


def _generated(services: int = 200) -> str:
    """kube-proxy's nftables mode for that many Services, as knftables writes it."""
    return kube_proxy_nftables(many_services(services), node_ips=["198.18.0.10"],
                               cluster_cidr="198.18.128.0/17").nft


def test_a_rule_or_element_shape_seen_before_translates_as_the_token_parser_does():
    """Rules and elements of one shape (other constants) are translated once and then only
    filled in: each must come out as the token parser makes it of that text alone (a
    command that ends in ';' is left to the token parser)."""
    src = _generated()
    rs = parse_nft(src, "kp.nft")
    assert rs.format == "commands" and rs.notes == [] and rs.rule_count() > 1500
    head = "add table ip kube-proxy\nadd chain ip kube-proxy c\nadd rule ip kube-proxy c "
    seen = set()
    for r in rs.rules():
        (alone,) = parse_nft(head + r.text + " ;\n", "one.nft").rules()
        assert (r.expr, r.comment, r.text) == (alone.expr, alone.comment, alone.text)
        seen.add(r.text.split()[0])
    assert {"ip", "meta", "numgen", "fib", "goto", "jump"} <= seen
    decls = [line for line in src.splitlines() if line.startswith(("add table", "add map", "add set"))]
    for t in rs.tables.values():
        for s in t.sets.values():
            for e in s.elements[:300]:
                key, value = _element_text(e)
                one = parse_nft("\n".join(decls) + f"\nadd element ip kube-proxy {s.name} "
                                f"{{ {key}{value} }} ;\n", "one.nft")
                assert one.tables[("ip", "kube-proxy")].sets[s.name].elements == [e]
    # the text listing of the same shapes (a chain with many of them)
    body = "".join(f"\t\t{r.text}\n" for r in rs.rules())
    text = parse_nft(f"table ip t {{\n\tchain c {{\n{body}\t}}\n}}\n", "t.txt")
    assert [r.expr for r in text.rules()] == [r.expr for r in rs.rules()]
    assert [r.where for r in text.rules()][:2] == ["t.txt:3", "t.txt:4"]


@pytest.mark.parametrize("shape", [
    "ip daddr {a} tcp dport {p} dnat to {a}:{p}",
    "ip saddr {a}/{n} ip daddr {a} meta mark set {p} counter packets {p} bytes 0 jump C{p}",
    "numgen random mod {p} offset {p} vmap {{ 0 : goto X{a}, {p} : drop }}",
    'ip daddr {a} tcp dport {{ {p}, 7 }} comment "{a}" accept',
    "limit rate {p}/second burst {p} packets ct mark 0x{p} accept",
])
def test_shapes_with_equal_constants_translate_as_the_token_parser_does(shape):
    """Constants that are equal, or equal in part (10.0.0.1 and 10.0.0.1:80), or equal to
    a number the rule holds anyway (burst 5 and 5/second)."""
    texts = [shape.format(a=a, p=p, n=n) for a in ("10.0.0.1", "10.0.2.3") for p in ("5", "80")
             for n in ("8", "32")]
    head = "add table ip t\nadd chain ip t c\n"
    rs = parse_nft(head + "".join(f"add rule ip t c {t}\n" for t in texts * 2), "t.nft")
    for r in rs.rules():
        (alone,) = parse_nft(f"{head}add rule ip t c {r.text} ;\n", "one.nft").rules()
        assert (r.expr, r.comment) == (alone.expr, alone.comment), r.text


def _element_text(e: NftElement) -> tuple[str, str]:
    """A kube-proxy map element back in nft syntax (key, ' : verdict' or '')."""
    key = format_rule([{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}},
                                  "right": e.key}}]).removeprefix("meta l4proto ")
    if e.value is None:
        return key, ""
    return key, " : " + format_rule([e.value])


def test_the_collector_is_left_as_it_was():
    before = (gc.isenabled(), gc.get_freeze_count())
    parse_nft(KP_TEXT, "kp.txt")
    assert (gc.isenabled(), gc.get_freeze_count()) == before
    gc.disable()
    try:
        parse_nft(KP_JSON, "kp.json")
        assert not gc.isenabled()
    finally:
        if before[0]:
            gc.enable()
    with pytest.raises(NatlensError):
        parse_nft("table ip t {\n", "t.txt")
    assert gc.isenabled() == before[0]


def test_command_bodies_over_several_lines():
    rs = parse_nft("add table ip t {\n}\n# a comment\nadd chain ip t c {\n\ttype filter hook "
                   "input priority 0; policy drop;\n\tip saddr 198.18.0.1 drop\n}\n\n"
                   "add rule ip t c accept\nadd map ip t m { type ipv4_addr : verdict ; }\n"
                   "add element ip t m {\n\t198.18.0.1 : drop,\n\t198.18.0.2 : accept }\n", "t.nft")
    ch = rs.tables[("ip", "t")].chains["c"]
    assert (ch.hook, ch.policy) == ("input", "drop")
    assert [(r.text, r.where) for r in ch.rules] == [("ip saddr 198.18.0.1 drop", "t.nft:6"),
                                                     ("accept", "t.nft:9")]
    assert rs.tables[("ip", "t")].sets["m"].elements == [
        NftElement("198.18.0.1", {"drop": None}), NftElement("198.18.0.2", {"accept": None})]
    with pytest.raises(NatlensError, match=r"^t\.nft:2: unexpected 'x' after the command"):
        parse_nft("add table ip t {\n} x\n", "t.nft")


def test_empty_and_comment_only_dumps_are_empty_rule_sets():
    for text in ("", "\n\n", "# Warning: nothing\n"):
        rs = parse_nft(text, "e.txt")
        assert (rs.format, rs.tables) == ("text", {})


# ----------------------------------------------------------------- against nft itself

REASON = netns_unavailable_reason("nft")


def _nft(ns: str, *args: str, stdin: str | None = None) -> str:
    r = subprocess.run(["ip", "netns", "exec", ns, "nft", *args], input=stdin,
                       capture_output=True, text=True, check=True)
    return r.stdout


@pytest.mark.root
@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_both_listings_of_a_loaded_rule_set_parse_the_same():
    ns = f"nlparse-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for source, skip in ((KP_COMMANDS, ()), (MISC_SOURCE, {("inet", "misc", "pre", 16)})):
            _nft(ns, "flush", "ruleset")
            _nft(ns, "-f", "-", stdin=source)
            text = parse_nft(_nft(ns, "list", "ruleset"), "live.txt")
            js = parse_nft(_nft(ns, "-j", "list", "ruleset"), "live.json")
            assert text.rule_count() == js.rule_count() > 20
            _assert_same(text, js, skip)
            if source is KP_COMMANDS:
                _assert_same(parse_nft(source, "live.nft"), js)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.root
@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_a_generated_rule_set_parses_alike_in_all_three_forms():
    """kube-proxy's rules for 1,000 Services as nft -f takes them, and as the kernel's nft
    lists them back as text and as JSON: the same chains, sets and statements."""
    source = _generated(1000)
    ns = f"nlgen3-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        _nft(ns, "-f", "-", stdin=source)
        listed = _nft(ns, "list", "ruleset")
        text = parse_nft(listed, "nft-ruleset.txt")
        js = parse_nft(_nft(ns, "-j", "list", "ruleset"), "nft-ruleset.json")
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    commands = parse_nft(source, "nft-ruleset.nft")
    assert (commands.format, text.format, js.format) == ("commands", "text", "json")
    assert commands.rule_count() == text.rule_count() == js.rule_count() > 9000
    assert commands.notes == text.notes == js.notes == []
    _assert_same(text, js)
    _assert_same(commands, js)
    lines = listed.splitlines()
    for r in list(text.rules())[::97]:
        assert lines[r.lineno - 1].strip() == r.text and r.where == f"nft-ruleset.txt:{r.lineno}"
    for r in list(js.rules())[::97]:
        assert r.where == (f"nft-ruleset.json: rule handle {r.handle} "
                           f"({r.family} {r.table} {r.chain})")


def test_bit_clear_operator_is_nfts_bang():
    """`ct status ! dnat` (how nft lists `ct status & dnat == 0`) is op "!", as nft -j prints it."""
    rs = parse_nft("table ip t {\n chain c {\n  ct status ! dnat counter\n }\n}\n", "bang.txt")
    (rule,) = list(rs.rules())
    assert rule.expr[0] == {"match": {"op": "!", "left": {"ct": {"key": "status"}}, "right": "dnat"}}
    assert format_rule(rule.expr).startswith("ct status ! dnat")
