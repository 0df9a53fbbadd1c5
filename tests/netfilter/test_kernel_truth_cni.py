"""The CNIs' rules beside kube-proxy against the real kernel (tests/netfilter/cni/).

For each CNI the lab copy of its rules (iptables-save.txt: kube-proxy iptables mode plus
the CNI's chains, lab interface names) and its ipsets are loaded into the lab's node
namespace; first packets are sent from the client namespace (pods, in via n-c) and from
the node itself, and nflab.run_case compares the model's paths with conntrack's NAT
decision and connection mark. The packets: the manifest's (those the lab can send) and a
battery from every client address. A disagreement fails; a packet the model cannot
decide is counted and listed in the summary line printed for each CNI.

A CNI whose rules need a match or target this kernel lacks is skipped, with the reason.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from nflab import CLIENT_IPS, kernel_lab_fixture, run_case

pytestmark = [pytest.mark.root, pytest.mark.slow]

kernel_lab = pytest.fixture(scope="module")(kernel_lab_fixture)

CNI_DIR = Path(__file__).resolve().parent / "cni"
MANIFEST = json.loads((CNI_DIR / "manifest.json").read_text())
CNIS = list(MANIFEST["cnis"])

# kube-proxy's KUBE-FORWARD counts INVALID drops in an nfacct object (-m nfacct needs it to
# exist); the nfacct tool is not installed everywhere, so it is made over nfnetlink here.
NFACCT_ADD = r"""
import socket, struct, sys
for name in sys.argv[1:]:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)       # NETLINK_NETFILTER
    nm = name.encode() + b"\0"
    attr = struct.pack("HH", 4 + len(nm), 1) + nm                   # NFACCT_NAME
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("BBH", socket.AF_UNSPEC, 0, 0) + attr
    s.send(struct.pack("IHHII", 16 + len(body), 7 << 8, 1 | 4 | 0x400, 1, 0) + body)  # ACCT_NEW
    err = struct.unpack("i", s.recv(4096)[16:20])[0]
    if err not in (0, -16, -17):                                     # EBUSY/EEXIST: there already
        sys.exit(f"nfacct {name}: errno {-err}")
"""
MISSING = ("missing kernel module", "No such file or directory", "not supported", "Protocol not supported",
           "unknown option", "Couldn't load")


def _battery(start: int) -> list[tuple]:
    """Every client address to the Services, the other node and the internet; the node too."""
    out, sport = [], start
    for src in CLIENT_IPS:
        for dst, dport, proto in [("198.18.4.9", 443, "tcp"), ("198.18.3.5", 8080, "tcp"),
                                  ("198.18.5.1", 80, "tcp"), ("198.18.6.2", 443, "tcp"),
                                  ("198.18.5.2", 53, "udp"), ("198.18.2.1", 30443, "tcp"),
                                  ("198.18.5.1", 6379, "tcp"), ("198.18.6.9", 123, "udp")]:
            sport += 1
            out.append((src, sport, dst, dport, proto, False))
    for src, dst, dport, proto in [("198.18.2.1", "198.18.6.3", 6379, "tcp"), ("198.18.2.1", "198.18.5.1", 6379, "tcp"),
                                   ("198.18.1.1", "198.18.3.2", 8443, "tcp"), ("198.18.2.1", "198.18.1.6", 8080, "tcp"),
                                   ("198.18.1.1", "198.18.4.1", 53, "udp")]:
        sport += 1
        out.append((src, sport, dst, dport, proto, True))
    return out


def _packets(cni: str) -> list[tuple]:
    pk = [(p["src"], p["sport"], p["dst"], p["dport"], p["proto"], p["local"])
          for p in MANIFEST["cnis"][cni]["packets"] if p["kernel"]]
    return pk + _battery(45000)


@pytest.mark.parametrize("cni", CNIS)
def test_cni_rules_against_the_kernel(kernel_lab, cni, capsys):
    files = MANIFEST["cnis"][cni]["files"]
    iptables = (CNI_DIR / files["iptables"]).read_text()
    ipset = (CNI_DIR / files["ipset"]).read_text() if files["ipset"] else ""
    try:
        kernel_lab.ns(kernel_lab.n, sys.executable, "-c", NFACCT_ADD, *MANIFEST["lab"]["nfacct objects"])
    except RuntimeError as exc:
        pytest.skip(f"{cni}: cannot make kube-proxy's nfacct counter (nfnetlink_acct): {exc}")
    packets = _packets(cni)
    assert len({(p[4], p[0], p[1]) for p in packets}) == len(packets), "packets must differ in proto/src/sport"
    stats = {"compared": 0, "undecided": 0, "branched": 0, "outcomes": set()}
    try:
        bad = run_case(kernel_lab, iptables, ipset, packets, stats)
    except RuntimeError as exc:
        if any(m in str(exc) for m in MISSING):
            pytest.skip(f"{cni}: this kernel lacks what its rules need: {exc}")
        raise
    undecided = [b for b in bad if ": undecided " in b]
    disagree = [b for b in bad if b not in undecided]
    why = sorted({u.split(": undecided ", 1)[1].strip("[]'")[:160] for u in undecided})
    with capsys.disabled():
        print(f"\n{cni}: {len(packets)} packets, {stats['compared']} compared with conntrack, "
              f"{stats['undecided']} undecided, {stats['branched']} branched, {len(disagree)} disagree; "
              f"kernel outcomes {sorted(stats['outcomes'])}" + "".join(f"\n  undecided: {w}" for w in why))
    assert not disagree, f"{cni}: {len(disagree)} disagreements, first:\n" + "\n".join(disagree[:3])
    assert stats["compared"] + stats["undecided"] == len(packets)
    # every rule these CNIs write is modelled (rpfilter included): a new undecided is a regression
    assert not undecided, f"{cni}: {len(undecided)} undecided:\n" + "\n".join(why)
