"""`natlens analyze INCIDENT_DIR [--json] [--service S] [--start T] [--end T] [--out DIR]
[--anonymize [--key-file F]]`: the findings as readable tables, or summary.json; --out also
writes them as files."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from natlens.cli.cluster import add_cluster, scheduler_of
from natlens.cli.progress import capture_files, worth_a_bar
from natlens.cli.report import add_scope
from natlens.parallel import start_early

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd
# pandas is loaded where it is used: building the parser must not load it, so that run() starts
# the worker processes (parallel.start_early) before this process loads the analysis


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="SNAT ratios, load-balancer loopbacks, latency and the verdict of one incident",
        description="Read an incident bundle (nodes/<node>/*.pcap, dumps, cluster/*.json) and "
                    "print what happened to the client connections.",
    )
    p.add_argument("incident", metavar="INCIDENT_DIR", help="incident bundle directory")
    p.add_argument("--json", action="store_true", help="print summary.json (natlens.summary/1)")
    p.add_argument("--journeys", action="store_true", help="also list every journey")
    p.add_argument("--out", metavar="DIR", help="also write into DIR summary.json; the connections, "
                   "journeys, service_journeys, snat, latency and problems tables as Parquet; and the "
                   "connections as a Zeek conn.log (default: write nothing)")
    p.add_argument("--anonymize", action="store_true",
                   help="map every identifier in what is printed and written: IP addresses with "
                   "Crypto-PAn; node, pod, namespace, Service and incident names, paths and MAC "
                   "addresses with keyed pseudonyms; payload-derived columns dropped")
    p.add_argument("--key-file", metavar="FILE",
                   help="with --anonymize: the key (32 bytes or 64 hex chars), for the same mapping "
                   "across incidents and reports; default: a random key per run")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (default: one on a terminal when the captures hold 32 MiB or more)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="read the captures in N processes at once (default: one per core when they hold "
                   "64 MiB or more, else 1); each process holds one capture's packets")
    add_scope(p, "the analysis")
    add_cluster(p)
    p.set_defaults(func=run)


def _table(df: pd.DataFrame) -> str:
    """`df` indented, without its index; a missing value (NaN, None, <NA>) reads "unknown",
    never NaN: a reader takes NaN for a bug, and the value is one the captures do not show."""
    if df.empty:
        return "  (none)"
    shown = df.astype(object).where(df.notna(), "unknown")
    return "\n".join("  " + line for line in shown.to_string(index=False).splitlines())


def render(a) -> str:
    """The findings of an Analysis as plain-text tables."""
    import pandas as pd  # noqa: PLC0415

    from natlens.findings.scope import describe_scope  # noqa: PLC0415 (natlens ingest does not load the analysis)

    s = a.summary()
    out = [f"incident: {s['incident']}"]
    said = describe_scope(s.get("scope"), "analysis")
    if said:
        out.append(f"scope: {said}")
    out += ["", "inputs:"]
    caps = pd.DataFrame([{"node": c["node"], "file": c["file"], "records": c["records"],
                          "decoded": c["decoded"],
                          "skipped": ", ".join(f"{k} {v}" for k, v in c["skipped"].items()) or "-"}
                         for c in s["inputs"]["captures"]])
    out.append(_table(caps))
    limits = [x for q in s["inputs"]["quality"] for x in q["limits"]]
    if limits:
        out.append("capture quality:")
        out += [f"  - {x}" for x in limits]
    if s["inputs"]["inferred"]:
        out.append("inferred / notes:")
        out += [f"  - {x}" for x in s["inputs"]["inferred"]]
    c = s["connections"]
    out += ["", f"connections: {c['total']} total, {c['failed']} failed "
                f"({c['timeouts']} timed out, {c['resets']} reset), {c['unknown']} outcome unknown", "",
            "SNAT per service and source node:"]
    snat = a.snat.drop(columns=["rule_trace"]).copy()
    snat["ratio"] = snat["ratio"].map(lambda v: "unknown" if v is None or pd.isna(v) else f"{v:.2f}")
    snat["predicted_by_rules"] = snat["predicted_by_rules"].map(
        lambda v: "unknown" if v is None or pd.isna(v) else ("agree" if v else "DISAGREE"))
    snat = snat.rename(columns={"predicted_by_rules": "rules"})
    out.append(_table(snat))
    lb = s["loopback"]
    out += ["", f"loopback: {lb['hits']} hits, {lb['failed']} failed"
                + (" (" + ", ".join(f"{k}: {v}" for k, v in lb["by_node"].items()) + ")" if lb["by_node"] else "")]
    if len(a.loopback):
        out.append(_table(a.loopback[["journey", "client_node", "client_h", "client_p", "service",
                                      "lb_backend", "outcome"]].head(20)))
        if len(a.loopback) > 20:
            out.append(f"  ... {len(a.loopback) - 20} more")
    out += _failures(s, a.service_journeys)
    out += _lb(s)
    out += ["", "latency (ms):"]
    lat = pd.DataFrame([{"metric": k, **v} for k, v in s["latency_ms"].items()])
    out.append(_table(lat))
    if not a.latency.empty:
        by_path = a.latency.groupby("path")[["handshake_ms", "connect_ms", "first_byte_ms"]].median()
        out += ["median by path (ms):", _table(by_path.reset_index().round(3))]
    v = s["verdict"]
    if v["evidence"]:
        out += ["", "what the evidence cannot show: " + v["evidence"]]
    out += ["", "verdict: " + v["headline"], "", "root cause: " + v["root_cause"]]
    if v["remediation"]:
        out.append("remediation:")
        out += [f"  {i}. {r}" for i, r in enumerate(v["remediation"], 1)]
    return "\n".join(out)


def _lb(s: dict) -> list[str]:
    """How each Service's load balancer picked backends (findings.lb), with its evidence."""
    out = []
    for x in s.get("lb_behaviour") or []:
        ended = ", ".join(f"{m} {n}" for m, n in x["loops"].items())
        out.append(f"  {x['service']}: {x['behaviour']}" + (f" (loopbacks: {ended})" if ended else "")
                   + f": {x['evidence']}")
    return ["", "load balancer:", *out] if out else []


def _failures(s: dict, journeys: pd.DataFrame) -> list[str]:
    """Why each failed connection failed: the count per mechanism, and where each one died."""
    f = s.get("failures") or {}
    if not f.get("failed"):
        return []
    out = ["", f"failures: {f['failed']} (" + ", ".join(f"{m} {n}" for m, n in f["by_mechanism"].items())
           + f"), {f['unexplained']} unexplained"]
    failed = journeys[journeys["failure"].notna()] if "failure" in journeys else journeys.iloc[0:0]
    out.append(_table(failed[["journey", "service", "outcome", "failure", "failure_at"]].head(20)))
    if len(failed) > 20:
        out.append(f"  ... {len(failed) - 20} more (--journeys lists every journey)")
    return out


def _key(args: argparse.Namespace) -> bytes | None:
    """The anonymization key of --anonymize [--key-file], None without --anonymize.
    NatlensError (exit 2) for an unreadable key, or --key-file without --anonymize (the
    output would not be anonymized, which the user did not ask for)."""
    from natlens.errors import NatlensError  # noqa: PLC0415

    if not args.anonymize:
        if args.key_file:
            raise NatlensError("--key-file only applies with --anonymize")
        return None
    # only now: natlens.report.run imports nbformat, whose jsonschema takes seconds to load
    from natlens.report.anonymize import load_key, new_key  # noqa: PLC0415
    from natlens.report.run import check_key_file  # noqa: PLC0415

    if args.key_file is None:
        return new_key()
    check_key_file(args.key_file)
    return load_key(args.key_file)


def worker_module(files: list[Path]) -> str:
    """What the worker processes run for these captures, loaded before they start: one capture's
    spans and parts (natlens.connections.spanned: the capture and connections layers), or whole
    captures (natlens.findings.captures, which loads the analysis too: ~0.3 s more)."""
    return "natlens.connections.spanned" if len(files) == 1 else "natlens.findings.captures"


def run(args: argparse.Namespace) -> int:
    """Analyze, anonymize the Analysis when asked, then print and write what was asked."""
    from natlens.errors import NatlensError  # noqa: PLC0415

    if args.jobs is not None and (args.scheduler or args.workers is not None):
        raise NatlensError("--jobs is for processes on this machine: on a Dask cluster its workers read the captures")
    if not args.scheduler and args.workers is None:
        files = capture_files(args.incident)
        start_early(files, args.jobs, [worker_module(files)])
    from natlens.findings import analyze  # noqa: PLC0415

    key = _key(args)
    with scheduler_of(args) as scheduler:
        a = analyze(args.incident, progress=not args.no_progress and worth_a_bar(args.incident),
                    services=args.service, start=args.start or None, end=args.end or None, jobs=args.jobs,
                    scheduler=scheduler)
        _show(args, a, key)
    return 0


def _show(args: argparse.Namespace, a, key: bytes | None) -> None:
    """Anonymize the Analysis when asked, then print and write what was asked (the hop packets
    a cluster kept are read while it is there)."""
    if key is not None:
        from natlens.report.anonymize import anonymized_analysis, bundle_anonymizer  # noqa: PLC0415

        paths = [args.out] if args.out else []
        a = anonymized_analysis(a, bundle_anonymizer(key, args.incident, bundle=a.bundle,
                                                     inventory=a.inventory, paths=paths))
    for warning in a.warnings:
        print(f"natlens: warning: {warning}", file=sys.stderr)
    if args.out:
        for path in a.write(args.out):
            print(f"natlens: wrote {path}", file=sys.stderr)
    if args.json:
        json.dump(a.summary(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    print(render(a))
    if args.journeys:
        cols = ["journey", "client_node", "client_p", "service", "host_network", "snat", "lb_backend",
                "loopback", "outcome", "connect_ms", "hops", "latency_from"]
        print("\njourneys:" if a.scope is None else "\njourneys in scope:")
        print(_table((a.journeys if a.scope is None else a.service_journeys)[cols]))
