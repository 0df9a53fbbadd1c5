"""Journeys + netfilter + inventory -> SNAT ratios, loopback hits, latency and the verdict.

    from natlens.findings import analyze
    a = analyze("incidents/checkout-2024-05-01")
    a.snat          # one row per (Service VIP:port/proto, source node)
    a.verdict       # headline, root cause, remediation in plain words
    a.summary()     # summary.json, schema natlens.summary/1 (DESIGN.md section 5)
    a.journey_hops("J3")   # every packet of one journey, hop by hop

The SNAT ratio is over journeys whose SNAT status the captures show; "unknown" ones
are left out of it (and the ratio is None when none is known). The rules' prediction
comes from the netfilter model (natlens.netfilter) for a packet from the client pod
to the VIP; "predicted_by_rules" says whether captures and rules agree (None: the
rules could not be evaluated).

summary() is DESIGN.md section 5 (``natlens.summary/1``) with these documented,
additive keys (scripts written against section 5 are unaffected):

  inputs.captures[].connections         connection records natlens made from the capture
  inputs.captures[].not_in_connections  {reason: n}: decoded packets that are in no
                                        connection (icmp, icmpv6, other-protocol,
                                        no-ports); with ``skipped`` every record is
                                        accounted for: records = decoded + sum(skipped),
                                        decoded = packets in connections + sum(not_in_connections)
  inputs.not_read                       [{"file", "reason"}]: files of the bundle natlens
                                        did not read (bundle-relative paths)
  snat[].host_network                   true: the row's clients' source is the node's own IP
                                        (host-network clients, kept apart from the node's pods;
                                        source_node "unknown" when the client's node is)

connections.failed counts the journeys whose outcome is "reset" or "timed out" (so
failed = timeouts + resets); a UDP journey's outcome is "answered" / "unanswered" /
"unknown": it counts in ``total`` but never as failed (UDP needs no answer, and going
idle is not a failure).

Nulls, never NaN: a ratio with no journey of known SNAT status, a latency
percentile with no sample (its count is 0), ``predicted_by_rules`` when the rules
could not be evaluated. With no service journey at all every count is 0, the
lists and ``by_node`` are empty and the verdict says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from natlens import netfilter
from natlens.bundle import Bundle, capture_drops, load_bundle, require_captures
from natlens.connections import connections_with_index
from natlens.errors import NatlensError
from natlens.inventory import Inventory, build_inventory
from natlens.journeys import build_journeys
from natlens.netfilter.conntrack import parse_conntrack
from natlens.nodefiles import DUMP_NAMES

SCHEMA = "natlens.summary/1"
LATENCY_COLUMNS = ["journey", "path", "handshake_ms", "connect_ms", "first_byte_ms"]
SNAT_COLUMNS = ["service", "source_node", "host_network", "policy", "connections", "snat", "ratio",
                "predicted_by_rules", "rule_trace", "failed", "loopback", "loopback_failed",
                "unknown_snat"]
HOP_COLUMNS = ["capture", "node", "ts", "ts_ns", "src", "dst", "sport", "dport", "flags", "note"]
_PACKET_KEEP = ["ts_ns", "src", "dst", "sport", "dport", "tcp_flags", "seq", "ack", "payload_len",
                "ip_id", "direction", "ifindex"]

REMEDIATION = [
    "Switch the Service to externalTrafficPolicy: Cluster: pod-to-VIP traffic is then SNATed to "
    "the node IP and the load balancer never sends it back to the node it came from (external "
    "clients' source IPs are then no longer preserved).",
    "Or SNAT pod-to-VIP traffic on the nodes (a MASQUERADE rule for pod CIDR -> VIP:port, or the "
    "CNI/kube-proxy option that does it), keeping Local for external clients.",
    "Or use the cloud's own loopback fix: AWS NLB: turn off client IP preservation or use IP "
    "targets; Azure, Alibaba and Tencent TKE: the load balancer's hairpin/loopback option, or "
    "let kube-proxy bind the VIP on the nodes (status.loadBalancer.ingress ipMode VIP).",
    "From inside the cluster, call the Service's ClusterIP (or its DNS name) instead of the "
    "load balancer VIP.",
]


@dataclass
class Analysis:
    """Everything natlens found in one incident (see module doc)."""

    incident: str
    inputs: list[dict]
    inferred: list[str]
    inventory: Inventory
    connections: pd.DataFrame
    journeys: pd.DataFrame
    snat: pd.DataFrame
    loopback: pd.DataFrame
    latency: pd.DataFrame
    verdict: dict
    offsets: dict[str, float] = field(default_factory=dict)
    records: pd.DataFrame | None = None
    bundle: Bundle | None = None
    warnings: list[str] = field(default_factory=list)  # partial input, for stderr (also in inferred)
    _packets: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    _packet_conn: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def summary(self) -> dict:
        """summary.json, exactly DESIGN.md section 5."""
        j = self.journeys
        return {
            "schema": SCHEMA,
            "incident": self.incident,
            "inputs": {"captures": [{k: c[k] for k in ("node", "file", "records", "decoded", "skipped",
                                                       "connections", "not_in_connections")}
                                    for c in self.inputs],
                       "inferred": list(self.inferred),
                       "not_read": [{"file": f, "reason": why} for f, why in
                                    (self.bundle.not_read if self.bundle is not None else [])]},
            "connections": {"total": int(len(j)),
                            "failed": int(j["outcome"].isin(["reset", "timed out"]).sum()),
                            "timeouts": int((j["outcome"] == "timed out").sum()),
                            "resets": int((j["outcome"] == "reset").sum())},
            "snat": [{"service": r.service, "source_node": r.source_node,
                      "host_network": bool(r.host_network), "policy": r.policy,
                      "connections": int(r.connections), "snat": int(r.snat),
                      "ratio": None if pd.isna(r.ratio) else float(r.ratio),
                      "predicted_by_rules": None if r.predicted_by_rules is None
                      or pd.isna(r.predicted_by_rules) else bool(r.predicted_by_rules),
                      "rule_trace": list(r.rule_trace)} for r in self.snat.itertuples()],
            "loopback": {"hits": int(len(self.loopback)),
                         "failed": int(self.loopback["outcome"].isin(["reset", "timed out"]).sum()),
                         "by_node": {str(k): int(v) for k, v in
                                     self.loopback["client_node"].value_counts().sort_index().items()}},
            "latency_ms": {name: _dist(self.latency[col]) for name, col in
                           (("handshake", "handshake_ms"), ("connect", "connect_ms"),
                            ("first_byte", "first_byte_ms"))},
            "verdict": dict(self.verdict),
        }

    def write(self, out_dir: str | Path) -> list[Path]:
        """summary.json and the tables as Parquet (connections, journeys, snat, latency) in
        `out_dir`, for scripts and notebooks that build on them; returns the files written."""
        import json  # noqa: PLC0415

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "summary.json"]
        written[0].write_text(json.dumps(self.summary(), indent=2) + "\n", encoding="utf-8")
        for name in ("connections", "journeys", "snat", "latency"):
            path = out / f"{name}.parquet"
            getattr(self, name).to_parquet(path, index=False)
            written.append(path)
        return written

    def journey_hops(self, journey_id: str) -> pd.DataFrame:
        """Every packet of one journey, all capture points, in time order, on one clock.

        ``ts`` float seconds / ``ts_ns`` int ns since the epoch (UTC), clock offsets subtracted
        (DESIGN.md section 4), like every other table; ``note`` says what the hop is.
        """
        rec = self.records[self.records["journey"] == journey_id] if self.records is not None else None
        if rec is None or rec.empty:
            raise KeyError(journey_id)
        jr = self.journeys[self.journeys["journey"] == journey_id].iloc[0]
        parts = []
        for r in rec.itertuples():
            pk = self._packets.get(r.capture)
            pc = self._packet_conn.get(r.capture)
            if pk is None or pc is None:
                continue
            i = int(str(r.uid).rsplit("#", 1)[1])
            p = pk[pc == i].copy()
            if p.empty:
                continue
            off = self.offsets.get(r.node, 0.0)
            p["capture"], p["node"] = r.capture, r.node
            p["ts_ns"] = p["ts_ns"].astype("int64") - int(round(off * 1e9))
            p["ts"] = p["ts_ns"] / 1e9
            parts.append(p)
        if not parts:
            return pd.DataFrame(columns=HOP_COLUMNS)
        h = pd.concat(parts, ignore_index=True).sort_values(["ts_ns", "capture"], kind="stable")
        h["flags"] = [_flag_text(f) for f in h["tcp_flags"].fillna(-1).astype(int)]
        h["note"] = [_hop_note(pk, jr, self.inventory) for pk in h.itertuples()]
        return h[HOP_COLUMNS].reset_index(drop=True)


def _flag_text(f: int) -> str:
    if f < 0:
        return ""
    names = [(0x02, "S"), (0x10, "A"), (0x01, "F"), (0x04, "R"), (0x08, "P")]
    return "".join(n for bit, n in names if f & bit) or "."


def _hop_note(pk, jr, inventory: Inventory) -> str:
    """What one packet of a journey is, in a network engineer's words."""
    flags = -1 if pd.isna(pk.tcp_flags) else int(pk.tcp_flags)
    src, dst = f"{pk.src}:{pk.sport}", f"{pk.dst}:{pk.dport}"
    vip = f"{jr['vip']}:{int(jr['vport'])}" if not pd.isna(jr["vport"]) else str(jr["vip"])
    client = pk.src == jr["client_h"] and pk.sport == jr["client_p"]
    to_client = pk.dst == jr["client_h"] and pk.dport == jr["client_p"]
    snat_to = jr.get("snat_to")
    if flags >= 0 and flags & 0x04:
        if client:
            return "the client resets: it never sent a SYN to " + dst
        return f"RST from {src}"
    if flags >= 0 and flags & 0x02 and not flags & 0x10:
        if dst == vip:
            if client:
                return "SYN from the client to the VIP"
            if snat_to and src == snat_to:
                return f"SYN to the VIP, SNATed to {src}"
            return f"SYN to the VIP from {src}"
        if inventory.node_ip(pk.dst):
            return f"SYN after the load balancer's DNAT to {inventory.node_ip(pk.dst)}'s NodePort {dst}"
        return f"SYN DNATed to the endpoint {dst}"
    if flags >= 0 and flags & 0x12 == 0x12:
        if src == vip:
            return "SYN-ACK from the VIP"
        if to_client:
            return f"SYN-ACK to the client from {src}, not from the VIP it called"
        return f"SYN-ACK from {src}"
    if flags >= 0 and flags & 0x01:
        return f"FIN from {'the client' if client else src}"
    if pk.payload_len and not pd.isna(pk.payload_len):
        return f"{int(pk.payload_len)} bytes of data from {'the client' if client else src}"
    return f"ACK from {'the client' if client else src}"


def _dist(s: pd.Series) -> dict:
    v = s.dropna().to_numpy(dtype=float)
    if not v.size:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}
    q = np.percentile(v, [50, 90, 99])
    return {"count": int(v.size), "p50": round(float(q[0]), 3), "p90": round(float(q[1]), 3),
            "p99": round(float(q[2]), 3), "max": round(float(v.max()), 3)}


def _rules_prediction(bundle: Bundle, node: str, client_h: str, vip: str, port: int, proto: str,
                      client_is_node: bool, notes: list[str], cache: dict):
    """(snat predicted, trace) by the netfilter model for client -> VIP on `node`; (None, [...])."""
    try:
        nd = bundle.node(node)
    except KeyError:
        return None, [f"no dumps for node {node}"]
    if nd.iptables is None:
        return None, [f"{node}: no iptables-save dump"]
    try:
        if node not in cache:
            cache[node] = netfilter.load_node(nd.path)
        rules = cache[node]
        bridge = next((a.ifname for a in nd.addresses() if a.ifname.startswith(("cni", "cbr", "docker"))), None)
        v = rules.explain(client_h, vip, port, proto=proto, local=client_is_node,
                          in_iface=None if client_is_node else bridge)
    except (NatlensError, OSError) as exc:  # bad or unreadable dumps; a bug in natlens is raised
        notes.append(f"{exc}: {node}'s rules not used for {client_h} -> {vip}:{port}"
                     if isinstance(exc, NatlensError) else
                     f"{node}: the rules could not be read for {client_h} -> {vip}:{port} ({exc})")
        return None, [f"netfilter model failed: {exc}"]
    if getattr(v, "undecided", None):
        return None, list(v.trace) + [f"undecided: {u}" for u in v.undecided]
    if v.snat is None:  # probabilistic branches disagree: no single prediction
        return None, list(v.trace) + ["undecided: the rule paths disagree on SNAT"]
    return v.snat, list(v.trace)


def _conntrack_tables(bundle: Bundle) -> dict[str, tuple[str, list]]:
    """Each node's conntrack dump (file name relative to the bundle, entries)."""
    out = {}
    for node in bundle.nodes:
        if node.conntrack is not None:
            text = node.conntrack.read_text(encoding="utf-8", errors="replace")
            name = (node.conntrack.relative_to(bundle.path)
                    if node.conntrack.is_relative_to(bundle.path) else node.conntrack)
            out[node.name] = (str(name), parse_conntrack(text))
    return out


def snat_table(journeys: pd.DataFrame, bundle: Bundle | None, notes: list[str]) -> pd.DataFrame:
    """One row per (service, source node): connections, SNATed, ratio, rules' prediction."""
    rows = []
    cache: dict = {}
    keys = ["service", "client_node", "client_is_node"]
    for (svc, node, is_node), g in journeys.groupby(keys, sort=True, dropna=False):
        node = "unknown" if pd.isna(node) else node
        known = g[g["snat"] != "unknown"]
        n_snat = int((known["snat"] == "yes").sum())
        ratio = n_snat / len(known) if len(known) else None
        pol = g["policy"].mode().iloc[0] if not g["policy"].empty else "unknown"
        pred, trace = (None, ["no dumps in the bundle"])
        if bundle is not None:
            # every distinct client of the row: the rules may treat two pods differently
            found = {}
            for c in g.drop_duplicates(["client_h", "vip", "vport", "proto"]).itertuples():
                found[c.client_h] = _rules_prediction(bundle, node, c.client_h, c.vip, int(c.vport), c.proto,
                                                      bool(is_node), notes, cache)
            preds = {p for p, _ in found.values()}
            pred, trace = next(iter(found.values()))
            if len(preds) > 1:
                pred = None
                trace = ["undecided: the rules treat this row's clients differently"] + [
                    f"{h}: {'SNAT' if p else 'no SNAT' if p is not None else 'undecided'}: " + " | ".join(t)
                    for h, (p, t) in found.items()]
        agree = None
        if pred is not None and ratio is not None:
            agree = (ratio == 1.0) if pred else (ratio == 0.0)
        lb = g[g["loopback"] == "yes"]
        rows.append({"service": svc, "source_node": node, "host_network": bool(is_node), "policy": pol, "connections": len(g),
                     "snat": n_snat, "ratio": ratio, "predicted_by_rules": agree, "rule_trace": trace,
                     "failed": int(g["outcome"].isin(["reset", "timed out"]).sum()),
                     "loopback": len(lb), "loopback_failed": int(lb["outcome"].isin(["reset", "timed out"]).sum()),
                     "unknown_snat": int((g["snat"] == "unknown").sum())})
    return pd.DataFrame(rows, columns=SNAT_COLUMNS)


def _svc_name(key: str, names: dict[str, str]) -> str:
    """'Service default/web (198.19.0.10:80/tcp)' when the inventory names it, else the VIP key."""
    return f"Service {names[key]} ({key})" if names.get(key) else f"Service {key}"


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _snat_sentences(snat: pd.DataFrame, names: dict[str, str], lead: str = "") -> str:
    """' Service a (VIP) from node-1 (policy Cluster): 20 of 20 connections SNATed ...' per row."""
    out = ""
    for r in snat.itertuples():
        if r.ratio is None or pd.isna(r.ratio):
            continue
        out += (f"{lead} {_svc_name(r.service, names)} from {r.source_node} (policy {r.policy}): "
                f"{r.snat} of {r.connections - r.unknown_snat} connections SNATed"
                + (" to the node IP, so the load balancer never picks the client's own node."
                   if r.ratio == 1.0 else "."))
    return out


def make_verdict(journeys: pd.DataFrame, snat: pd.DataFrame, names: dict[str, str] | None = None) -> dict:
    """Headline, root cause and remediation in plain words with the exact counts.

    ``names`` maps a service key ("VIP:port/proto") to "namespace/name" where known.
    """
    names = names or {}
    total = len(journeys)
    failed = journeys["outcome"].isin(["reset", "timed out"])
    lb = journeys["loopback"] == "yes"
    hits = int(lb.sum())
    if hits:
        worst = snat.sort_values(["loopback_failed", "loopback"], ascending=False).iloc[0]
        svc = _svc_name(worst["service"], names)
        lf = int((lb & failed).sum())
        if lf:
            headline = (f"{lf} of {int(failed.sum())} failed connections (of {total}) were load-balancer "
                        f"loopbacks: {worst['loopback']} of {worst['connections']} connections from "
                        f"{worst['source_node']} to the {svc} were sent back to their own node")
        else:
            headline = (f"{hits} of {total} connections were load-balancer loopbacks (sent back to their "
                        f"own node), none of them failed; {int(failed.sum())} connections failed")
        pol = worst["policy"]
        ratio = worst["ratio"]
        known = int(worst["connections"] - worst["unknown_snat"])
        why_snat = (f"none of the {known} whose source the captures show was SNATed" if ratio == 0 else
                    f"{worst['snat']} of {worst['connections']} were SNATed" if ratio is not None
                    and not pd.isna(ratio) else "whether they were SNATed is not visible in the captures")
        pol_text = (f"has externalTrafficPolicy {pol}" if pol in ("Local", "Cluster") else
                    "has an externalTrafficPolicy natlens could not find (no cluster/services.json, no "
                    "kube-proxy ipsets)")
        root = (f"The {svc} {pol_text}; pod-to-VIP traffic leaves the node ({why_snat}), so the load "
                "balancer sees the pod's own IP and may pick the client's own node. That node DNATs the "
                "SYN to a local endpoint and answers from nodeIP:NodePort instead of the VIP; the client "
                "resets that SYN-ACK, retransmits its SYN to the same backend, and the connect times out. "
                "Only connections hashed to the client's own node fail, hence the sporadic failures.")
        others = snat[(snat["loopback"] > 0) & (snat.index != worst.name)]
        if len(others):
            root += " Loopbacks were also seen for: " + "; ".join(
                f"{_svc_name(o.service, names)} from {o.source_node}: {o.loopback} of {o.connections} "
                f"({o.loopback_failed} failed)" for o in others.itertuples()) + "."
        root += _snat_sentences(snat[snat["loopback"] == 0], names, " No loopback for")
        remediation = list(REMEDIATION)
        if pol == "Cluster":
            root += (" The policy on record is Cluster, yet connections looped back: check whether "
                     "kube-proxy's MASQUERADE for this VIP is in effect (see rule_trace).")
            remediation[0] = ("Make the Cluster policy take effect: pod-to-VIP traffic must be SNATed to the "
                              "node IP by kube-proxy's KUBE-MARK-MASQ / MASQUERADE rules (see rule_trace "
                              "for where the packet skipped them).")
        return {"loopback_detected": True, "headline": headline, "root_cause": root,
                "remediation": remediation}
    unknown = int((journeys["loopback"] == "unknown").sum())
    if failed.any():
        headline = f"{int(failed.sum())} of {total} connections failed; none was a load-balancer loopback"
        if unknown:
            headline += f" ({unknown} could not be checked: captures from their backend node are missing)"
        root = ("The failures are not the loopback pattern; look at the failed journeys' hops "
                "(journey_hops) for where the SYN or SYN-ACK was lost.")
    else:
        headline = f"All {total} connections were established; no load-balancer loopback seen"
        root = "No failure in the captures."
    root += _snat_sentences(snat, names)
    if unknown and not failed.any():
        root += f" {unknown} journeys' load-balancer pick is not visible in the captures."
    return {"loopback_detected": False, "headline": headline, "root_cause": root, "remediation": []}


def service_names(inventory: Inventory) -> dict[str, str]:
    """Service key "VIP:port/proto" -> "namespace/name" for the services kubectl JSON names."""
    s = inventory.services
    if s.empty:
        return {}
    s = s[s["lb_ip"].notna() & s["name"].notna()]
    return {f"{r.lb_ip}:{int(r.port)}/{r.proto}": f"{r.namespace}/{r.name}" if r.namespace else str(r.name)
            for r in s.itertuples()}


def no_journeys_verdict(inputs: list[dict], conns: pd.DataFrame, vips: set) -> dict:
    """The verdict when no client connection to a load-balancer Service is in the captures."""
    if not inputs:
        headline = "No captures in the bundle: nothing to say about connections"
        root = "The bundle has no nodes/<node>/*.pcap or *.pcapng files; add captures from the nodes."
    else:
        targets = ", ".join(f"{v}:{p}/{pr}" for v, p, pr in sorted(vips))
        headline = (f"No connection to a load-balancer Service in the captures "
                    f"({_plural(len(conns), 'connection record')} in {_plural(len(inputs), 'capture')}, "
                    + (f"none to {targets})" if targets else
                       "none a TCP connection whose opening SYN was captured; no VIP is known)"))
        root = ("Nothing to analyse: the captures hold no client connection to the Services' VIPs. "
                "Check that the capture covered the failing calls (time window, node, interface).")
    return {"loopback_detected": False, "headline": headline, "root_cause": root, "remediation": []}


def undecided_notes(journeys: pd.DataFrame) -> list[str]:
    """What the captures could not decide, in plain words (for the report's inputs section)."""
    out = []
    n = len(journeys)
    if not n:
        return out
    for col, what in (("snat", "whether it was SNATed"), ("loopback", "whether it looped back"),
                      ("outcome", "its outcome")):
        k = int((journeys[col] == "unknown").sum())
        if k:
            ev = journeys.loc[journeys[col] == "unknown", f"{col}_evidence"].mode()
            why = f": {ev.iloc[0]}" if len(ev) and ev.iloc[0] else ""
            out.append(f"{k} of {n} connections: cannot decide {what}{why}")
    k = int(journeys["lb_backend"].isna().sum())
    if k:
        out.append(f"{k} of {n} connections: the node the load balancer chose is not in the captures "
                   "(no capture from that node)")
    return out


def analyze(incident_dir: str | Path, progress: bool = False) -> Analysis:
    """Read an incident bundle and find SNAT ratios, loopback hits, latencies and the verdict."""
    from natlens.capture import read_capture  # noqa: PLC0415

    bundle = load_bundle(incident_dir)
    inventory = build_inventory(bundle)
    inferred = list(inventory.inferred)
    if bundle.not_read:
        inferred.append(f"{len(bundle.not_read)} file(s) not read (not a capture or a dump natlens "
                        "reads): " + ", ".join(f for f, _ in bundle.not_read))
    inputs, parts, packets, pconn = [], [], {}, {}
    ifnames: dict[tuple[str, int], str] = {}
    require_captures(bundle)
    warnings: list[str] = []
    todo = [(n, c) for n in bundle.nodes for c in n.captures]
    it = todo
    if progress:
        from tqdm import tqdm  # noqa: PLC0415
        it = tqdm(todo, desc="captures", unit="file")
    for node, path in it:
        for k, v in node.ifnames().items():
            ifnames[(node.name, k)] = v
        label = f"{node.name}/{path.stem}"
        cap = read_capture(path, label=path.stem)
        info = cap.info
        warnings += info.warnings
        if info.dropped:
            warnings.append(f"{path}: the capturing host dropped {info.dropped:,} packets (pcapng "
                            "interface statistics): records there may miss handshakes or retransmissions")
        conns, idx = connections_with_index(cap.packets, node=node.name, capture=label,
                                            capture_end_ns=info.last_ts_ns)
        try:
            rel = str(path.relative_to(bundle.path))
        except ValueError:
            rel = str(path)
        inputs.append({"node": node.name, "file": rel, "records": int(info.records),
                       "decoded": int(info.decoded), "skipped": dict(info.skipped),
                       "connections": len(conns), "not_in_connections": dict(conns.attrs.get("skipped", {}))})
        parts.append(conns)
        keep = [c for c in _PACKET_KEEP if c in cap.packets.columns]
        sel = idx >= 0
        packets[label] = cap.packets.loc[sel, keep].reset_index(drop=True)
        pconn[label] = idx[sel]
    conns = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    notes: list[str] = []
    if conns.empty:
        from natlens.journeys import JOURNEY_COLUMNS  # noqa: PLC0415
        journeys, records, offsets = pd.DataFrame(columns=JOURNEY_COLUMNS), conns, {}
    else:
        from natlens.journeys import clock_offsets  # noqa: PLC0415
        offsets, notes = clock_offsets(conns)
        journeys, records, _ = build_journeys(conns, inventory, ifnames, offsets=offsets,
                                              conntrack=_conntrack_tables(bundle))
    inferred += notes
    vips = inventory.vips()
    if vips and not journeys.empty:
        of_interest = journeys[[(v, int(p) if not pd.isna(p) else -1, pr) in vips for v, p, pr in
                                zip(journeys["vip"], journeys["vport"], journeys["proto"], strict=True)]]
    else:
        of_interest = journeys[(journeys["proto"] == "tcp")] if not journeys.empty else journeys
        if not vips:
            inferred.append("no load-balancer VIP known (no LoadBalancer ingress IP in "
                            "cluster/services.json, none in the kube-proxy ipsets): every TCP "
                            "connection counts as a service connection")
    no_client = int(journeys["client_uid"].isna().sum()) if not journeys.empty else 0
    if no_client:
        kept = int(of_interest["client_uid"].isna().sum())
        inferred.append(f"{_plural(no_client, 'connection')} seen without the client's own record (only a "
                        "SYN-ACK or mid-stream packets captured): client, SNAT and outcome unknown; "
                        f"{kept} of them to a load-balancer Service (in the journeys), "
                        f"{no_client - kept} not")
    inferred += undecided_notes(of_interest)
    warnings += [f"{n.path}: no iptables dump ({', '.join(DUMP_NAMES['iptables'])}): the rules "
                 "cannot say whether it SNATs" for n in bundle.nodes if n.iptables is None and n.captures]
    warnings += [f"{n.collect_log}: tcpdump -i {point} dropped {dropped:,} packets: records there may "
                 "miss handshakes or retransmissions" for n in bundle.nodes
                 for point, dropped in capture_drops(n).items() if dropped]
    inferred += warnings
    n_notes = len(inferred)
    snat = snat_table(of_interest, bundle, inferred) if not of_interest.empty else \
        pd.DataFrame(columns=SNAT_COLUMNS)
    warnings += inferred[n_notes:]  # snat_table notes only what the netfilter model failed on
    loop = of_interest[of_interest["loopback"] == "yes"] if not of_interest.empty else of_interest
    latency = of_interest[LATENCY_COLUMNS] if not of_interest.empty else pd.DataFrame(columns=LATENCY_COLUMNS)
    verdict = make_verdict(of_interest, snat, service_names(inventory)) if not of_interest.empty \
        else no_journeys_verdict(inputs, conns, vips)
    return Analysis(incident=bundle.path.resolve().name, inputs=inputs, inferred=inferred,
                    inventory=inventory, connections=conns, journeys=of_interest, snat=snat,
                    loopback=loop, latency=latency.reset_index(drop=True), verdict=verdict,
                    offsets=offsets, records=records, bundle=bundle, warnings=warnings,
                    _packets=packets, _packet_conn=pconn)
