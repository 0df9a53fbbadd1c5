"""conntrack dumps in every shape a node gives them: conntrack -L, -o extended, /proc."""

from __future__ import annotations

from natlens.netfilter.conntrack import parse_conntrack

PLAIN = ("tcp      6 117 TIME_WAIT src=198.18.64.5 dst=198.19.0.10 sport=40001 dport=80 "
         "src=198.18.1.7 dst=198.18.0.5 sport=80 dport=61000 [ASSURED] mark=0 use=1\n")
# conntrack -L -o extended and /proc/net/nf_conntrack: "<family> <number>" first
EXTENDED = ("ipv4     2 tcp      6 431999 ESTABLISHED src=198.18.64.5 dst=198.19.0.10 "
            "sport=40002 dport=80 src=198.18.1.7 dst=198.18.64.5 sport=80 dport=40002 [ASSURED] "
            "mark=0 zone=0 use=2\n"
            "ipv4     2 udp      17 29 src=198.18.64.5 dst=198.18.0.53 sport=5353 dport=53 "
            "src=198.18.0.53 dst=198.18.0.5 sport=53 dport=1024 mark=0 use=1\n"
            "ipv6     10 tcp      6 119 SYN_SENT src=fd00:64::5 dst=fd00:10::7 sport=40003 "
            "dport=80 [UNREPLIED] src=fd00:64::9 dst=fd00:1::5 sport=8080 dport=40003 mark=0 use=1\n")


def test_plain_conntrack_l():
    (e,) = parse_conntrack(PLAIN)
    assert e.proto == "tcp" and e.state == "TIME_WAIT" and e.snat
    assert e.orig == ("198.18.64.5", "198.19.0.10", 40001, 80)
    assert e.reply == ("198.18.1.7", "198.18.0.5", 80, 61000)


def test_extended_and_proc_lines_are_read_not_dropped():
    es = parse_conntrack(EXTENDED)
    assert [(e.proto, e.state, e.line) for e in es] == [
        ("tcp", "ESTABLISHED", 1), ("udp", None, 2), ("tcp", "SYN_SENT", 3)]
    assert not es[0].snat and es[1].snat
    assert es[2].orig == ("fd00:64::5", "fd00:10::7", 40003, 80) and es[2].snat
    assert es.skipped == 0


def test_entry_lines_that_cannot_be_read_are_counted_with_their_line():
    text = (PLAIN
            + "tcp      6 117 TIME_WAIT src=198.18.64.5 dst=198.19.0.10 sport=40001\n"  # cut short
            + "ipv4     2 tcp      6 src=198.18.64.5\n"
            + "ipv4     2 icmp     1 29 src=198.18.64.5 dst=198.18.0.1 type=8 code=0 id=7 "
              "src=198.18.0.1 dst=198.18.64.5 type=0 code=0 id=7 mark=0 use=1\n"  # kept out: no ports
            + "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.\n"
            + "\n")
    es = parse_conntrack(text)
    assert len(es) == 1
    assert es.skipped == 2
    assert [ln for ln, _ in es.skipped_lines] == [2, 3]
    assert all("tuple" in why for _, why in es.skipped_lines)
    assert es.other == 1  # the ICMP entry: parsed, not NAT evidence for ports
    # still a plain list for callers that only iterate
    assert isinstance(es, list) and [e.line for e in es] == [1]
