"""The report's words: verdict banner, executive summary, rule traces, remediation.

Each function takes a `ReportData` and returns `Html`, a str that notebooks
display as HTML. Every value that comes from the incident (captures, dumps,
kubectl JSON, file names) goes through `esc`, so a Host header or an iptables
comment holding ``<script>`` shows as text and never runs.
"""

from __future__ import annotations

import html
import re
from typing import Any

import pandas as pd

from natlens.findings import failure_words
from natlens.findings.lb_words import BEHAVIOUR_NAME, LOOP_NAME
from natlens.report import tables
from natlens.report.data import ReportData
from natlens.report.display import table_html
from natlens.report.tables import compact_hops
from natlens.vocab import NO, UNKNOWN, YES, is_failed


class Html(str):
    """HTML text that Jupyter displays rendered (and that prints as its source)."""

    def _repr_html_(self) -> str:
        return str(self)


def esc(value: Any) -> str:
    """HTML-escape anything for text or attribute context."""
    return html.escape("" if value is None else str(value), quote=True)


def n(x: Any) -> str:
    """An exact count with thousands separators."""
    try:
        return f"{int(x):,}"
    except (TypeError, ValueError):
        return "?"


def pct(part: Any, whole: Any) -> str:
    try:
        part, whole = float(part), float(whole)
    except (TypeError, ValueError):
        return "?"
    return f"{100.0 * part / whole:.1f} %" if whole else "n/a"


def ms(x: Any) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "?"
    if x != x:
        return "n/a"
    return f"{x:,.0f} ms" if x >= 100 else f"{x:.2f} ms"


def utc(ts: Any) -> str:
    """Epoch seconds -> 'YYYY-MM-DD HH:MM:SS.mmm UTC'."""
    try:
        return pd.Timestamp(float(ts), unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
    except (TypeError, ValueError, OverflowError):
        return "?"


def verdict_class(summary: dict[str, Any]) -> str:
    """The banner's colour: bad (loopback or failures), unknown (no connection, or outcomes the
    captures do not show and no failure), warn (a slow or lossy path, no failure), ok."""
    c = summary["connections"]
    if summary["verdict"]["loopback_detected"] and not harmless_loopbacks(summary):
        return "verdict-bad"
    if not c["total"]:
        return "verdict-unknown"
    if c["failed"]:
        return "verdict-bad"
    if c.get("unknown"):
        return "verdict-unknown"
    return "verdict-warn" if summary["verdict"].get("problem") else "verdict-ok"


def harmless_loopbacks(summary: dict[str, Any]) -> bool:
    """Loopbacks that all worked, through a load balancer seen to proxy them (findings.lb)."""
    v = summary["verdict"]
    return (v.get("lb_behaviour") == "proxy" and v.get("lb_failure_mode") == "answered-via-lb"
            and not summary["loopback"]["failed"])


def banner(d: ReportData) -> Html:
    """The verdict at the top of the report: the incident, what limits the evidence (first), and
    what happened in one sentence. The why and what to do follow it (`story`)."""
    v = d.summary["verdict"]
    state = "Loopback detected" if v["loopback_detected"] else "No loopback detected"
    commonest = next(iter((d.summary.get("failures") or {}).get("by_mechanism") or {}), None)
    if v["loopback_detected"] and commonest not in (None, "loopback"):
        state += " (not the commonest failure)"
    elif v["loopback_detected"] and harmless_loopbacks(d.summary):
        state += " (harmless: the load balancer proxies them)"
    scope = scope_note(d)
    return Html(
        f'<div class="natlens-banner {verdict_class(d.summary)}" id="verdict">'
        + (f"<h1>{esc(d.about['title'])}</h1>" if d.about.get("title") else f"<h1>{esc(d.incident)}</h1>")
        + f'<p class="natlens-facts">{_facts(d)}</p>'
        + (f'<p class="natlens-evidence"><strong>What the evidence cannot show.</strong> '
           f"{esc(v['evidence'])}</p>" if v.get("evidence") else "")
        + (f'<p class="natlens-evidence"><strong>Filtered.</strong> {esc(scope)}</p>' if scope else "")
        + f"<p><strong>{esc(state)}.</strong> {esc(v['headline'])}.</p>"
        + ("<p><em>This report is anonymized (Crypto-PAn for IP addresses, prefix-preserving; "
           "keyed pseudonyms for the rest): node, pod, namespace, Service and incident names, local paths, "
           "MAC addresses and kube-proxy's chain hashes are replaced; payload-derived strings "
           "are left out.</em></p>" if d.anonymized else "")
        + "</div>"
    )


def _facts(d: ReportData) -> str:
    """'Incident mixed · 2026-11-26 06:40:01-06:40:03 UTC · 40 connections · 13 failed (32.5 %) ·
    3 nodes, 6 capture points': the size of it, in one line."""
    c, caps = d.summary["connections"], d.summary["inputs"]["captures"]
    nodes = {str(x["node"]) for x in caps}
    ts = pd.to_numeric(d.journeys["ts"], errors="coerce").dropna() if not d.journeys.empty else pd.Series(dtype=float)
    parts = [f"Incident <code>{esc(d.incident)}</code>"] if d.about.get("title") else []  # else it is the title
    if len(ts):
        lo, hi = utc(ts.min())[:19], utc(ts.max())[:19]  # to the second
        parts.append(esc(f"{lo}–{hi[11:] if hi[:10] == lo[:10] else hi} UTC"))
    parts.append(f"{n(c['total'])} connection{'s' if c['total'] != 1 else ''}")
    if c["total"]:
        parts.append(f"<strong>{n(c['failed'])} failed</strong> ({pct(c['failed'], c['total'])})"
                     + (f", {n(c['unknown'])} unknown" if c.get("unknown") else ""))
    parts.append(f"{n(len(nodes))} node{'s' if len(nodes) != 1 else ''}, {n(len(caps))} capture "
                 f"point{'s' if len(caps) != 1 else ''}")
    return " · ".join(parts)


WHY_CHARS = 700  # the first screen's "why": whole sentences up to about this long; the rest below it


def story(d: ReportData) -> Html:
    """The first screen, as an incident report's reader wants it: what happened and its size (the
    banner), why (the root cause's first sentences and the rule line that decides it), what to do
    (the recommended fix with its command, then the alternatives), and how good the evidence is."""
    return Html(banner(d) + '<div class="natlens-story">' + _why(d) + _todo(d) + _evidence(d) + _made(d)
                + "</div>")


def _sentences(text: str) -> list[str]:
    """`text` cut into sentences at '. ' before a capital letter or a digit (addresses and
    versions inside a sentence have no space after their dots)."""
    return [x for x in re.split(r"(?<=[.]) (?=[A-Z0-9])", text.strip()) if x]


def _why(d: ReportData) -> str:
    """Why: the root cause's first sentences (the rest in a fold), then the decisive rule lines."""
    root = d.summary["verdict"].get("root_cause") or ""
    if not root:
        return ""
    said, shown = _sentences(root), []
    for x in said:
        if shown and sum(len(y) + 1 for y in shown) + len(x) > WHY_CHARS:
            break
        shown.append(x)
    rest = said[len(shown):]
    more = (f"<details><summary>The rest of the root cause ({n(len(rest))} more sentence"
            f"{'s' if len(rest) != 1 else ''})</summary><p>{esc(' '.join(rest))}</p></details>" if rest else "")
    return f'<h3 class="natlens-story-h">Why</h3><p>{esc(" ".join(shown))}</p>{more}{decisive_rule(d)}'


def decisive_rule(d: ReportData) -> str:
    """The rule lines that decide the SNAT of the row the verdict is about (findings.snat.
    decisive_rules), highlighted, with the node and the dump they come from: for a loopback of
    connections that left un-SNATed. "" otherwise: without a loopback, or when they were SNATed
    and looped all the same, the SNAT decision is not what the verdict turns on."""
    from natlens.findings.snat import decisive_rules

    rows = d.snat.to_dict("records") if not d.snat.empty else []
    if not rows or not d.summary["verdict"]["loopback_detected"]:
        return ""  # without a loopback the SNAT decision is not what the verdict turns on
    row = max(rows, key=lambda r: (r.get("loopback_failed", 0), r.get("loopback", 0), r.get("failed", 0)))
    ratio = row.get("ratio")
    if ratio is None or ratio != ratio or ratio != 0:
        return ""  # SNATed loops (a load balancer that sends a node's own address back): SNAT is not why
    lines = decisive_rules(list(row.get("rule_trace") or []), False)
    if not lines:
        return ""
    files = next((r.get("files") for r in _rules(d) if r["service"] == row["service"]
                  and r["source_node"] == row["source_node"]), None) or []
    where = f" ({esc(', '.join(f.rsplit('/', 1)[-1] for f in files))})" if files else ""
    return (f"<p>The rules that decide it, on {esc(row['source_node'])}{where}: why a packet from a pod to "
            f"{esc(row['service'])} is not marked for masquerade, and the rule that leaves it un-SNATed:</p>"
            + '<pre class="natlens-trace natlens-decisive">'
            + "".join(f'<span class="natlens-trace-line"><mark>{esc(x)}</mark>\n</span>' for x in lines)
            + "</pre>")


def _todo(d: ReportData) -> str:
    """What to do: the first remediation step in full with its command; the other fixes of the
    same failure folded, each with its own command, as alternatives; the steps for the other
    failures ("For the answers from the wrong source: ...") after them, as more to do."""
    v = d.summary["verdict"]
    steps = v.get("remediation") or []
    if not steps:
        return f'<h3 class="natlens-story-h">What to do</h3>{remediation(d)}'
    first, *others = steps
    alts = [x for x in others if not x.startswith("For ")]
    more = [x for x in others if x.startswith("For ")]
    return ('<h3 class="natlens-story-h">What to do</h3><p><strong>Recommended.</strong> ' + _step(first) + "</p>"
            + (f"<p><strong>Alternatives</strong> (open one for its command and cost):</p><ul>"
               f"{''.join(f'<li>{_folded(x)}</li>' for x in alts)}</ul>" if alts else "")
            + (f"<p><strong>For the other failures</strong>:</p><ul>{''.join(f'<li>{_step(x)}</li>' for x in more)}"
               "</ul>" if more else ""))


def _folded(step: str) -> str:
    """A remediation step as a fold: its first sentence to open, the rest with its command inside."""
    words, how = (step.split(" How: ", 1) + [""])[:2]
    first, *rest = _sentences(words)
    inside = _step(" ".join(rest) + (f" How: {how}" if how else "")) if rest or how else ""
    return f"<details><summary>{esc(first)}</summary>{inside}</details>"


def _evidence(d: ReportData) -> str:
    """How good the evidence is, in one paragraph: the captures, their span, and what limits them."""
    caps = d.summary["inputs"]["captures"]
    limits = [x for q in d.summary["inputs"].get("quality") or [] for x in q.get("limits") or []]
    blind = d.summary["inputs"].get("uncaptured_nodes") or []
    nodes = len({str(x["node"]) for x in caps})
    text = (f"{n(len(caps))} capture point{'s' if len(caps) != 1 else ''} on "
            f"{n(nodes)} node{'s' if nodes != 1 else ''}")
    text += (f"; {n(len(limits))} known flaw{'s' if len(limits) != 1 else ''} (see Evidence quality): "
             + "; ".join(limits[:2]) + (" ..." if len(limits) > 2 else "") if limits
             else "; nothing is known to be wrong with them")
    if blind:
        text += f"; no capture of {', '.join(map(str, blind))}"
    unknown = d.summary["connections"].get("unknown")
    if unknown:
        text += f"; the outcome of {n(unknown)} connection{'s' if unknown != 1 else ''} is unknown"
    return f'<h3 class="natlens-story-h">Evidence</h3><p>{esc(text)}.</p>'


def _made(d: ReportData) -> str:
    """When and how the report was made (data.run_info: UTC time, natlens version, command line)."""
    p = d.parameters
    parts = [f"Generated {esc(p.get('generated_utc'))}", f"natlens {esc(p.get('natlens_version'))}",
             f"<code>{esc(p.get('command'))}</code>"]
    return f'<p class="natlens-made">{" · ".join(parts)}</p>'


def scope_note(d: ReportData) -> str:
    """What the report is limited to (--service, --start, --end), one sentence; "" for the whole
    incident. The scope is the analysis's, so every number in the report is about it."""
    from natlens.findings.scope import describe_scope

    return describe_scope(d.summary.get("scope")) or ""


def executive_summary(d: ReportData) -> Html:
    """What happened, in plain words with exact numbers, and what it cost (impact)."""
    s = d.summary
    c, lb, caps = s["connections"], s["loopback"], s["inputs"]["captures"]
    nodes = sorted({str(x["node"]) for x in caps})
    total, failed = c["total"], c["failed"]
    items = []
    when = ""
    ts = pd.to_numeric(d.journeys["ts"], errors="coerce").dropna() if not d.journeys.empty \
        else pd.Series(dtype=float)  # the connections counted here: the Services' (and the scope's)
    if len(ts):
        when = f"Between {utc(ts.min())} and {utc(ts.max())}, "
    items.append(
        f"{esc(when)}natlens saw <strong>{n(total)}</strong> connections at {n(len(caps))} capture "
        f"point{'s' if len(caps) != 1 else ''} on {n(len(nodes))} node{'s' if len(nodes) != 1 else ''}"
        + (f" ({esc(', '.join(nodes))})" if nodes else "") + ".")
    items.append(
        f"<strong>{n(failed)}</strong> of them failed ({pct(failed, total)}): "
        f"{n(c['timeouts'])} timed out and {n(c['resets'])} were reset."
        + (f" The outcome of <strong>{n(c['unknown'])}</strong> is unknown: the captures do not show "
           "how they ended." if c.get("unknown") else ""))
    why = ", ".join(f"{n(k)} {failure_words.NAMES[m][0 if k == 1 else 1]}"
                    for m, k in (s.get("failures") or {}).get("by_mechanism", {}).items() if m in failure_words.NAMES)
    if why:
        items.append(f"Why they failed: {esc(why)} (see Why each connection failed).")
    hits = lb["hits"]
    if hits:
        by_node = ", ".join(f"{esc(k)}: {n(v)}" for k, v in sorted(lb["by_node"].items()))
        items.append(
            f"<strong>{n(hits)}</strong> connections were sent by the load balancer back to the node "
            f"they came from (loopback{'; ' + by_node if by_node else ''}); "
            f"{n(lb['failed'])} of those failed.")
        items += [_lb_line(f) for f in s.get("lb_behaviour") or []]
    else:
        items.append("No connection was sent back by the load balancer to the node it came from "
                     "(no loopback).")
    for row in d.snat.to_dict("records"):  # the scoped rows (services=...), as the table shows
        items.append(_snat_sentence(row))
    lat = s["latency_ms"]["connect"]
    if lat["count"]:
        items.append(f"Connect time over {n(lat['count'])} connections: median {ms(lat['p50'])}, "
                     f"90th percentile {ms(lat['p90'])}, 99th {ms(lat['p99'])}, "
                     f"worst {ms(lat['max'])}.")
    impact = _impact(s)
    return Html(
        '<div class="natlens-summary"><ul>' + "".join(f"<li>{i}</li>" for i in items) + "</ul>"
        f'<p><strong>Impact.</strong> {impact}</p>{reported(d)}</div>'
    )


def reported(d: ReportData) -> str:
    """What the user reported in incident.yaml: the window, the Services, the notes."""
    a = d.about
    parts = []
    w = a.get("window") or {}
    if w:
        parts.append(f"Reported time window: {esc(w.get('start', '?'))} to {esc(w.get('end', '?'))} "
                     "(UTC; shaded on the timeline).")
    if a.get("services"):
        parts.append("Services of interest: " + esc(", ".join(a["services"])) + ".")
    if a.get("notes"):
        parts.append("Notes: " + esc(a["notes"]))
    if a.get("left_out"):
        left = a["left_out"]
        parts.append(f"The {' and '.join(left)} written in incident.yaml {'are' if len(left) > 1 else 'is'} "
                     "left out of this anonymized report: free text can name anything.")
    if not parts:
        return ""
    return "<p><strong>As reported</strong> (incident.yaml). " + " ".join(parts) + "</p>"


def _snat_sentence(row: dict[str, Any]) -> str:
    """One SNAT row in words: whose connections (the node's own, its pods', or not known), how
    many were SNATed of those whose SNAT is known, and how many are undetermined."""
    host = row.get("host_network")
    host = host if isinstance(host, str) else YES if host else NO  # older tables: a bool
    whose = {YES: f"connections {esc(row['source_node'])} opened itself (host network)",
             UNKNOWN: f"connections from {esc(row['source_node'])} (its pods' or its own: the captures "
                      "cannot tell)"}.get(host, f"connections from {esc(row['source_node'])}")
    who = f"{whose} to {esc(row['service'])} (externalTrafficPolicy {esc(row['policy'])})"
    total, unknown, ratio = row["connections"], row["unknown_snat"], row["ratio"]
    no_ratio = ratio is None or ratio != ratio  # None or NaN: the captures cannot tell
    if no_ratio and host == YES:
        text = f"The {n(total)} {who} leave with the node's own IP: there is no SNAT to measure."
    elif no_ratio:
        text = (f"For {n(total)} {who}, the captures cannot show whether they were SNATed"
                + (f" ({n(unknown)} undetermined)" if unknown else "") + ".")
    elif unknown:
        known = total - unknown
        text = (f"Of {n(total)} {who}, {n(unknown)} are undetermined; of the other {n(known)}, "
                f"{n(row['snat'])} were SNATed ({pct(row['snat'], known)}).")
    else:
        text = (f"Of {n(total)} {who}, {n(row['snat'])} were SNATed "
                f"({pct(row['snat'], total)}).")
    pred = row["predicted_by_rules"]
    if pred is True:
        text += " The node's netfilter rules predict exactly this."
    elif pred is False:
        text += " The node's netfilter rules predict otherwise: see the rule trace."
    return text[0].upper() + text[1:]


def _impact(s: dict[str, Any]) -> str:
    c, lb = s["connections"], s["loopback"]
    total, failed = c["total"], c["failed"]
    if not total:
        return "No connections were found in the captures, so no impact can be measured."
    unknown = c.get("unknown", 0)
    if not failed and unknown:
        return (f"The outcome of {n(unknown)} of {n(total)} connections is unknown (they may have failed): "
                "the impact cannot be measured from these captures.")
    if not failed:
        return f"None of the {n(total)} connections failed."
    text = (f"{n(failed)} of {n(total)} connections ({pct(failed, total)}) failed, {share_in_words(failed, total)}"
            + (f"; the outcome of {n(unknown)} more is unknown, so this is a lower bound." if unknown else "."))
    if lb["failed"]:
        text += (f" Loopback accounts for {n(lb['failed'])} of these failures "
                 f"({pct(lb['failed'], failed)}).")
    return text


def share_in_words(part: int, whole: int) -> str:
    """A share as a reader says it: "about one in 25", "about 7 in 10", "nearly all", "all of them".

    "One in N" only where 1/N is within 10 % of the share (70 % is not "one in 1", 40 % not
    "one in 2"); otherwise tenths, and "nearly all" when they round to ten but some did not fail.
    """
    if whole <= 0 or part <= 0:
        return "none of them"
    if part >= whole:
        return "all of them"
    share = part / whole
    one_in = round(whole / part)
    if one_in >= 2 and abs(1 / one_in - share) <= 0.1 * share:
        return f"about one in {one_in:,}"
    tenths = round(10 * share)
    return "nearly all" if tenths >= 10 else f"about {max(tenths, 1)} in 10"


MODE_NAME = {"ipvs": "IPVS", "iptables": "iptables", "nftables": "nftables"}


def _rules(d: ReportData) -> list[dict[str, Any]]:
    """summary.json's ``rules``: what each client node's rules do with the Service's traffic
    (natlens.findings.mechanism), for the rows the report shows."""
    shown = {(r["service"], r["source_node"]) for r in d.snat.to_dict("records")} if not d.snat.empty else set()
    rules = d.summary.get("rules") or []
    return [r for r in rules if not shown or (r["service"], r["source_node"]) in shown]


def _on(rule: dict[str, Any]) -> str:
    mode = MODE_NAME.get(rule.get("proxy_mode"))
    return f"On {esc(rule['source_node'])}, kube-proxy" + (f" ({mode} mode)" if mode else "")


def snat_intro(d: ReportData) -> Html:
    """Why pod traffic to the VIP leaves each client node SNATed or not, as its rules say (the
    words depend on kube-proxy's mode and the ingress's ipMode, from the rule trace)."""
    said, parts = set(), []
    for r in _rules(d):
        key = (r["proxy_mode"], r["vip"], r["ingress"])
        if key in said:
            continue
        said.add(key)
        ingress = f" (ingress ipMode {esc(r['ingress'])})" if r["ingress"] in ("VIP", "Proxy") else ""
        if r["vip"] == "policy" and r["proxy_mode"] == "ipvs":
            parts.append(f"{_on(r)} keeps the VIP in its ipsets without DNATing it: with "
                         "<code>externalTrafficPolicy: Local</code> it returns before marking the packet for "
                         "masquerade, so the pod address goes to the load balancer, and the load balancer may "
                         "send the connection back to the client's own node; with <code>Cluster</code> it is "
                         "SNATed to the node's IP.")
        elif r["vip"] == "none":
            parts.append(f"{_on(r)} has no rule for the Service's LB IP{ingress}: nothing of kube-proxy's marks "
                         "pod traffic to it for masquerade under either policy, so the pod address goes to the "
                         "load balancer, which may send the connection back to the client's own node.")
        elif r["vip"] == "dnat":
            parts.append(f"{_on(r)} DNATs pod traffic to the LB IP to the Service's endpoints on the node"
                         f"{ingress}: it never reaches the load balancer, so it cannot loop back; whether it "
                         "is SNATed on its way to the endpoint depends on the policy.")
    if not parts:
        parts.append("Whether the node SNATs it is decided by its netfilter rules: the rule trace below shows "
                     "the walk, where the dumps allow one.")
    return Html("<p>" + " ".join(parts) + "</p>")


def rule_trace_intro(d: ReportData) -> Html:
    """Where the rule traces below come from: each client node's dumps, by name."""
    files = {r["source_node"]: r.get("files") or [] for r in _rules(d)}
    named = "; ".join(f"{esc(node)}: " + ", ".join(f"<code>{esc(f.rsplit('/', 1)[-1])}</code>" for f in fs)
                      for node, fs in sorted(files.items()) if fs)
    source = f"from the node's dumps ({named})" if named else "from the node's dumps"
    return Html(f"<p>The rules a packet from a pod on that node to the Service walks through, {source}, hook "
                "by hook: the reason for the SNAT decision above.</p>")


def _lb_line(f: dict[str, Any]) -> str:
    """One executive-summary line on a Service's load balancer (findings.lb)."""
    svc = f"<code>{esc(f['service'])}</code>"
    if f["behaviour"] == "unknown":
        return (f"Whether the load balancer of {svc} would send a node's own connection back to it is not shown "
                "by these captures (see How the load balancer picks a backend).")
    return f"The load balancer of {svc} {esc(BEHAVIOUR_NAME[f['behaviour']])} (see How the load balancer picks a backend)."


def lb_intro(d: ReportData) -> Html:
    """How each Service's load balancer picked backends, as the captures show it, with the evidence
    and, where the captures cannot tell, why not."""
    found = d.summary.get("lb_behaviour") or []
    if not found:
        return Html("<p>No connection through a load balancer in these captures.</p>")
    items = "".join(f"<li><code>{esc(f['service'])}</code>: {esc(BEHAVIOUR_NAME[f['behaviour']])}. "
                    f"{esc(f['evidence'][:1].upper() + f['evidence'][1:])}."
                    + _loops_ended(f) + _documented(f) + "</li>" for f in found)
    return Html("<p>SNAT to the node's IP and externalTrafficPolicy Cluster stop a loopback only where the load "
                f"balancer never sends a node's own connection back to that node.</p><ul>{items}</ul>")


def _documented(f: dict[str, Any]) -> str:
    """' What the provider documents (kind, from ...): note.' where a cloud is known, else ''."""
    doc = f.get("documented") or {}
    if not doc.get("cloud"):
        return ""
    return (f" <em>What the provider documents</em> ({esc(doc['kind'])}, read from {esc(doc['evidence'])}): "
            f"{esc(doc['note'])}")


def _loops_ended(f: dict[str, Any]) -> str:
    """' Its loopbacks: 10 dropped on arrival (...).' from findings.lb's loop modes, or ''."""
    parts = [f"{n(k)} {LOOP_NAME[m]}" for m, k in f["loops"].items() if m in LOOP_NAME]
    return f" Its loopbacks: {esc('; '.join(parts))}." if parts else ""


def loopback_intro(d: ReportData) -> Html:
    """What a loopback looks like in the captures, with where the client's node sends the SYN
    that comes back (a local endpoint, or any endpoint: its rules' walk)."""
    where = {r["returning_syn"] for r in _rules(d)}
    if "any" in where:
        dnat = ("is DNATed to one of the Service's endpoints (the node's rules send a SYN from a pod address to "
                "any endpoint, on this node or another, whose answer comes back through this node)")
    elif where == {"local"}:
        dnat = "is DNATed to a local endpoint"
    else:
        dnat = "is DNATed to an endpoint"
    modes = {m for f in d.summary.get("lb_behaviour") or [] for m, k in f["loops"].items() if k}
    head = ("<p>Connections the load balancer sent back to the node they came from. The SYN leaves towards "
            "<code>VIP:port</code> and comes back in towards <code>nodeIP:NodePort</code> with the same "
            "initial sequence number. ")
    parts = []
    if modes & {"answered-from-node-port", "unknown"} or not modes:
        parts.append(f"From a pod's address, it {dnat}, and its SYN-ACK reaches the client from the wrong "
                     "address, so the client resets it and the connection times out.")
    if "dropped-on-arrival" in modes:
        parts.append("From the node's own address (SNATed), the node drops it on arrival, since its source is "
                     "one of the node's own addresses: nothing answers, and the connection times out.")
    if "answered-via-lb" in modes:
        parts.append("Where the load balancer replaced the source with its own address, the node answers the "
                     "load balancer, and the connection works.")
    return Html(head + " ".join(parts) + "</p>")


def returning_syn_trace(d: ReportData) -> Html:
    """The walk of a looped-back SYN (from the pod, to the node's NodePort, in via its uplink)
    through the client node's rules: where they DNAT it, the evidence for the loopback's
    mechanism in the verdict. Only for nodes with loopbacks in the captures."""
    looped = set(zip(d.loopback["service"], d.loopback["client_node"], strict=True)) if not d.loopback.empty \
        else set()
    show = d.anonymizer.text if d.anonymizer is not None else (lambda x: x)
    node = (lambda x: d.anonymizer.value(x, "node")) if d.anonymizer is not None else (lambda x: x)
    parts = []
    for m in getattr(d.analysis, "mechanisms", None) or []:
        if m.returning_packet is None or (show(m.service), node(m.node)) not in looped:
            continue
        src, dst, dport, proto, iface = m.returning_packet
        v = d.analysis.rules(m.node).explain(src, dst, int(dport), proto=proto, in_iface=iface)
        head = f"{node(m.node)}: " + show(f"{src} -> {dst}:{dport}/{proto} in via {iface or 'the uplink'}")
        parts.append(f"<h4>{esc(head)}</h4><p>{esc(show(v.verdict))}</p>"
                     + trace_pre([show(str(x)) for x in v.trace]))
    if not parts:
        return Html("")
    return Html("<p>Where the client's node sends a SYN that comes back to its NodePort from the pod (the "
                "netfilter model's walk of that packet through the node's rules):</p>" + "".join(parts))


def rule_traces(d: ReportData) -> Html:
    """For each SNAT row, the netfilter rules the packet walks through, as text."""
    rows = d.snat.to_dict("records")
    if not rows:
        return Html("<p>No Service traffic through a load balancer was found, so there is no SNAT "
                    "decision to explain.</p>")
    parts = []
    for row in rows:
        parts.append(
            f"<h4>{esc(row['service'])} from {esc(row['source_node'])}: "
            f"policy {esc(row['policy'])}</h4>" + trace_pre(list(row["rule_trace"])))
    return Html("".join(parts))


def trace_pre(lines: Any) -> str:
    """Rule-trace lines as one `<pre class="natlens-trace">`, each line its own block.

    A line is a `<span class="natlens-trace-line">`, so a line too long for the page
    wraps with a hanging indent (render.py's CSS) and still reads as one rule.
    """
    return ('<pre class="natlens-trace">'
            + "".join(f'<span class="natlens-trace-line">{esc(x)}\n</span>' for x in lines)
            + "</pre>")


def remediation(d: ReportData) -> Html:
    """What to change, from the verdict."""
    v = d.summary["verdict"]
    steps = v["remediation"]
    if not steps and v.get("problem"):
        where = "; ".join(v["problem"]["between"]) or "the capture points the table above names"
        return Html("<p>No load-balancer loopback to fix. The slow or lossy path is the finding: look at "
                    f"what holds or drops packets between {esc(where)} (see Slow and lossy paths).</p>")
    if not steps:
        return Html("<p>No change is needed on the evidence in this incident.</p>")
    return Html("<ol>" + "".join(f"<li>{_step(x)}</li>" for x in steps) + "</ol>")


def _step(text: str) -> str:
    """One remediation step; its command, when it has one, on a line of its own to copy."""
    if " How: " not in text:
        return esc(text)
    words, rest = text.split(" How: ", 1)
    command, _, cost = rest.rpartition(" (cost: ")
    if not command:
        command, cost = rest, ""
    cost = cost[:-2] if cost.endswith(").") else cost[:-1] if cost.endswith(")") else cost  # its own ")" only
    return (esc(words) + f'<pre class="natlens-trace">{esc(command)}</pre>'
            + (f"<p>What it costs: {esc(cost)}.</p>" if cost else ""))


def capture_limits(d: ReportData) -> Html:
    """What is known to be wrong with each capture, in words (findings.quality's ``limits``)."""
    limits = [x for q in (getattr(d.analysis, "quality", None) or []) for x in q["limits"]]
    if d.anonymizer is not None:
        limits = [d.anonymizer.text(x) for x in limits]
    if not limits:
        return Html("<p>Nothing is known to be wrong with the captures.</p>")
    return Html("<ul>" + "".join(f"<li>{esc(x)}</li>" for x in limits) + "</ul>")


def inferred(d: ReportData) -> Html:
    """What natlens inferred because cluster/ was missing, and from what."""
    if not d.inferred:
        return Html("<p>Nothing was inferred: the bundle described the cluster.</p>")
    return Html("<ul>" + "".join(f"<li>{esc(x)}</li>" for x in d.inferred) + "</ul>")


def worked_journey(d: ReportData) -> Html:
    """One sentence introducing the journey the report follows hop by hop."""
    jid = d.worked_journey_id()
    if jid is None:
        return Html("<p>There is no loopback journey to walk through.</p>")
    return Html(f"<p>Journey <code>{esc(jid)}</code>, hop by hop, in capture time (UTC):</p>")


def failures_intro(d: ReportData) -> Html:
    """How many connections failed and how each mechanism is decided, before the table."""
    f = d.summary.get("failures") or {}
    if not f.get("failed"):
        return Html("<p>No connection failed in these captures.</p>")
    unexplained = (f" natlens cannot tell the cause of {n(f['unexplained'])} of them; the table's last rows and "
                   "each journey below say why." if f.get("unexplained") else
                   " Every failed connection has a cause the captures show.")
    return Html(f"<p>{n(f['failed'])} of {n(d.summary['connections']['total'])} connections failed; each "
                "is given the first of these causes its packets show: load-balancer loopback, dropped by a "
                "node's rules, an ICMP error, refused by the server, an answer from the wrong source, reset "
                f"by the client, an answer lost on the way back, never answered.{unexplained}</p>")


def failure_journeys(d: ReportData) -> Html:
    """One worked journey per failure mechanism: where it died, its path and why, then its hops."""
    f = d.summary.get("failures") or {}
    parts = []
    rows = d.journeys.set_index("journey") if "failure" in d.journeys else None
    for mech, ids in (f.get("journeys") or {}).items():
        if rows is None or not ids or ids[0] not in rows.index:
            continue
        j = rows.loc[ids[0]]
        name = failure_words.NAMES.get(mech, (mech, mech))[1]
        parts.append(f"<h4>{esc(name[0].upper() + name[1:])} (<code>{esc(mech)}</code>): journey "
                     f"<code>{esc(ids[0])}</code>"
                     f"{f' (and {len(ids) - 1} more)' if len(ids) > 1 else ''}</h4>"
                     f"<p><b>Where it died:</b> {esc(j['failure_at'])}</p>"
                     f"<p><b>Why:</b> {esc(j['failure_evidence'])}</p>"
                     f"<p><b>Path:</b></p>{trace_pre(str(j['failure_path']).split(' | '))}"
                     "<p>Its packets up to the client's first retransmitted SYN (each retry is "
                     "another round, to the same endpoint or another):</p>"
                     + table_html(compact_hops(d, ids[0], first_attempt=True), max_rows=40))
    if not parts:
        return Html("<p>There is no failed connection to walk through.</p>")
    return Html("".join(parts))


def netfilter_trace(d: ReportData, node: str = "", src: str = "", dst: str = "", dport: int = 0,
                    proto: str = "tcp") -> Html:
    """The rule walk of one packet on one node (natlens.netfilter), or the SNAT rows' traces.

    `node`, `src`, `dst`, `dport` are the real values from the bundle; what is shown
    goes through the report's anonymizer like everything else.
    """
    if not (node and src and dst and dport):
        return rule_traces(d)
    v = d.analysis.rules(node).explain(src, dst, int(dport), proto)
    show = d.anonymizer.text if d.anonymizer is not None else (lambda s: s)
    lines = [show(str(x)) for x in v.trace]
    head = show(f"{src} -> {dst}:{dport}/{proto} on {node}: {v.verdict}")
    undecided = "".join(f"<li>{esc(show(u))}</li>" for u in v.undecided)
    return Html(f"<h4>{esc(head)}</h4>"
                + trace_pre(lines)
                + (f"<p>Not decided by the model:</p><ul>{undecided}</ul>" if undecided else ""))


def service_label(d: ReportData, key: str) -> str:
    """'default/web-local (198.19.0.10:80/tcp)' for a Service key as the report shows it (mapped
    when the report is anonymized), or the key alone when the inventory names no Service."""
    from natlens.findings.verdict import service_names

    show = d.anonymizer.text if d.anonymizer is not None else (lambda x: x)
    names = {show(k): show(v) for k, v in service_names(d.analysis.inventory).items()}
    return f"{names[key]} ({key})" if key in names else key


def by_service(d: ReportData) -> Html:
    """One part per Service: its numbers in a sentence, what its load balancer was seen to do, and
    the table of the node the load balancer chose against how the connections ended."""
    j = d.journeys
    if j.empty:
        return Html("<p>No connection to a load-balancer Service in these captures.</p>")
    parts = []
    for i, (key, g) in enumerate(j.groupby("service", sort=True), 1):
        parts.append(f'<h3 id="service-{i}">{esc(service_label(d, key))}</h3>' + _service_facts(d, key, g)
                     + table_html(tables.lb_choice(d, key)))
    return Html("".join(parts))


def _service_facts(d: ReportData, key: str, g: pd.DataFrame) -> str:
    """One Service's policy, counts, loopbacks and SNAT, and its load balancer's behaviour."""
    policy = ", ".join(sorted({str(x) for x in g["policy"].dropna()})) or "unknown"
    failed = int(is_failed(g["outcome"]).sum())
    loops = int((g["loopback"] == YES).sum())
    causes = failure_words.tally(g)  # the headline's words, for this Service's journeys
    text = (f"externalTrafficPolicy {esc(policy)}: {n(len(g))} connections, {n(failed)} failed"
            + (f" ({esc(causes)})" if causes else "") + f", {n(loops)} sent back to their own node")
    snat = [r for r in d.snat.to_dict("records") if r["service"] == key] if not d.snat.empty else []
    text += "".join(f"; from {esc(r['source_node'])}: {n(r['snat'])} of {n(r['connections'])} SNATed" for r in snat)
    lb = next((f for f in d.summary.get("lb_behaviour") or [] if f["service"] == key), None)
    said = (f" Its load balancer {esc(BEHAVIOUR_NAME[lb['behaviour']])}." if lb and lb["behaviour"] != UNKNOWN
            else " Whether its load balancer would also send a node's own (SNATed) connection back to that node "
            "is not shown by these captures (see How the load balancer picks a backend).")
    return (f"<p>{text}.{said} The node the load balancer chose for each connection, against how it "
            "ended:</p>")
