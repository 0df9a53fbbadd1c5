"""Checks of the deep-dive notebooks' own parameters, each a one-line NatlensError.

Why: a notebook run with `-p journey J99` or `-p node node-9` used to end in a bare
KeyError traceback (or, for a half-given packet, silently show something else). These
checks run right after `report.load`, name the parameter, what is wrong and the valid
choices, and raise NatlensError, which `natlens report` and papermill users see as that
one line (natlens.report.execute treats it as bad input, exit 2).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from natlens.errors import NatlensError
from natlens.report.data import ReportData

MAX_LISTED = 10  # choices named in a message; the rest are counted


def check_journey(d: ReportData, journey: Any) -> None:
    """`journey` is None (the first loopback journey) or the id of one of the incident's journeys."""
    if journey is None or (isinstance(journey, str) and not journey.strip()):
        return
    ids = [str(x) for x in d.analysis.journeys["journey"]]
    if str(journey) in ids:
        return
    looped = [str(x) for x in d.loopback["journey"]] if not d.loopback.empty else []
    choices = (f"{_listed(ids)}" if ids else "none: the captures hold no journey")
    loops = f"; loopback journeys: {_listed(looped)}" if looped else ""
    raise NatlensError(f"parameter journey={journey!r}: no such journey; the incident's journeys: "
                       f"{choices}{loops}")


def check_trace(d: ReportData, node: Any = "", src: Any = "", dst: Any = "", dport: Any = 0) -> None:
    """The packet netfilter_trace.ipynb walks: none of node/src/dst/dport (each SNAT row's trace),
    or all four, with a node of the bundle, two IP addresses and a port 1-65535."""
    given = {"node": bool(node), "src": bool(src), "dst": bool(dst), "dport": bool(dport)}
    if not any(given.values()):
        return
    nodes = [n.name for n in d.analysis.bundle.nodes] if d.analysis.bundle is not None else []
    if node and str(node) not in nodes:
        raise NatlensError(f"parameter node={node!r}: no such node; the bundle's nodes: "
                           f"{_listed(nodes) if nodes else 'none'}")
    for name, value in (("src", src), ("dst", dst)):
        if value:
            try:
                ipaddress.ip_address(str(value))
            except ValueError:
                raise NatlensError(f"parameter {name}={value!r}: not an IP address "
                                   "(e.g. 198.18.16.5)") from None
    if dport and not (isinstance(dport, int) and not isinstance(dport, bool) and 0 < dport < 65536):
        raise NatlensError(f"parameter dport={dport!r}: not a port: give a number from 1 to 65535")
    missing = [k for k, v in given.items() if not v]
    if missing:
        raise NatlensError(f"parameters node, src, dst and dport go together (or none, for each SNAT "
                           f"row's trace): {', '.join(missing)} missing")


def _listed(items: list[str]) -> str:
    """The first MAX_LISTED items, and how many more."""
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")
