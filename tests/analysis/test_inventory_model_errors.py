"""Without cluster/, services come from the netfilter model: bad dumps are a note, bugs are not."""

from __future__ import annotations

import pytest
from analysis_helpers import reshape, samples_dir

import natlens.netfilter
from natlens.bundle import load_bundle
from natlens.inventory import build_inventory


@pytest.fixture()
def incident(tmp_path):
    return reshape(samples_dir() / "loopback-local", tmp_path / "incident", cluster=False)


def test_bad_rules_are_a_note_naming_the_file(incident):
    f = incident / "nodes" / "node-1" / "iptables-save.txt"
    f.write_text("*nat\n-A KUBE-SERVICES -j\nCOMMIT\n")
    inv = build_inventory(load_bundle(incident))
    notes = [n for n in inv.inferred if n.startswith("node-1: netfilter model could not read the rules")]
    assert len(notes) == 1 and str(f) in notes[0]
    assert ("198.19.0.10", 80, "tcp") in inv.vips()  # from node-2's rules (or node-1's ipset)


def test_a_bug_in_the_model_is_not_turned_into_a_note(incident, monkeypatch):
    def broken(node, pod_ip=None):
        raise KeyError("a natlens bug")
    monkeypatch.setattr(natlens.netfilter, "kube_services", broken)
    with pytest.raises(KeyError, match="a natlens bug"):
        build_inventory(load_bundle(incident))
