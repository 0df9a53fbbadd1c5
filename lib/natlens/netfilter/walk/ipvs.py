"""The IPVS step, modelled from the ipvsadm dump where the kernel runs it.

IPVS takes a packet at LOCAL_IN (after filter, before nat INPUT) or LOCAL_OUT
(after nat OUTPUT) when its address, port and protocol (or firewall mark) are a
virtual service. The model follows every real server with weight > 0 as its own
branch, with probability weight / total: the scheduler's choice is not modelled. A
virtual service with none drops the packet, as ip_vs_leave does (ICMP port unreachable).
"""

from __future__ import annotations

from natlens.netfilter.ipvs import VirtualService
from natlens.netfilter.walk.addresses import ip_addr
from natlens.netfilter.walk.state import DROPPED, UNDECIDED, WalkState

_METHOD = {"Masq": "MASQ", "Route": "GATE", "Tunnel": "TUNNEL"}  # -m ipvs --vmethod names


def ipvs_branches(st: WalkState, vs: VirtualService) -> list[WalkState]:
    """One branch per real server of the virtual service, DNATed for Masq (and Local)."""
    rss = [r for r in vs.real_servers if r.weight > 0]
    if not rss:
        # ip_vs_schedule finds no destination; ip_vs_leave answers ICMP port unreachable and drops
        # (the FTP-port exception, a packet for another port of an FTP service, is not modelled)
        st.trace.append(f"ipvs: {vs} has no real server with weight > 0: dropped, ICMP port unreachable "
                        "to the client (ip_vs_leave)")
        st.decided_by.append(f"ipvs {vs}: no real server with weight > 0 (ip_vs_leave drops it)")
        st.outcome = DROPPED
        return [st]
    total = sum(r.weight for r in rss)
    out = []
    for rs in rss:
        b = st.fork() if len(rss) > 1 else st
        p = rs.weight / total
        b.prob *= p
        b.ipvs = True
        b.ipvs_method = _METHOD.get(rs.forward, rs.forward.upper())
        if len(rss) > 1:
            b.conditions.append(f"ipvs {vs} -> {rs.addr}:{rs.port} (weight {rs.weight}/{total})")
        b.trace.append(f"ipvs: {vs} {vs.scheduler} -> {rs.addr}:{rs.port} {rs.forward}"
                       + (f" (p={p:.3g})" if len(rss) > 1 else ""))
        if rs.forward in ("Masq", "Local"):
            fam, b.dst = ip_addr(rs.addr)
            b.dport = rs.port
            if fam != b.fam:  # no trace line: the trace above names the real server
                b.undecided.append(f"ipvs {vs}: real server {rs.addr} is IPv{fam}, the packet IPv{b.fam}")
                b.outcome = UNDECIDED
            b.dnat = f"{rs.addr}:{rs.port}"
            b.nat_dst_done = True
            b.decided_by.append(f"DNAT by ipvs {vs} ({rs.forward})")
        out.append(b)
    return out
