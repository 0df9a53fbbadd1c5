"""Failure mechanisms' speed: findings.failures.explain_failures on N failed journeys.

Synthesizes the journeys and records natlens.journeys returns for N failed client
connections, a third of each kind: loopbacks (SYN out, back to the node's NodePort,
SYN-ACK from nodeIP:NodePort reset by the client), answers from the wrong source (the LB
sends it to node-2, DNATed to node-1's endpoint without SNAT, answered straight back) and
SYNs never answered (seen leaving node-1's NIC). 3-6 records per journey.

Prints the time of explain_failures, with its ratio against a baseline in the same process
(a pandas groupby-apply over the same records that only reads each journey's last SYN: the
least a per-journey rule costs), and checks the result (every journey its mechanism).

    python bench/bench_failures.py [--journeys 20000]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from natlens.findings.failures import Context, explain_failures
from natlens.inventory import NODE_COLUMNS, POD_COLUMNS, SERVICE_COLUMNS, Inventory

POD, NODE1, NODE2, VIP, WEB1 = "198.18.16.100", "198.18.0.11", "198.18.0.12", "198.19.0.10", "198.18.16.10"
IFINDEX = {"veth-client": 5, "cni0": 3, "eth0": 2}


def _inventory() -> Inventory:
    nodes = pd.DataFrame([{"name": f"node-{i}", "internal_ip": f"198.18.0.1{i}", "addresses": (f"198.18.0.1{i}",),
                           "pod_cidr": f"198.18.1{5 + i}.0/24", "pod_cidrs": (f"198.18.1{5 + i}.0/24",), "source": "b"}
                          for i in (1, 2)], columns=NODE_COLUMNS)
    return Inventory(nodes=nodes, pods=pd.DataFrame(columns=POD_COLUMNS),
                     services=pd.DataFrame(columns=SERVICE_COLUMNS))


def _rec(jid: str, n: int, capture: str, point: str, dst: str, dport: int, t: float, history: str = "S",
         synack: float | None = None, orig_dir: str = "in", sport: int = 0) -> dict:
    return {"journey": jid, "uid": f"{capture}#{jid}-{n}", "capture": capture, "node": capture.split("/")[0],
            "iface": IFINDEX[point], "point": point, "orig_h": POD, "orig_p": sport, "resp_h": dst,
            "resp_p": dport, "proto": "tcp", "history": history, "conn_state": "S0", "established": False,
            "ts": t, "ts_corr": t, "syn_ts": t if "S" in history else float("nan"),
            "synack_ts": synack if synack is not None else float("nan"), "orig_dir": orig_dir}


def synth(n: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Journeys, records and the mechanism each journey must get."""
    journeys, recs, want = [], [], []
    for i in range(n):
        jid, sport, t, kind = f"J{i}", 20000 + i % 40000, 1.8e9 + i * 1e-3, i % 3
        out = [_rec(jid, 0, "node-1/any", "veth-client", VIP, 80, t, sport=sport),
               _rec(jid, 1, "node-1/any", "cni0", VIP, 80, t + 1e-5, sport=sport),
               _rec(jid, 2, "node-1/any", "eth0", VIP, 80, t + 2e-5, orig_dir="out", sport=sport)]
        if kind == 0:
            out += [_rec(jid, 3, "node-1/any", "eth0", NODE1, 30080, t + 3e-5, sport=sport),
                    _rec(jid, 4, "node-1/any", "veth-client", NODE1, 30080, t + 5e-5, "^hR", t + 5e-5, sport=sport)]
        elif kind == 1:
            out += [_rec(jid, 3, "node-2/eth0", "eth0", NODE2, 30080, t + 3e-5, sport=sport),
                    _rec(jid, 4, "node-2/eth0", "eth0", WEB1, 8080, t + 4e-5, sport=sport),
                    _rec(jid, 5, "node-1/any", "veth-client", WEB1, 8080, t + 6e-5, "^hR", t + 6e-5, sport=sport)]
        recs += out
        journeys.append({"journey": jid, "client_h": POD, "client_p": sport, "client_node": "node-1", "vip": VIP,
                         "vport": 80, "service": f"{VIP}:80/tcp", "outcome": "timed out",
                         "loopback": "yes" if kind == 0 else "no", "loopback_evidence": "synthetic",
                         "client_uid": out[0]["uid"]})
        want.append(("loopback", "wrong-source-reply", "no-reply")[kind])
    return pd.DataFrame(journeys), pd.DataFrame(recs), want


def baseline(records: pd.DataFrame) -> pd.Series:
    """Per journey, the hop of its last SYN: one groupby-apply, the least a per-journey rule costs."""
    return records.groupby("journey", sort=False).apply(
        lambda g: g.loc[g["ts_corr"].idxmax(), "point"], include_groups=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--journeys", type=int, default=20_000)
    args = ap.parse_args()
    journeys, records, want = synth(args.journeys)
    ctx = Context(_inventory(), lambda node: None)
    t0 = time.perf_counter()
    baseline(records)
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = explain_failures(journeys, records, ctx)
    t_fail = time.perf_counter() - t0
    assert out["failure"].tolist() == want, "a journey got the wrong mechanism"
    print(f"{args.journeys:,} failed journeys, {len(records):,} records")
    print(f"  explain_failures        {t_fail:7.2f} s  {args.journeys / t_fail:9,.0f} journeys/s  "
          f"{t_fail / t_base:5.1f}x the baseline")
    print(f"  baseline groupby-apply  {t_base:7.2f} s  {args.journeys / t_base:9,.0f} journeys/s   1.0x")


if __name__ == "__main__":
    main()
