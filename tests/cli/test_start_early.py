"""parallel.start_early: a command line starts the forkserver with natlens loaded while it loads
the rest itself, when its captures may be read in worker processes; workers then have natlens
loaded from the start (a fresh process per case: a forkserver starts once per process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from natlens.parallel import PARALLEL_BYTES, start_early

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from natlens.parallel import each_file, start_early
    import probe
    if __name__ == "__main__":
        started = start_early([Path(sys.argv[1])], None if sys.argv[2] == "none" else int(sys.argv[2]),
                              ["natlens.findings.captures"])
        files = [Path(sys.argv[1])] * 2
        print(started, each_file(probe.loaded, [(), ()], files, jobs=2))
""")
PROBE = textwrap.dedent("""
    import sys
    def loaded(progress=None):
        return "natlens.findings.captures" in sys.modules
""")


def _run(tmp_path: Path, size: int, jobs: str) -> str:
    capture = tmp_path / "eth0.pcap"
    with open(capture, "wb") as fh:
        fh.truncate(size)  # sparse: only its size is looked at
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "run.py").write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(capture), jobs], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.slow
def test_big_captures_start_workers_with_natlens_loaded(tmp_path):
    assert _run(tmp_path, PARALLEL_BYTES, "none") == "True [True, True]"


@pytest.mark.slow
def test_otherwise_workers_load_natlens_themselves(tmp_path):
    assert _run(tmp_path, PARALLEL_BYTES - 1, "none") == "False [False, False]"
    assert _run(tmp_path, PARALLEL_BYTES, "1") == "False [False, False]"


def test_nothing_starts_for_one_job_small_captures_or_no_file(tmp_path):
    small = tmp_path / "a.pcap"
    small.write_bytes(b"\0" * 100)
    assert not start_early([small], None, [])
    assert not start_early([tmp_path / "missing.pcap"], None, [])
    big = tmp_path / "b.pcap"
    with open(big, "wb") as fh:
        fh.truncate(PARALLEL_BYTES)
    assert not start_early([big], 1, [])


def test_one_capture_preloads_only_what_its_spans_and_parts_need():
    """One capture's workers run its spans and parts: the forkserver loads the capture and connections
    layers for them, not the whole analysis (~0.3 s, on a core the main process loads it on too);
    several captures' workers read whole captures, which takes the analysis."""
    from natlens.cli.analyze import worker_module

    assert worker_module([Path("a.pcap")]) == "natlens.connections.spanned"
    assert worker_module([Path("a.pcap"), Path("b.pcap")]) == "natlens.findings.captures"
    out = subprocess.run([sys.executable, "-c", "import sys, natlens.connections.spanned as s; "
                          "print(s.split_span.__module__, 'natlens.findings' in sys.modules)"],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["natlens.connections.spanned", "False"], out.stderr
