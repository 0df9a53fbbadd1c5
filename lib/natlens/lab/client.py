"""The client pod's program: N TCP connections to each target, every one recorded.

Run inside the client pod's namespace::

    python3 -m natlens.lab.client --target web-local=198.19.0.10:80 \
        --connections 20 --timeout 1.5 --out connections.jsonl

Each connection is a non-blocking connect, so its source port is known the
moment the SYN is sent, whatever the outcome. One JSON object per line:
service, src, sport, dst, dport, ts_start/ts_end (UTC epoch seconds),
outcome (``connected`` | ``failed``), error (``timeout`` or an errno name),
connect_s, first_byte_s (request sent -> first response byte) and served_by
(the endpoint pod that answered). Connections run concurrently (``--concurrency``),
started ``--interval`` seconds apart, so a test with 20 connections takes a
couple of connect timeouts, not twenty.
"""

from __future__ import annotations

import argparse
import errno
import json
import select
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor


def connect_once(service: str, dst: str, dport: int, timeout: float) -> dict:
    """One connection attempt (and, if it connects, one request); its record."""
    rec: dict = {"service": service, "dst": dst, "dport": dport, "src": None, "sport": None,
                 "ts_start": time.time(), "ts_end": None, "outcome": "failed", "error": None,
                 "connect_s": None, "first_byte_s": None, "served_by": None}
    t0 = time.perf_counter()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setblocking(False)
        rc = s.connect_ex((dst, dport))
        rec["src"], rec["sport"] = s.getsockname()
        if rc not in (0, errno.EINPROGRESS):
            rec["error"] = errno.errorcode.get(rc, str(rc))
            return rec
        _, writable, _ = select.select([], [s], [], timeout)
        if not writable:
            rec["error"] = "timeout"
            return rec
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            rec["error"] = errno.errorcode.get(err, str(err))
            return rec
        rec["connect_s"] = time.perf_counter() - t0
        rec["outcome"] = "connected"
        s.setblocking(True)
        s.settimeout(timeout + 2.0)
        t1 = time.perf_counter()
        s.sendall(f"GET / HTTP/1.0\r\nHost: {dst}\r\n\r\n".encode())
        data = s.recv(4096)
        if data:
            rec["first_byte_s"] = time.perf_counter() - t1
            while True:
                more = s.recv(4096)
                if not more:
                    break
                data += more
            head, _, body = data.partition(b"\r\n\r\n")
            rec["served_by"] = body.decode(errors="replace").strip() or None
    except OSError as exc:  # after connecting: the exchange broke; keep the connect result
        rec["error"] = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    finally:
        rec["ts_end"] = time.time()
        s.close()
    return rec


def run(targets: list[tuple[str, str, int]], connections: int, timeout: float,
        concurrency: int, interval: float) -> list[dict]:
    """All connections, targets interleaved, in start order."""
    jobs = [t for _ in range(connections) for t in targets]
    start = time.perf_counter()
    lock = threading.Lock()
    records: list[dict] = [{} for _ in jobs]

    def one(i: int) -> None:
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        rec = connect_once(*jobs[i], timeout)
        with lock:
            records[i] = rec

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        list(pool.map(one, range(len(jobs))))
    return records


def _target(text: str) -> tuple[str, str, int]:
    name, _, addr = text.rpartition("=")
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"target must be NAME=IP:PORT, not {text!r}")
    return (name or addr, host, int(port))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=_target, action="append", required=True,
                    help="NAME=IP:PORT (repeat for several services)")
    ap.add_argument("--connections", type=int, default=20, help="per target")
    ap.add_argument("--timeout", type=float, default=1.5, help="connect timeout, seconds")
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--interval", type=float, default=0.02, help="seconds between starts")
    ap.add_argument("--out", required=True, help="JSON-lines file to write")
    args = ap.parse_args(argv)
    records = run(args.target, args.connections, args.timeout, args.concurrency, args.interval)
    with open(args.out, "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    ok = sum(r["outcome"] == "connected" for r in records)
    print(f"{ok}/{len(records)} connected", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
