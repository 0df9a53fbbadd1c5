"""The packet table (DESIGN.md section 4): its columns, and why records are skipped.

**Contract**: users' scripts rely on these names and types; change them only with
a bump of PACKETS_SCHEMA.

Versions: ``natlens.packets/3`` is ``natlens.packets/2`` with ``wirelen``, ``ifindex``,
``ip_len`` and ``payload_len`` widened to int64 (the formats hold them as u32: a length of
2^31 or more no longer wraps negative) and the ``anomaly`` column at the end (what the
container says about a record that no field can hold; ANOMALIES below).
``natlens.packets/2`` is ``natlens.packets/1`` plus the ``icmp_orig_*``
columns after ``icmp_code``: the packet an ICMP/ICMPv6 error quotes (RFC 792 / RFC 4443),
which is the only evidence when a firewall rejects a SYN with an ICMP error (kube-proxy's
"has no endpoints" REJECT). They are filled for ICMP types 3, 4, 5, 11, 12 and ICMPv6
types 1, 2, 3, 4 only, as far as the quote was captured (and lies within the ICMP
packet's own IP length): an ICMP error must quote an IPv4 header, an ICMPv6 error an
IPv6 header, else every ``icmp_orig_*`` column is null; ports need 4 quoted transport
bytes, the TCP sequence number 8. The ports of a quoted IPv4 fragment other than the
first are null (its transport header is elsewhere). A quoted IPv6 header's extension
headers are not walked: ``icmp_orig_proto`` is its first next header, and ports are read
only when that is TCP or UDP.
"""

from __future__ import annotations

import pyarrow as pa

PACKETS_SCHEMA = "natlens.packets/3"

# name, Arrow type, meaning. Nullable where a packet has no such field.
COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("capture", pa.string(), "capture point label (file stem: eth0, any, ...)"),
    ("record", pa.int64(), "0-based index of the packet record in the file"),
    ("ts_ns", pa.int64(), "capture time, ns since the epoch (UTC); null if the format has none"),
    ("linktype", pa.int32(), "link-layer header type (1 Ethernet, 113 SLL, 276 SLL2, 101 raw IP)"),
    ("iface", pa.int32(), "pcapng interface id (0 for pcap)"),
    ("ifindex", pa.int64(), "SLL2 interface index"),
    ("pkttype", pa.int8(), "SLL/SLL2 packet type: 0 host, 1 broadcast, 2 multicast, 3 otherhost, 4 outgoing"),
    ("direction", pa.string(), "in | out, from the SLL packet type or pcapng epb_flags"),
    ("caplen", pa.int32(), "captured bytes of the record"),
    ("wirelen", pa.int64(), "original length of the frame"),
    ("vlan", pa.int32(), "outer 802.1Q / 802.1ad VLAN id of the frame as captured (not a tunnel's inner frame)"),
    ("vlan_inner", pa.int32(), "inner VLAN id (QinQ)"),
    ("tunnel", pa.string(), "vxlan | geneve | ipip: the row describes the inner packet"),
    ("outer_src", pa.string(), "tunnel's outer source address"),
    ("outer_dst", pa.string(), "tunnel's outer destination address"),
    ("outer_sport", pa.int32(), "tunnel's outer UDP source port (VXLAN, Geneve)"),
    ("outer_dport", pa.int32(), "tunnel's outer UDP destination port"),
    ("vni", pa.int32(), "VXLAN / Geneve virtual network identifier"),
    ("ip_version", pa.int8(), "4 or 6"),
    ("src", pa.string(), "source address"),
    ("dst", pa.string(), "destination address"),
    ("ip_id", pa.int32(), "IPv4 identification (survives NAT); IPv6: the fragment header's, if any"),
    ("ttl", pa.int16(), "TTL / hop limit"),
    ("ip_len", pa.int64(), "IP bytes on the wire: IPv4 total length, IPv6 40 + payload length or 40 + "
     "the Jumbo Payload length; a TSO/BIG TCP packet with length 0 (TCP/UDP only): the captured bytes"),
    ("proto", pa.int16(), "transport protocol after IPv6 extension headers (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6)"),
    ("sport", pa.int32(), "TCP/UDP source port"),
    ("dport", pa.int32(), "TCP/UDP destination port"),
    ("tcp_flags", pa.int16(), "TCP flags (FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 URG 0x20 ECE 0x40 CWR 0x80, AE 0x100)"),
    ("seq", pa.int64(), "TCP sequence number"),
    ("ack", pa.int64(), "TCP acknowledgement number"),
    ("window", pa.int32(), "TCP window, unscaled"),
    ("tsval", pa.int64(), "TCP timestamp option TSval"),
    ("tsecr", pa.int64(), "TCP timestamp option TSecr"),
    ("payload_len", pa.int64(), "transport payload bytes, from the IP/UDP lengths (not the snaplen)"),
    ("payload_hash", pa.uint64(), "hash of the first 32 captured payload bytes and payload_len; equal for pre- and post-NAT copies"),
    ("icmp_type", pa.int16(), "ICMP / ICMPv6 type"),
    ("icmp_code", pa.int16(), "ICMP / ICMPv6 code"),
    ("icmp_orig_src", pa.string(), "ICMP error: source address of the IP header it quotes"),
    ("icmp_orig_dst", pa.string(), "ICMP error: destination address of the quoted IP header"),
    ("icmp_orig_proto", pa.int16(), "ICMP error: the quoted IP header's protocol (IPv6: its next header)"),
    ("icmp_orig_sport", pa.int32(), "ICMP error: the quoted TCP/UDP source port"),
    ("icmp_orig_dport", pa.int32(), "ICMP error: the quoted TCP/UDP destination port"),
    ("icmp_orig_seq", pa.int64(), "ICMP error: the quoted TCP sequence number"),
    ("anomaly", pa.string(), "what is wrong with the record's container fields, comma-separated "
     "ANOMALIES names (null: nothing); the field it concerns is null or kept as the file has it"),
]
ARROW_SCHEMA = pa.schema([pa.field(n, t) for n, t, _ in COLUMNS],
                         metadata={"schema": PACKETS_SCHEMA})
# The same table with every text column as codes into a dictionary of its values (decode's
# coded=True): a table that is only moved between processes (split by flow, written and read
# once) does not copy or hash the text of each row; plain() gives ARROW_SCHEMA's columns back.
CODED_TEXT = pa.dictionary(pa.int32(), pa.string())
CODED_SCHEMA = pa.schema([pa.field(f.name, CODED_TEXT if f.type == pa.string() else f.type)
                          for f in ARROW_SCHEMA], metadata=ARROW_SCHEMA.metadata)


def plain(table: pa.Table) -> pa.Table:
    """A table of CODED_SCHEMA's columns (or some of them) with ARROW_SCHEMA's types: its text
    as strings."""
    return table.cast(pa.schema([ARROW_SCHEMA.field(n) if n in ARROW_SCHEMA.names else table.schema.field(n)
                                 for n in table.column_names], metadata=table.schema.metadata))

# Why a record is not a row (index = code used by the decoders; 0 = decoded).
SKIP_REASONS = [
    "",
    "arp",  # ARP / RARP: counted, not IP
    "non-ip",  # another ethertype (LLDP, STP, ...)
    "unknown-linktype",  # a link-layer type the decoder does not read
    "snaplen-truncated",  # the capture cut the packet before the headers natlens needs
    "malformed",  # a header contradicts itself or the record (bad version, lengths, ...)
    "ip-fragment",  # an IPv4/IPv6 fragment: ports are not in every piece
    "cut-short",  # the file ends in the middle of this record (tcpdump killed)
    # the record's length is impossible (or points at no next record): it and the bytes up to
    # the next plausible record header are skipped, counted in CaptureInfo.skipped_bytes
    "bad-length",
]
OK, ARP, NON_IP, UNKNOWN_LINKTYPE, SNAPLEN, MALFORMED, FRAGMENT, CUT_SHORT, BAD_LENGTH = range(
    len(SKIP_REASONS))

# What a record's container (pcap record header, pcapng block) holds that the packet table
# cannot: one bit each in Records.anomaly, named in the `anomaly` column and counted in
# CaptureInfo.anomalies (over every record, decoded or not). Never wrapped, never guessed.
ANOMALIES: list[tuple[str, str]] = [
    ("ts-out-of-range", "the timestamp is outside what ns since the epoch in int64 can hold "
     "(years 1677-2262), or its units overflow that: ts_ns is null"),
    ("ts-fraction-invalid", "pcap: the microsecond (nanosecond) field is 10^6 (10^9) or more, which "
     "tcpdump prints as 'invalid us': ts_ns is null, not carried into the seconds"),
    ("wirelen-below-caplen", "the original length is smaller than the captured bytes: wirelen is "
     "kept as the file says"),
    ("caplen-over-snaplen", "more bytes captured than the file's (interface's) snaplen allows; read "
     "because the next record starts right after it"),
]
ANOMALY_BITS = {name: 1 << i for i, (name, _) in enumerate(ANOMALIES)}
