"""Addresses as the walk holds them: an int with its family (4 or 6) beside it.

The int alone loses the family: ::c612:1064 and 198.18.16.100 are the same int
modulo width, so every comparison here takes the family too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from natlens.errors import NatlensError
from natlens.netfilter.iptables import Net


def ip_addr(text: str) -> tuple[int, int]:
    """'198.18.0.1' -> (4, int), 'fd00::1' -> (6, int): the int alone loses the family."""
    try:
        a = ipaddress.ip_address(text)
    except ValueError:
        raise NatlensError(f"bad address {text!r}") from None
    return a.version, int(a)


def ip_int(text: str) -> int:
    """The address as an int, without its family: use ip_addr wherever families can mix."""
    return ip_addr(text)[1]


def ip_str(v: int, fam: int | None = None) -> str:
    """An address int back to text; without fam, values below 2**32 are taken as IPv4."""
    if fam is None:
        fam = 4 if v < (1 << 32) else 6
    return str(ipaddress.IPv4Address(v)) if fam == 4 else str(ipaddress.IPv6Address(v))


def hostport(addr: int, port: int, fam: int) -> str:
    """'198.18.0.1:80' or '[fd00::1]:80', as trace lines and dnat_to print an endpoint."""
    return f"{ip_str(addr, fam)}:{port}" if fam == 4 else f"[{ip_str(addr, fam)}]:{port}"


def loopback(fam: int) -> int:
    """127.0.0.1 or ::1: where REDIRECT sends a locally generated packet."""
    return ip_int("127.0.0.1" if fam == 4 else "::1")


def in_any_net(nets: Iterable[Net], addr: int, fam: int) -> bool:
    """Whether addr (of family fam) lies in one of the (network, mask, version) nets."""
    return any(ver == fam and (addr & mask) == net for net, mask, ver in nets)
