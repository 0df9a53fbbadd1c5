"""Progress bars: on a terminal, for captures worth waiting on; never in pipes and logs."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from natlens.cli import progress
from natlens.parallel import _Bars, _follow
from natlens.report.run import build_report

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "samples" / "loopback-local"


def test_analyze_bar_only_on_a_terminal_for_big_captures(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    monkeypatch.setattr(progress, "MIN_BYTES", 0)
    assert not progress.worth_a_bar(str(SAMPLE))  # not a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert progress.worth_a_bar(str(SAMPLE))
    monkeypatch.setattr(progress, "MIN_BYTES", 32 << 20)
    assert not progress.worth_a_bar(str(SAMPLE))  # the sample's captures are well under 32 MiB


def test_ingest_and_analyze_draw_bars_by_one_rule_the_captures_size_together(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    nodes = tmp_path / "nodes"
    files = [nodes / "node-1" / "eth0.pcap", nodes / "node-2" / "eth0.pcap"]
    for f in files:
        f.parent.mkdir(parents=True)
        with open(f, "wb") as out:
            out.truncate(progress.MIN_BYTES // 2 + 1)  # each under the size, together over it
    assert progress.worth_bars(files) and progress.worth_a_bar(str(tmp_path))
    assert not progress.worth_bars(files[:1]) and not progress.worth_bars([])


def test_bars_written_to_a_file_are_drawn_by_the_process_that_follows_it(tmp_path):
    files = []
    for i, n in enumerate((300, 7)):
        files.append(tmp_path / "node-1" / f"eth{i}.pcap")
        files[-1].parent.mkdir(exist_ok=True)
        files[-1].write_bytes(b"x" * n)
    events = tmp_path / "bars"
    with _Bars(files, events) as bars:
        bars.advance(0)(100)
        bars.advance(0)(200)
        bars.advance(1)(7)
    stop = threading.Event()
    stop.set()
    state = {"bars": [], "offset": 0}
    _follow(events, state, stop)
    assert [(b.desc.rstrip(": "), b.total, b.n) for b in state["bars"]] == [
        ("node-1/eth0.pcap", 300, 300), ("node-1/eth1.pcap", 7, 7)]


def test_a_report_draws_a_bar_per_capture_here_and_none_in_the_report(tmp_path, capsys):
    r = build_report(SAMPLE, tmp_path / "out", progress=True)
    assert r.ok, r.error
    err = capsys.readouterr().err
    names = sorted(f"{f.parent.name}/{f.name}" for f in (SAMPLE / "nodes").rglob("*.pcap*"))
    assert names and all(n in err for n in names)
    cells = json.loads((tmp_path / "out" / "report.ipynb").read_text())["cells"]
    stderr = [o.get("text", "") for c in cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert not any(".pcap" in "".join(t) for t in stderr)  # the bars were drawn here, not in the notebook
    assert "█" not in r.html.read_text()
