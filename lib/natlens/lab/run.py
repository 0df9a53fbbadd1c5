"""Run a lab scenario end to end and write an incident bundle with ground truth.

:func:`run` is what ``natlens lab run`` calls. :class:`Testbed` is the same lab
piece by piece, for tests that need the topology up and do their own thing in
it (e.g. run scripts/collect-node.sh inside a node namespace).

Every namespace and process is removed on return, on error, on Ctrl-C and on
SIGTERM/SIGHUP (and at interpreter exit as a last resort); after a SIGKILL,
``natlens lab clean --prefix P`` removes what is left.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import natlens
from natlens.errors import NatlensError
from natlens.lab import bundle, faults, rules, topology
from natlens.lab.netns import Lab, default_prefix, existing, require
from natlens.vocab import ANY_BACKEND, AVOIDS_SOURCE, PROXY

DRAIN_S = 0.5  # after the client: let last packets (FIN/ACK, RST) reach the captures
# One ICMP echo request (id 0x4e4c "NL") to argv[1], the checksum computed here (a raw socket).
ECHO_SCRIPT = """
import socket, struct, sys
body = b"natlens: capture end"  # an even length: the checksum sums 16-bit words
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF
head = struct.pack("!BBHHH", 8, 0, 0, 0x4E4C, 1)
pkt = struct.pack("!BBHHH", 8, 0, csum(head + body), 0x4E4C, 1) + body
socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).sendto(pkt, (sys.argv[1], 0))
"""
# What the LB does with a flow from one of its own nodes (incident.yaml and lab.json's words).
LB_NOTES = {
    AVOIDS_SOURCE: "The LB never sends a flow back to the node whose IP is its source (as "
                   "Tencent CLB does).",
    ANY_BACKEND: "The LB picks any healthy node, also the one a flow comes from (as an AWS NLB "
                 "with client IP preservation does): a node's own SNATed connection sent back "
                 "to it arrives on its eth0 with the node's own address as source, and the "
                 "kernel drops it as a martian source.",
    PROXY: "The LB SNATs every flow to its VIP (as an LB without client IP preservation "
           "does) and picks any healthy node, also the client's own: the node answers the "
           "VIP, so even a flow sent back to its own node is answered through the LB.",
}
# Node sysctls that decide whether a node accepts a packet with its own address as source
# (lab.json): the lab sets rp_filter 0 (a Kubernetes node's) and leaves accept_local alone.
SOURCE_SYSCTLS = tuple(f"net/ipv4/conf/{dev}/{key}" for key in ("accept_local", "rp_filter")
                       for dev in ("all", "default", "eth0"))
# tcpdump -B: `-i any` cannot size its ring by MTU, so with the default snaplen a 2 MiB ring
# holds only a few blocks and bursts (one SYN crosses five interfaces at once) are dropped.
CAPTURE_BUFFER_KIB = 16384


def _child_env() -> dict[str, str]:
    """Environment for the lab's Python children: natlens importable even when not installed."""
    env = dict(os.environ)
    root = str(Path(natlens.__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _wait_line(p: subprocess.Popen, stream, needle: str, timeout: float, what: str) -> str:
    """Read ``stream`` until a line containing ``needle``; fail if the process dies or stalls."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = stream.readline()
        if not line:
            break
        text = line.decode(errors="replace") if isinstance(line, bytes) else line
        seen.append(text.strip())
        if needle in text:
            return text
    p.poll()
    raise NatlensError(f"{what} did not start: {' | '.join(seen[-3:]) or 'no output'}"
                       + (f" (exit {p.returncode})" if p.returncode is not None else ""))


@dataclass
class Capture:
    node: str
    label: str
    path: Path
    proc: subprocess.Popen
    stats: str = ""


@dataclass
class Testbed:
    """The lab topology, its servers, captures and client, as separate steps."""

    __test__ = False  # not a pytest test class, despite the name

    policies: list[str]
    nodes: int = 2
    prefix: str | None = None
    proxy_mode: str = "ipvs"
    ip_mode: str = "VIP"
    fault: str | None = None  # natlens.lab.faults.FAULTS, applied by start()
    lb: str = AVOIDS_SOURCE  # topology.LB_MODES: what the LB does with a flow from a backend
    topo: topology.Topology = field(init=False)
    lab: Lab = field(init=False)
    captures: list[Capture] = field(default_factory=list)

    def __post_init__(self) -> None:
        # the plan first: a bad option or a fault that cannot act is an error even without root
        self.prefix = self.prefix or default_prefix()
        self.topo = topology.plan(list(self.policies), self.nodes, self.prefix,
                                  self.proxy_mode, self.ip_mode, self.fault, self.lb)
        require()
        self.lab = Lab(self.prefix)

    def __enter__(self) -> Testbed:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Namespaces, links, routes, netfilter state, the fault and the endpoint servers."""
        if existing(self.prefix):
            raise NatlensError(f"namespaces named {self.prefix}* exist already: another lab "
                               f"runs with this prefix, or clean it with "
                               f"`natlens lab clean --prefix {self.prefix}`")
        atexit.register(self.close)
        topology.build(self.topo, self.lab)
        rules.apply(self.topo, self.lab)
        faults.apply(self.topo, self.lab)
        env = _child_env()
        for p in self.topo.endpoints:
            proc = self.lab.spawn(p.ns, [sys.executable, "-m", "natlens.lab.server",
                                         "--port", str(topology.TARGET_PORT), "--name", p.name],
                                  stdout=subprocess.PIPE, env=env)
            _wait_line(proc, proc.stdout, "ready", 10.0, f"server in {p.ns}")

    def start_captures(self, nodes_dir: Path, any_capture: bool = False) -> None:
        """tcpdump on each node's eth0 (and on ``any`` if asked) into nodes_dir/<node>/."""
        for n in self.topo.nodes:
            d = nodes_dir / n.name
            d.mkdir(parents=True, exist_ok=True)
            for label in ("eth0", "any") if any_capture else ("eth0",):
                path = d / f"{label}.pcap"
                argv = ["tcpdump", "-n", "-i", label, "-w", str(path), "--immediate-mode",
                        "-U", "-Z", "root", "-B", str(CAPTURE_BUFFER_KIB)]
                proc = self.lab.spawn(n.ns, argv)
                _wait_line(proc, proc.stderr, "listening on", 10.0, f"tcpdump -i {label} in {n.ns}")
                self.captures.append(Capture(n.name, label, path, proc))

    def mark_capture_end(self) -> None:
        """One ICMP echo from each node's NIC to the VPC gateway, just before the captures stop.

        Why: a pcap does not record when tcpdump stopped, so natlens takes a capture's last
        packet as its end; when every connection failed there is no packet after the
        clients' last SYNs, and natlens rightly cannot tell a client that gave up from a
        capture that ended. The echo (ICMP: in no connection, counted as such) shows the
        capture was still running after the drain."""
        for n in self.topo.nodes:
            self.lab.sh(sys.executable, "-c", ECHO_SCRIPT, topology.VPC_GATEWAY, ns=n.ns)

    def stop_captures(self) -> None:
        """SIGINT each tcpdump (it flushes and closes its file) and keep its counters."""
        for c in self.captures:
            if c.proc.poll() is None:
                os.killpg(c.proc.pid, signal.SIGINT)
        for c in self.captures:
            try:
                _, err = c.proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                self.lab.stop(c.proc, signal.SIGKILL)
                err = b"killed after 5 s"
            c.stats = " ".join(ln.strip() for ln in (err or b"").decode(errors="replace")
                               .splitlines() if "packets" in ln)
            # the same line scripts/collect-node.sh writes, so the analysis reads drops alike
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            with open(c.path.parent / "collect-node.log", "a", encoding="utf-8") as log:
                log.write(f"{stamp} tcpdump -i {c.label}: {c.stats}\n")

    def run_client(self, out: Path, connections: int, timeout: float = 1.5,
                   concurrency: int = 10, interval: float = 0.02) -> list[dict]:
        """Run the client pod's program against every Service's VIP; its records."""
        c = self.topo.client
        targets = [f"--target={s.name}={s.vip}:{s.port}" for s in self.topo.services]
        jobs = connections * len(targets)
        limit = jobs * interval + math.ceil(jobs / max(1, concurrency)) * (timeout + 5) + 30
        proc = self.lab.spawn(c.ns, [sys.executable, "-m", "natlens.lab.client", *targets,
                                     "--connections", str(connections), "--timeout", str(timeout),
                                     "--concurrency", str(concurrency),
                                     "--interval", str(interval), "--out", str(out)],
                              stdout=subprocess.PIPE, env=_child_env())
        try:
            _, err = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            self.lab.stop(proc, signal.SIGKILL)
            raise NatlensError(f"the lab client did not finish within {limit:.0f} s") from None
        if proc.returncode != 0:
            raise NatlensError(f"the lab client failed: {err.decode(errors='replace').strip()}")
        return bundle.read_jsonl(out)

    def snapshot_node(self, name: str, d: Path) -> None:
        """The node directory's dumps, as scripts/collect-node.sh names them.

        What a real node of the lab's proxy mode holds: IPVS mode has ipsets and
        virtual servers but no nft-ruleset files (its only nft table is the IPVS
        stand-in, not node state); iptables and nftables modes have no ipsets and no
        IPVS, and their ``nft list ruleset`` is the node's own (in nftables mode the
        kube-proxy table, while iptables-save shows no KUBE rule).
        """
        n = self.topo.node(name)
        d.mkdir(parents=True, exist_ok=True)
        sh = self.lab.sh
        (d / "iptables-save.txt").write_text(sh("iptables-save", ns=n.ns))
        if self.topo.proxy_mode == "ipvs":
            (d / "ipset-save.txt").write_text(sh("ipset", "save", ns=n.ns))
            # What ipvsadm -S -n would print; the kernel has no IPVS, see rules.ipvs_standin.
            (d / "ipvsadm.txt").write_text(
                rules.ipvsadm_save(rules.virtual_servers(self.topo, n)))
        else:
            (d / "nft-ruleset.txt").write_text(sh("nft", "list", "ruleset", ns=n.ns))
            (d / "nft-ruleset.json").write_text(sh("nft", "-j", "list", "ruleset", ns=n.ns))
        (d / "conntrack.txt").write_text(sh("conntrack", "-L", ns=n.ns))
        (d / "ip-addr.json").write_text(sh("ip", "-j", "addr", ns=n.ns))
        (d / "ip-route.json").write_text(sh("ip", "-j", "route", ns=n.ns))

    def icmp_counters(self) -> dict[str, dict[str, int]]:
        """Each node's and the VPC's ICMP counters (/proc/net/snmp, per namespace).

        Why: they prove what the captures may not: how many ICMP errors a kernel sent
        (a reject: OutDestUnreachs; a node forwarding out of the NIC a packet came in on
        also sends redirects) and how many it did not send because of its rate limit
        (OutRateLimitHost, from Linux 6.0; absent on older kernels).
        """
        keep = ("InDestUnreachs", "OutMsgs", "OutDestUnreachs", "OutRedirects",
                "OutRateLimitGlobal", "OutRateLimitHost")
        out = {}
        for name, ns in [(n.name, n.ns) for n in self.topo.nodes] + [("vpc", self.topo.vpc_ns)]:
            rows = [ln.split()[1:] for ln in self.lab.sh("cat", "/proc/net/snmp", ns=ns).splitlines()
                    if ln.startswith("Icmp:")]
            if len(rows) >= 2:
                values = dict(zip(rows[0], rows[1], strict=False))
                out[name] = {k: int(values[k]) for k in keep if k in values}
        return out

    def source_sysctls(self) -> dict[str, dict[str, int]]:
        """Each node's :data:`SOURCE_SYSCTLS`, read back from its namespace.

        Why: the any-backend loop is dropped by the kernel's own source validation
        (accept_local 0, its default), not by a rule; lab.json shows the values it ran with.
        """
        out = {}
        for n in self.topo.nodes:
            values = self.lab.sh("cat", *(f"/proc/sys/{k}" for k in SOURCE_SYSCTLS), ns=n.ns).split()
            out[n.name] = {k.removeprefix("net/ipv4/conf/").replace("/", "."): int(v)
                           for k, v in zip(SOURCE_SYSCTLS, values, strict=True)}
        return out

    def close(self) -> None:
        self.lab.close()
        atexit.unregister(self.close)


def run(out: str | Path, policies: list[str], connections: int = 20, nodes: int = 2,
        any_capture: bool = False, prefix: str | None = None, timeout: float = 1.5,
        concurrency: int = 10, interval: float = 0.02, title: str | None = None,
        proxy_mode: str = "ipvs", ip_mode: str = "VIP", fault: str | None = None,
        lb: str = AVOIDS_SOURCE) -> dict:
    """Build the lab, run the client, write an incident bundle to ``out``; its lab.json.

    ``policies``: one LoadBalancer Service per entry ("Local" / "Cluster"), all
    called by the client pod ``connections`` times each. ``proxy_mode`` (ipvs,
    iptables, nftables) and ``ip_mode`` (the ingress's ipMode, VIP or Proxy) decide
    whether pod -> VIP traffic is handled on the node or leaves for the LB. ``fault``
    (no-endpoints, refused, blackhole, reply-drop; :mod:`natlens.lab.faults`) breaks
    the path in one known place, and every failed connection's ground truth says which
    mechanism failed it. ``lb`` (avoids-source, any-backend, proxy; :data:`topology.LB_MODES`)
    is what the cloud LB does with a flow from one of its own nodes (:func:`rules.lb_nft`).
    The returned dict (also ground-truth/lab.json) holds the topology, the fault, the LB,
    the per-service tally and the captures' tcpdump counters.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise NatlensError("output directory exists and is not empty", path=str(out))
    if connections < 1:
        raise NatlensError(f"--connections must be at least 1, not {connections}")
    bed = Testbed(list(policies), nodes, prefix, proxy_mode, ip_mode, fault, lb)
    restore = _trap_signals()
    try:
        bed.start()
        gt = out / "ground-truth"
        gt.mkdir(parents=True, exist_ok=True)
        bed.start_captures(out / "nodes", any_capture)
        t_start = time.time()
        records = bed.run_client(gt / "connections.jsonl", connections, timeout,
                                 concurrency, interval)
        time.sleep(DRAIN_S)
        bed.mark_capture_end()
        bed.stop_captures()
        t_end = time.time()
        records = _snapshot(bed, out, records)
        _write_cluster_view(bed, out, title, t_start, t_end)
        command = {"policies": list(policies), "proxy_mode": proxy_mode, "ip_mode": ip_mode,
                   "fault": fault, "lb": lb, "connections": connections, "nodes": nodes, "any": any_capture,
                   "timeout_s": timeout, "concurrency": concurrency, "interval_s": interval}
        facts = _facts(bed, out, command, records, t_start, t_end)
        (gt / "lab.json").write_text(json.dumps(facts, indent=2) + "\n")
        return facts
    finally:
        bed.close()
        restore()


def _snapshot(bed: Testbed, out: Path, records: list[dict]) -> list[dict]:
    """Every node's dumps, the LB's and IPVS stand-ins' state into ground-truth/, and the
    client's records enriched with what the kernels' conntrack tables say happened."""
    gt = out / "ground-truth"
    for n in bed.topo.nodes:
        bed.snapshot_node(n.name, out / "nodes" / n.name)
    vpc_ct = bed.lab.sh("conntrack", "-L", ns=bed.topo.vpc_ns)
    (gt / "lb-conntrack.txt").write_text(vpc_ct)
    (gt / "lb.nft").write_text(bed.lab.sh("nft", "list", "ruleset", ns=bed.topo.vpc_ns))
    if bed.topo.proxy_mode == "ipvs":
        for n in bed.topo.nodes:
            (gt / f"ipvs-standin-{n.name}.nft").write_text(
                bed.lab.sh("nft", "list", "table", "ip", "natlens_ipvs", ns=n.ns))
    node_cts = {n.name: (out / "nodes" / n.name / "conntrack.txt").read_text()
                for n in bed.topo.nodes}
    records = bundle.enrich(records, bed.topo, node_cts[bed.topo.client.node], vpc_ct, node_cts)
    records = bundle.failures(records, bed.topo, vpc_ct)
    bundle.write_jsonl(gt / "connections.jsonl", records)
    return records


def _write_cluster_view(bed: Testbed, out: Path, title: str | None, t_start: float, t_end: float) -> None:
    """cluster/ (kubectl JSON as users produce it) and incident.yaml."""
    created = bundle.utc_iso(t_start - 3600).split(".")[0] + "Z"
    bundle.write_cluster(bed.topo, out, created)
    policy_text = " + ".join(f"{s.name} ({s.policy})" for s in bed.topo.services)
    fault = bed.topo.fault
    fault_text = (f"Fault injected ({fault}): {faults.FAULTS[fault]}. " if fault else "")
    lb = bed.topo.lb
    lb_title, lb_text = ((f", LB {lb}", f"LB behaviour {lb}. {LB_NOTES[lb]} ")
                         if lb != AVOIDS_SOURCE else ("", ""))
    bundle.write_incident_yaml(
        out, bed.topo, title or f"natlens lab: pod -> LB VIP, {policy_text}{lb_title}"
        + (f", fault {fault}" if fault else ""), t_start, t_end,
        notes=("Made by `natlens lab run` in network namespaces on the real kernel. "
               f"{mode_notes(bed.topo)} {lb_text}{fault_text}"
               "ground-truth/ holds what really happened to every connection."))


def mode_notes(topo: topology.Topology) -> str:
    """incident.yaml's words for the proxy mode and ipMode: what the nodes' rules are."""
    mode = f"kube-proxy {topo.proxy_mode} mode, LoadBalancer ingress ipMode {topo.ip_mode}"
    if topo.proxy_mode == "ipvs":
        how = ("IPVS is emulated by an nftables DNAT (table natlens_ipvs, not in "
               "iptables-save); ipvsadm.txt lists the virtual servers it emulates.")
        vip = ("The VIP is in kube-proxy's ipsets but not bound to kube-ipvs0 (as on TKE), "
               "so pod -> VIP traffic leaves the node." if topo.lb_ip_in_rules else
               "kube-proxy has no rule, ipset member or virtual server for the LB IP, "
               "so pod -> VIP traffic leaves the node un-SNATed.")
    elif topo.proxy_mode == "iptables":
        how = "kube-proxy 1.28 iptables-mode rules, no ipsets, no IPVS."
        vip = ("kube-proxy DNATs pod -> VIP on the node (KUBE-EXT-); it never reaches the LB."
               if topo.lb_ip_on_node else
               "kube-proxy has no rule for the LB IP (ClusterIP and NodePort only), so pod "
               "-> VIP traffic leaves the node un-SNATed.")
    else:
        how = ("kube-proxy's nftables table (nft-ruleset.txt / .json); iptables-save holds "
               "no KUBE rule, there are no ipsets and no IPVS.")
        vip = ("kube-proxy DNATs pod -> VIP on the node (service-ips map); it never reaches "
               "the LB." if topo.lb_ip_on_node else
               "kube-proxy has no element for the LB IP (ClusterIP and NodePort only), so pod "
               "-> VIP traffic leaves the node un-SNATed.")
    return f"{mode}: {how} {vip}"


def _facts(bed: Testbed, out: Path, command: dict, records: list[dict], t_start: float,
           t_end: float) -> dict:
    """lab.json: the command, topology, fault, LB and IPVS stand-in, the kernels' ICMP
    counters, captures and per-Service tally."""
    return {
        "schema": "natlens.lab/1",
        "natlens": natlens.__version__,
        "command": command,
        "window": {"start": t_start, "end": t_end},
        "client": {"pod": bed.topo.client.name, "ip": bed.topo.client.ip,
                   "node": bed.topo.client.node},
        "topology": bed.topo.to_dict(),
        "lb": lb_facts(bed.topo),
        "source_sysctls": bed.source_sysctls(),
        "proxy_mode": bed.topo.proxy_mode,
        "ip_mode": bed.topo.ip_mode,
        "fault": faults.describe(bed.topo),
        "modes": mode_notes(bed.topo),
        "ipvs": ("emulated by nft DNAT (numgen inc = rr), table natlens_ipvs, "
                 "priority -99 (dstnat+1)") if bed.topo.proxy_mode == "ipvs" else None,
        "br_netfilter": topology.bridge_netfilter_available(),
        "icmp": bed.icmp_counters(),
        "captures": [{"node": c.node, "label": c.label,
                      "file": str(c.path.relative_to(out)), "tcpdump": c.stats}
                     for c in bed.captures],
        "services": bundle.tally(records, bed.topo),
        "expected": expected(bed.topo),
    }


def lb_facts(topo: topology.Topology) -> dict:
    """lab.json's ``lb``: the LB's namespace, behaviour, hash, whom it excludes, its SNAT."""
    return {"namespace": topo.vpc_ns, "behaviour": topo.lb, "description": LB_NOTES[topo.lb],
            "hash": f"nft jhash(saddr . sport . daddr . dport) mod pool seed {rules.LB_SEED:#x}",
            "excludes": ("the node whose IP is the packet's source"
                         if topo.lb == AVOIDS_SOURCE else None),
            "snat": ({s.key: s.vip for s in topo.services} if topo.lb == PROXY else None)}


def expected(topo: topology.Topology) -> dict[str, str]:
    """What each policy is expected to do under the lab's proxy mode, ipMode and fault (lab.json)."""
    if topo.fault:
        return faults.expected(topo) or {}
    loops = ("the LB picks the client's own node for some connections: those loop back "
             "(SYN leaves for the VIP and comes back to this node's NodePort) and time out; "
             "the rest connect")
    if topo.lb_ip_on_node:
        return {
            "Local": "kube-proxy DNATs pod -> VIP on the node to an endpoint (pod traffic "
                     "takes the cluster-wide service chain, so any endpoint); not SNATed; it "
                     "never reaches the LB: no loopback, every connection connects",
            "Cluster": "kube-proxy DNATs pod -> VIP on the node to any endpoint and "
                       "masquerades it; it never reaches the LB: no loopback, every "
                       "connection connects",
        }
    if topo.lb == PROXY:
        proxied = ("the LB SNATs it to the VIP, so the node it picks answers the LB, which "
                   "un-NATs the reply; it picks the client's own node for some connections "
                   "and those connect too: every connection connects")
        return {"Local": f"no SNAT on the node (pod IP); {proxied}",
                "Cluster": (f"source SNATed to the node IP; {proxied}" if topo.lb_ip_in_rules
                            else f"no kube-proxy rule for the LB IP: the pod IP leaves "
                                 f"un-SNATed; {proxied}")}
    if not topo.lb_ip_in_rules:
        # iptables/nftables modes short-circuit pod sources at a Local NodePort to the
        # cluster-wide service chain; IPVS mode keeps Local NodePorts to local endpoints.
        local_rest = loops
        if topo.proxy_mode != "ipvs":
            local_rest = loops.replace("; the rest connect", (
                "; the other node treats the pod source as cluster traffic (cluster-wide "
                "endpoints, no SNAT): what it DNATs to an endpoint on another node is "
                "answered straight to the pod from the wrong source and times out too "
                "(asymmetric); the rest connect"))
        return {
            "Local": f"no kube-proxy rule for the LB IP: the pod IP leaves un-SNATed; "
                     f"{local_rest}",
            "Cluster": "no kube-proxy rule for the LB IP, so nothing marks it for SNAT "
                       f"either: the pod IP leaves un-SNATed; the LB's pool is every node; "
                       f"{loops}",
        }
    cluster = ("source SNATed to the node IP; the LB never picks the client's node; every "
               "connection connects")
    if topo.lb == ANY_BACKEND:
        cluster = ("source SNATed to the node IP; the LB picks the client's own node for some "
                   "connections: their SYN arrives at that node's eth0 with its own address as "
                   "source and the kernel drops it as a martian source (accept_local 0), so "
                   "they time out; the rest connect")
    return {"Local": f"source not SNATed (pod IP); {loops}", "Cluster": cluster}


def _trap_signals():
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt so ``finally`` cleans up; return an undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    return lambda: [signal.signal(s, h) for s, h in old.items()]
