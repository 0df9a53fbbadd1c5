"""Resynchronization cost: captures where every other record has an impossible length,
against the same capture undamaged, at two sizes in the same run.

Reading resynchronizes after each bad record; the work must stay linear in the file
(the 4x file takes about 4x as long) and a damaged record should cost about what a
good one does. Prints seconds, the damaged/clean ratio and the 4x/1x ratio, for pcap
and pcapng.

    python bench/bench_resync.py [--records N]
"""

from __future__ import annotations

import argparse
import os
import platform
import struct
import sys
import tempfile
import time
from pathlib import Path

from natlens.capture import read_capture
from natlens.capture.write import Interface, pcapng_section, write_pcap

T0 = 1_764_000_000 * 10**9


def frame(i: int) -> bytes:
    """A 60-byte Ethernet/IPv4/UDP frame (lab addresses)."""
    udp = struct.pack(">HHHH", 1000 + i % 50000, 53, 26, 0) + b"x" * 18
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 46, i & 0xFFFF, 0, 64, 17, 0, bytes([198, 18, 0, 1]),
                     bytes([198, 19, 0, 2]))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp


def pcap(path: Path, n: int, damaged: bool) -> None:
    write_pcap(path, [(T0 + i * 1000, frame(i)) for i in range(n)])
    if damaged:
        data = bytearray(path.read_bytes())
        for i in range(0, n, 2):
            struct.pack_into("<I", data, 24 + i * 76 + 8, 0xFFFFFF00)
        path.write_bytes(bytes(data))


def pcapng(path: Path, n: int, damaged: bool) -> None:
    data = bytearray(pcapng_section([Interface(1)], [(0, T0 + i * 1000, frame(i)) for i in range(n)]))
    if damaged:
        off = struct.unpack_from("<I", data, 4)[0]
        off += struct.unpack_from("<I", data, off + 4)[0]  # past the interface block
        for i in range(n):
            length = struct.unpack_from("<I", data, off + 4)[0]
            if i % 2 == 0:
                struct.pack_into("<I", data, off + 4, 0xFFFFFFF0)
            off += length
    path.write_bytes(bytes(data))


def timed(path: Path) -> tuple[float, int]:
    start = time.perf_counter()
    info = read_capture(path).info
    return time.perf_counter() - start, info.resyncs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=50_000)
    args = ap.parse_args()
    n = args.records
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, make in (("pcap", pcap), ("pcapng", pcapng)):
            times = {}
            for size in (n, 4 * n):
                for damaged in (False, True):
                    path = Path(tmp) / f"{fmt}-{size}-{damaged}"
                    make(path, size, damaged)
                    times[size, damaged] = timed(path)
            for size in (n, 4 * n):
                (clean, _), (bad, resyncs) = times[size, False], times[size, True]
                print(f"{fmt:7} {size:>9,} records  clean {clean:6.2f} s  every 2nd bad {bad:6.2f} s "
                      f"({resyncs:,} resyncs)  damaged/clean {bad / clean:5.1f}x")
            grow = times[4 * n, True][0] / times[n, True][0]
            print(f"{fmt:7} 4x the records, damaged: {grow:.1f}x the time (linear: about 4x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
