"""`natlens ingest --jobs`: several captures in worker processes give the files and the
summary one process gives, in the order the captures were named."""

from __future__ import annotations

import json
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


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_capture_that_cannot_be_written_is_said_after_the_others_are(tmp_path, captures, jobs):
    blocked = tmp_path / "out" / "http-get" / "get.packets.parquet"
    blocked.mkdir(parents=True)  # a directory where the second capture's table goes
    r = subprocess.run([sys.executable, "-m", "natlens", "ingest", *map(str, captures), "--out", str(tmp_path / "out"),
                        "--force", "--jobs", str(jobs)], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert [ln.split(":")[0] for ln in r.stdout.splitlines() if not ln.startswith(" ")] == [str(captures[0]), str(captures[2])]
    assert r.stderr.splitlines() == [f"natlens: error: {captures[1]} not ingested: {blocked}: cannot write: Is a directory",
                                     "natlens: 1 of 3 captures not ingested (the others are written)"]
    written = sorted(str(f.relative_to(tmp_path / "out")) for f in (tmp_path / "out").rglob("*") if f.is_file())
    assert written == ["vxlan/vxlan.packets.parquet", "vxlan/vxlan.tally.json",
                       "wikipedia/wikipedia.packets.parquet", "wikipedia/wikipedia.tally.json"]
    j = subprocess.run([sys.executable, "-m", "natlens", "ingest", *map(str, captures), "--out", str(tmp_path / "out"),
                        "--force", "--jobs", str(jobs), "--json"], capture_output=True, text=True)
    tallies = json.loads(j.stdout)
    assert j.returncode == 2 and [t.get("error", "").split(" not ingested")[0] for t in tallies] == ["", str(captures[1]), ""]
