"""--anonymize leaves none of the customer's identifiers in any output (issue 14 item 4).

The identifiers are collected here from the bundle itself, independently of the
anonymizer: node directories, cluster/*.json (names, namespaces, node names, host
names, provider IDs, every address), every address the captures hold (read_capture)
and every MAC address in their link-layer headers and in ip-addr.json, the nftables
chain hashes kube-proxy derived from Service names, the incident's name and paths,
and the free text of incident.yaml. Every output of `natlens report --anonymize` and
`natlens analyze --out --anonymize` is then searched for each of them.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import struct
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import KEY_HEX, REPO, SAMPLES

from natlens.capture import read_capture
from natlens.cli import main

INCIDENT = "acme-payments-outage-4711"  # the incident's (directory) name: distinctive
NOTE = "Escalated by AcmeCorp, ticket CS-4711; contact jane.roe"
FREE_WORDS = ("AcmeCorp", "CS-4711", "jane.roe")
# A name that is one of natlens' generic prose words (a namespace "default", a pod "client")
# leaks only in the forms that name it; any other name, a word or not, leaks anywhere.
# The samples' names that are such words, said here and not taken from natlens' own list, so
# that a list that grew to take in "worker" or "payments" fails this test.
GENERIC_NAMES = {"default", "client"}
WORD_FORMS = ("{}/", "-n {}", ".{}.svc", "namespace {}", "pod {}", "nodes/{}/", "veth-{}")


def _bundle(src: Path, dst: Path) -> Path:
    """A copy of a sample under a customer-like name, with provider IDs and a note."""
    shutil.copytree(src, dst)
    nodes = dst / "cluster" / "nodes.json"
    doc = json.loads(nodes.read_text())
    for i, item in enumerate(doc["items"]):
        item["spec"]["providerID"] = f"aws:///eu-west-1a/i-0acme{i:04d}feedbeef"
    nodes.write_text(json.dumps(doc))
    meta = yaml.safe_load((dst / "incident.yaml").read_text())
    meta["notes"] = NOTE
    (dst / "incident.yaml").write_text(yaml.safe_dump(meta))
    return dst


WORD_NODES = {"node-1": "worker", "node-2": "edge", "node-3": "gateway"}  # plain-word node names


def _word_named(bundle: Path) -> Path:
    """The bundle with its nodes renamed to plain English words, as some clusters name them."""
    for old, new in WORD_NODES.items():
        if (bundle / "nodes" / old).is_dir():
            (bundle / "nodes" / old).rename(bundle / "nodes" / new)
    for f in (bundle / "cluster").glob("*.json"):
        text = f.read_text()
        for old, new in WORD_NODES.items():
            text = re.sub(rf'"{old}"', f'"{new}"', text)
        f.write_text(text)
    return bundle


def _macs_in_pcap(path: Path) -> set[str]:
    """Source and destination MACs of every Ethernet / SLL record of a classic pcap."""
    data = path.read_bytes()
    magic = data[:4]
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
              b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}.get(magic)
    assert endian, f"{path}: not a classic pcap (the samples are)"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    macs, off = set(), 24
    while off + 16 <= len(data):
        caplen = struct.unpack(endian + "I", data[off + 8:off + 12])[0]
        rec = data[off + 16:off + 16 + caplen]
        off += 16 + caplen
        if linktype == 1 and len(rec) >= 12:
            macs |= {rec[0:6].hex(":"), rec[6:12].hex(":")}
        elif linktype == 113 and len(rec) >= 12 and rec[4:6] == b"\x00\x06":
            macs.add(rec[6:12].hex(":"))
        elif linktype == 276 and len(rec) >= 20 and rec[11] == 6:
            macs.add(rec[12:18].hex(":"))
    return macs


def _strings(v) -> list[str]:
    if isinstance(v, str):
        return [v]
    if isinstance(v, dict):
        return [s for k, x in v.items() for s in [str(k), *_strings(x)]]
    if isinstance(v, list):
        return [s for x in v for s in _strings(x)]
    return []


def collect_identifiers(bundle: Path) -> dict[str, set[str]]:
    """Every identifier of `bundle`, by how to look for it (see module docstring)."""
    ids: dict[str, set[str]] = {"token": set(), "word": set(), "address": set(), "mac": set(),
                                "substring": set()}
    names = {p.name for p in (bundle / "nodes").iterdir() if p.is_dir()}
    for f in (bundle / "cluster").glob("*.json"):
        for item in json.loads(f.read_text())["items"]:
            meta, spec = item.get("metadata", {}), item.get("spec", {})
            names |= {meta.get("name"), meta.get("namespace"), spec.get("nodeName"), spec.get("providerID")}
            status = item.get("status", {})
            names |= {a["address"] for a in status.get("addresses", [])
                      if a.get("type") in ("Hostname", "InternalDNS", "ExternalDNS")}
            names |= {i.get("hostname") for i in status.get("loadBalancer", {}).get("ingress", [])}
            for s in _strings(status) + _strings(spec):
                try:
                    ipaddress.ip_network(s, strict=False)
                except ValueError:
                    continue
                ids["address"].add(s.split("/")[0])
    for pcap in bundle.glob("nodes/*/*.pcap"):
        pk = read_capture(pcap).packets
        for col in ("src", "dst", "outer_src", "outer_dst", "icmp_orig_src", "icmp_orig_dst"):
            ids["address"] |= set(pk[col].dropna().astype(str))
        ids["mac"] |= _macs_in_pcap(pcap)
    for f in bundle.glob("nodes/*/ip-addr.json"):
        for link in json.loads(f.read_text()):
            ids["mac"] |= {link.get(k) for k in ("address", "permaddr") if link.get(k)}
            ids["address"] |= {a["local"] for a in link.get("addr_info", [])}
    for f in bundle.glob("nodes/*/nft-ruleset.txt"):  # kube-proxy's hashes of namespace/name:port
        ids["token"] |= set(re.findall(r"\b(?:service|endpoint|external|local|firewall)-([A-Z0-9]{8})-",
                                       f.read_text()))
    names.discard(None)
    ids["word"] = names & GENERIC_NAMES
    ids["token"] |= (names - ids["word"]) | {INCIDENT, *FREE_WORDS}
    meta = yaml.safe_load((bundle / "incident.yaml").read_text())
    ids["substring"] |= {str(bundle), str(bundle.resolve()), str(REPO), meta["title"], NOTE}
    ids["address"] -= {"0.0.0.0", "127.0.0.1", "::", "::1", "255.255.255.255"}
    ids["mac"] = {m.lower() for m in ids["mac"]
                  if not int(m[:2], 16) & 1 and m not in ("00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff")}
    return ids


def leaks(text: str, ids: dict[str, set[str]]) -> set[str]:
    """The identifiers found in `text`, each as it was found."""
    found = {s for s in ids["substring"] if s in text}
    for name in ids["token"]:
        if re.search(rf"(?<![A-Za-z0-9_.]){re.escape(name)}(?![A-Za-z0-9_]|-[A-Za-z0-9]|\.\d)", text):
            found.add(name)
    for word in ids["word"]:
        found |= {form.format(word) for form in WORD_FORMS if form.format(word) in text}
    for addr in ids["address"]:
        dashed = addr.replace(".", "-") if "." in addr else None
        if re.search(rf"(?<![\w.:]){re.escape(addr)}(?![\w:]|\.\d)", text, re.I) or (
                dashed and re.search(rf"(?<![\w-]){dashed}(?![\w]|-\d)", text)):
            found.add(addr)
    low = text.lower()
    found |= {m for m in ids["mac"] if m in low or m.replace(":", "-") in low}
    return found


def _parquet_text(path: Path, ids: dict[str, set[str]]) -> tuple[str, set[str]]:
    """Every string column of a Parquet file as text, and the cells that are a name whole."""
    df = pd.read_parquet(path)
    cells: set[str] = set()
    parts = []
    for col in df.columns:
        s = df[col].dropna()
        if s.empty or not (pd.api.types.is_string_dtype(s.dtype) or s.dtype == object):
            continue
        vals = s.map(lambda x: x if isinstance(x, str) else json.dumps(
            x.tolist() if hasattr(x, "tolist") else x, default=str)).astype(str)  # all of a list cell
        parts.append("\n".join(vals))
        cells |= set(vals) & (ids["word"] | ids["token"])
    return "\n".join(parts), cells


@pytest.fixture(scope="module", params=["mixed", "nftables-local", "mixed-words"])
def anonymized(request, tmp_path_factory):
    """One customer-like bundle, its anonymized report and its anonymized `analyze --out`
    (mixed-words: the mixed sample with nodes named worker, edge and gateway)."""
    from natlens.report.run import build_report

    base = tmp_path_factory.mktemp(f"anon-{request.param}")
    bundle = _bundle(SAMPLES / request.param.removesuffix("-words"), base / INCIDENT)
    if request.param.endswith("-words"):
        _word_named(bundle)
    key = base / "k.key"
    key.write_text(KEY_HEX)
    out = base / "reports" / INCIDENT
    r = build_report(bundle, out, anonymize=True, key_file=key)
    assert r.ok, r.error
    assert main(["analyze", str(bundle), "--out", str(base / "analysis"), "--anonymize",
                 "--key-file", str(key), "--no-progress"]) == 0
    files = [out / n for n in ("report.html", "summary.json", "report.ipynb", "report.log")]
    files += sorted((base / "analysis").iterdir())
    return collect_identifiers(bundle), files, (bundle, key)


def test_no_identifier_in_any_output(anonymized, capsys):
    ids, files, _ = anonymized
    assert len(ids["token"]) > 8 and ids["word"] and len(ids["address"]) > 5 and ids["mac"]
    leaked: dict[str, set[str]] = {}
    for f in files:
        if f.suffix == ".parquet":
            text, cells = _parquet_text(f, ids)
            found = leaks(text, ids) | cells
        else:
            found = leaks(f.read_text(encoding="utf-8", errors="replace"), ids)
        if found:
            leaked[f.name] = found
    assert not leaked, "identifiers left in the outputs:\n" + "\n".join(
        f"  {name}: {', '.join(sorted(v))}" for name, v in leaked.items())
    assert {f.name for f in files} >= {"report.html", "summary.json", "report.ipynb", "report.log",
                                       "connections.parquet", "journeys.parquet"}


def test_the_report_says_what_it_left_out(anonymized):
    _ids, files, _ = anonymized
    html = files[0].read_text(encoding="utf-8")
    assert "The title and notes written in incident.yaml are left out of this anonymized report" in html
    summary = json.loads(files[1].read_text())
    assert re.fullmatch(r"incident-[0-9a-f]{8}", summary["incident"])
    assert f"natlens report: {summary['incident']}" in html


def test_batch_names_an_incident_as_its_report_does(anonymized, tmp_path):
    from natlens.report.batch import _shown_names

    _ids, files, _ = anonymized
    key = tmp_path / "k.key"
    key.write_text(KEY_HEX)
    assert _shown_names([INCIDENT], key)[INCIDENT] == json.loads(files[1].read_text())["incident"]


def test_no_identifier_in_the_figures(anonymized):
    """The figures are PNGs in the HTML, which no text search reads: their text, drawn to SVG
    with the text kept as text, holds none of the bundle's identifiers either."""
    import io

    import matplotlib

    from natlens import report

    ids, _files, (bundle, key) = anonymized
    d = report.load(bundle, anonymize=True, key_file=key)
    found = {}
    for name in ("timeline", "snat_ratio", "latency_cdf"):
        buf = io.StringIO()
        with matplotlib.rc_context({"svg.fonttype": "none"}):
            getattr(report.figures, name)(d).savefig(buf, format="svg")
        text = " ".join(re.findall(r">([^<]+)<", buf.getvalue()))
        assert text.strip(), name
        if leaks(text, ids):
            found[name] = leaks(text, ids)
    assert not found, found


def _analyze_nodes(capsys, sample: str, key: Path) -> tuple[set[str], str]:
    """`natlens analyze --json --anonymize`: the capture nodes and the root cause."""
    capsys.readouterr()
    assert main(["analyze", str(SAMPLES / sample), "--json", "--anonymize", "--key-file", str(key),
                 "--no-progress"]) == 0
    s = json.loads(capsys.readouterr().out)
    return {c["node"] for c in s["inputs"]["captures"]}, s["verdict"]["root_cause"]


def test_one_key_file_maps_names_alike_across_incidents(tmp_path, capsys):
    k1, k2 = tmp_path / "one.key", tmp_path / "two.key"
    k1.write_text(KEY_HEX)
    k2.write_text(KEY_HEX[::-1])
    local, cause_local = _analyze_nodes(capsys, "loopback-local", k1)
    cluster, _ = _analyze_nodes(capsys, "cluster-ok", k1)
    other, cause_other = _analyze_nodes(capsys, "loopback-local", k2)
    # node-1 and node-2 are in both bundles: the same pseudonyms under one key, others under another.
    assert len(local) == 2 and local == cluster and not local & other
    assert all(re.fullmatch(r"node-[0-9a-f]{8}", n) for n in local | other)
    svc = re.search(r"Service (ns-[0-9a-f]{8}/svc-[0-9a-f]{8})", cause_local)
    assert svc and svc.group(1) not in cause_other and "web-local" not in cause_local


def test_names_are_mapped_where_they_identify_and_words_stay_words():
    from natlens.report.anonymize import Anonymizer
    from natlens.report.identifiers import Identifiers

    ids = Identifiers()
    ids.add("node", "node-1", "worker")
    ids.add("pod", "client", "web-1")
    ids.add("ns", "default")
    ids.add("svc", "web-local", "checkoutzz")
    an = Anonymizer(bytes.fromhex(KEY_HEX), ids)
    n = an.names.name
    text = ("the default route; the client's SYN; node-10 and node-1/any (veth-web-1); "
            "/* default/web-local:http */ kubectl -n default get pod client; "
            "web-local.default.svc.cluster.local; nodes/worker/eth0.pcap; checkoutzz failed")
    out = an.text(text)
    assert out == (f"the default route; the client's SYN; node-10 and {n('node-1')}/any (veth-{n('web-1')}); "
                   f"/* {n('default', 'ns')}/{n('web-local')}:http */ kubectl -n {n('default', 'ns')} get "
                   f"pod {n('client')}; {n('web-local')}.{n('default', 'ns')}.svc.cluster.local; "
                   f"nodes/{n('worker')}/eth0.pcap; {n('checkoutzz')} failed")
    assert an.names.names(out) == out
    # A whole value in a name column or key is a name even when it is a word.
    assert an.value({"client_node": "worker", "by_node": {"worker": 3}, "role": "client"}) == {
        "client_node": n("worker"), "by_node": {n("worker"): 3}, "role": "client"}


def test_chain_hashes_and_paths_in_parameters(tmp_path):
    from natlens.report.anonymize import Anonymizer
    from natlens.report.identifiers import Identifiers

    incident = tmp_path / "acme-prod"
    ids = Identifiers()
    ids.add("incident", "acme-prod")
    ids.add_path(incident)
    an = Anonymizer(bytes.fromhex(KEY_HEX), ids)
    out = an.text("-j KUBE-SVC-ABCDEFGHIJKLMNOP; chain service-MW3VTDQO-ns/x/tcp/p; KUBE-SVC-ABCDEFGHIJKLMNOP")
    a, b = re.findall(r"KUBE-SVC-([A-Z2-7]{16})", out)
    assert a == b != "ABCDEFGHIJKLMNOP" and "MW3VTDQO" not in out and re.search(r"service-[A-Z2-7]{8}-", out)
    p = an.params({"command": f"natlens report {incident} --out /home/jane/out --service 10.0.0.1:80",
                   "incident_dir": str(incident)})
    assert p["incident_dir"] == an.names.name("acme-prod", "incident")
    assert "jane" not in p["command"] and "acme" not in p["command"] and "10.0.0.1" not in p["command"]
    assert p["command"].startswith(f"natlens report {p['incident_dir']} --out path-")


def test_numbers_addresses_and_well_known_names_are_no_names():
    from natlens.report.anonymize import Anonymizer
    from natlens.report.identifiers import Identifiers

    ids = Identifiers()
    ids.add("node", "7", "10.0.1.5", "n1")
    ids.add("ns", "kube-system")
    assert set(ids.names) == {"7", "n1"}  # an IP is Crypto-PAn's; kube-system names no one
    an = Anonymizer(bytes.fromhex(KEY_HEX), ids)
    out = an.text("7 of 70 from n1 to 10.0.1.5; kubectl -n kube-system get daemonset")
    assert out.startswith("7 of 70 from node-") and "n1" not in out and "10.0.1.5" not in out
    assert out.endswith("kubectl -n kube-system get daemonset")
    assert an.value({"node": "7"}) == {"node": an.names.name("7")}


def test_a_relative_incident_path_without_a_slash_is_no_path_to_rewrite(tmp_path, monkeypatch):
    from natlens.report.anonymize import Anonymizer
    from natlens.report.identifiers import Identifiers

    (tmp_path / "mixed").mkdir()
    monkeypatch.chdir(tmp_path)
    ids = Identifiers()
    ids.add_path("mixed")
    assert ids.paths == [str(tmp_path / "mixed")]
    an = Anonymizer(bytes.fromhex(KEY_HEX), ids)
    assert an.text(f"a mixed result in {tmp_path}/mixed/nodes") == (
        f"a mixed result in {an.names.path(str(tmp_path / 'mixed'))}/nodes")


def test_a_command_line_keeps_no_path_of_the_users_relative_ones_included():
    """`--out acme-out --key-file keys/acme.key` name the customer as much as absolute paths."""
    from natlens.report.anonymize import bundle_anonymizer

    an = bundle_anonymizer(bytes.fromhex(KEY_HEX), SAMPLES / "mixed")
    line = ("natlens report data/samples/mixed --out out/acme-x --anonymize --key-file keys/acme.key "
            "--service default/web-local --start 06:40:02")
    mapped = an.params({"command": line})["command"]
    assert re.fullmatch(r"natlens report incident-[0-9a-f]{8} --out path-[0-9a-f]{8} --anonymize --key-file FILE "
                        r"--service ns-[0-9a-f]{8}/svc-[0-9a-f]{8} --start 06:40:02", mapped), mapped
    call = an.params({"command": "natlens.report.build_report('acme-bundle', 'out/acme', anonymize=True)"})
    assert "acme" not in call["command"] and call["command"].startswith("natlens.report.build_report('path-")


# Under KEY_HEX these pairs share the 32 bits a pseudonym shows (found by a birthday search).
COLLIDING_PODS = ("pod-19047", "pod-135649")
COLLIDING_PATHS = ("/data/incidents/x9593/file", "/data/incidents/x19329/file")


def test_two_names_one_pseudonym_is_an_error_naming_both():
    from natlens.errors import NatlensError
    from natlens.report.anonymize import Anonymizer
    from natlens.report.identifiers import Identifiers

    key = bytes.fromhex(KEY_HEX)
    for kind, other in (("pod", "pod"), ("node", "node")):
        ids = Identifiers()
        ids.add(kind, COLLIDING_PODS[0])
        ids.add(other, COLLIDING_PODS[1])
        with pytest.raises(NatlensError, match=r"'pod-19047' and 'pod-135649' would both be shown as \w+-29167573"):
            Anonymizer(key, ids)
    ids = Identifiers()  # one hex part under two kinds: node-... and pod-... stay two names
    ids.add("node", COLLIDING_PODS[0])
    ids.add("pod", COLLIDING_PODS[1])
    an = Anonymizer(key, ids)
    assert an.names.name(COLLIDING_PODS[0]) != an.names.name(COLLIDING_PODS[1])
    ids = Identifiers()
    ids.add_path(*COLLIDING_PATHS)
    with pytest.raises(NatlensError, match="x9593/file' and '/data/incidents/x19329/file' would both be shown as path-"):
        Anonymizer(key, ids)


def test_a_batch_never_shows_two_incidents_as_one(tmp_path):
    from natlens.errors import NatlensError
    from natlens.report.batch import _shown_names

    key = tmp_path / "k.key"
    key.write_text(KEY_HEX)
    with pytest.raises(NatlensError, match="would both be shown as incident-29167573"):
        _shown_names(["a", *COLLIDING_PODS], key)
    shown = _shown_names(["a", COLLIDING_PODS[0]], key)
    assert len(set(shown.values())) == 2
