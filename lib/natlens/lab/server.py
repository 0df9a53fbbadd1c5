"""The endpoint pods' server: answer each TCP connection with a short HTTP reply.

Run inside a pod namespace: ``python3 -m natlens.lab.server --port 8080 --name web-1``.
It prints ``ready`` once listening (the lab waits for that line), reads the
request head and answers with the pod's name, so the client records which
endpoint served it and the captures hold a first response byte.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import socketserver
import sys


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(3.0)
        data = b""
        try:
            while b"\r\n\r\n" not in data and len(data) < 8192:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            body = (self.server.pod_name + "\n").encode()  # type: ignore[attr-defined]
            sock.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        except OSError:
            pass


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--name", default="web")
    args = ap.parse_args(argv)
    with _Server(("0.0.0.0", args.port), _Handler) as srv:
        srv.pod_name = args.name  # type: ignore[attr-defined]
        print("ready", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            srv.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
