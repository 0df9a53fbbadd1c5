"""`natlens ingest` names outputs so that captures cannot overwrite each other: after the
capture's path below the inputs' common directory, refusing inputs that share a name and
outputs that exist (unless --force), before anything is written."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from natlens.capture.write import write_pcap
from natlens.cli import main

T0 = 1_700_000_000 * 10**9


def _frame(sport: int) -> bytes:
    """An Ethernet/IPv4/UDP frame whose source port tells the captures apart."""
    udp = struct.pack(">HHHH", sport, 53, 12, 0) + b"qqqq"
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     bytes([198, 18, 0, 1]), bytes([198, 19, 0, 2])) + udp
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + b"\0" * 14  # padded to 60 bytes


def capture(path: Path, sport: int, n: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_pcap(path, [(T0 + i, _frame(sport)) for i in range(n)])
    return path


def ingest(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["ingest", *args, "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def sports(table: Path) -> set[int]:
    return set(pq.read_table(table).column("sport").to_pylist())


def test_same_file_name_in_two_directories_writes_both(tmp_path, capsys):
    a = capture(tmp_path / "in" / "node-1" / "any.pcap", 1111, n=2)
    b = capture(tmp_path / "in" / "node-2" / "any.pcap", 2222, n=3)
    out = tmp_path / "out"
    code, stdout, err = ingest(capsys, str(a), str(b), "--out", str(out))
    assert code == 0, err
    t1, t2 = out / "node-1" / "any.packets.parquet", out / "node-2" / "any.packets.parquet"
    assert sports(t1) == {1111} and sports(t2) == {2222}  # neither overwrote the other
    assert set(pq.read_table(t1).column("capture").to_pylist()) == {"node-1/any"}
    assert set(pq.read_table(t2).column("capture").to_pylist()) == {"node-2/any"}
    tally = json.loads((out / "node-2" / "any.tally.json").read_text())
    assert (tally["label"], tally["records"]) == ("node-2/any", 3)
    assert f"-> {t1}" in stdout and f"-> {t2}" in stdout  # the summary says the real path


def test_one_capture_is_named_after_its_file(tmp_path, capsys):
    a = capture(tmp_path / "deep" / "node-1" / "eth0.pcap", 1111)
    out = tmp_path / "out"
    code, stdout, err = ingest(capsys, str(a), "--out", str(out), "--json")
    assert code == 0, err
    assert json.loads(stdout)[0]["label"] == "eth0"
    assert set(files(out)) == {"eth0.packets.parquet", "eth0.tally.json"}


@pytest.mark.parametrize("second", ["same", "dotdot", "pcapng"])
def test_inputs_sharing_a_name_are_refused_before_anything_is_written(tmp_path, capsys, second):
    a = capture(tmp_path / "in" / "any.pcap", 1111)
    b = {"same": a, "dotdot": tmp_path / "in" / ".." / "in" / "any.pcap",
         "pcapng": capture(tmp_path / "in" / "any.pcapng", 2222)}[second]
    out = tmp_path / "out"
    code, stdout, err = ingest(capsys, str(a), str(b), "--out", str(out))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("natlens: error:"), err
    assert str(a) in lines[0] and str(b) in lines[0]
    assert ("are the same file" if second == "dotdot" else "'any'") in lines[0]
    assert not out.exists() and stdout == ""


def test_rerun_into_the_same_out_refuses_and_leaves_the_files_alone(tmp_path, capsys):
    a = capture(tmp_path / "in" / "node-1" / "any.pcap", 1111)
    b = capture(tmp_path / "in" / "node-2" / "any.pcap", 2222)
    out = tmp_path / "out"
    assert ingest(capsys, str(a), str(b), "--out", str(out))[0] == 0
    before = files(out)
    (out / "node-1" / "any.packets.parquet").unlink()  # only node-2 still exists
    before.pop("node-1/any.packets.parquet")
    code, stdout, err = ingest(capsys, str(a), str(b), "--out", str(out))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "exists" in lines[0] and "--force" in lines[0], err
    assert "node-1/any.tally.json" in lines[0]  # the first existing output is named
    assert files(out) == before  # node-1's table was not written either: nothing was


def test_force_rewrites_existing_outputs(tmp_path, capsys):
    a = capture(tmp_path / "in" / "any.pcap", 1111)
    out = tmp_path / "out"
    assert ingest(capsys, str(a), "--out", str(out))[0] == 0
    capture(a, 3333, n=4)  # the capture changed since
    assert ingest(capsys, str(a), "--out", str(out))[0] == 2
    assert sports(out / "any.packets.parquet") == {1111}
    code, _, err = ingest(capsys, str(a), "--out", str(out), "--force")
    assert code == 0, err
    assert sports(out / "any.packets.parquet") == {3333}
    assert json.loads((out / "any.tally.json").read_text())["records"] == 4


def test_names_with_dots_do_not_collide(tmp_path, capsys):
    a = capture(tmp_path / "in" / "802.1ad_QinQ.pcap", 1111)
    b = capture(tmp_path / "in" / "802.1D_spanning_tree.pcap", 2222)
    out = tmp_path / "out"
    code, _, err = ingest(capsys, str(a), str(b), "--out", str(out))
    assert code == 0, err
    assert set(files(out)) == {"802.1ad_QinQ.packets.parquet", "802.1ad_QinQ.tally.json",
                               "802.1D_spanning_tree.packets.parquet",
                               "802.1D_spanning_tree.tally.json"}
    assert sports(out / "802.1ad_QinQ.packets.parquet") == {1111}
    assert sports(out / "802.1D_spanning_tree.packets.parquet") == {2222}


def test_write_parquet_never_overwrites_unless_asked(tmp_path):
    from natlens.capture import write_parquet
    from natlens.errors import NatlensError

    a = capture(tmp_path / "any.pcap", 1111)
    info = write_parquet(a, tmp_path / "o", name="x/y")
    assert info.label == "any" and (tmp_path / "o" / "x" / "y.packets.parquet").is_file()
    before = files(tmp_path / "o")
    with pytest.raises(NatlensError) as exc:
        write_parquet(a, tmp_path / "o", name="x/y")
    assert str(tmp_path / "o" / "x" / "y.packets.parquet") in str(exc.value)
    assert "\n" not in str(exc.value) and files(tmp_path / "o") == before
    write_parquet(a, tmp_path / "o", name="x/y", overwrite=True)


def test_the_same_file_by_two_paths_is_refused(tmp_path, capsys):
    """A symlink to a capture given beside it is the same capture: refused, nothing written."""
    real = capture(tmp_path / "in" / "x.pcap", 4000)
    link = tmp_path / "link.pcap"
    link.symlink_to(real)
    code, _, err = ingest(capsys, str(real), str(link), "--out", str(tmp_path / "o"))
    assert code == 2 and "are the same file" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_out_that_is_a_file_is_one_line_exit_2(tmp_path, capsys):
    cap = capture(tmp_path / "x.pcap", 4000)
    (tmp_path / "afile").write_text("not a directory")
    code, _, err = ingest(capsys, str(cap), "--out", str(tmp_path / "afile"))
    assert code == 2 and "--out is not a directory" in err and len(err.strip().splitlines()) == 1


def test_a_file_named_dot_dot_pcap_stays_inside_out(tmp_path, capsys):
    cap = capture(tmp_path / "in" / "..pcap", 4000)
    code, _, _ = ingest(capsys, str(cap), "--out", str(tmp_path / "o"))
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["..pcap.packets.parquet", "..pcap.tally.json"]
    assert not list(tmp_path.glob("o.*"))
