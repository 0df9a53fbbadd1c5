"""Generate a large Ethernet/IPv4/TCP pcap quickly (numpy, not per-packet Python).

Connections of a client/server exchange: SYN, SYN-ACK, ACK, then data and ACKs,
with the TCP timestamp option on every segment and payloads of 0 to 400 bytes.
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import numpy as np

HDR = 14 + 20 + 32  # Ethernet, IPv4, TCP with NOP NOP TS


def generate(path: str | Path, packets: int = 1_000_000, per_conn: int = 100, seed: int = 7) -> Path:
    rng = np.random.default_rng(seed)
    n = packets
    conn = np.arange(n) // per_conn
    k = np.arange(n) % per_conn
    payload = np.where(rng.random(n) < 0.6, 0, rng.integers(1, 401, n))
    payload[k < 3] = 0
    frame_len = HDR + payload
    rec_len = 16 + frame_len
    rec_off = np.concatenate([[24], 24 + np.cumsum(rec_len)[:-1]])
    total = int(rec_off[-1] + rec_len[-1])
    out = np.zeros(total + 8, np.uint8)
    out[24:total] = rng.integers(0, 256, total - 24, dtype=np.uint8)  # payload bytes
    mem = out.data
    le32 = np.ndarray((total,), "<u4", mem, strides=(1,))
    be16 = np.ndarray((total,), ">u2", mem, strides=(1,))
    be32 = np.ndarray((total,), ">u4", mem, strides=(1,))
    out[:24] = np.frombuffer(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1), np.uint8)
    ts_us = 1_700_000_000_000_000 + np.arange(n, dtype=np.int64) * 5 + rng.integers(0, 3, n)
    le32[rec_off] = ts_us // 1_000_000
    le32[rec_off + 4] = ts_us % 1_000_000
    le32[rec_off + 8] = frame_len
    le32[rec_off + 12] = frame_len
    f = rec_off + 16
    template = bytes.fromhex(
        "020000000002" "020000000001" "0800"  # Ethernet
        "4500" "0000" "0000" "4000" "40" "06" "0000" "00000000" "00000000"  # IPv4
        "0000" "0000" "00000000" "00000000" "80" "10" "0000" "0000" "0000"  # TCP
        "0101080a" "00000000" "00000000"  # NOP NOP timestamps
    )
    assert len(template) == HDR
    for i, b in enumerate(template):
        out[f + i] = b
    server_side = (k % 2 == 1)
    client = (198 << 24) | (18 << 16) | (1 << 8) | 10
    server = (198 << 24) | (18 << 16) | (2 << 8) | 20
    cport = 20000 + (conn % 40000)
    src = np.where(server_side, server, client + (conn % 200))
    dst = np.where(server_side, client + (conn % 200), server)
    be16[f + 16] = 20 + 32 + payload
    be16[f + 18] = (np.arange(n) & 0xFFFF)
    be32[f + 26] = src
    be32[f + 30] = dst
    be16[f + 34] = np.where(server_side, 443, cport)
    be16[f + 36] = np.where(server_side, cport, 443)
    be32[f + 38] = (conn * 7919 + k * 1000) & 0xFFFFFFFF
    be32[f + 42] = (conn * 104729 + k * 900) & 0xFFFFFFFF
    flags = np.where(k == 0, 0x02, np.where(k == 1, 0x12, np.where(payload > 0, 0x18, 0x10)))
    out[f + 47] = flags
    be16[f + 48] = 502
    be32[f + 58] = (ts_us // 1000) & 0xFFFFFFFF
    be32[f + 62] = ((ts_us // 1000) - 1) & 0xFFFFFFFF
    Path(path).write_bytes(out[:total].tobytes())
    return Path(path)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--packets", type=int, default=1_000_000)
    a = ap.parse_args()
    print(generate(a.out, a.packets))
