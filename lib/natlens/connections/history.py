"""Zeek's history string of each connection: one letter per kind of event, in order.

Why: the history is the most compact account of what a capture point saw of a
connection (``ShADadFf``, ``S``, ``ShR``), and customers compare it with Zeek's.
Zeek's letters (upper case: originator, lower case: responder): S a SYN without ACK,
H a SYN-ACK, A a pure ACK, D payload (every UDP packet), F FIN, R RST, I an
inconsistent packet (FIN and RST), Q a multi-flag one (SYN with FIN or RST), ^ the
roles were flipped. Each letter
is recorded once per side, except that S/H, F and R are recorded again when they
come at a new sequence number. W (zero window), T (retransmission) and G (content
gap) are recorded at their 1st, 10th, 100th, ... occurrence per side (Zeek's
``ScaledHistoryEntry``). We add no C (checksum) letters: the packet table does not
verify checksums.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from natlens._grouped import grouped_cummax, join_groups
from natlens.connections.flows import Cut, Sorted
from natlens.connections.roles import Roles
from natlens.connections.seqspace import SeqSpace

# order of a row's letters when one row has several: its flag letter, then W, T, G
_FLAG, _WINDOW, _RXMIT, _GAP = range(4)


def zero_windows(s: Sorted, c: Cut, r: Roles, sq: SeqSpace) -> np.ndarray:
    """Per row: a TCP zero window advertised (Zeek's 'W'), not on a RST, not after the
    sender's RST and not once the peer has closed (a window then means nothing)."""
    o_fin = grouped_cummax(np.where(r.is_orig & s.fin, 1, 0), c.conn)
    r_fin = grouped_cummax(np.where(~r.is_orig & s.fin, 1, 0), c.conn)
    peer_closed_before = np.where(r.is_orig, r_fin, o_fin) > 0
    return s.is_tcp & (s.window == 0) & ~s.rst & ~sq.after_rst & ~peer_closed_before


_LETTERS = np.array(["", "I", "Q", "H", "S", "F", "R", "D", "A"], dtype="<U1")


def flag_letters(s: Sorted, c: Cut, r: Roles, sq: SeqSpace) -> tuple[np.ndarray, np.ndarray]:
    """Per row: its letter ('' for none; upper case) and whether it enters the history.

    A letter enters the first time its side shows it; S/H, F and R again whenever
    their sequence number differs from the previous one of the same kind and side
    (a FIN's is after its payload).
    """
    syn, fin, rst, is_tcp = s.syn, s.fin, s.rst, s.is_tcp
    nbits = syn.astype(np.int8) + fin + rst
    one = is_tcp & (nbits == 1)
    letter = np.where(is_tcp & (nbits > 1), np.where(fin & rst, 1, 2), 0)  # index into _LETTERS
    letter = np.where(one & syn, np.where(s.ackf, 3, 4), letter)
    letter = np.where(one & fin, 5, letter)
    letter = np.where(one & rst, 6, letter)
    letter = np.where(is_tcp & (nbits == 0) & (s.plen > 0), 7, letter)
    letter = np.where(is_tcp & (nbits == 0) & (s.plen == 0) & s.ackf, 8, letter)
    letter = np.where(~is_tcp, 7, letter)
    marker = np.where(fin & one, sq.rel + s.plen, sq.rel)
    kind = np.where(one & syn, 1, np.where(one & fin, 2, np.where(one & rst, 3, 0)))
    side = c.conn * 2 + r.d  # (connection, side) as one number
    has = letter > 0
    add = has & ~pd.Series(side * len(_LETTERS) + letter).duplicated().to_numpy()
    rep = has & (kind > 0)
    if rep.any():
        ri = np.flatnonzero(rep)
        m = marker[ri]
        prevm = pd.Series(m).groupby(side[ri] * 4 + kind[ri], sort=False).shift(1)
        again = prevm.notna().to_numpy() & (prevm.to_numpy() != m)
        add[ri[again]] = True
    code = _LETTERS[letter]
    return code, add


def scaled(mask: np.ndarray, conn: np.ndarray, side_is_orig: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Rows where mask holds for the 1st, 10th, 100th, ... time per (connection, side),
    and the side of each (Zeek's ScaledHistoryEntry)."""
    idx = np.flatnonzero(mask)
    if not idx.size:
        return idx, np.zeros(0, dtype=bool)
    side = side_is_orig[idx]
    k = pd.DataFrame({"c": conn[idx], "s": side}).groupby(["c", "s"], sort=False).cumcount()
    lg = np.log10(k.to_numpy() + 1)
    keep = np.isclose(lg, np.round(lg))
    return idx[keep], side[keep]


def history(s: Sorted, c: Cut, r: Roles, sq: SeqSpace, zero_win: np.ndarray,
            gaps: np.ndarray) -> np.ndarray:
    """Per connection: its history string (see module doc), "^" first when flipped."""
    code, add = flag_letters(s, c, r, sq)
    ev_r = [np.flatnonzero(add)]
    ev_s = [np.full(ev_r[0].size, _FLAG)]
    ev_c = [np.where(r.is_orig[ev_r[0]], code[add], np.char.lower(code[add]))]
    for mask, letter, sub, side in ((zero_win, "W", _WINDOW, r.is_orig),
                                    (sq.rxmit, "T", _RXMIT, r.is_orig),
                                    (gaps, "G", _GAP, ~r.is_orig)):  # a gap is the acked side's
        rows, orig = scaled(mask, c.conn, side)
        ev_r.append(rows)
        ev_s.append(np.full(rows.size, sub))
        ev_c.append(np.where(orig, letter, letter.lower()))
    rows, subs, chars = np.concatenate(ev_r), np.concatenate(ev_s), np.concatenate(ev_c)
    eo = np.lexsort((subs, rows))
    letters = join_groups(c.conn[rows[eo]], chars[eo], c.nc)
    return np.char.add(np.where(r.flip, "^", ""), letters.astype(str))
