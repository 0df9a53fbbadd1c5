"""The report's input appendix: every file with its hash, and for a capture why records
were not decoded, the bytes that were in no record, and the records kept with an anomaly."""

from __future__ import annotations

import hashlib

import pandas as pd

from natlens.report.data import input_files


def test_capture_rows_say_skipped_records_bytes_and_anomalies(tmp_path):
    (tmp_path / "nodes" / "node-1").mkdir(parents=True)
    cap = tmp_path / "nodes" / "node-1" / "any.pcap"
    cap.write_bytes(b"x" * 100)
    (tmp_path / "incident.yaml").write_text("title: t\n")
    captures = [{"file": "nodes/node-1/any.pcap", "records": 10, "decoded": 6,
                 "skipped": {"bad-length": 2, "arp": 1, "cut-short": 1},
                 "skipped_bytes": {"bad-length": 4096, "cut-short": 40},
                 "anomalies": {"ts-fraction-invalid": 1}}]
    df = input_files(tmp_path, captures).set_index("file")
    row = df.loc["nodes/node-1/any.pcap"]
    assert (row["records"], row["decoded"], row["skipped"]) == (10, 6, 4)
    assert row["skipped_by_reason"] == ("arp: 1, bad-length: 2 (4,096 bytes), cut-short: 1 (40 bytes); "
                                        "flagged: ts-fraction-invalid 1")
    assert row["sha256"] == hashlib.sha256(b"x" * 100).hexdigest()
    other = df.loc["incident.yaml"]
    assert other["skipped_by_reason"] == "" and pd.isna(other["records"])
