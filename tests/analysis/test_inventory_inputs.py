"""Malformed kubectl JSON in cluster/: one NatlensError line naming the file and the item.

A field of the wrong type used to surface as a TypeError/ValueError traceback (in the
inventory, or later in the journeys); a field that is merely absent stays fine.
"""

from __future__ import annotations

import json
import shutil

import pytest
from analysis_helpers import samples_dir

from natlens.bundle import load_bundle
from natlens.cli import main
from natlens.errors import NatlensError
from natlens.inventory import build_inventory


@pytest.fixture()
def incident(tmp_path):
    d = tmp_path / "incident"
    shutil.copytree(samples_dir() / "loopback-local", d)
    return d


def _change(d, kind, i, change):
    f = d / "cluster" / f"{kind}.json"
    doc = json.loads(f.read_text())
    change(doc["items"][i])
    f.write_text(json.dumps(doc))
    return f


def _set(path: str, value):
    def change(item):
        *keys, last = path.split(".")
        for k in keys:
            item = item.setdefault(k, {})
        item[last] = value
    return change


def _port(field: str, value):
    def change(item):
        item["spec"]["ports"][0][field] = value
    return change


CASES = [
    ("nodes", 1, _set("status.addresses", None), None),  # null: absent, fine
    ("nodes", 1, _set("status", {"addresses": 5}), r"items\[1\] \(node-2\): status.addresses is not a list"),
    ("nodes", 0, _set("status.addresses", ["198.18.0.11"]), r"items\[0\] \(node-1\): status.addresses\[0\] is not an object"),
    ("nodes", 0, _set("status.addresses", [{"type": "InternalIP", "address": "node-1.local"}]),
     r"items\[0\] \(node-1\): status.addresses\[0\].address 'node-1.local' is not an IP address"),
    ("nodes", 0, _set("spec.podCIDRs", "198.18.16.0/24"), r"items\[0\] \(node-1\): spec.podCIDRs is not a list"),
    ("nodes", 0, _set("spec.podCIDR", "198.18.16.0/33"), r"spec.podCIDR '198.18.16.0/33' is not an IP network"),
    ("nodes", 0, _set("status", "Ready"), r"items\[0\] \(node-1\): status is not an object"),
    ("pods", 0, _set("status.podIPs", [{"ip": 7}]), r"items\[0\] \([\w-]+/[\w-]+\): status.podIPs\[0\].ip is not a string"),
    ("pods", 0, _set("spec.hostNetwork", "yes"), r"spec.hostNetwork is not true or false"),
    ("services", 0, _port("port", "http"), r"items\[0\] \(default/[\w-]+\): spec.ports\[0\].port is not an integer but 'http'"),
    ("services", 0, _port("nodePort", True), r"spec.ports\[0\].nodePort is not an integer but True"),
    ("services", 0, _port("targetPort", "http"), None),  # a named target port is valid
    ("services", 0, _set("spec.clusterIP", "None"), None),  # a headless service
    ("services", 0, _set("status.loadBalancer.ingress", [{"ip": "lb.example.com"}]),
     r"status.loadBalancer.ingress\[0\].ip 'lb.example.com' is not an IP address"),
    ("services", 0, _set("metadata", []), r"items\[0\]: metadata is not an object"),
]


@pytest.mark.parametrize(("kind", "i", "change", "error"), CASES)
def test_wrong_types_name_file_and_item(incident, kind, i, change, error):
    f = _change(incident, kind, i, change)
    if error is None:
        build_inventory(load_bundle(incident))
        return
    with pytest.raises(NatlensError, match=error) as exc:
        build_inventory(load_bundle(incident))
    assert str(exc.value).startswith(f"{f}: items[{i}]") and "\n" not in str(exc.value)


def test_item_not_an_object(incident):
    f = incident / "cluster" / "pods.json"
    doc = json.loads(f.read_text())
    doc["items"].insert(1, "web-1")
    f.write_text(json.dumps(doc))
    with pytest.raises(NatlensError, match=r"pods.json: items\[1\]: is not an object but 'web-1'"):
        build_inventory(load_bundle(incident))


def test_cli_one_line_for_a_named_port(incident, capsys):
    f = _change(incident, "services", 0, _port("port", "http"))
    rc = main(["analyze", str(incident)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"natlens: error: {f}: items[0] (default/")
    assert err[0].endswith("): spec.ports[0].port is not an integer but 'http'")


def test_absent_fields_are_fine(incident):
    """Sparse items (only names) give rows with empty cells, not errors."""
    for kind in ("nodes", "pods", "services"):
        f = incident / "cluster" / f"{kind}.json"
        f.write_text(json.dumps({"items": [{"metadata": {"name": "x"}}, {}]}))
    inv = build_inventory(load_bundle(incident))
    assert set(inv.nodes["name"]) >= {"x", "node-1", "node-2"}  # node-1/2 inferred from the dumps
    assert len(inv.pods) == 2 and inv.pods["ip"].isna().all()
