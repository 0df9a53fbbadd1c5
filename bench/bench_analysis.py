"""Analysis speed and memory: connections + journeys for 1,000,000 packets over 4 captures.

Synthesizes packet tables (the capture layer's contract) for N client connections
seen at 4 capture points: the client pod's side and the client node's NIC (half of
the connections SNATed there), the backend node's NIC after the load balancer's
DNAT to nodeIP:NodePort, and the endpoint's side after kube-proxy's DNAT; the
backend node's clock runs 3 ms ahead. 10 packets per connection per point.

Prints the time of connections() over the 4 tables, of build_journeys() and of lb_findings(), with
ratios against a baseline in the same process (a pandas groupby of the packets on
their 5-tuple: the least any connection table costs), the peak RSS growth, and
checks the result (every connection one journey, offset found, SNAT half/half).

    python bench/bench_analysis.py [--packets 1000000]
"""

from __future__ import annotations

import argparse
import gc
import resource
import time

import numpy as np
import pandas as pd

from natlens.connections import connections
from natlens.findings.lb import lb_findings
from natlens.inventory import Inventory
from natlens.journeys import build_journeys

# 10 packets per connection: (from client?, flags, payload)
SCRIPT = [(True, 0x02, 0), (False, 0x12, 0), (True, 0x10, 0), (True, 0x18, 120), (False, 0x10, 0),
          (False, 0x18, 900), (True, 0x10, 0), (True, 0x11, 0), (False, 0x11, 0), (True, 0x10, 0)]


def _ip(base: int, i: np.ndarray) -> np.ndarray:
    v = base + i
    return np.char.add(np.char.add(np.char.add("198.18.", ((v >> 8) & 255).astype(str)), "."),
                       (v & 255).astype(str))


def synth(n_conn: int, rng: np.random.Generator) -> tuple[list[pd.DataFrame], Inventory]:
    """Four packet tables for n_conn client connections (see module doc)."""
    k = len(SCRIPT)
    isn_c = rng.integers(0, 2**32, n_conn)
    isn_s = rng.integers(0, 2**32, n_conn)
    t0 = 1.7e18 + np.arange(n_conn) * 200_000  # one connection every 0.2 ms
    pod = np.full(n_conn, "198.18.16.100", dtype=object)
    sport = 20000 + (np.arange(n_conn) % 40000)
    snat = (np.arange(n_conn) % 2) == 0
    snat_port = 40000 + (np.arange(n_conn) % 20000)
    frm = np.array([s[0] for s in SCRIPT])
    flags = np.array([s[1] for s in SCRIPT])
    plen = np.array([s[2] for s in SCRIPT])
    # cumulative payload per direction -> seq/ack
    c_sent = np.cumsum(np.where(frm, plen + ((flags & 3) > 0), 0)) - np.where(frm, plen + ((flags & 3) > 0), 0)
    s_sent = np.cumsum(np.where(~frm, plen + ((flags & 3) > 0), 0)) - np.where(~frm, plen + ((flags & 3) > 0), 0)
    c_total = np.cumsum(np.where(frm, plen + ((flags & 3) > 0), 0))
    s_total = np.cumsum(np.where(~frm, plen + ((flags & 3) > 0), 0))
    rows = np.repeat(np.arange(n_conn), k)
    step = np.tile(np.arange(k), n_conn)
    fc = frm[step]
    seq = np.where(fc, isn_c[rows] + c_sent[step], isn_s[rows] + s_sent[step]) % 2**32
    ack = np.where(fc, isn_s[rows] + s_total[step - 1].clip(0) * (step > 0),
                   isn_c[rows] + c_total[step]) % 2**32
    ack = np.where((flags[step] & 0x10) != 0, ack, 0)
    base_ts = t0[rows] + step * 50_000

    def table(label, client_h, client_p, server_h, server_p, dt_ns, ifindex):
        src = np.where(fc, client_h[rows], server_h[rows])
        dst = np.where(fc, server_h[rows], client_h[rows])
        sp = np.where(fc, client_p[rows], server_p[rows])
        dp = np.where(fc, server_p[rows], client_p[rows])
        n = len(rows)
        return pd.DataFrame({
            "capture": label, "record": np.arange(n), "ts_ns": (base_ts + dt_ns).astype(np.int64),
            "ifindex": pd.array(np.full(n, ifindex), dtype="Int32") if ifindex is not None else
            pd.array([None] * n, dtype="Int32"),
            "iface": 0, "direction": None,
            "src": pd.array(src.astype(str), dtype="string[pyarrow]"),
            "dst": pd.array(dst.astype(str), dtype="string[pyarrow]"),
            "ip_id": (rows * 7 + step) % 65536, "ip_len": 52 + plen[step], "proto": 6,
            "sport": sp, "dport": dp, "tcp_flags": flags[step], "seq": seq, "ack": ack,
            "window": 502, "tsval": None, "payload_len": plen[step],
            "payload_hash": pd.array(np.where(plen[step] > 0, rows * 31 + step, 0), dtype="UInt64"),
        })

    vip = np.full(n_conn, "198.19.0.10", dtype=object)
    node1 = np.full(n_conn, "198.18.0.11", dtype=object)
    node2 = np.full(n_conn, "198.18.0.12", dtype=object)
    ep = np.full(n_conn, "198.18.17.10", dtype=object)
    p80, p30080, p8080 = (np.full(n_conn, v) for v in (80, 30080, 8080))
    wire_h = np.where(snat, node1, pod)
    wire_p = np.where(snat, snat_port, sport)
    tables = [
        table("pod", pod, sport, vip, p80, 0, None),
        table("eth0", wire_h, wire_p, vip, p80, 20_000, None),
        table("eth0", wire_h, wire_p, node2, p30080, 3_000_000 + 30_000, None),
        table("pod", wire_h, wire_p, ep, p8080, 3_000_000 + 40_000, None),
    ]
    inv = Inventory(
        nodes=pd.DataFrame({"name": ["node-1", "node-2"], "internal_ip": ["198.18.0.11", "198.18.0.12"],
                            "pod_cidr": ["198.18.16.0/24", "198.18.17.0/24"], "source": "bench"}),
        pods=pd.DataFrame(columns=["namespace", "name", "ip", "node", "host_network", "source"]),
        services=pd.DataFrame([{"namespace": "default", "name": "web", "type": "LoadBalancer",
                                "cluster_ip": "198.18.128.10", "lb_ip": "198.19.0.10", "port": 80,
                                "proto": "tcp", "node_port": 30080, "target_port": 8080,
                                "policy": "Local", "source": "bench"}]))
    return tables, inv


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    args = ap.parse_args()
    n_conn = args.packets // (4 * len(SCRIPT))
    tables, inv = synth(n_conn, np.random.default_rng(5))
    names = [("node-1", "node-1/pod"), ("node-1", "node-1/eth0"), ("node-2", "node-2/eth0"),
             ("node-2", "node-2/pod")]
    total = sum(len(t) for t in tables)
    print(f"{total:,} packets, {n_conn:,} client connections, 4 captures")
    gc.collect()

    t = time.perf_counter()
    for tb in tables:
        tb.groupby(["src", "sport", "dst", "dport", "proto"], sort=False).size()
    base = time.perf_counter() - t
    print(f"baseline  pandas groupby on the 5-tuple:  {base:6.2f} s")

    rss0 = rss_mb()
    t = time.perf_counter()
    conns = pd.concat([connections(tb, node=n, capture=c) for tb, (n, c) in zip(tables, names, strict=True)],
                      ignore_index=True)
    t_conn = time.perf_counter() - t
    t = time.perf_counter()
    j, rec, notes = build_journeys(conns, inv)
    t_j = time.perf_counter() - t
    rss1 = rss_mb()
    t = time.perf_counter()
    lbs = lb_findings(j[j["service"].notna()], rec, inv)
    t_lb = time.perf_counter() - t
    print(f"connections() x4:                         {t_conn:6.2f} s  ({t_conn / base:.1f}x baseline, "
          f"{total / t_conn / 1e6:.2f} M packets/s)")
    print(f"build_journeys():                         {t_j:6.2f} s  ({t_j / base:.1f}x baseline)")
    print(f"lb_findings() (the load balancer's pick): {t_lb:6.2f} s  ({t_lb / base:.1f}x baseline)")
    print(f"connections + journeys:                   {t_conn + t_j:6.2f} s  "
          f"({(t_conn + t_j) / base:.1f}x baseline)")
    print(f"peak RSS growth during the analysis:      {rss1 - rss0:6.0f} MB "
          f"(packet tables themselves: {sum(x.memory_usage(deep=True).sum() for x in tables) / 2**20:.0f} MB)")
    # the result must be right, not only fast
    assert len(conns) == 4 * n_conn, len(conns)
    assert len(j) == n_conn, len(j)
    assert (j["hops"] == 4).all()
    assert (j["snat"] == "yes").sum() == (n_conn + 1) // 2
    assert (j["lb_backend"] == "node-2").all() and (j["loopback"] == "no").all()
    assert [f.rewritten for f in lbs] == [(0, n_conn)], [f.to_dict() for f in lbs]  # every arrival seen, as sent
    print("checked: one journey per connection with 4 hops; SNAT half; backend node-2; the LB never sent a "
          f"SNATed one back ({lbs[0].behaviour});", notes[0])


if __name__ == "__main__":
    main()
