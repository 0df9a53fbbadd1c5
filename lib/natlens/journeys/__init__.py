"""Connections of all capture points -> one journey per client connection, across NAT and nodes.

A client connection is seen as several connection records: in the pod's netns or
on its veth (pod IP -> VIP), on the node's NIC (after SNAT, or not), on the
backend node (after the load balancer's DNAT to nodeIP:NodePort), on the
endpoint's veth (after kube-proxy's DNAT), and, in a loopback, as a SYN-ACK from
the wrong source. Addresses and ports differ at each point; what survives NAT is
the client's ISN (also derivable from a SYN-ACK's ack), so records are joined on
the ISN and time proximity (never the 5-tuple alone). UDP records are joined on
the first payload's hash and IP ID (IPv6: hash and client port).

Stages (one module each): ``clocks`` (offsets between nodes' clocks), ``join``
(records -> journey numbers), ``client`` (the client's own record, what it called,
where each record sits), ``decisions`` (one function per decision: classify_snat,
snat_from_conntrack, classify_node_dnat, classify_lb_backend, classify_loopback,
classify_outcome),
``hostnet`` (classify_host_network from the source address, the TTL on the node's NIC
and the conntrack dump; snat_from_ttl), and ``assemble`` (the table below).

Each journey is classified with the evidence behind it, and "unknown" when the
captures do not show it:
  snat       "yes" | "no" | "unknown"  (and snat_to: the address it left with)
  host_network "yes" | "no" | "unknown" (the node itself opened it / a pod's connection)
  node_dnat  "yes" | "no" | "unknown"  (the client's own node DNATed the VIP: never at the LB)
  lb_backend the node the load balancer sent the connection to (None: unknown, or node_dnat)
  loopback   "yes" | "no" | "unknown"  (backend node == the client's own node; no: node_dnat)
  outcome    TCP: "established" | "reset" | "timed out" | "unknown"; UDP: "answered" |
             "unanswered" (no reply within 60 s of capture) | "unknown". "timed out" is the
             client record's end "timeout" (silent past its next SYN retransmission), or a
             capture that ended while the client retried a SYN whose SYN-ACK came from the
             wrong address and was reset by it (a loopback: its retries cannot succeed). A
             RST of the client's own refusing an answer is never "reset", and a point that
             missed some of the client's SYNs never shows them stopping (journeys.evidence)

Journey columns (JOURNEY_COLUMNS; **contract**, pinned by tests/analysis/test_contracts.py).
Times: ``ts`` float seconds since the epoch (UTC) on the reference node's clock (clock
offsets subtracted); latencies in ms as seen at the capture point nearest the client that
holds them (``latency_from``).

=====================  ======================================================================
journey                "J<n>", in time order
ts                     earliest over its records of the record's first SYN (a record without one:
                       its first packet), clock-corrected, float s
client_node            node the client lives on: its IP's node in the inventory, else the
                       node a copy of its SYN was seen leaving towards the VIP; None: unknown
client_h, client_p     the original source address/port (the client's own record)
client_is_node         bool: that source is a node's IP (a host-network client, or a pod SNATed
                       before every capture point: ``host_network`` says which)
host_network           yes | no | unknown: the node itself opened it (a host-network client) / a
host_network_evidence  pod's connection (its source a pod IP, or the node forwarded its packet: the
                       TTL on the node's NIC one less than the initial TTL); the conntrack entry or
                       the record, its TTL and the initial TTL (learned or assumed) that show it,
                       or why unknown (journeys.hostnet)
service                "VIP:port/proto" (the LB VIP, else the NodePort's Service, else the
                       client's destination)
vip, vport, proto      the original destination and protocol ("tcp" | "udp")
policy                 the Service's externalTrafficPolicy: Local | Cluster | unknown
snat                   yes | no | unknown; ``snat_to`` the address:port it left with when yes;
snat_evidence          the record (capture: src:sport -> dst:dport) that shows it, or why unknown
node_dnat              yes | no | unknown: the client's own node DNATed the VIP to an endpoint, so
node_dnat_evidence     the connection never reached the load balancer (kube-proxy's iptables and
                       nftables modes with ipMode VIP); the record that shows it (the client's
                       packets to an endpoint on its node, none to the VIP leaving its NIC), or the
                       one that shows it left (no), or why unknown
lb_backend             node the load balancer sent it to (None: not in the captures, or never sent:
lb_backend_evidence    node_dnat yes, or an endpoint on the client's own node while node_dnat is
                       unknown); the record after the LB's DNAT that shows it, or why not known
loopback               yes | no | unknown, ``loopback_evidence`` why
outcome                established | reset | timed out | unknown (UDP: answered | unanswered |
                       unknown), from every record (journeys.evidence: a definite observation at
                       any point wins over records the capture cut); ``outcome_evidence`` the
                       deciding record's conn_state, history, SYNs and end (UDP: the client
                       record's packets each way), and the client's own record when another decided
established            bool: outcome is established
handshake_ms           SYN -> SYN-ACK -> ACK (last SYN), connect_ms (first SYN -> ACK,
connect_ms             includes SYN retransmissions), first_byte_ms (first SYN -> first
first_byte_ms          response byte); NaN when not seen
syn_retransmits        client SYNs beyond the first
latency_from           the record the latencies come from: the capture point nearest the client that
                       holds every packet they need (the whole handshake, all the client's SYNs, a
                       round trip no longer than another point's), and the nearer ones passed over
                       and why; "none: <why>" when no point holds them (the latencies are then NaN)
path                   "<loopback|remote|unknown>/<snat|no-snat|snat-unknown>", for grouping
hops                   number of connection records (capture points x interfaces) joined
captures               capture labels that saw it, comma separated
client_uid             uid of the client's own record; ``uids`` all records in time order
hop_list               one string per record, same order as ``uids``:
                       "<capture> (<interface>): src:sport -> dst:dport", the addresses and
                       ports at that hop (the interface when an ``any`` capture names it)
=====================  ======================================================================
"""

from __future__ import annotations

import pandas as pd

from natlens._grouped import distinct_text
from natlens.connections import COLUMNS as RECORD_BASE_COLUMNS
from natlens.inventory import Inventory
from natlens.journeys.assemble import journey_table, number_journeys
from natlens.journeys.client import ServiceMap, annotate_records, find_clients, place_records
from natlens.journeys.clocks import clock_offsets
from natlens.journeys.decisions import (
    CaptureSpans,
    ConntrackTables,
    Decision,
    classify_lb_backend,
    classify_loopback,
    classify_node_dnat,
    classify_outcome,
    classify_snat,
    snat_from_conntrack,
)
from natlens.journeys.evidence import lossy_captures
from natlens.journeys.hostnet import classify_host_network, host_network_and_snat, snat_from_ttl
from natlens.journeys.join import assign_journeys, join_records

JOURNEY_COLUMNS = [
    "journey", "ts", "client_node", "client_h", "client_p", "client_is_node", "host_network",
    "host_network_evidence", "service", "vip", "vport", "proto", "policy", "snat", "snat_to",
    "snat_evidence", "node_dnat", "node_dnat_evidence", "lb_backend", "lb_backend_evidence",
    "loopback", "loopback_evidence", "outcome", "outcome_evidence", "established",
    "handshake_ms", "connect_ms", "first_byte_ms", "syn_retransmits", "latency_from", "path",
    "hops", "captures", "client_uid", "uids", "hop_list",
]
# The records returned with the journeys (**contract**): the connection records as
# natlens.connections made them, plus their journey, their clock-corrected start and the
# interface name of their capture point (``point``: "eth0", a veth; None when unknown).
RECORD_COLUMNS = [*RECORD_BASE_COLUMNS, "journey", "ts_corr", "point"]

__all__ = ["JOURNEY_COLUMNS", "RECORD_COLUMNS", "Decision", "assign_journeys", "build_journeys",
           "classify_host_network", "classify_lb_backend", "classify_loopback", "classify_node_dnat",
           "classify_outcome",
           "classify_snat", "clock_offsets", "snat_from_conntrack", "snat_from_ttl"]


def build_journeys(conns: pd.DataFrame, inventory: Inventory,
                   ifnames: dict[tuple[str, int], str] | None = None,
                   offsets: dict[str, float] | None = None,
                   conntrack: ConntrackTables | None = None,
                   dropped: set[str] | None = None,
                   spans: CaptureSpans | None = None,
                   ) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Journeys from the connection records of all captures of an incident.

    `dropped`: the captures whose host said it dropped packets (pcapng statistics,
    collect-node.log); with those whose records show TCP gaps or a lost handshake ACK, a
    packet missing there is no evidence that it was never sent.

    `conntrack` maps a node to (its dump's file name, its conntrack entries): where the
    captures start only after the node's SNAT, its conntrack table tells the pod behind it;
    where it does not, the TTL the client's packet left the node's NIC with tells whether
    the node forwarded it (a pod's, SNATed) or sent it itself (journeys.hostnet).

    `spans` maps a capture's label to its first and last packet of any kind: a packet
    missing at a capture that ran then, and is not known to lose packets, did not pass there.

    Returns (journeys, records, notes): one journey row per client connection
    (JOURNEY_COLUMNS), the connection records with their journey (RECORD_COLUMNS), and
    notes on the clock offsets.
    """
    notes: list[str] = []
    if offsets is None:
        offsets, notes = clock_offsets(conns)
    if conns.empty:
        return pd.DataFrame(columns=JOURNEY_COLUMNS), pd.DataFrame(columns=RECORD_COLUMNS), notes
    services = ServiceMap.of(inventory)
    r = annotate_records(join_records(conns, offsets, ifnames or {}), inventory, services)
    clients = find_clients(r, inventory, services)
    r = place_records(r, clients)
    cl = clients.table
    lossy = lossy_captures(r, dropped or set())
    node_dnat = classify_node_dnat(r, cl, lossy, spans)
    snat = captured = classify_snat(r, cl, inventory, node_dnat)
    fixes = pd.DataFrame(columns=["client_h", "client_p", "client_is_node"])
    if conntrack:
        snat, fixes = snat_from_conntrack(snat, cl, conntrack)
    host, snat = host_network_and_snat(r, cl, inventory, snat, fixes, captured)
    uncaptured = frozenset(distinct_text(inventory.nodes["name"]) - distinct_text(conns["node"]))
    backend = classify_lb_backend(r, cl, node_dnat, uncaptured)
    decisions = {"snat": snat, "host_network": host, "node_dnat": node_dnat, "lb_backend": backend,
                 "loopback": classify_loopback(r, cl, backend, lossy, node_dnat),
                 "outcome": classify_outcome(r, cl, clients.record)}
    table, names = number_journeys(journey_table(r, clients, decisions, fixes, services))
    records = r.assign(journey=r["jn"].map(names))[RECORD_COLUMNS]
    return table[JOURNEY_COLUMNS], records, notes
