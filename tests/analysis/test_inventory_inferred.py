"""Without cluster/, Services come from the node dumps: only load-balancer VIPs are VIPs."""

from __future__ import annotations

import shutil

from analysis_helpers import samples_dir

from natlens.bundle import load_bundle
from natlens.inventory import build_inventory


def test_cluster_ips_and_node_ports_are_not_lb_vips(tmp_path):
    dst = tmp_path / "mixed"
    shutil.copytree(samples_dir() / "mixed", dst)
    shutil.rmtree(dst / "cluster")
    inv = build_inventory(load_bundle(dst))
    assert inv.vips() == {("198.19.0.10", 80, "tcp"), ("198.19.0.11", 80, "tcp")}
    svc = inv.services.set_index("lb_ip", drop=False)
    assert svc.loc["198.19.0.10", "policy"] == "Local" and svc.loc["198.19.0.11", "policy"] == "Cluster"
    cluster_ips = inv.services[inv.services["type"] == "ClusterIP"]
    assert set(cluster_ips["cluster_ip"]) == {"198.18.128.10", "198.18.128.11"}
    assert cluster_ips["lb_ip"].isna().all() and "*" not in set(inv.services["lb_ip"].dropna())
    assert any("(ClusterIP)" in note for note in inv.inferred)
