"""The release shapes of tests/netfilter/shapes/ against the real kernel.

Each shape's iptables-save.txt (and ipset-save.txt) is loaded into the lab node as it is,
first packets are sent through it (from the pods 198.18.1.2-.6 of the client namespace,
and generated on the node itself), and the model, reading back what the kernel's
iptables-save / ipset save print, must predict every conntrack decision (nflab.run_case).

IPVS shapes: the test kernel has no IPVS, so only their iptables rules and ipsets are
loaded and compared: the VIPs on kube-ipvs0 are plain local addresses here, as they are to
the model without ipvsadm.txt. The IPVS step itself is modelled from ipvsadm.txt and is
checked without a kernel (test_shapes.py).

-m recent (ClientIP affinity) needs xt_recent and -m nfacct needs xt_nfacct with kube-proxy's
accounting objects (created here over netlink, as kube-proxy does at start); a shape
whose modules cannot be used is skipped with the reason.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from nflab import CLIENT_IPS, kernel_lab_fixture, run_case
from shapes import load_shapes

pytestmark = [pytest.mark.root, pytest.mark.slow]

kernel_lab = pytest.fixture(scope="module")(kernel_lab_fixture)

SHAPES = [s for s in load_shapes() if s.path("iptables-save.txt")]
NFACCT_OBJECTS = ["localhost_nps_accepted_pkts", "ct_state_invalid_dropped_pkts"]

# every address:port of the corpus' Services (manifest "services"), node ports on both node
# addresses, a health-check port, nothing-there ports and a plain endpoint
SERVICE_DSTS = [
    ("198.18.5.1", 80, "tcp"), ("198.18.5.1", 443, "tcp"), ("198.18.5.1", 8080, "tcp"),
    ("198.18.5.2", 80, "tcp"), ("198.18.6.102", 80, "tcp"), ("198.18.6.103", 80, "tcp"),
    ("198.18.6.104", 53, "udp"), ("198.18.6.105", 80, "tcp"),
    ("198.18.3.1", 80, "tcp"), ("198.18.3.2", 80, "tcp"), ("198.18.3.3", 80, "tcp"),
    ("198.18.3.12", 80, "tcp"), ("198.18.3.4", 53, "udp"), ("198.18.4.1", 8080, "tcp"),
]
NODE_PORTS = [(30080, "tcp"), (30081, "tcp"), (30082, "tcp"), (30053, "udp"), (30000, "tcp"), (31999, "tcp")]


def _packets() -> list[tuple]:
    """(src, sport, dst, dport, proto, local): every client to every destination (the LB IP
    with sourceRanges from inside and outside 198.18.1.4/30), and the node's own packets."""
    out = []
    sport = 40000
    dsts = SERVICE_DSTS + [(ip, p, proto) for ip in ("198.18.1.1", "198.18.2.1") for p, proto in NODE_PORTS]
    for i, (dst, dport, proto) in enumerate(dsts):
        for src in (CLIENT_IPS[i % len(CLIENT_IPS)], CLIENT_IPS[(i + 3) % len(CLIENT_IPS)]):
            sport += 1
            out.append((src, sport, dst, dport, proto, False))
    for src in ("198.18.2.1", "198.18.1.1"):  # hostNetwork processes
        for dst, dport, proto in SERVICE_DSTS + [("198.18.2.1", p, proto) for p, proto in NODE_PORTS]:
            sport += 1
            out.append((src, sport, dst, dport, proto, True))
    for dport, proto in NODE_PORTS:  # localhost node ports (route_localnet=1, as kube-proxy sets it)
        sport += 1
        out.append(("127.0.0.1", sport, "127.0.0.1", dport, proto, True))
    return out


_NFACCT_ADD = r"""
import socket, struct, sys
# NFNL_SUBSYS_ACCT (7) << 8 | NFNL_MSG_ACCT_NEW (0); NLM_F_REQUEST|NLM_F_ACK|NLM_F_CREATE; NFACCT_NAME = 1
for name in sys.argv[1:]:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
    nm = name.encode() + b"\0"
    attr = struct.pack("HH", 4 + len(nm), 1) + nm
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("BBH", 0, 0, 0) + attr
    s.sendto(struct.pack("IHHII", 16 + len(body), 7 << 8, 1 | 4 | 0x400, 1, 0) + body, (0, 0))
    err = -struct.unpack("i", s.recv(4096)[16:20])[0]
    if err not in (0, 17):  # 17: EEXIST
        sys.exit(f"nfacct {name}: errno {err}")
"""


def _module_unusable(lab, needs: tuple[str, ...]) -> str | None:
    """Why the lab node cannot load this shape's matches (no modprobe here: try the rule)."""
    probes = {"xt_recent": "-m recent --name NLPROBE --rcheck --seconds 10",
              "xt_physdev": "-m physdev ! --physdev-is-in",
              "xt_nfacct": f"-m nfacct --nfacct-name {NFACCT_OBJECTS[0]}"}
    for mod in needs:
        if mod == "xt_nfacct":
            r = subprocess.run(["ip", "netns", "exec", lab.n, sys.executable, "-c", _NFACCT_ADD, *NFACCT_OBJECTS],
                               capture_output=True, text=True)
            if r.returncode:
                return f"{mod}: cannot create kube-proxy's nfacct objects ({r.stderr.strip()[-200:]})"
        rules = f"*filter\n:INPUT ACCEPT [0:0]\n-A INPUT {probes[mod]} -j RETURN\nCOMMIT\n"
        r = subprocess.run(["ip", "netns", "exec", lab.n, "iptables-restore"], input=rules,
                           capture_output=True, text=True)
        if r.returncode:
            return f"{mod} cannot be used on this kernel: {r.stderr.strip()[-200:]}"
    return None


@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_release_shape_against_the_kernel(kernel_lab, shape):
    why = _module_unusable(kernel_lab, shape.kernel_needs)
    if why:
        pytest.skip(f"{shape.name}: {why}")
    # kube-proxy sets route_localnet=1 for localhost node ports (iptables mode, the default
    # --iptables-localhost-nodeports): 127.0.0.1 -> node port DNATed off the node is routed
    kernel_lab.ns(kernel_lab.n, "sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1")
    stats = {"compared": 0, "undecided": 0, "branched": 0, "outcomes": set()}
    packets = _packets()
    bad = run_case(kernel_lab, shape.text("iptables-save.txt"), shape.text("ipset-save.txt"), packets, stats)
    print(f"{shape.name} (kube-proxy {shape.release}, {shape.mode}): {stats['compared']} compared, "
          f"{stats['undecided']} undecided, {stats['branched']} branched, outcomes "
          f"{sorted(stats['outcomes'])}, {len(bad)} disagreements")
    assert not bad, f"{shape.name}: {len(bad)} disagreements, first:\n" + "\n".join(bad[:4])
    assert stats["compared"] == len(packets)
    # iptables mode: DNAT, DNAT+SNAT, plain and dropped packets; IPVS mode without IPVS:
    # masqueraded (node ports, external IPs), plain and dropped ones, never a DNAT
    want = {"dnat", "dnatsnat", "", "absent"} if shape.mode == "iptables" else {"snat", "", "absent"}
    assert want <= stats["outcomes"], stats["outcomes"]
    if shape.mode == "ipvs":
        assert not {"dnat", "dnatsnat"} & stats["outcomes"], stats["outcomes"]

