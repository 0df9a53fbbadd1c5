"""The words natlens answers in: one place for every small vocabulary the layers share.

Why: the analysis, the summary, the CLI and the report must mean the same thing by
"failed" or "unknown"; a second spelling in one of them is a silent disagreement.
Every decision of the analysis (DESIGN.md section 3) takes its value from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # vocab is imported by every layer: it must not pull pandas into netfilter
    import pandas as pd

# --- schemas ----------------------------------------------------------------------------
SUMMARY_SCHEMA: Final = "natlens.summary/1"  # summary.json, DESIGN.md section 5 (contract)

# --- yes / no / unknown: snat, loopback, host_network ------------------------------------
YES: Final = "yes"
NO: Final = "no"
UNKNOWN: Final = "unknown"
TRISTATE: Final = (YES, NO, UNKNOWN)

# --- outcomes of a journey ---------------------------------------------------------------
ESTABLISHED: Final = "established"  # TCP: the client completed the handshake
RESET: Final = "reset"  # TCP: refused or reset
TIMED_OUT: Final = "timed out"  # TCP: the connect gave up (or cannot succeed: a loopback)
ANSWERED: Final = "answered"  # UDP: a reply came back
UNANSWERED: Final = "unanswered"  # UDP: nothing came back within the inactivity timeout
TCP_OUTCOMES: Final = (ESTABLISHED, RESET, TIMED_OUT, UNKNOWN)
UDP_OUTCOMES: Final = (ANSWERED, UNANSWERED, UNKNOWN)
OUTCOMES: Final = (ESTABLISHED, RESET, TIMED_OUT, ANSWERED, UNANSWERED, UNKNOWN)
# What counts as a failed connection: UDP needs no answer, and going idle is not a failure.
FAILED: Final = frozenset({RESET, TIMED_OUT})


def is_failed(outcome: pd.Series) -> pd.Series:
    """True where a journey's outcome is a failure (reset or timed out)."""
    return outcome.isin(list(FAILED))


# --- why a failed journey failed (findings.failures; summary.json's failures) ------------
LOOPBACK: Final = "loopback"  # the load balancer sent it back to the client's own node
DROPPED_BY_RULE: Final = "dropped-by-rule"  # a node's rules drop or reject its packet (the rule)
UNREACHABLE: Final = "unreachable"  # an ICMP error about its packet, not from a rule natlens sees
REFUSED: Final = "refused"  # a RST from the server side answered the SYN
WRONG_SOURCE_REPLY: Final = "wrong-source-reply"  # a SYN-ACK reached the client from another address
RESET_BY_CLIENT: Final = "reset-by-client"  # the client reset a SYN-ACK from the address it called
REPLY_LOST: Final = "reply-lost"  # an answer seen at one point never reached the client
NO_REPLY: Final = "no-reply"  # no capture point saw an answer to the SYN
FAILURES: Final = (LOOPBACK, DROPPED_BY_RULE, UNREACHABLE, REFUSED, WRONG_SOURCE_REPLY, RESET_BY_CLIENT,
                   REPLY_LOST, NO_REPLY, UNKNOWN)

# --- Zeek conn_state values that mean the connection was refused or reset -------------
RESET_STATES: Final = frozenset({"REJ", "RSTR", "RSTRH", "RSTOS0", "RSTO"})

# --- how a connection record ended at one capture point ----------------------------------
END_RST: Final = "rst"
END_FIN: Final = "fin"
END_TIMEOUT: Final = "timeout"
END_CAPTURE: Final = "capture-end"

# --- TCP header flags --------------------------------------------------------------------
FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20
ECE: Final = 0x40
CWR: Final = 0x80
SYN_ACK: Final = SYN | ACK
TCP_FLAGS: Final = {"FIN": FIN, "SYN": SYN, "RST": RST, "PSH": PSH, "ACK": ACK, "URG": URG,
                    "ECE": ECE, "CWR": CWR}
_FLAG_LETTERS: Final = ((SYN, "S"), (ACK, "A"), (FIN, "F"), (RST, "R"), (PSH, "P"))


def flag_text(flags: int) -> str:
    """tcpdump-like letters of a packet's TCP flags ("SA", "R", "." for none, "" for no TCP)."""
    if flags < 0:
        return ""
    return "".join(letter for bit, letter in _FLAG_LETTERS if flags & bit) or "."
