"""The LoadBalancer ingress's ipMode and a hostname-only ingress, read from cluster/services.json."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from natlens.bundle import load_bundle
from natlens.errors import NatlensError
from natlens.inventory import build_inventory


def _bundle(tmp_path, ingress: list[dict]):
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
           "spec": {"type": "LoadBalancer", "clusterIP": "198.18.128.10", "externalTrafficPolicy": "Local",
                    "ports": [{"protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080}]},
           "status": {"loadBalancer": {"ingress": ingress}}}
    (tmp_path / "cluster").mkdir()
    (tmp_path / "cluster" / "services.json").write_text(json.dumps({"items": [svc]}))
    return load_bundle(tmp_path)


@pytest.mark.parametrize(("ingress", "want"), [
    ([{"ip": "198.19.0.10", "ipMode": "Proxy"}], [("198.19.0.10", "Proxy", None)]),
    ([{"ip": "198.19.0.10", "ipMode": "VIP"}], [("198.19.0.10", "VIP", None)]),
    ([{"ip": "198.19.0.10"}], [("198.19.0.10", None, None)]),  # not set: kube-proxy's default (VIP)
    ([{"hostname": "web-1234.elb.example"}], [(None, None, "web-1234.elb.example")]),
    ([{"ip": "198.19.0.10", "ipMode": "Proxy"}, {"hostname": "web.example"}],
     [("198.19.0.10", "Proxy", None), (None, None, "web.example")]),
])
def test_ip_mode_and_hostname_per_ingress(tmp_path, ingress, want):
    s = build_inventory(_bundle(tmp_path, ingress)).services
    got = [tuple(None if pd.isna(v) else v for v in row) for row in s[["lb_ip", "ip_mode", "lb_hostname"]].values]
    assert got == want


def test_an_ip_mode_kubernetes_does_not_know_is_an_error_naming_it(tmp_path):
    with pytest.raises(NatlensError, match=r"ingress\[0\]\.ipMode is 'Passthrough', not VIP or Proxy"):
        build_inventory(_bundle(tmp_path, [{"ip": "198.19.0.10", "ipMode": "Passthrough"}]))
