"""Crypto-PAn: the reference vectors, prefix preservation, and rewriting of text and tables."""

from __future__ import annotations

import ipaddress

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natlens.report.anonymize import PAYLOAD_COLUMNS, Anonymizer, CryptoPAn, load_key

# The sample key of the Crypto-PAn reference distribution and pairs from its
# sample_trace_raw.dat / sample_trace_sanitized.dat.
REF_KEY = bytes([21, 34, 23, 141, 51, 164, 207, 128, 19, 10, 91, 22, 73, 144, 125, 16,
                 216, 152, 143, 131, 121, 121, 101, 39, 98, 87, 76, 45, 42, 132, 34, 2])
REF_V4 = [
    ("128.11.68.132", "135.242.180.132"), ("129.118.74.4", "134.136.186.123"),
    ("130.132.252.244", "133.68.164.234"), ("141.223.7.43", "141.167.8.160"),
    ("152.163.225.39", "151.140.114.167"), ("192.102.249.13", "252.138.62.131"),
    ("195.205.63.100", "255.186.223.5"), ("24.0.250.221", "100.15.198.226"),
    ("64.14.118.196", "0.255.183.58"), ("10.185.25.118", "117.161.29.118"),
]
# IPv6 vectors published with the Go implementation (same construction over 128 bits).
REF_V6 = [
    ("::1", "78ff:f001:9fc0:20df:8380:b1f1:704:ed"),
    ("2001:db8::1", "4401:2bc:603f:d91d:27f:ff8e:e6f1:dc1e"),
    ("2001:db8::2", "4401:2bc:603f:d91d:27f:ff8e:e6f1:dc1c"),
]


@pytest.mark.parametrize("orig, anon", REF_V4 + REF_V6)
def test_reference_vectors(orig, anon):
    assert CryptoPAn(REF_KEY).anonymize(orig) == anon


def _common_prefix(a: str, b: str) -> int:
    x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    bits = x.max_prefixlen
    diff = int(x) ^ int(y)
    return bits - diff.bit_length()


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_prefix_preserving_and_one_to_one_ipv4(a, b):
    pan = CryptoPAn(REF_KEY)
    sa, sb = str(ipaddress.IPv4Address(a)), str(ipaddress.IPv4Address(b))
    ma, mb = pan.anonymize(sa), pan.anonymize(sb)
    assert _common_prefix(ma, mb) == _common_prefix(sa, sb)
    assert (ma == mb) == (sa == sb)


def test_text_rewrites_every_address_form_and_leaves_the_rest():
    an = Anonymizer(REF_KEY)
    src = ("-A KUBE-SVC -d 10.185.25.118/32 -s 10.0.0.0/8 -m comment --comment \"ns/svc\" "
           "node ip-10-185-25-118.ec2.internal VIP [2001:db8::1]:443 at 12:30:45 "
           "version 1.2.3 mac aa:bb:cc:dd:ee:ff 10.185.25.118:8080/tcp")
    out = an.text(src)
    assert "10.185.25.118" not in out and "10-185-25-118" not in out and "2001:db8::1" not in out
    assert "117.161.29.118/32" in out
    assert "ip-117-161-29-118.ec2.internal" in out
    assert "[4401:2bc:603f:d91d:27f:ff8e:e6f1:dc1e]:443" in out
    assert "117.161.29.118:8080/tcp" in out
    # The /8 network maps to the /8 every mapped 10.x address lives in.
    net = ipaddress.ip_network(out.split("-s ")[1].split()[0])
    assert net.prefixlen == 8 and ipaddress.ip_address("117.161.29.118") in net
    for kept in ("12:30:45", "1.2.3", "ns/svc"):
        assert kept in out
    # A MAC address is mapped too (natlens.report.pseudonyms): to a locally administered one.
    assert "aa:bb:cc:dd:ee:ff" not in out
    mac = out.split("mac ")[1].split()[0]
    assert len(mac.split(":")) == 6 and int(mac[:2], 16) & 0b11 == 0b10


def test_frame_maps_strings_drops_payload_columns_and_keeps_numbers():
    an = Anonymizer(REF_KEY)
    df = pd.DataFrame({
        "orig_h": pd.array(["10.185.25.118", None, "128.11.68.132"], dtype="string"),
        "orig_p": [1, 2, 3],
        "http_host": ["<script>x</script>", "a", "b"],
        "hops": [["10.185.25.118"], [], ["128.11.68.132"]],
    })
    out = an.frame(df)
    assert "http_host" in PAYLOAD_COLUMNS and "http_host" not in out.columns
    assert list(out["orig_h"].astype(object).where(out["orig_h"].notna(), None)) == [
        "117.161.29.118", None, "135.242.180.132"]
    assert out["orig_h"].dtype == df["orig_h"].dtype
    assert list(out["orig_p"]) == [1, 2, 3]
    assert out["hops"].tolist() == [["117.161.29.118"], [], ["135.242.180.132"]]
    assert df["orig_h"][0] == "10.185.25.118"  # the input is not modified


def test_value_maps_nested_summary_and_drops_payload_keys():
    an = Anonymizer(REF_KEY)
    out = an.value({"snat": [{"service": "10.185.25.118:80/tcp", "rule_trace": ["-d 128.11.68.132"]}],
                    "sni": "secret.example", "n": 3})
    assert out == {"snat": [{"service": "117.161.29.118:80/tcp", "rule_trace": ["-d 135.242.180.132"]}],
                   "n": 3}


def test_key_file_forms(tmp_path):
    (tmp_path / "hex").write_text(REF_KEY.hex() + "\n")
    (tmp_path / "raw").write_bytes(REF_KEY)
    (tmp_path / "bad").write_text("short")
    assert load_key(tmp_path / "hex") == REF_KEY == load_key(tmp_path / "raw")
    with pytest.raises(ValueError, match="32 raw bytes"):
        load_key(tmp_path / "bad")
