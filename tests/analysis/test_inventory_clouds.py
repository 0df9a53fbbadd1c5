"""Each cloud's kubectl JSON, in the shape its controller writes (providerIDs and the annotations
its documentation names): the inventory's provider_id / cloud / lb_class / lb_annotations, what
natlens.cloud says the provider documents for the Service, and the fixes it offers."""

from __future__ import annotations

import json
import shutil

import pytest
from analysis_helpers import samples_dir

from natlens.bundle import load_bundle
from natlens.cloud import FIX_KINDS, fix, lb_profile
from natlens.errors import NatlensError
from natlens.inventory import build_inventory, cloud_of
from natlens.vocab import ANY_BACKEND, AVOIDS_SOURCE, PROXY, UNKNOWN

AWS = "service.beta.kubernetes.io/aws-load-balancer-"
AWS_ID = "aws:///us-east-1a/i-0123456789abcdef0"
AZURE_ID = ("azure:///subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/mc_rg_aks_eastus/providers/"
            "Microsoft.Compute/virtualMachineScaleSets/aks-nodepool1-27053986-vmss/virtualMachines/0")
GCE_ID = "gce://my-project/us-central1-a/gke-c1-default-pool-9f8f65a4-2kld"
ALIBABA_ID = "cn-hangzhou.i-bp1h4adlltjc1d48goaq"
TENCENT_ID = "qcloud:///100003/ins-3ven36lk"
PATCH_CLUSTER = """kubectl -n default patch service web -p '{"spec":{"externalTrafficPolicy":"Cluster"}}'"""


def _node(name: str, provider_id, ip: str) -> dict:
    spec = {"podCIDR": f"198.18.{16 + int(ip[-1])}.0/24"}
    if provider_id is not None:
        spec["providerID"] = provider_id
    return {"kind": "Node", "metadata": {"name": name}, "spec": spec,
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


def _service(annotations: dict | None = None, lb_class=None, ingress=None, policy: str = "Local",
             proto: str = "TCP") -> dict:
    meta = {"name": "web", "namespace": "default"}
    if annotations is not None:
        meta["annotations"] = annotations
    spec = {"type": "LoadBalancer", "clusterIP": "198.18.128.10", "externalTrafficPolicy": policy,
            "ports": [{"protocol": proto, "port": 80, "targetPort": 8080, "nodePort": 30080}]}
    if lb_class is not None:
        spec["loadBalancerClass"] = lb_class
    return {"kind": "Service", "metadata": meta, "spec": spec,
            "status": {"loadBalancer": {"ingress": ingress if ingress is not None else [{"ip": "10.0.5.5"}]}}}


def _inventory(tmp_path, provider_ids, service: dict | None = None):
    (tmp_path / "cluster").mkdir(exist_ok=True)
    nodes = [_node(f"node-{i}", pid, f"198.18.0.1{i}") for i, pid in enumerate(provider_ids, start=1)]
    (tmp_path / "cluster" / "nodes.json").write_text(json.dumps({"items": nodes}))
    (tmp_path / "cluster" / "services.json").write_text(json.dumps({"items": [service or _service()]}))
    return build_inventory(load_bundle(tmp_path))


# --- the inventory ------------------------------------------------------------------------

@pytest.mark.parametrize(("provider_id", "cloud"), [
    (AWS_ID, "aws"), (AZURE_ID, "azure"), (GCE_ID, "gcp"), (ALIBABA_ID, "alibaba"),
    ("alicloud://cn-hangzhou.i-bp1h4adlltjc1d48goaq", "alibaba"), (TENCENT_ID, "tencent"),
    ("kind://docker/kind/kind-worker", None), ("openstack:///4f3b5a1e-9c1d-4b7e-8e55-0a3c2b1d9e8f", None),
    ("i-0123456789abcdef0", None), ("tencent://ins-3ven36lk", None), (None, None)])
def test_the_cloud_is_the_provider_ids_scheme_and_nothing_else(tmp_path, provider_id, cloud):
    inv = _inventory(tmp_path, [provider_id])
    row = inv.nodes.iloc[0]
    assert row["provider_id"] == provider_id and row["cloud"] == cloud
    assert cloud_of(provider_id) == cloud


def test_lb_class_and_only_the_annotations_that_decide_the_lb_sorted(tmp_path):
    anns = {f"{AWS}type": "external", f"{AWS}nlb-target-type": "ip", f"{AWS}scheme": "internal",
            f"{AWS}proxy-protocol": "*",  # does not decide what happens to a node's own connection
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
            "service.cloud.tencent.com/direct-access": "true",
            "service.kubernetes.io/qcloud-loadbalancer-internal-subnetid": "subnet-12345678",
            "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type": "intranet",
            "networking.gke.io/load-balancer-type": "Internal",
            "service.beta.kubernetes.io/azure-load-balancer-internal": "true"}
    inv = _inventory(tmp_path, [AWS_ID], _service(anns, lb_class="service.k8s.aws/nlb"))
    row = inv.services.iloc[0]
    assert row["lb_class"] == "service.k8s.aws/nlb"
    assert row["lb_annotations"] == (
        ("networking.gke.io/load-balancer-type", "Internal"),
        ("service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type", "intranet"),
        (f"{AWS}nlb-target-type", "ip"), (f"{AWS}scheme", "internal"), (f"{AWS}type", "external"),
        ("service.beta.kubernetes.io/azure-load-balancer-internal", "true"),
        ("service.cloud.tencent.com/direct-access", "true"),
        ("service.kubernetes.io/qcloud-loadbalancer-internal-subnetid", "subnet-12345678"))


@pytest.mark.parametrize(("where", "doc", "message"), [
    ("node", {"spec": {"providerID": 42}}, r"items\[0\] \(node-1\): spec\.providerID is not a string but 42"),
    ("service", {"metadata": {"annotations": ["a=b"]}},
     r"items\[0\] \(default/web\): metadata\.annotations is not an object"),
    ("service", {"metadata": {"annotations": {f"{AWS}type": 1}}},
     r"items\[0\] \(default/web\): metadata\.annotations\['service\.beta\.kubernetes\.io/aws-load-balancer-type'\]"
     r" is not a string but 1"),
    ("service", {"spec": {"loadBalancerClass": 5}}, r"items\[0\] \(default/web\): spec\.loadBalancerClass is not a string"),
])
def test_a_field_of_the_wrong_type_names_the_file_and_the_item(tmp_path, where, doc, message):
    node, svc = _node("node-1", AWS_ID, "198.18.0.11"), _service()
    target = node if where == "node" else svc
    for part, fields in doc.items():
        target[part].update(fields)
    (tmp_path / "cluster").mkdir()
    (tmp_path / "cluster" / "nodes.json").write_text(json.dumps({"items": [node]}))
    (tmp_path / "cluster" / "services.json").write_text(json.dumps({"items": [svc]}))
    with pytest.raises(NatlensError, match=message) as e:
        build_inventory(load_bundle(tmp_path))
    assert f"{where}s.json" in str(e.value)


def test_tables_inferred_from_the_dumps_have_the_new_columns_empty(tmp_path):
    d = tmp_path / "no-cluster"
    shutil.copytree(samples_dir() / "cluster-ok", d, ignore=shutil.ignore_patterns("cluster"))
    inv = build_inventory(load_bundle(d))
    assert not inv.services.empty and not inv.nodes.empty
    assert set(inv.services["lb_annotations"]) == {()} and inv.services["lb_class"].isna().all()
    assert inv.nodes["provider_id"].isna().all() and inv.nodes["cloud"].isna().all()
    p = lb_profile(inv, None, None)
    assert p.cloud is None and p.documented == UNKNOWN and p.evidence.startswith("no cluster/nodes.json (the nodes were inferred")


# --- what each cloud documents -------------------------------------------------------------

def _profile(tmp_path, pid, **svc):
    inv = _inventory(tmp_path, [pid, pid], _service(**svc))
    return inv, lb_profile(inv, "default", "web")


@pytest.mark.parametrize(("svc", "kind", "documented", "evidence"), [
    ({"annotations": {f"{AWS}type": "external", f"{AWS}scheme": "internal"}}, "aws-nlb-instance", ANY_BACKEND,
     ["annotation service.beta.kubernetes.io/aws-load-balancer-type=external", "target type instance (default)",
      "preserve_client_ip not set (instance targets: enabled by default)", "scheme internal"]),
    ({"annotations": {f"{AWS}type": "nlb", f"{AWS}internal": "true"}}, "aws-nlb-instance", ANY_BACKEND,
     ["the in-tree controller registers the nodes", f"annotation {AWS}internal=true"]),
    ({"lb_class": "service.k8s.aws/nlb"}, "aws-nlb-instance", ANY_BACKEND,
     ["spec.loadBalancerClass service.k8s.aws/nlb", "the AWS Load Balancer Controller's default: internal"]),
    ({"annotations": {f"{AWS}type": "external", f"{AWS}nlb-target-type": "ip"}}, "aws-nlb-ip", PROXY,
     [f"annotation {AWS}nlb-target-type=ip", "IP targets, TCP: disabled by default"]),
    ({"annotations": {f"{AWS}type": "nlb-ip"}}, "aws-nlb-ip", PROXY, ["legacy"]),
    ({"annotations": {f"{AWS}type": "external", f"{AWS}nlb-target-type": "ip"}, "proto": "UDP"}, "aws-nlb-ip",
     ANY_BACKEND, ["IP targets, UDP: always enabled"]),
    ({"annotations": {f"{AWS}type": "external", f"{AWS}target-group-attributes":
                      "deregistration_delay.timeout_seconds=30,preserve_client_ip.enabled=false"}},
     "aws-nlb-instance", PROXY, ["preserve_client_ip.enabled=false"]),
    ({"annotations": {f"{AWS}type": "external", f"{AWS}scheme": "internet-facing"}}, "aws-nlb-instance", UNKNOWN,
     ["scheme internet-facing"]),
    ({}, "aws-clb", PROXY, [f"no {AWS}type", "Classic Load Balancer"]),
    ({"annotations": {f"{AWS}type": "alb"}}, "unknown", UNKNOWN, ["a type natlens does not know"]),
    ({"lb_class": "metallb.io/metallb"}, "unknown", UNKNOWN, ["not a class of aws's own controller"]),
])
def test_aws_kinds_and_what_aws_documents(tmp_path, svc, kind, documented, evidence):
    _, p = _profile(tmp_path, AWS_ID, **svc)
    assert (p.cloud, p.kind, p.documented) == ("aws", kind, documented), p
    assert p.evidence.startswith(f"cluster/nodes.json: node-1 spec.providerID {AWS_ID} (2 nodes' providerIDs name aws)")
    for part in evidence:
        assert part in p.evidence, (part, p.evidence)
    assert p.note


def test_the_nlb_hairpin_note_cites_aws(tmp_path):
    _, p = _profile(tmp_path, AWS_ID, annotations={f"{AWS}type": "nlb", f"{AWS}internal": "true"})
    assert "docs.aws.amazon.com/elasticloadbalancing/latest/network/load-balancer-troubleshooting.html" in p.note
    assert "hairpinning" in p.note


@pytest.mark.parametrize(("pid", "svc", "cloud", "kind", "documented", "evidence"), [
    (AZURE_ID, {"annotations": {"service.beta.kubernetes.io/azure-load-balancer-internal": "true"}}, "azure",
     "azure-lb", ANY_BACKEND, ["azure-load-balancer-internal=true", "floating IP enabled (default"]),
    (AZURE_ID, {"annotations": {"service.beta.kubernetes.io/azure-load-balancer-internal": "true",
                                "service.beta.kubernetes.io/azure-disable-load-balancer-floating-ip": "true"}},
     "azure", "azure-lb", ANY_BACKEND, ["azure-disable-load-balancer-floating-ip=true"]),
    (AZURE_ID, {}, "azure", "azure-lb", UNKNOWN, ["(public)"]),
    (GCE_ID, {"annotations": {"networking.gke.io/load-balancer-type": "Internal"}}, "gcp", "gcp-ilb", UNKNOWN,
     ["networking.gke.io/load-balancer-type=Internal"]),
    (GCE_ID, {"annotations": {"cloud.google.com/load-balancer-type": "Internal"}}, "gcp", "gcp-ilb", UNKNOWN,
     ["cloud.google.com/load-balancer-type=Internal"]),
    (GCE_ID, {"lb_class": "networking.gke.io/l4-regional-internal"}, "gcp", "gcp-ilb", UNKNOWN,
     ["networking.gke.io/l4-regional-internal"]),
    (GCE_ID, {}, "gcp", "gcp-netlb", UNKNOWN, ["external passthrough"]),
    (ALIBABA_ID, {"annotations": {"service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type": "intranet"}},
     "alibaba", "alibaba-clb", ANY_BACKEND, ["address-type intranet"]),
    (ALIBABA_ID, {"lb_class": "alibabacloud.com/nlb"}, "alibaba", "alibaba-nlb", UNKNOWN, ["alibabacloud.com/nlb"]),
    (TENCENT_ID, {"annotations": {"service.kubernetes.io/qcloud-loadbalancer-internal-subnetid": "subnet-1a2b3c4d"}},
     "tencent", "tencent-clb", AVOIDS_SOURCE, ["qcloud-loadbalancer-internal-subnetid=subnet-1a2b3c4d (internal)"]),
    (TENCENT_ID, {"annotations": {"service.cloud.tencent.com/direct-access": "true"}}, "tencent", "tencent-clb",
     AVOIDS_SOURCE, ["direct-access=true (the pods are the real servers)"]),
])
def test_each_clouds_kind_and_what_its_docs_say(tmp_path, pid, svc, cloud, kind, documented, evidence):
    _, p = _profile(tmp_path, pid, **svc)
    assert (p.cloud, p.kind, p.documented) == (cloud, kind, documented), p
    assert f"spec.providerID {pid}" in p.evidence
    for part in evidence:
        assert part in p.evidence, (part, p.evidence)


def test_gke_says_the_vip_stays_on_the_node(tmp_path):
    _, p = _profile(tmp_path, GCE_ID, annotations={"networking.gke.io/load-balancer-type": "Internal"})
    assert "stays on the node" in p.note and "cloud.google.com/load-balancing/docs/internal" in p.note


def test_an_unknown_or_disagreeing_cloud_is_unknown_with_the_reason(tmp_path):
    inv = _inventory(tmp_path, ["kind://docker/kind/kind-worker"])
    p = lb_profile(inv, "default", "web")
    assert (p.cloud, p.kind, p.documented) == (None, "unknown", UNKNOWN)
    assert "a scheme natlens does not know" in p.evidence and "kind://docker/kind/kind-worker" in p.evidence
    inv = _inventory(tmp_path, [AWS_ID, GCE_ID])
    p = lb_profile(inv, "default", "web")
    assert p.cloud is None and "name different clouds (node-1 aws, node-2 gcp)" in p.evidence
    inv = _inventory(tmp_path, [None])
    assert "no node has a spec.providerID" in lb_profile(inv, "default", "web").evidence
    # a node of a scheme natlens does not know does not outvote the others, but it is named
    inv = _inventory(tmp_path, [AWS_ID, "kind://docker/kind/kind-worker"])
    p = lb_profile(inv, "default", "web")
    assert p.cloud == "aws" and "not counted: node-2 spec.providerID" in p.evidence


def test_a_service_natlens_does_not_have_is_unknown(tmp_path):
    inv = _inventory(tmp_path, [TENCENT_ID])
    p = lb_profile(inv, "default", "other")
    assert (p.cloud, p.kind, p.documented) == ("tencent", "unknown", UNKNOWN)
    assert "no Service default/other" in p.evidence


# --- the fixes -----------------------------------------------------------------------------

def test_aws_nlb_fixes(tmp_path):
    inv, _ = _profile(tmp_path, AWS_ID, annotations={
        f"{AWS}type": "external", f"{AWS}target-group-attributes": "deregistration_delay.timeout_seconds=30"})
    f = fix("cluster-policy", inv, "default", "web", 80)
    assert f.command == PATCH_CLUSTER and "external clients' source IPs" in f.cost
    assert "only if the captures show" in f.text  # AWS documents it may still loop
    f = fix("no-client-ip-preservation", inv, "default", "web", 80)
    assert f.command == (f"kubectl -n default annotate service web {AWS}target-group-attributes="
                         "deregistration_delay.timeout_seconds=30,preserve_client_ip.enabled=false --overwrite")
    assert fix("ip-targets", inv, "default", "web", 80).command == (
        f"kubectl -n default annotate service web {AWS}nlb-target-type=ip --overwrite")
    assert fix("node-intercepts-vip", inv, "default", "web", 80) is None  # a hostname: nothing to intercept
    c = fix("cluster-ip", inv, "default", "web", 80)
    assert c.command == "web.default.svc.cluster.local:80" and "198.18.128.10:80" in c.text
    assert c.cost.startswith("none for in-cluster callers")


def test_an_in_tree_nlb_is_recreated_for_ip_targets(tmp_path):
    inv, _ = _profile(tmp_path, AWS_ID, annotations={f"{AWS}type": "nlb"})
    cmd = fix("ip-targets", inv, "default", "web", 80).command
    assert "kubectl -n default delete service web" in cmd and "create -f web.json" in cmd
    assert f'.metadata.annotations["{AWS}type"]="external"' in cmd
    # the in-tree controller reads no target-group attributes: annotating them would do nothing
    assert fix("no-client-ip-preservation", inv, "default", "web", 80) is None


def test_fixes_that_are_already_in_place_or_do_not_exist_are_none(tmp_path):
    inv, _ = _profile(tmp_path, AWS_ID, annotations={f"{AWS}type": "external", f"{AWS}nlb-target-type": "ip"},
                      policy="Cluster")
    assert fix("cluster-policy", inv, "default", "web", 80) is None  # already Cluster
    assert fix("no-client-ip-preservation", inv, "default", "web", 80) is None  # IP targets, TCP: already off
    assert fix("ip-targets", inv, "default", "web", 80) is None  # already IP targets
    inv, _ = _profile(tmp_path, AWS_ID)  # Classic: a proxy, no target groups
    assert fix("no-client-ip-preservation", inv, "default", "web", 80) is None
    assert fix("ip-targets", inv, "default", "web", 80) is None
    inv, _ = _profile(tmp_path, AWS_ID, annotations={f"{AWS}type": "external"}, proto="UDP")
    assert fix("no-client-ip-preservation", inv, "default", "web", 53) is None  # UDP: cannot be disabled


@pytest.mark.parametrize("pid", [AZURE_ID, GCE_ID, ALIBABA_ID, TENCENT_ID])
def test_no_aws_only_fix_elsewhere(tmp_path, pid):
    inv, _ = _profile(tmp_path, pid)
    assert fix("no-client-ip-preservation", inv, "default", "web", 80) is None
    assert fix("ip-targets", inv, "default", "web", 80) is None
    for kind in ("cluster-policy", "snat-on-node", "cluster-ip", "node-intercepts-vip"):
        f = fix(kind, inv, "default", "web", 80)
        assert f is not None and f.kind == kind and f.text and f.command and f.cost


def test_tencent_fixes_name_tkes_own_parts(tmp_path):
    inv, _ = _profile(tmp_path, TENCENT_ID)
    f = fix("cluster-policy", inv, "default", "web", 80)
    assert f.command == PATCH_CLUSTER and "only if the captures show" not in f.text  # TKE's CLB avoids the source
    snat = fix("snat-on-node", inv, "default", "web", 80)
    assert "kubectl -n kube-system edit configmap ip-masq-agent-config" in snat.command and "10.0.5.5" in snat.command
    vip = fix("node-intercepts-vip", inv, "default", "web", 80)
    assert "TKE's service-controller" in vip.command and "kube-ipvs0" in vip.text
    assert ".status.loadBalancer.ingress[*].ipMode" in vip.command


def test_gke_and_azure_name_their_own_parts(tmp_path):
    inv, _ = _profile(tmp_path, GCE_ID)
    assert "edit configmap ip-masq-agent " in fix("snat-on-node", inv, "default", "web", 80).command
    inv, _ = _profile(tmp_path, AZURE_ID, annotations={"service.beta.kubernetes.io/azure-load-balancer-internal": "true"})
    assert "cloud-provider-azure" in fix("node-intercepts-vip", inv, "default", "web", 80).command
    assert "only if the captures show" in fix("cluster-policy", inv, "default", "web", 80).text


def test_every_kind_is_known_and_a_nameless_service_gets_placeholders(tmp_path):
    inv = _inventory(tmp_path, [TENCENT_ID])
    with pytest.raises(ValueError, match="not one of cluster-policy"):
        fix("hairpin-mode", inv, "default", "web", 80)
    f = fix("cluster-policy", inv, None, None, None)
    assert f.command.startswith("kubectl -n <namespace> patch service <name> ")
    assert fix("cluster-ip", inv, None, None, None).command == "<name>.<namespace>.svc.cluster.local:<port>"
    assert set(FIX_KINDS) == {"cluster-policy", "snat-on-node", "no-client-ip-preservation", "ip-targets",
                              "cluster-ip", "node-intercepts-vip"}
