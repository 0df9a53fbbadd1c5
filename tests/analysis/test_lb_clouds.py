"""The verdict per cloud: the lab's samples with the cluster/ JSON of a cloud (providerIDs,
the Service's class, annotations and ingress, as the providers document them), so that what
the provider documents (natlens.cloud) stands beside what the captures show (findings.lb).

Copies only: the samples in data/samples/ are never modified.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from analysis_helpers import samples_dir

from natlens.findings import analyze

AWS_HOST = "k8s-default-webclust-0123456789-abcdef.elb.us-east-1.amazonaws.com"


def _as_cloud(tmp: Path, sample: str, provider_id: str, annotations: dict[str, str], lb_class: str | None = None,
              hostname: str | None = None) -> Path:
    """A copy of a sample whose nodes and Services look like those of one cloud."""
    d = tmp / sample
    shutil.copytree(samples_dir() / sample, d)
    nodes = json.loads((d / "cluster" / "nodes.json").read_text())
    for i, n in enumerate(nodes["items"], 1):
        n["spec"]["providerID"] = provider_id.format(i=i)
    (d / "cluster" / "nodes.json").write_text(json.dumps(nodes))
    svcs = json.loads((d / "cluster" / "services.json").read_text())
    for s in svcs["items"]:
        s["metadata"].setdefault("annotations", {}).update(annotations)
        if lb_class:
            s["spec"]["loadBalancerClass"] = lb_class
        if hostname:
            s["status"]["loadBalancer"]["ingress"] = [{"hostname": hostname}]
    (d / "cluster" / "services.json").write_text(json.dumps(svcs))
    return d


def test_an_aws_nlb_with_client_ip_preservation_measured_and_documented_any_backend(tmp_path):
    """The issue's incident: Cluster, every connection SNATed, an internal NLB (instance targets,
    client IP preservation by default) behind a hostname-only ingress."""
    d = _as_cloud(tmp_path, "any-backend-cluster", "aws:///us-east-1a/i-0abc{i:012d}", {
        "service.beta.kubernetes.io/aws-load-balancer-type": "external",
        "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "instance",
        "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"}, "service.k8s.aws/nlb", AWS_HOST)
    a = analyze(d)
    svc = a.inventory.services.iloc[0]
    assert (svc["lb_ip"], svc["source"], svc["lb_hostname"]) == ("198.19.0.10", "captures", AWS_HOST)
    assert any(AWS_HOST in x and "198.19.0.10" in x for x in a.inferred)
    assert a.mechanisms[0].ingress.value == "hostname"
    s = a.summary()
    (lb,) = s["lb_behaviour"]
    assert lb["behaviour"] == "any-backend"
    assert (lb["documented"]["cloud"], lb["documented"]["kind"], lb["documented"]["behaviour"]) == (
        "aws", "aws-nlb-instance", "any-backend")
    v = s["verdict"]
    assert "By the provider's documentation (aws-nlb-instance)" in v["root_cause"]
    assert "The captures agree." in v["root_cause"]
    assert "martian source" in v["root_cause"]
    steps = v["remediation"]
    assert steps[0].startswith("Turn off the NLB target group's client IP preservation")
    assert ("kubectl -n default annotate service web-cluster service.beta.kubernetes.io/aws-load-balancer-"
            "target-group-attributes=preserve_client_ip.enabled=false --overwrite") in steps[0]
    assert any("aws-load-balancer-nlb-target-type=ip" in x for x in steps)
    assert not any("externalTrafficPolicy" in x and "patch" in x for x in steps)


def test_tencent_documents_avoids_source_so_cluster_is_offered_without_the_nlb_caveat(tmp_path):
    """The founding incident on TKE: a Local Service's pod-source loop. The captures cannot show
    whether the CLB avoids a node's own address (every source is a pod); Tencent documents it."""
    d = _as_cloud(tmp_path, "loopback-local", "qcloud:///800002/ins-{i:08d}", {
        "service.kubernetes.io/qcloud-loadbalancer-internal-subnetid": "subnet-12345678"})
    s = analyze(d).summary()
    (lb,) = s["lb_behaviour"]
    assert lb["behaviour"] == "unknown" and lb["documented"]["behaviour"] == "avoids-source"
    v = s["verdict"]
    assert "so the load balancer sees the pod's own IP" in v["root_cause"]  # the mechanism as before
    assert "By the provider's documentation (tencent-clb)" in v["root_cause"]
    assert "These captures do not show which behaviour this one has." in v["root_cause"]
    first = v["remediation"][0]
    assert first.startswith("Switch the Service to externalTrafficPolicy: Cluster")
    assert "kubectl -n default patch service web-local -p '{\"spec\":{\"externalTrafficPolicy\":\"Cluster\"}}'" in first
    assert "An AWS NLB with client IP preservation may still" not in first


def test_without_a_known_cloud_nothing_documented_is_said(tmp_path):
    s = analyze(samples_dir() / "loopback-local").summary()
    assert s["lb_behaviour"][0]["documented"]["cloud"] is None
    assert "By the provider's documentation" not in s["verdict"]["root_cause"]
    assert "An AWS NLB with client IP preservation may still" in s["verdict"]["remediation"][0]
