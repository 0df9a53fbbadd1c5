"""The common packet in one compiled pass: untagged Ethernet, IPv4 that is not a fragment,
TCP or UDP (not to a tunnel port), every header captured. Most packets of a node capture
are that; the numpy decoders then only see the rest.

A shortcut with the numpy decoders' results, never a decision of its own: a record it does
not fully accept is left to them (they give every skip reason), and what it writes for one it
accepts is what they would (tests/capture/test_fastpath.py). Without the compiled helper
(``_ipv4``, built at install time like ``_walk``) every record goes to the numpy decoders.
"""

from __future__ import annotations

import numpy as np

from natlens.capture.frame import Frame
from natlens.capture.records import Records

try:
    from natlens.capture import _ipv4 as _compiled
except ImportError:  # pragma: no cover - depends on the build
    _compiled = None

# The Frame columns it fills, in _ipv4.c's order.
COLUMNS = ("ip_version", "ip_id", "ttl", "proto", "ip_len", "src_hi", "src_lo", "dst_hi", "dst_lo",
           "sport", "dport", "tcp_flags", "seq", "ack", "window", "tsval", "tsecr", "payload_len",
           "payload_hash")


def decode(f: Frame, rec: Records) -> np.ndarray:
    """Decode the common packets of ``rec`` into ``f``; the rows left for the numpy decoders."""
    if _compiled is None or not f.n:
        return np.arange(f.n)
    done = np.zeros(f.n, bool)
    _compiled.decode(f.buf.raw, _c(rec.off, np.int64), _c(rec.caplen, np.int64),
                     _c(rec.linktype, np.int32), _c(rec.bad, bool), done,
                     [f.values[c] for c in COLUMNS], [f.valid[c] for c in COLUMNS])
    return np.flatnonzero(~done)


def _c(a: np.ndarray, dtype) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype)
