"""Report fixtures: the shipped sample incident, its report (built once), a hostile copy."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = Path(os.environ.get("NATLENS_SAMPLES", REPO / "data" / "samples"))
SAMPLE = SAMPLES / "loopback-local"
ARTIFACTS = REPO / "test-artifacts"
# Crypto-PAn key used by the anonymization tests (any 32 bytes).
KEY_HEX = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
XSS_COMMENT = "<script>natlensXssRule()</script>"
XSS_HOST = "<script>natlensXssHost()</script>"
XSS_FILE = "<img src=x onerror=natlensXssFile()>"  # a capture file name (no '/' possible)


@pytest.fixture(scope="session")
def sample() -> Path:
    if not (SAMPLE / "nodes").is_dir():
        pytest.fail(f"the shipped sample incident {SAMPLE} is missing (made by `natlens lab run`)")
    return SAMPLE


@pytest.fixture(scope="session")
def sample_report(sample, tmp_path_factory):
    from natlens.report.run import build_report

    r = build_report(sample, tmp_path_factory.mktemp("report") / "loopback-local")
    assert r.ok, f"{r.error}\n{r.log.read_text() if r.log and r.log.exists() else ''}"
    return r


@pytest.fixture(scope="session")
def key_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("key") / "cryptopan.key"
    p.write_text(KEY_HEX)
    return p


@pytest.fixture(scope="session")
def hostile(sample, tmp_path_factory) -> Path:
    """The sample with `<script>` in an iptables comment and in an HTTP Host header."""
    dst = tmp_path_factory.mktemp("hostile") / "hostile"
    shutil.copytree(sample, dst)
    node = sorted((dst / "nodes").iterdir())[0]
    ipt = node / "iptables-save.txt"
    text = ipt.read_text()
    # Every kube-proxy comment gets the payload, so whichever rule a trace shows carries it.
    text, count = re.subn(r'--comment "([^"]*)"', lambda m: f'--comment "{m.group(1)} {XSS_COMMENT}"', text)
    assert count > 0
    ipt.write_text(text)
    from natlens.capture import read_capture

    first = min(read_capture(p).info.first_ts_ns for p in node.glob("*.pcap*"))
    _http_capture(node / f"{XSS_FILE}.pcap", first)
    return dst


@pytest.fixture(scope="session")
def hostile_report(hostile, tmp_path_factory):
    from natlens.report.run import build_report

    r = build_report(hostile, tmp_path_factory.mktemp("hostile-report"))
    assert r.ok, r.error
    return r


def _http_capture(path: Path, t: int) -> None:
    """One TCP connection carrying `GET / HTTP/1.1` with a hostile Host header, at time t (ns)."""
    import socket

    import dpkt

    from natlens.capture.write import write_pcap

    ca, sa, sport = socket.inet_aton("198.18.0.2"), socket.inet_aton("198.18.0.3"), 40000

    def pkt(src, dst, sp, dp, flags, seq, ack, data=b""):
        tcp = dpkt.tcp.TCP(sport=sp, dport=dp, flags=flags, seq=seq, ack=ack, data=data, win=65535)
        ip = dpkt.ip.IP(src=src, dst=dst, p=6, ttl=64, data=tcp)
        ip.len = len(ip)
        eth = dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=0x0800, data=ip)
        return bytes(eth)

    req = f"GET / HTTP/1.1\r\nHost: {XSS_HOST}\r\n\r\n".encode()
    packets = [
        (t, pkt(ca, sa, sport, 80, dpkt.tcp.TH_SYN, 1000, 0)),
        (t + 1_000_000, pkt(sa, ca, 80, sport, dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK, 5000, 1001)),
        (t + 2_000_000, pkt(ca, sa, sport, 80, dpkt.tcp.TH_ACK, 1001, 5001)),
        (t + 3_000_000, pkt(ca, sa, sport, 80, dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, 1001, 5001, req)),
        (t + 4_000_000, pkt(sa, ca, 80, sport, dpkt.tcp.TH_ACK, 5001, 1001 + len(req))),
    ]
    write_pcap(path, packets)


def images_in(page: str) -> int:
    return len(re.findall(r'<img[^>]+src="data:image/png;base64,', page))
