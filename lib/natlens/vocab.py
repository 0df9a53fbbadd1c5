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

# --- how the load balancer picks a backend, measured from the captures (findings.lb;
# summary.json's lb) and, separately, as the cloud documents it (natlens.cloud) -----------
AVOIDS_SOURCE: Final = "avoids-source"  # never sends a flow to the backend whose address is its source
ANY_BACKEND: Final = "any-backend"  # may send a node's own (SNATed) connection back to that node
PROXY: Final = "proxy"  # rewrites the source to its own address: a looped flow is answered through it
LB_BEHAVIOURS: Final = (AVOIDS_SOURCE, ANY_BACKEND, PROXY, UNKNOWN)

# How a connection the load balancer sent back to its own node ends (findings.lb)
ANSWERED_FROM_NODE: Final = "answered-from-node-port"  # pod source: SYN-ACK from nodeIP:NodePort, reset
DROPPED_ON_ARRIVAL: Final = "dropped-on-arrival"  # node source: its own address arriving, a martian
ANSWERED_VIA_LB: Final = "answered-via-lb"  # proxied: the reply goes back through the LB and works
LOOP_MODES: Final = (ANSWERED_FROM_NODE, DROPPED_ON_ARRIVAL, ANSWERED_VIA_LB, UNKNOWN)

# --- ICMP errors that end a TCP connect: IPv4 destination unreachable (not "fragmentation
# needed", code 4, which only lowers the path MTU) and time exceeded; ICMPv6 destination
# unreachable and time exceeded (Linux's tcp_v4_err / tcp_v6_err abort a SYN-SENT socket)
ICMP_ENDS_CONNECT: Final = {4: frozenset({3, 11}), 6: frozenset({1, 3})}


def icmp_ends_connect(icmp_type, icmp_code, v6: bool) -> bool:
    """Whether an ICMP error of this type and code, about a SYN, ends the client's connect."""
    try:
        t = int(icmp_type)
    except (TypeError, ValueError):  # None, NaN, pandas' NA: no ICMP error
        return False
    try:
        c = int(icmp_code)
    except (TypeError, ValueError):
        c = -1
    return t in ICMP_ENDS_CONNECT[6 if v6 else 4] and not (not v6 and t == 3 and c == 4)


ICMP_WORDS = {(3, 0): "network unreachable", (3, 1): "host unreachable", (3, 2): "protocol unreachable",
               (3, 3): "port unreachable", (3, 9): "network prohibited", (3, 10): "host prohibited",
               (3, 13): "administratively prohibited", (11, 0): "TTL exceeded in transit",
               (11, 1): "fragment reassembly time exceeded"}
ICMP6_WORDS = {(1, 0): "no route", (1, 1): "administratively prohibited", (1, 3): "address unreachable",
                (1, 4): "port unreachable", (3, 0): "hop limit exceeded"}


def icmp_words(icmp_type: int, code: int, v6: bool = False) -> str:
    """"port unreachable", or "type 3 code 7" for codes without a name here."""
    return (ICMP6_WORDS if v6 else ICMP_WORDS).get((icmp_type, code), f"type {icmp_type} code {code}")


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
