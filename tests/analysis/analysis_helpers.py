"""Helpers for the analysis tests (a module of its own: `conftest` names clash across dirs)."""

from __future__ import annotations

import shutil
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
