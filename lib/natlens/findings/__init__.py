"""Journeys + netfilter + inventory -> SNAT ratios, loopback hits, latency and the verdict.

    from natlens.findings import analyze
    a = analyze("data/samples/mixed")
    a = analyze("data/samples/mixed", services=["default/web-local"], start="06:40:02")  # scoped
    a.snat          # one row per (Service VIP:port/proto, source node)
    a.verdict       # headline, root cause, remediation in plain words
    a.summary()     # summary.json, schema natlens.summary/1 (DESIGN.md section 5)
    a.journey_hops("J3")   # every packet of one journey, hop by hop
    a.journeys, a.service_journeys   # every journey / the ones to a load-balancer Service

The SNAT ratio is over journeys whose SNAT status the captures show; "unknown" ones
are left out of it (and the ratio is None when none is known). The rules' prediction
comes from the netfilter model (natlens.netfilter) for a packet from the client pod
to the VIP; "predicted_by_rules" says whether captures and rules agree (None: the
rules could not be evaluated).

summary() is DESIGN.md section 5 (``natlens.summary/1``) with these documented,
additive keys (scripts written against section 5 are unaffected):

  inputs.captures[].connections         connection records natlens made from the capture
  inputs.captures[].not_in_connections  {reason: n}: decoded packets that are in no
                                        connection (icmp, icmpv6, other-protocol,
                                        no-ports); with ``skipped`` every record is
                                        accounted for: records = decoded + sum(skipped),
                                        decoded = packets in connections + sum(not_in_connections)
  inputs.captures[].skipped_bytes       {reason: bytes} in no record: "bad-length" (skipped after a
                                        record with an impossible length, to the next plausible one)
                                        and "cut-short" (the record the file ends in)
  inputs.captures[].anomalies           {name: records} whose container fields the packet table
                                        cannot hold as they are (natlens.capture.schema.ANOMALIES)
  inputs.not_read                       [{"file", "reason"}]: files of the bundle natlens
                                        did not read (bundle-relative paths)
  inputs.quality                        one entry per capture, in the order of inputs.captures:
                                        the time it covers, whether it starts late, ends early or
                                        is cut short, the packets dropped (pcapng statistics,
                                        collect-node.log) or inferred lost (TCP gaps, lost ACKs),
                                        the journeys that affects and its ``limits`` in plain
                                        words (natlens.findings.quality documents each field)
  inputs.uncaptured_nodes               the cluster's nodes (bundle, inventory) no capture covers
  connections.unknown                   journeys whose outcome the captures do not show
  verdict.evidence                      what limits the answer, in plain words, said before the
                                        headline (null when nothing does)
  verdict.problem                       the slow or lossy path that touches the most connections
                                        (natlens.findings.paths.dominant_problem: kind, count, of,
                                        journeys, between, delay_ms_min/max, text), null: none
  problems                              every slow or lossy path found (findings.paths'
                                        PROBLEM_COLUMNS, NaN delays as null)
  rules                                 per (Service, client node) of the SNAT table, what that
                                        node's rules do with the Service's traffic
                                        (natlens.findings.mechanism): proxy_mode (ipvs | iptables |
                                        nftables | none | unknown), ingress (the ingress's ipMode:
                                        VIP | Proxy | unset | hostname | unknown), vip (pod -> VIP: dnat on the
                                        node | policy | none: no kube-proxy rule | unknown),
                                        returning_syn (a looped-back SYN's DNAT: local | any |
                                        none | unknown) and returning_syn_rule, each with its
                                        *_evidence; files (the dumps read); looped_back_to
                                        [{"endpoint", "node", "connections"}] from the captures
  lb_behaviour                          per Service, how its load balancer picks a backend,
                                        measured from the captures (natlens.findings.lb):
                                        behaviour (avoids-source | any-backend | proxy | unknown)
                                        and its evidence, node_source / pod_source / rewritten
                                        counts, chance_if_any_backend, loops {loop mode: n},
                                        failure_mode and its evidence, documented (what the
                                        provider documents: natlens.cloud); the verdict's lb_behaviour
                                        and lb_failure_mode are those of the Service it is about
  snat[].host_network                   "yes": the node itself opened the row's connections
                                        (host-network clients, kept apart from the node's pods),
                                        "no": its pods' (source a pod IP, or forwarded by the
                                        node: the TTL on its NIC), "unknown": the captures and
                                        conntrack cannot tell (source_node "unknown" when the
                                        client's node is)
  snat[].no_snat, snat[].unknown        connections seen leaving without SNAT / whose SNAT is
                                        unknown: connections = snat + no_snat + unknown, and
                                        the ratio is snat / (snat + no_snat)

  scope                                 null without --service/--start/--end; else what every
                                        other key is about (natlens.findings.scope): services
                                        [{"service": "VIP:port/proto", "name": "ns/name" | null}]
                                        (empty: every Service), start / end (ISO 8601 UTC, null:
                                        open), journeys {"in", "out"}: the service journeys in and
                                        out of scope, asked {services, start, end}: the options as
                                        given; describe_scope() says it in one sentence

connections.failed counts the journeys whose outcome is "reset" or "timed out" (so
failed = timeouts + resets); a UDP journey's outcome is "answered" / "unanswered" /
"unknown": it counts in ``total`` but never as failed (UDP needs no answer, and going
idle is not a failure).

Stages (one module each): ``captures`` (read every capture), ``scope`` (the Services and
time window asked for: parsed first, checked against the inventory and the captures' span,
applied to the service journeys before any finding is computed from them), ``quality`` (each
capture as evidence), ``paths`` (slow and lossy paths between capture points),
``snat`` (the SNAT table and the rules' prediction), ``mechanism`` (what the client nodes'
rules do with the Services' traffic), ``wording`` (the verdict's sentences it picks),
``verdict``, ``summary``, ``notes`` (what could not be read or decided), ``hops``
(journey_hops), ``analysis`` (the Analysis object).
Each returns its values and its notes.

Nulls, never NaN: a ratio with no journey of known SNAT status, a latency
percentile with no sample (its count is 0), ``predicted_by_rules`` when the rules
could not be evaluated. With no service journey at all every count is 0, the
lists and ``by_node`` are empty and the verdict says why.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from natlens._grouped import rows_where
from natlens._memory import give_back
from natlens.bundle import Bundle, capture_drops, load_bundle, require_captures
from natlens.findings.analysis import LATENCY_COLUMNS, Analysis
from natlens.findings.captures import CaptureSet, read_captures
from natlens.findings.failures import FAILURE_COLUMNS, Context, explain_failures
from natlens.findings.lb import lb_findings
from natlens.findings.lb_words import with_documented
from natlens.findings.mechanism import mechanisms, node_rules
from natlens.findings.notes import missing_evidence, no_client_record, undecided_notes, unread_files
from natlens.findings.paths import dominant_problem, path_problems
from natlens.findings.quality import capture_quality, uncaptured_nodes
from natlens.findings.scope import (
    apply_scope,
    capture_span,
    known_services,
    parse_scope,
)
from natlens.findings.snat import SNAT_COLUMNS, snat_table
from natlens.findings.verdict import make_verdict, no_journeys_verdict, service_names
from natlens.inventory import Inventory, build_inventory
from natlens.journeys import JOURNEY_COLUMNS, RECORD_COLUMNS, build_journeys
from natlens.journeys.clocks import ClockChain, clock_chain
from natlens.journeys.evidence import lossy_captures
from natlens.journeys.ingress import match_hostname_ingress
from natlens.netfilter.conntrack import parse_conntrack
from natlens.vocab import YES

__all__ = ["FAILURE_COLUMNS", "LATENCY_COLUMNS", "SNAT_COLUMNS", "Analysis", "analyze"]


def analyze(incident_dir: str | Path, progress: bool | str | Path = False, *, services: Sequence[str] = (),
            start: str | float | None = None, end: str | float | None = None,
            jobs: int | None = 1, scheduler: str | None = None) -> Analysis:
    """Read an incident bundle and find SNAT ratios, loopback hits, latencies and the verdict.

    `services`, `start`, `end` scope every finding (findings.scope's forms; NatlensError for a
    Service the incident does not have, a bad time, a reversed window or one outside the
    captures); the options are checked before the captures are read where they can be.
    `jobs`: processes reading captures at once (None: one per core for big captures,
    natlens.parallel.worker_count; the CLI's default); the result does not depend on it. A
    script that passes jobs > 1 must call analyze under ``if __name__ == "__main__":`` (worker
    processes import the script's main module, as Python's multiprocessing does).
    `progress`: a bar per capture on stderr (a path: written there, for natlens.parallel.bars_from
    to draw in another process). `scheduler`: read the captures on the Dask cluster at this address instead (natlens.cluster:
    the bundle on storage every worker sees at the same path); the result is the same."""
    request = parse_scope(services, start, end)
    bundle = load_bundle(incident_dir)
    inventory = build_inventory(bundle)
    require_captures(bundle)
    caps = read_captures(bundle, progress=progress, jobs=jobs, scheduler=scheduler)
    inventory = match_hostname_ingress(caps.connections, inventory)
    logs = {n.name: capture_drops(n) for n in bundle.nodes}  # collect-node.log: tcpdump's drops
    dropped = _dropped(caps, logs)
    journeys, records, clocks = _journeys(caps, inventory, bundle, dropped)
    give_back()  # what building the journeys held
    offsets, clock_notes = clocks.offsets, clocks.notes
    service, scope_notes = _service_journeys(journeys, inventory)
    scope = (None if request.empty else
             request.resolve(known_services(inventory, service), capture_span(caps.inputs)))
    service, scope = apply_scope(service, scope)
    snat, snat_notes = (snat_table(service, bundle) if not service.empty
                        else (pd.DataFrame(columns=SNAT_COLUMNS), []))
    quality = capture_quality(caps.inputs, logs, service, records, offsets)
    lossy = frozenset(lossy_captures(records, dropped, by="journey")) if len(records) else frozenset()
    problems = path_problems(service, records, offsets, known_clocks=clocks.measured, lossy=set(lossy))
    warnings = caps.warnings + missing_evidence(bundle, logs)
    inferred = (list(inventory.inferred) + unread_files(bundle) + clock_notes + problems.attrs["notes"]
                + scope_notes + no_client_record(journeys, service) + undecided_notes(service) + warnings
                + snat_notes)
    uncaptured = uncaptured_nodes(bundle, inventory.nodes["name"].tolist())
    mechs = mechanisms(service, records, bundle, inventory) if not service.empty else []
    journeys, service = _with_failures(journeys, service, records, inventory, bundle, lossy)
    lbs = with_documented(lb_findings(service, records, inventory), inventory, service_names(inventory))
    verdict = (make_verdict(service, snat, service_names(inventory), quality,
                            dominant_problem(problems, service), uncaptured, mechs, lbs, inventory) if not service.empty
               else no_journeys_verdict(caps.inputs, caps.connections, inventory.vips()))
    return Analysis(incident=bundle.path.resolve().name, inputs=caps.inputs, inferred=inferred,
                    inventory=inventory, connections=caps.connections, journeys=journeys,
                    service_journeys=service, snat=snat,
                    loopback=service[service["loopback"] == YES],
                    latency=service[LATENCY_COLUMNS].reset_index(drop=True), verdict=verdict,
                    offsets=offsets, records=records, bundle=bundle, warnings=warnings + snat_notes,
                    quality=quality, problems=problems, uncaptured=uncaptured, mechanisms=mechs, lb=lbs,
                    scope=scope, _hops=caps.hops)


def _journeys(caps: CaptureSet, inventory: Inventory, bundle: Bundle, dropped: set[str]
              ) -> tuple[pd.DataFrame, pd.DataFrame, ClockChain]:
    """(journeys, records, the nodes' clocks) from the connection records."""
    if caps.connections.empty:
        return (pd.DataFrame(columns=JOURNEY_COLUMNS), pd.DataFrame(columns=RECORD_COLUMNS),
                ClockChain({}, [], frozenset()))
    clocks = clock_chain(caps.connections)
    journeys, records, _ = build_journeys(caps.connections, inventory, caps.ifnames, offsets=clocks.offsets,
                                          conntrack=_conntrack_tables(bundle), dropped=dropped,
                                          spans=_capture_spans(caps))
    return journeys, records, clocks


def _capture_spans(caps: CaptureSet) -> dict[str, tuple[float, float]]:
    """Each capture's first and last packet time, by label (those with a packet)."""
    return {c["label"]: (c["first_ts"], c["last_ts"]) for c in caps.inputs
            if pd.notna(c.get("first_ts")) and pd.notna(c.get("last_ts"))}


def _with_failures(journeys: pd.DataFrame, service: pd.DataFrame, records: pd.DataFrame, inventory: Inventory,
                   bundle: Bundle, lossy: frozenset[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both journey tables with why each failed one failed and where (findings.failures)."""
    rules_of = functools.cache(lambda node: node_rules(bundle, node)[0])
    journeys = pd.concat([journeys, explain_failures(journeys, records, Context(inventory, rules_of, lossy))],
                         axis=1)
    return journeys, journeys if journeys.index.equals(service.index) else journeys.loc[service.index]


def _service_journeys(journeys: pd.DataFrame, inventory: Inventory) -> tuple[pd.DataFrame, list[str]]:
    """The journeys to a load-balancer Service; every TCP journey when no VIP is known (said so)."""
    vips = inventory.vips()
    if vips:
        keep = pd.Series([(v, int(p) if not pd.isna(p) else -1, pr) in vips for v, p, pr in
                          zip(journeys["vip"], journeys["vport"], journeys["proto"], strict=True)],
                         index=journeys.index, dtype=bool)
        return rows_where(journeys, keep), []
    note = ("no load-balancer VIP known (no LoadBalancer ingress IP in cluster/services.json, none in "
            "the kube-proxy ipsets): every TCP connection counts as a service connection")
    return rows_where(journeys, journeys["proto"] == "tcp"), [note]


def _dropped(caps: CaptureSet, logs: dict[str, dict[str, int]]) -> set[str]:
    """The captures whose host said it dropped packets (pcapng statistics, collect-node.log)."""
    return {c["label"] for c in caps.inputs
            if c.get("dropped") or logs.get(c["node"], {}).get(c["label"].split("/")[-1])}


def _conntrack_tables(bundle: Bundle) -> dict[str, tuple[str, list]]:
    """Each node's conntrack dump (file name relative to the bundle, entries)."""
    return {node.name: (bundle.display_path(node, node.conntrack),
                        parse_conntrack(node.conntrack.read_text(encoding="utf-8", errors="replace")))
            for node in bundle.nodes if node.conntrack is not None}
