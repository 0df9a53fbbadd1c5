"""`natlens ingest` on a damaged capture says what it skipped: the bad-length record and
the bytes in no record on stdout, where and how many in a warning on stderr, and the
tally.json carries the same numbers."""

from __future__ import annotations

import json
import struct

from test_ingest_names import capture, ingest


def test_a_bad_record_length_is_said_and_counted(tmp_path, capsys):
    path = capture(tmp_path / "node-1" / "any.pcap", 4000, n=5)
    data = bytearray(path.read_bytes())
    rec = 16 + 60
    struct.pack_into("<I", data, 24 + 2 * rec + 8, 1 << 20)  # the third record claims 1 MiB
    path.write_bytes(bytes(data))
    code, out, err = ingest(capsys, str(path), "--out", str(tmp_path / "o"))
    assert code == 0
    assert "records 5  decoded 4  skipped 1" in out
    assert f"bad-length                  1  ({rec:,} bytes in no record)" in out
    [warning] = [line for line in err.splitlines() if "warning" in line]
    assert f"@{24 + 2 * rec}:" in warning and f"skipped {rec} bytes" in warning
    tally = json.loads((tmp_path / "o" / "any.tally.json").read_text())
    assert tally["skipped"] == {"bad-length": 1} and tally["skipped_bytes"] == {"bad-length": rec}
    assert tally["resyncs"] == 1 and tally["damaged"][0]["at"] == 24 + 2 * rec
