"""Packets tcpdump dropped (its closing counters in collect-node.log) are reported."""

from __future__ import annotations

import shutil

from analysis_helpers import samples_dir

from natlens.findings import analyze


def test_dropped_packets_are_a_warning_naming_the_log(tmp_path):
    dst = tmp_path / "inc"
    shutil.copytree(samples_dir() / "loopback-local", dst)
    (dst / "nodes" / "node-1" / "collect-node.log").write_text(
        "2026-11-26T06:39:50.000Z capturing on any and eth0 for 60 s\n"
        "2026-11-26T06:40:50.000Z tcpdump -i any: 7015 packets captured 7199 packets received by "
        "filter 184 packets dropped by kernel\n"
        "2026-11-26T06:40:50.000Z tcpdump -i eth0: 2296 packets captured 2296 packets received by "
        "filter 0 packets dropped by kernel\n")
    a = analyze(dst)
    drops = [w for w in a.warnings if "dropped" in w]
    assert len(drops) == 1 and "collect-node.log: tcpdump -i any dropped 184 packets" in drops[0]
    assert any("dropped 184 packets" in x for x in a.summary()["inputs"]["inferred"])
    assert not any("collect-node.log" in f for f, _ in a.bundle.not_read)


def test_pcapng_statistics_drops_are_a_warning(tmp_path):
    from natlens.capture import read_capture
    from natlens.capture.write import Interface, write_pcapng

    dst = tmp_path / "inc"
    shutil.copytree(samples_dir() / "loopback-local", dst)
    eth0 = dst / "nodes" / "node-1" / "eth0.pcap"
    import dpkt

    with open(eth0, "rb") as fh:
        frames = [(0, round(ts * 1e9), buf) for ts, buf in dpkt.pcap.Reader(fh)]
    eth0.unlink()
    ng = eth0.with_suffix(".pcapng")
    write_pcapng(ng, [Interface(1, tsresol=9)], frames, statistics=[(0, 5, 0)])
    assert read_capture(ng).info.dropped == 5
    a = analyze(dst)
    assert any("eth0.pcapng: the capturing host dropped 5 packets" in w for w in a.warnings)
    assert a.summary()["connections"]["total"] == 20
