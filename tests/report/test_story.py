"""The report's first screen (text.story) and its part per Service (text.by_service), on the
samples: what happened, why with the deciding rule lines, what to do with the exact command,
the evidence; then per Service the node the load balancer chose against the outcome."""

from __future__ import annotations

import html
import re

import pytest
from conftest import SAMPLES

from natlens import report
from natlens.report.text import WHY_CHARS


@pytest.fixture(scope="module")
def mixed():
    return report.load(SAMPLES / "mixed")


@pytest.fixture(scope="module")
def cluster_ok():
    return report.load(SAMPLES / "cluster-ok")


def _text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def test_story_leads_with_the_banner_then_why_what_to_do_and_evidence(mixed):
    page = report.text.story(mixed)
    heads = re.findall(r'<h3 class="natlens-story-h">([^<]+)</h3>', page)
    assert page.startswith('<div class="natlens-banner') and heads == ["Why", "What to do", "Evidence"]
    c = mixed.summary["connections"]
    facts = _text(re.search(r'<p class="natlens-facts">(.*?)</p>', page).group(1))
    assert f"{c['total']} connections" in facts and f"{c['failed']} failed" in facts and "3 nodes" in facts
    assert _text(page).count(mixed.summary["verdict"]["headline"]) == 1


def test_why_is_whole_sentences_of_the_root_cause_and_the_rest_is_folded(mixed):
    page = report.text.story(mixed)
    why = re.search(r'Why</h3><p>(.*?)</p>', page).group(1)
    root = mixed.summary["verdict"]["root_cause"]
    assert root.startswith(html.unescape(why)) and len(why) <= WHY_CHARS + 300
    assert "The rest of the root cause" in page


def test_the_deciding_rule_lines_are_highlighted_with_their_node(mixed):
    page = report.text.story(mixed)
    marked = re.findall(r"<mark>(.*?)</mark>", page)
    assert marked == ["nat/KUBE-LOAD-BALANCER #1: -m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst -&gt; RETURN "
                      "(matched)", "nat/KUBE-POSTROUTING #2: -m mark ! --mark 0x4000/0x4000 -&gt; RETURN (matched)"]
    assert "on node-1 (iptables-save.txt" in page and "is not marked for masquerade" in page


def test_what_to_do_recommends_the_first_step_with_its_command_then_folds_the_others(mixed):
    page = report.text.story(mixed)
    todo = page[page.index("What to do</h3>"):page.index("Evidence</h3>")]
    steps = mixed.summary["verdict"]["remediation"]
    rec = todo[:todo.index("Alternatives")]
    assert "Recommended." in rec and "kubectl -n default patch service web-local" in _text(rec)
    assert todo.count("<details>") == len(steps) - 1


def test_evidence_names_the_known_flaws(cluster_ok, mixed):
    assert "nothing is known to be wrong" in report.text.story(mixed)
    flaws = sum(len(q["limits"]) for q in cluster_ok.summary["inputs"]["quality"])
    assert flaws and f"{flaws} known flaws" in report.text.story(cluster_ok)


def test_a_part_per_service_with_the_lb_choice_against_the_outcome(mixed):
    page = report.text.by_service(mixed)
    assert re.findall(r'<h3 id="service-\d">([^<]+)</h3>', page) == [
        "default/web-local (198.19.0.10:80/tcp)", "default/web-cluster (198.19.0.11:80/tcp)"]
    local = report.tables.lb_choice(mixed, "198.19.0.10:80/tcp")
    rows = {r["lb_backend"]: r for r in local.to_dict("records")}
    assert rows["node-1 (its own)"]["timed out"] == rows["node-1 (its own)"]["connections"] == 13
    assert rows["node-2"]["established"] == rows["node-2"]["connections"] == 7
    cluster = report.tables.lb_choice(mixed, "198.19.0.11:80/tcp")
    assert not cluster["lb_backend"].str.contains("its own").any()
    for svc, t in (("198.19.0.10:80/tcp", local), ("198.19.0.11:80/tcp", cluster)):
        assert t["connections"].sum() == (mixed.journeys["service"] == svc).sum()


def test_loopback_evidence_grouped_counts_every_loopback_once(mixed):
    g = report.tables.loopback(mixed, grouped=True)
    assert g["connections"].sum() == len(mixed.loopback) and len(g) < len(mixed.loopback)
    assert g["loopback_evidence"].str.contains(":PORT ").all()
    ports = {f":{int(p)} " for p in mixed.loopback["client_p"]}
    assert not any(p in e for e in g["loopback_evidence"] for p in ports)


def test_hop_table_is_whole_microseconds_with_the_interface(mixed):
    t = report.tables.worked_hops(mixed)
    assert str(t["since_first_us"].dtype) == "Int64" and t["since_first_us"].iloc[0] == 0
    assert t["capture"].str.contains(r"\(").any()  # node-1/any (veth-client): the interface named
    page = report.table_html(t)
    assert re.search(r">\d{1,3}(,\d{3})+</td>", page) and ".0</td>" not in page


def test_the_other_failures_steps_are_not_offered_as_alternatives():
    d = report.load(SAMPLES / "nftables-local")
    todo = report.text.story(d)
    todo = todo[todo.index("What to do</h3>"):todo.index("Evidence</h3>")]
    alts, more = todo.split("For the other failures")
    assert "answers from the wrong source" in _text(more) and "answers from the wrong source" not in _text(alts)
    for fold in re.findall(r"<details><summary>(.*?)</summary>(.*?)</details>", alts, re.S):
        assert fold[0] not in fold[1]  # the sentence that opens a fold is not said again inside it
    assert _text(todo).count("(") == _text(todo).count(")")  # a cost's own ")" is kept


def test_no_rule_line_is_called_the_reason_when_snat_happened_and_the_loop_came_anyway():
    d = report.load(SAMPLES / "any-backend-cluster")
    assert d.summary["verdict"]["loopback_detected"] and "<mark>" not in report.text.story(d)
