"""ipvsadm -Ln and ipvsadm -S -n output -> virtual services and their real servers.

The test kernel has no IPVS, so the IPVS step is modelled from these dumps: a
packet that reaches LOCAL_IN (or LOCAL_OUT, for a locally generated one) with the
address, port and protocol of a virtual service is sent to one of its real
servers (one evaluation branch per real server of non-zero weight), with the
destination rewritten for the Masq forwarding method and left alone for Route
(direct routing) and Tunnel. See walk/ipvs.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from natlens.errors import NatlensError

FORWARD_NAMES = {"-m": "Masq", "--masquerading": "Masq", "-g": "Route", "--gatewaying": "Route",
                 "-i": "Tunnel", "--ipip": "Tunnel"}


@dataclass
class RealServer:
    addr: str
    port: int
    forward: str = "Masq"  # Masq, Route, Tunnel, Local
    weight: int = 1
    active: int | None = None
    inactive: int | None = None


@dataclass
class VirtualService:
    proto: str           # tcp, udp, sctp, or fwm
    addr: str            # the VIP ("" for a firewall-mark service)
    port: int            # 0 for a firewall-mark service
    scheduler: str = "wlc"
    fwmark: int | None = None
    persistent: int | None = None
    flags: list[str] = field(default_factory=list)
    real_servers: list[RealServer] = field(default_factory=list)
    lineno: int = 0

    @property
    def key(self) -> tuple:
        return ("fwm", self.fwmark) if self.fwmark is not None else (self.proto, self.addr, self.port)

    def __str__(self) -> str:
        return f"FWM {self.fwmark}" if self.fwmark is not None else f"{self.proto.upper()} {_hp(self.addr, self.port)}"


def _hp(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _split_hp(text: str) -> tuple[str, int]:
    if text.startswith("["):
        addr, _, port = text[1:].partition("]:")
    elif text.count(":") == 1:
        addr, _, port = text.partition(":")
    else:
        return text, 0  # no port: a Route/Tunnel real server keeps the service's port
    return addr, int(port)


_LN_SVC = re.compile(r"^(TCP|UDP|SCTP|FWM)\s+(\S+)\s+(\S+)(.*)$")
_LN_RS = re.compile(r"^->\s+(\S+)\s+(\w+)\s+(\d+)\s+(\d+)\s+(\d+)")


def parse_ipvsadm(text: str, path: str = "<ipvsadm>") -> list[VirtualService]:
    """Parse ``ipvsadm -Ln`` or ``ipvsadm -S -n`` (the format is detected per line)."""
    services: dict[tuple, VirtualService] = {}
    cur: VirtualService | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("IP Virtual Server", "Prot LocalAddress", "-> RemoteAddress", "#")):
            continue
        try:
            if line.startswith(("-A", "-a", "--add-service", "--add-server")):
                _save_line(line, services, lineno)
                continue
            m = _LN_SVC.match(line)
            if m:
                proto, where, sched, rest = m.groups()
                if proto == "FWM":
                    cur = VirtualService("fwm", "", 0, sched, fwmark=int(where, 0), lineno=lineno)
                else:
                    addr, port = _split_hp(where)
                    cur = VirtualService(proto.lower(), addr, port, sched, lineno=lineno)
                words = rest.split()
                if "persistent" in words:
                    cur.persistent = int(words[words.index("persistent") + 1])
                cur.flags = [w for w in words if not w.isdigit() and w != "persistent"]
                services[cur.key] = cur
                continue
            m = _LN_RS.match(line)
            if m and cur is not None:
                addr, port = _split_hp(m.group(1))
                cur.real_servers.append(RealServer(addr, port, m.group(2), int(m.group(3)),
                                                   int(m.group(4)), int(m.group(5))))
                continue
        except (ValueError, IndexError) as exc:
            raise NatlensError(f"bad ipvsadm line {line[:60]!r}: {exc}", path=path, where=str(lineno)) from None
        raise NatlensError(f"unrecognised ipvsadm line {line[:60]!r}", path=path, where=str(lineno))
    return list(services.values())


def _save_line(line: str, services: dict[tuple, VirtualService], lineno: int) -> None:
    toks = line.split()
    opts: dict[str, str] = {}
    fwd = "Masq"
    i = 1
    while i < len(toks):
        t = toks[i]
        if t in FORWARD_NAMES:
            fwd = FORWARD_NAMES[t]
            i += 1
        elif t in ("-t", "-u", "--sctp-service", "-f", "-r", "-s", "-w", "-p", "-M", "-x", "-y",
                   "--tcp-service", "--udp-service", "--fwmark-service", "--real-server",
                   "--scheduler", "--weight", "--persistent", "--netmask"):
            opts[t] = toks[i + 1] if i + 1 < len(toks) and not toks[i + 1].startswith("-") else ""
            i += 2 if opts[t] else 1
        else:
            i += 1  # flags such as --ops, -b sh-port: kept in nothing, they do not change NAT
    if "-t" in opts or "--tcp-service" in opts:
        key = ("tcp", *_split_hp(opts.get("-t") or opts["--tcp-service"]))
    elif "-u" in opts or "--udp-service" in opts:
        key = ("udp", *_split_hp(opts.get("-u") or opts["--udp-service"]))
    elif "--sctp-service" in opts:
        key = ("sctp", *_split_hp(opts["--sctp-service"]))
    elif "-f" in opts or "--fwmark-service" in opts:
        key = ("fwm", int(opts.get("-f") or opts["--fwmark-service"], 0))
    else:
        raise ValueError("no -t/-u/-f service")
    if toks[0] in ("-A", "--add-service"):
        if key[0] == "fwm":
            vs = VirtualService("fwm", "", 0, fwmark=key[1], lineno=lineno)
        else:
            vs = VirtualService(key[0], key[1], key[2], lineno=lineno)
        vs.scheduler = opts.get("-s") or opts.get("--scheduler") or "wlc"
        p = opts.get("-p", opts.get("--persistent"))
        if p is not None:
            vs.persistent = int(p) if p else 300
        services[vs.key] = vs
    else:
        vs = services.get(key)
        if vs is None:
            raise ValueError("real server for an undeclared virtual service")
        addr, port = _split_hp(opts.get("-r") or opts["--real-server"])
        port = port or vs.port
        w = opts.get("-w") or opts.get("--weight") or "1"
        vs.real_servers.append(RealServer(addr, port, fwd, int(w)))
