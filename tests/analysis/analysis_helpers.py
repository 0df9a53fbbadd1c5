"""Helpers for the analysis tests (a module of its own: `conftest` names clash across dirs)."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"


def samples_dir() -> Path:
    """data/samples, or skip: the lab's sample incidents are not in this checkout."""
    if not (SAMPLES / "loopback-local" / "ground-truth").is_dir():
        pytest.skip("data/samples (the lab's sample incidents) is missing from this checkout")
    return SAMPLES


def reshape(src: Path, dst: Path, *, keep=lambda node, capture: True, cluster: bool = True) -> Path:
    """A copy of an incident with only some captures (and optionally without cluster/)."""
    shutil.copytree(src, dst, ignore=lambda d, names: [
        n for n in names
        if (Path(d).parent.name == "nodes" and n.endswith((".pcap", ".pcapng"))
            and not keep(Path(d).name, Path(n).stem))
        or (not cluster and n == "cluster" and Path(d) == src)])
    return dst


def nic_only(sample: str, dst: Path) -> Path:
    """A copy of a sample incident without its `any` captures: only the nodes' NICs captured."""
    shutil.copytree(samples_dir() / sample, dst)
    for any_cap in dst.glob("nodes/*/any.pcap"):
        any_cap.unlink()
    return dst


def pcap_file(path: Path, packets: list[tuple[float, bytes]]) -> None:
    """A pcap (Ethernet) of raw IPv4 packets, (time in s, IP packet) each."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    eth = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    for t, ip in packets:
        frame = eth + ip
        out.append(struct.pack("<IIII", int(t), int(round((t % 1) * 1e6)), len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


def ipv4(src: str, dst: str, proto: int, payload: bytes, ip_id: int = 1) -> bytes:
    a = bytes(int(x) for x in src.split("."))
    b = bytes(int(x) for x in dst.split("."))
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ip_id, 0, 64, proto, 0, a, b) + payload


def tcp(src: str, sport: int, dst: str, dport: int, flags: int, seq: int, ack: int = 0, ip_id: int = 1) -> bytes:
    """An IPv4 TCP segment without options or payload."""
    return ipv4(src, dst, 6, struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 0x50, flags, 64240, 0, 0), ip_id)


def _root_conftest():
    """tests/conftest.py, loaded by path: `from conftest import ...` finds another directory's
    conftest when tests/analysis and tests/report run in one session."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("natlens_tests_root_conftest",
                                                  Path(__file__).resolve().parents[1] / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def netns_unavailable_reason(*tools: str) -> str | None:
    """Why root/network-namespace tests cannot run here (tests/conftest.py's check)."""
    return _root_conftest().netns_unavailable_reason(*tools)


def run_labs(base: Path, runs: dict[str, dict]) -> dict[str, Path]:
    """Several lab runs at once (tests/conftest.py's run_labs)."""
    return _root_conftest().run_labs(base, runs)


def expected_failure(t) -> str | None:
    """The failure mechanism a lab connection's ground truth says (ground-truth/connections.jsonl):
    its ``failure`` where the lab wrote one, else from its loopback and asymmetric facts (older
    samples); None for a connection that connected."""
    get = t.get if isinstance(t, dict) else (lambda k, default=None: getattr(t, k, default))
    if get("outcome") == "connected":
        return None
    said = get("failure")
    if isinstance(said, str):
        return said
    if _true(get("loopback")):
        return "loopback"
    if _true(get("asymmetric")):
        return "wrong-source-reply"
    return "unknown"


def _true(v) -> bool:
    """A ground-truth flag that is set (True), not False, None or a missing NaN."""
    return v is not None and v == v and bool(v)
