"""`natlens ingest --jobs`: several captures in worker processes give the files and the
summary one process gives, in the order the captures were named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

NAMES = ["vxlan/vxlan.pcap", "http-get/get.pcap", "wikipedia/wikipedia.pcap"]


@pytest.fixture
def captures(zeek_traces) -> list[Path]:
    return [zeek_traces / n for n in NAMES]


def _ingest(captures: list[Path], out: Path, jobs: int) -> list[str]:
    r = subprocess.run([sys.executable, "-m", "natlens", "ingest", *map(str, captures), "--out", str(out),
                        "--jobs", str(jobs)], capture_output=True, text=True, check=True)
    return [ln for ln in r.stdout.splitlines() if " in " not in ln and "->" not in ln]  # no seconds, no paths


def test_captures_ingested_in_two_processes_are_those_of_one(tmp_path, captures):
    one, two = _ingest(captures, tmp_path / "one", 1), _ingest(captures, tmp_path / "two", 2)
    assert one == two and [ln.split(":")[0] for ln in one if not ln.startswith(" ")] == list(map(str, captures))
    for f in sorted((tmp_path / "one").rglob("*.parquet")):
        twin = tmp_path / "two" / f.relative_to(tmp_path / "one")
        assert pq.read_table(f).equals(pq.read_table(twin)), f
    assert len(list((tmp_path / "one").rglob("*.parquet"))) == 3


def test_jobs_zero_is_refused_in_one_line(tmp_path, captures):
    r = subprocess.run([sys.executable, "-m", "natlens", "ingest", str(captures[0]), "--out", str(tmp_path),
                        "--jobs", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == "natlens: error: --jobs must be 1 or more, not 0"
