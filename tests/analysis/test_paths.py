"""Slow and lossy paths (natlens.findings.paths): each rule on hand-built journeys and
records, then on the lab's samples against their ground truth."""

from __future__ import annotations

import json
import types

import numpy as np
import pandas as pd
import pytest
from analysis_helpers import samples_dir

from natlens.findings import analyze
from natlens.findings import paths as P
from natlens.journeys import RECORD_COLUMNS

T0 = 1_800_000_000.0
CLIENT = ("10.0.1.5", 40000, "10.9.9.9", 80)  # pod -> VIP
WIRE = ("10.0.0.1", 40000, "10.0.0.2", 30080)  # node-1 -> node-2's NodePort (after the LB)
BACKEND = ("10.0.0.2", 50000, "10.0.2.7", 8080)  # node-2 -> the endpoint pod


def rec(journey, node, capture, point, times, *, leg=CLIENT, iface=0, syns=1, end=None):
    """One connection record: `times` (s after T0) of syn, synack, ack, first response byte
    (None: not seen here)."""
    syn, synack, ack, data = (None if t is None else T0 + t for t in times)
    start = syn if syn is not None else min(t for t in (synack, ack, data) if t is not None)
    r = dict.fromkeys(RECORD_COLUMNS)
    r.update(journey=journey, node=node, capture=capture, point=point, iface=iface,
             orig_h=leg[0], orig_p=leg[1], resp_h=leg[2], resp_p=leg[3], proto="tcp",
             ts=start, ts_corr=start, last_ts=T0 + (end if end is not None else 30.0),
             syn_ts=syn, synack_ts=synack, ack_ts=ack,
             client_isn=1_000_003 * sum(map(ord, journey)),  # one ISN per journey, as NAT keeps it
             first_byte=None if data is None else data - start,
             syn_retransmits=syns - 1 if syn is not None else 0)
    return r


def path(journey, *, synack_veth2=0.0, syn_eth2=0.0, ack_veth2=0.0, data_eth2=0.0, wan=8e-5,
         base=0.0):
    """A journey client veth (node-1) -> node-1/eth0 -> node-2/eth0 -> endpoint veth (node-2),
    every point seeing the SYN, SYN-ACK, ACK and first data. `wan`: node-1/eth0 <-> node-2/eth0
    each way (s); the other keywords hold one packet between two points: the SYN-ACK between
    the endpoint's veth and node-2/eth0, the SYN from node-1/eth0 to node-2/eth0, the ACK
    from node-2/eth0 to the endpoint's veth, the first data from node-2/eth0 to node-1/eth0."""
    hop = 1e-5
    syn = [base, base + hop]
    syn += [syn[1] + wan + syn_eth2, syn[1] + wan + syn_eth2 + hop]
    a3 = syn[3] + hop
    a2 = a3 + hop + synack_veth2
    synack = [a2 + wan + 2 * hop, a2 + wan + hop, a2, a3]
    c0 = synack[0] + hop
    ack = [c0, c0 + hop, c0 + hop + wan, c0 + 2 * hop + wan + ack_veth2]
    d3 = ack[3] + 1e-3
    d1 = d3 + hop + wan + data_eth2
    data = [d1 + hop, d1, d3 + hop, d3]
    points = [("node-1", "node-1/any", None, 6, CLIENT), ("node-1", "node-1/eth0", "eth0", 0, WIRE),
              ("node-2", "node-2/eth0", "eth0", 0, WIRE), ("node-2", "node-2/any", "vethB", 9, BACKEND)]
    return [rec(journey, node, cap, point, (syn[i], synack[i], ack[i], data[i]), leg=leg, iface=iface)
            for i, (node, cap, point, iface, leg) in enumerate(points)]


def journeys_of(records, **cols):
    """The journeys table of `records` (the columns the rules read)."""
    ids = list(dict.fromkeys(r["journey"] for r in records))
    df = pd.DataFrame({"journey": ids, "proto": "tcp", "service": "10.9.9.9:80/tcp",
                       "loopback": "no", "connect_ms": 0.3, "syn_retransmits": 0})
    for col, values in cols.items():
        for jid, v in values.items():
            df.loc[df["journey"] == jid, col] = v
    return df


def table(records, **cols):
    r = pd.DataFrame(records, columns=RECORD_COLUMNS)
    return journeys_of(records, **cols), r


def run(records, offsets=None, **cols):
    j, r = table(records, **cols)
    return P.path_problems(j, r, offsets or {"node-1": 0.0, "node-2": 0.0})


def kinds(problems):
    return sorted(problems["kind"])


# --- capture points -------------------------------------------------------------------


def test_point_labels_name_the_interface_and_merge_one_interface_of_two_captures():
    r = pd.DataFrame([rec("J0", "node-2", "node-2/any", "eth0", (0, None, None, None), iface=2),
                      rec("J0", "node-2", "node-2/eth0", "eth0", (0, None, None, None)),
                      rec("J0", "node-2", "node-2/any", "cni0", (0, None, None, None), iface=3),
                      rec("J0", "node-2", "node-2/any", None, (0, None, None, None), iface=5)],
                     columns=RECORD_COLUMNS)
    p = P.point_labels(r)
    assert list(p["label"]) == ["node-2/any (eth0)", "node-2/eth0", "node-2/any (cni0)",
                                "node-2/any (ifindex 5)"]
    assert p["key"][0] == p["key"][1] != p["key"][2]  # any's eth0 and eth0.pcap: one point
    assert list(p["own"]) == [False, True, False, False]


def test_a_packet_one_capture_of_an_interface_missed_is_neither_lost_nor_delayed():
    recs = [r for j in ("J0", "J1", "J2") for r in path(j)]
    late = rec("J0", "node-2", "node-2/any", "eth0", (1e-4, 0.9, 0.9, None), leg=WIRE, iface=2)
    p = run(recs + [late])  # node-2/eth0.pcap saw J0's SYN-ACK at once; node-2/any 900 ms later
    assert p.empty


# --- delayed ---------------------------------------------------------------------------


def test_synack_delayed_between_the_endpoint_veth_and_eth0_names_the_journeys_and_points():
    recs = (path("J0", synack_veth2=0.6) + path("J1", synack_veth2=0.75) + path("J2") + path("J3"))
    p = run(recs)
    assert kinds(p) == ["synack-delayed"]
    row = p.iloc[0]
    assert row["journeys"] == ["J0", "J1"] and row["count"] == 2 and row["of"] == 4
    assert (row["from_point"], row["to_point"]) == ("node-2/any (vethB)", "node-2/eth0")
    assert row["between"] == "node-2/any (vethB) -> node-2/eth0"
    assert row["delay_ms_min"] == pytest.approx(600, abs=0.5)
    assert row["delay_ms_max"] == pytest.approx(750, abs=0.5)
    assert row["text"] == ("2 of 4 connections: the SYN-ACK took 600-750 ms from "
                           "node-2/any (vethB) to node-2/eth0")
    assert row["note"] == ""  # one node: one clock


def test_most_journeys_delayed_are_still_delayed_the_other_direction_is_the_baseline():
    # 3 of 4 delayed: the median of the SYN-ACK step is itself 600 ms; the SYN's way keeps
    # the link's usual transit at microseconds
    recs = path("J0", synack_veth2=0.6) + path("J1", synack_veth2=0.6) + path("J2", synack_veth2=0.6)
    p = run(recs + path("J3"))
    assert p.iloc[0]["journeys"] == ["J0", "J1", "J2"]


def test_a_links_baseline_is_its_lower_quartile_robust_to_most_steps_being_delayed():
    st = pd.DataFrame({"link": [7] * 10, "dt": [1e-4] * 4 + [0.6] * 6})
    assert P.link_baselines(st)[7] == pytest.approx(1e-4)  # a median would say 600 ms
    st = pd.DataFrame({"link": [7, 7, 7, 7], "dt": [-0.2, 0.03, 0.04, 0.05]})
    assert P.link_baselines(st)[7] == 0.0  # a capture that missed a copy: counted as 0


def test_steps_below_100_ms_are_not_delays():
    p = run(path("J0", synack_veth2=0.09) + path("J1"))
    assert p.empty


def test_a_step_within_ten_times_the_links_usual_transit_is_not_a_delay():
    # node-1/eth0 <-> node-2/eth0 usually takes 40 ms (a WAN): 200 ms more is no delay, 450 is
    recs = [r for j in ("J0", "J1", "J2", "J3", "J4") for r in path(j, wan=0.04)]
    assert run(recs).empty
    assert run(recs + path("J5", wan=0.04, syn_eth2=0.2)).empty
    p = run(recs + path("J6", wan=0.04, syn_eth2=0.45))
    assert kinds(p) == ["syn-delayed"] and p.iloc[0]["journeys"] == ["J6"]
    assert (p.iloc[0]["from_point"], p.iloc[0]["to_point"]) == ("node-1/eth0", "node-2/eth0")
    assert "compared through their measured clock offset" in p.iloc[0]["note"]


def test_ack_and_data_delays_are_their_own_kinds_in_their_direction():
    p = run(path("J0", ack_veth2=0.3) + path("J1", data_eth2=0.25) + path("J2"))
    rows = {r.kind: r for r in p.itertuples()}
    assert set(rows) == {"ack-delayed", "data-delayed"}
    assert rows["ack-delayed"].journeys == ["J0"]
    assert (rows["ack-delayed"].from_point, rows["ack-delayed"].to_point) == (
        "node-2/eth0", "node-2/any (vethB)")
    assert rows["data-delayed"].journeys == ["J1"]
    assert (rows["data-delayed"].from_point, rows["data-delayed"].to_point) == (
        "node-2/eth0", "node-1/eth0")


def test_a_delay_into_a_capture_that_missed_the_first_copy_says_so():
    recs = path("J0", ack_veth2=0.3) + path("J1") + path("J2")
    # node-2's any capture also saw J0's ACK on eth0 300 ms after eth0.pcap did: it misses packets
    recs.append(rec("J0", "node-2", "node-2/any", "eth0", (1e-4, 2e-4, 0.3, None), leg=WIRE, iface=2))
    p = run(recs)
    assert kinds(p) == ["ack-delayed"]
    assert "node-2/any missed earlier copies" in p.iloc[0]["note"]


# --- clocks ----------------------------------------------------------------------------


def _three_nodes(skew):
    """J0..J2 node-1 -> node-2 (SYN and SYN-ACK on both: measured), and each SYN also
    mirrored to node-3, which sees no SYN-ACK (its clock cannot be measured), `skew` s late."""
    recs = [r for j in ("J0", "J1", "J2") for r in path(j)]
    for j in ("J0", "J1", "J2"):
        recs.append(rec(j, "node-3", "node-3/eth0", "eth0", (skew + 5e-5, None, None, None), leg=WIRE))
    return recs


def test_clock_domains_measured_nodes_share_the_reference_others_keep_their_own():
    r = pd.DataFrame(_three_nodes(5.0), columns=RECORD_COLUMNS)
    assert P.clock_domains(r, {"node-1": 0.0, "node-2": 0.0, "node-3": 0.0}) == {
        "node-1": "reference", "node-2": "reference", "node-3": "node-3"}
    assert P.clock_domains(r, {"node-1": 0.0, "node-2": 0.0, "node-3": 0.0},
                           known_clocks={"node-1", "node-2", "node-3"})["node-3"] == "reference"


def test_steps_to_a_node_whose_clock_is_unknown_are_not_timed_and_the_notes_say_so():
    recs = _three_nodes(5.0)  # 5 s on node-3's clock: skew, not delay
    offsets = {"node-1": 0.0, "node-2": 0.0, "node-3": 0.0}
    j, r = table(recs)
    p = P.path_problems(j, r, offsets)
    assert p.empty
    assert p.attrs["notes"] and "node-3" in p.attrs["notes"][0]
    for known, timed in ((None, False), ({"node-1", "node-2", "node-3"}, True)):
        st = P.steps(P.observations(P.sightings(r, offsets, P.clock_domains(r, offsets, known))))
        crossing = st[(st["to_node"] == "node-3") | (st["from_node"] == "node-3")]
        assert (len(crossing) == 3) is timed and (crossing.empty) is not timed
    p = P.path_problems(j, r, offsets, known_clocks={"node-1", "node-2", "node-3"})
    assert p.attrs["notes"] == []


# --- lost ------------------------------------------------------------------------------


def test_first_syns_lost_between_two_points_are_syn_lost_not_syn_delayed():
    recs = [r for j in ("J0", "J1") for r in path(j)]
    lossy = path("J2", base=2.0)  # node-2's captures ran then: they saw J0 and J1
    for r in lossy[:2]:  # the client's veth and node-1/eth0 saw 2 SYNs ...
        r["syn_retransmits"] = 1
    for r in lossy[2:]:  # ... node-2 only the second, 1 s later
        r["syn_ts"] += 1.0
        r["ts"] = r["syn_ts"]
    p = run(recs + lossy, syn_retransmits={"J2": 1}, connect_ms={"J2": 1000.4})
    rows = {r.kind: r for r in p.itertuples()}
    assert set(rows) == {"syn-lost", "syn-retransmit", "connect-mode"}
    lost = rows["syn-lost"]
    assert lost.journeys == ["J2"] and lost.between == "node-1/eth0 -> node-2/eth0"
    assert lost.delay_ms_min == pytest.approx(1000, abs=0.5)
    assert "never reached node-2/eth0; a retransmission did" in lost.text
    assert rows["syn-retransmit"].between == "node-1/eth0 -> node-2/eth0"
    assert rows["connect-mode"].between == "node-1/eth0 -> node-2/eth0"


def test_fewer_syns_at_a_capture_that_started_late_are_not_a_loss():
    recs = [r for j in ("J0", "J1") for r in path(j, base=2.0)]
    lossy = path("J2")  # node-2's captures begin after J2's first SYN (with its second)
    for r in lossy[:2]:
        r["syn_retransmits"] = 1
    for r in lossy[2:]:
        r["syn_ts"] += 1.0
        r["ts"] = r["syn_ts"]
    p = run(recs + lossy, syn_retransmits={"J2": 1})
    assert "syn-lost" not in set(p["kind"])


def _unanswered(j, end=30.0):
    """J's SYN seen leaving the client's veth and node-1/eth0, and nowhere after."""
    return [rec(j, "node-1", "node-1/any", None, (5.0, None, None, None), iface=6, syns=3, end=end),
            rec(j, "node-1", "node-1/eth0", "eth0", (5.0001, None, None, None), leg=WIRE, syns=3, end=end)]


def test_a_syn_answered_nowhere_is_lost_before_the_point_every_other_syn_went_on_to():
    recs = [r for j in ("J0", "J1") for r in path(j)] + _unanswered("J2")
    p = run(recs, syn_retransmits={"J2": 2})
    lost = p[p["kind"] == "syn-lost"].iloc[0]
    assert lost["journeys"] == ["J2"] and lost["between"] == "node-1/eth0 -> node-2/eth0"
    assert np.isnan(lost["delay_ms_min"]) and "no answer anywhere" in lost["text"]


def test_no_syn_lost_when_the_next_capture_did_not_run_or_the_next_point_is_not_one():
    before = [r for j in ("J0", "J1") for r in path(j, base=0.0)]
    for r in before:  # node-2's captures stopped at 1 s: J2's SYN at 5 s could not be seen
        r["last_ts"] = T0 + 1.0
    p = run(before + _unanswered("J2"), syn_retransmits={"J2": 2})
    assert "syn-lost" not in set(p["kind"])
    other = path("J3")  # a journey whose SYN went from node-1/eth0 to node-3 instead
    for r in other[2:]:
        r["node"], r["capture"] = "node-3", r["capture"].replace("node-2", "node-3")
    recs = [r for j in ("J0", "J1") for r in path(j)] + other + _unanswered("J2")
    p = run(recs, {"node-1": 0.0, "node-2": 0.0, "node-3": 0.0}, syn_retransmits={"J2": 2})
    assert "syn-lost" not in set(p["kind"])


def test_a_synack_that_never_reaches_the_next_point_towards_the_client_is_lost():
    recs = [r for j in ("J0", "J1") for r in path(j)]
    lossy = path("J2")
    for r in lossy[:2]:  # node-1 never saw J2's SYN-ACK (nor anything after it)
        r["synack_ts"] = r["ack_ts"] = r["first_byte"] = None
    for r in lossy[2:]:
        r["ack_ts"] = r["first_byte"] = None
    p = run(recs + lossy)
    row = p[p["kind"] == "synack-lost"].iloc[0]
    assert row["journeys"] == ["J2"] and row["between"] == "node-2/eth0 -> node-1/eth0"
    assert row["text"] == "1 of 3 connections: the SYN-ACK seen at node-2/eth0 never reached node-1/eth0"


def test_no_synack_lost_when_the_client_side_capture_had_stopped():
    recs = [r for j in ("J0", "J1") for r in path(j)]
    lossy = path("J2", base=2.0)
    for r in lossy[:2]:
        r["synack_ts"] = r["ack_ts"] = r["first_byte"] = None
    for r in lossy[2:]:
        r["ack_ts"] = r["first_byte"] = None
    for r in recs + lossy:  # node-1's captures end 0.5 s after J2's SYN-ACK left node-2
        if r["node"] == "node-1":
            r["last_ts"] = T0 + 2.5
    assert "synack-lost" not in set(run(recs + lossy)["kind"])


def test_a_synack_seen_under_other_addresses_at_the_same_point_is_not_lost():
    # a bridge shows the SYN under the masquerade address and the SYN-ACK under the client's
    recs = [r for j in ("J0", "J1") for r in path(j)]
    j2 = path("J2", synack_veth2=0.5)
    veth = j2[3]
    synack_only = rec("J2", "node-2", "node-2/any", "vethB", (None, veth["synack_ts"] - T0, None, None),
                      leg=("10.0.0.1", 40000, "10.0.2.7", 8080), iface=9)
    veth["synack_ts"] = None
    p = run(recs + j2 + [synack_only])
    assert kinds(p) == ["synack-delayed"]
    assert p.iloc[0]["from_point"] == "node-2/any (vethB)" and p.iloc[0]["journeys"] == ["J2"]


# --- symptoms: retransmissions and connect-time modes -----------------------------------


def test_syn_retransmissions_count_the_journeys_and_say_how_many_are_loopbacks():
    recs = [r for j in ("J0", "J1", "J2") for r in path(j)]
    p = run(recs, syn_retransmits={"J0": 1, "J1": 2}, loopback={"J1": "yes"})
    row = p[p["kind"] == "syn-retransmit"].iloc[0]
    assert row["journeys"] == ["J0", "J1"] and row["between"] is None
    assert row["text"] == ("2 of 3 connections: the client sent its SYN again (1-2 times each); "
                           "1 of them load-balancer loopbacks, whose SYN-ACK the client resets")


def test_connect_modes_sit_within_ten_percent_of_the_syn_retransmission_times():
    recs = [r for j in ("J0", "J1", "J2", "J3", "J4") for r in path(j)]
    p = run(recs, connect_ms={"J0": 1003.0, "J1": 1090.0, "J2": 3050.0, "J3": 1250.0, "J4": 0.3})
    modes = p[p["kind"] == "connect-mode"].sort_values("delay_ms_min")
    assert [r for r in modes["journeys"]] == [["J0", "J1"], ["J2"]]
    assert "1 s is when Linux has sent its SYN 2 times (1 SYN or SYN-ACK lost" in modes.iloc[0]["text"]
    assert "3 s is when Linux has sent its SYN 3 times (2 SYNs or SYN-ACKs" in modes.iloc[1]["text"]
    assert P.MODES_S == (1.0, 3.0, 7.0, 15.0, 31.0, 63.0)


# --- the table and the dominant problem -------------------------------------------------


def test_no_journey_or_no_problem_is_an_empty_table_with_the_columns():
    empty = P.path_problems(pd.DataFrame(columns=["journey", "proto"]),
                            pd.DataFrame(columns=RECORD_COLUMNS), {})
    assert list(empty.columns) == P.PROBLEM_COLUMNS and empty.empty
    assert list(run(path("J0") + path("J1")).columns) == P.PROBLEM_COLUMNS
    assert P.dominant_problem(empty, pd.DataFrame(columns=["journey", "loopback"])) is None


def test_dominant_problem_most_journeys_loopbacks_not_counted_ties_to_located_kinds():
    recs = (path("J0", synack_veth2=0.6) + path("J1", synack_veth2=0.6) + path("J2")
            + path("J3"))
    j, r = table(recs, syn_retransmits={"J2": 1, "J3": 1, "J1": 1}, loopback={"J2": "yes", "J3": "yes"})
    p = P.path_problems(j, r, {"node-1": 0.0, "node-2": 0.0})
    assert p.iloc[0]["kind"] == "syn-retransmit"  # 3 journeys ...
    d = P.dominant_problem(p, j)
    assert d["kind"] == "synack-delayed"  # ... but 2 of them loopbacks: 1, against 2
    assert d["count"] == 2 and d["of"] == 4 and d["journeys"] == ["J0", "J1"]
    assert d["between"] == ["node-2/any (vethB) -> node-2/eth0"]
    assert d["delay_ms_min"] == pytest.approx(600, abs=0.5) and d["text"] == p.iloc[1]["text"]
    json.dumps(d)  # plain values, nulls as None


def test_dominant_problem_of_one_kind_at_two_places_names_both():
    p = pd.DataFrame([
        {"kind": "synack-delayed", "count": 2, "of": 5, "journeys": ["J0", "J1"], "services": [],
         "between": "a -> b", "from_point": "a", "to_point": "b", "delay_ms_min": 500.0,
         "delay_ms_max": 600.0, "note": "", "text": "..."},
        {"kind": "synack-delayed", "count": 1, "of": 5, "journeys": ["J2"], "services": [],
         "between": "c -> d", "from_point": "c", "to_point": "d", "delay_ms_min": 700.0,
         "delay_ms_max": 700.0, "note": "", "text": "..."}], columns=P.PROBLEM_COLUMNS)
    d = P.dominant_problem(p, pd.DataFrame({"journey": ["J0"], "loopback": ["no"]}))
    assert d["count"] == 3 and d["between"] == ["a -> b", "c -> d"]
    assert d["text"] == "3 of 5 connections: the SYN-ACK took 500-700 ms (2 from a to b; 1 from c to d)"


# --- the report's figure and table --------------------------------------------------------


def test_latency_figure_marks_the_modes_and_the_delayed_groups():
    from natlens.report import figures, tables

    recs = [r for j in ("J0", "J1", "J2", "J3") for r in path(j, synack_veth2=0.6 if j < "J2" else 0)]
    j, r = table(recs, connect_ms={"J0": 600.5, "J1": 600.6, "J2": 1005.0, "J3": 0.3})
    problems = P.path_problems(j, r, {"node-1": 0.0, "node-2": 0.0})
    latency = j.assign(path="remote/snat", handshake_ms=j["connect_ms"], first_byte_ms=j["connect_ms"] + 1)
    d = types.SimpleNamespace(latency=latency, anonymizer=None,
                              analysis=types.SimpleNamespace(problems=problems))
    fig = figures.latency_cdf(d)
    labels = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert "1 s: SYN retransmission time (1)" in labels
    assert "SYN-ACK delayed node-2/any (vethB) -> node-2/eth0 (2)" in labels
    connect = fig.axes[1]
    assert any(abs(line.get_xdata()[0] - 1000.0) < 1e-6 for line in connect.get_lines()
               if line.get_linestyle() == "--")
    t = tables.problems(d)
    assert list(t.columns) == tables.PROBLEM_TABLE_COLUMNS and len(t) == len(problems)
    assert t.iloc[0]["connections"] == "2 of 4" and t.iloc[0]["delay_ms"] == "600.0"
    # an analysis without problems: the figure as before, an empty table
    d.analysis = types.SimpleNamespace()
    assert not figures.latency_cdf(d).legends and tables.problems(d).empty


# --- the lab's samples -----------------------------------------------------------------


def _sample(name):
    a = analyze(samples_dir() / name)
    truth = [json.loads(x) for x in (samples_dir() / name / "ground-truth" / "connections.jsonl")
             .read_text().splitlines() if x.strip()]
    by_port = {t["sport"]: t for t in truth}
    j = a.service_journeys
    ids = {t: jid for jid, p in zip(j["journey"], j["client_p"], strict=True)
           for t in [by_port.get(int(p))] if t is not None for t in [t["sport"]]}
    return a, by_port, ids, P.path_problems(j, a.records, a.offsets)


def test_cluster_ok_the_slow_connects_are_synack_delayed_on_the_endpoints_node():
    a, truth, ids, p = _sample("cluster-ok")
    slow = {ids[port] for port, t in truth.items() if t["connect_s"] > 0.5}
    assert len(slow) == 10
    delayed = p[p["kind"] == "synack-delayed"]
    assert {j for js in delayed["journeys"] for j in js} == slow
    served = {ids[port]: t["served_by"] for port, t in truth.items()}
    node_of = {"web-1": "node-1", "web-2": "node-2"}
    for row in delayed.itertuples():
        node = {node_of[served[j]] for j in row.journeys}
        assert len(node) == 1  # one row per endpoint node: the time went inside it
        node = node.pop()
        assert row.from_point.startswith(f"{node}/any (") and row.to_point == f"{node}/eth0"
        assert 570 <= row.delay_ms_min <= row.delay_ms_max <= 760 and row.note == ""
    assert "node-2/eth0" in set(delayed["to_point"])
    # the 210 ms first bytes: the client's ACK (and request) held before the endpoint's bridge
    late_data = {ids[port] for port, t in truth.items() if t["first_byte_s"] > 0.2}
    ack = p[p["kind"] == "ack-delayed"]
    assert {j for js in ack["journeys"] for j in js} == late_data
    assert set(p["kind"]) == {"synack-delayed", "ack-delayed"}  # no retransmission, no mode
    dom = P.dominant_problem(p, a.service_journeys)
    assert dom["kind"] == "synack-delayed" and dom["count"] == 10 and dom["of"] == 20


def test_loopback_local_finds_only_the_loopbacks_retransmissions():
    a, truth, ids, p = _sample("loopback-local")
    assert list(p["kind"]) == ["syn-retransmit"]
    failed = {ids[port] for port, t in truth.items() if t["outcome"] != "connected"}
    assert set(p.iloc[0]["journeys"]) == failed
    assert set(a.loopback["journey"]) == failed
    assert "11 of them load-balancer loopbacks" in p.iloc[0]["text"]
    established = set(a.service_journeys.loc[a.service_journeys["outcome"] == "established", "journey"])
    assert not {j for js in p["journeys"] for j in js} & established
    assert P.dominant_problem(p, a.service_journeys) is None  # the loopback explains them


def test_mixed_the_slow_connects_are_synack_delayed_and_the_loopbacks_retransmit():
    a, truth, ids, p = _sample("mixed")
    slow = {ids[port] for port, t in truth.items() if (t["connect_s"] or 0) > 0.1}
    delayed = p[p["kind"] == "synack-delayed"]
    assert {j for js in delayed["journeys"] for j in js} == slow
    for row in delayed.itertuples():
        node = row.to_point.split("/")[0]
        assert row.to_point == f"{node}/eth0" and row.from_point.startswith(f"{node}/any (")
    retrans = p[p["kind"] == "syn-retransmit"].iloc[0]
    assert set(retrans["journeys"]) == set(a.loopback["journey"])
    assert P.dominant_problem(p, a.service_journeys)["kind"] == "synack-delayed"


def test_capture_losses_are_not_network_findings():
    from natlens.findings.paths import not_capture_losses

    hits = pd.DataFrame([
        {"journey": "J0", "kind": "synack-lost", "from_point": "n/a", "to_point": "n/b", "nodes": ("n", "n"),
         "delay_s": float("nan"), "suspect": ""},  # J0 established: its SYN-ACK reached the client
        {"journey": "J1", "kind": "synack-lost", "from_point": "n/a", "to_point": "n/b", "nodes": ("n", "n"),
         "delay_s": float("nan"), "suspect": ""},  # J1 timed out: may be real
        {"journey": "J1", "kind": "syn-lost", "from_point": "n/a", "to_point": "n/b", "nodes": ("n", "n"),
         "delay_s": 0.00002, "suspect": ""},  # "retransmitted" 20 us later: a copy the capture missed
        {"journey": "J2", "kind": "synack-delayed", "from_point": "n/a", "to_point": "n/c", "nodes": ("n", "n"),
         "delay_s": 1.01, "suspect": ""},  # a retransmission interval late, at a lossy capture
        {"journey": "J2", "kind": "synack-delayed", "from_point": "n/a", "to_point": "n/b", "nodes": ("n", "n"),
         "delay_s": 0.7, "suspect": ""},  # n/b is also captured cleanly: the delay stands
    ])
    journeys = pd.DataFrame({"journey": ["J0", "J1", "J2"], "outcome": ["established", "timed out", "established"]})
    caps = {"n/b": {"n/any", "n/eth0"}, "n/c": {"n/any"}}
    kept = not_capture_losses(hits, journeys, caps, {"n/any"})
    assert list(zip(kept["journey"], kept["kind"], kept["to_point"], strict=True)) == [
        ("J1", "synack-lost", "n/b"), ("J2", "synack-delayed", "n/b")]
    # with every capture of n/b lossy, its missing SYN-ACK says nothing either
    kept = not_capture_losses(hits, journeys, caps, {"n/any", "n/eth0"})
    assert kept.empty


# --- one SYN, or its retransmission: the TCP timestamp tells ---------------------------------

EP_A = ("10.0.0.1", 40000, "10.0.1.10", 8080)  # the looped-back SYN DNATed to an endpoint ...
EP_B = ("10.0.0.1", 40000, "10.0.2.10", 8080)  # ... and its retransmission, to another one


def _forked(journey, *, tsvals=True):
    """nftables mode: the first SYN (TSval 1000) went to endpoint A, its retransmission (TSval
    2020, 1.02 s later) to endpoint B; the client's veth and node-1/eth0 saw both SYNs."""
    rtx = 1.02
    recs = [rec(journey, "node-1", "node-1/any", None, (0.0, None, None, None), iface=6, syns=2),
            rec(journey, "node-1", "node-1/eth0", "eth0", (1e-5, None, None, None), leg=WIRE, syns=2),
            rec(journey, "node-1", "node-1/any", "vethA", (3e-5, 5e-5, None, None), leg=EP_A, iface=7),
            rec(journey, "node-1", "node-1/any", "vethB", (rtx + 3e-5, rtx + 5e-5, None, None), leg=EP_B,
                iface=8)]
    for r, tsval in zip(recs, (1000, 1000, 1000, 2020), strict=True):
        r["orig_tsval"] = tsval if tsvals else None
    return recs


def test_a_retransmission_that_took_another_way_is_no_delay():
    recs = [r for j in ("J0", "J1", "J2") for r in path(j)] + _forked("J3")
    p = run(recs, syn_retransmits={"J3": 1}, loopback={"J3": "yes"})
    assert kinds(p) == ["syn-retransmit"]


def test_a_synack_of_the_retransmission_seen_under_other_addresses_is_lent_to_no_first_syn():
    # nftables-local J17: the first SYN looped back to endpoint A on this node, the retransmission
    # to B behind eth0. The bridge shows B's SYN-ACK un-DNATed (from the NodePort) in a record of
    # its own; it answers the retransmission, not the first SYN the bridge's A leg holds.
    rtx, tv = 1.02, {"orig_tsval": 1000}
    recs = [rec("J3", "node-1", "node-1/any", None, (0.0, 6e-5, None, None), iface=6, syns=2),
            rec("J3", "node-1", "node-1/any", "cni0", (1e-5, None, None, None), iface=3, syns=2),
            rec("J3", "node-1", "node-1/eth0", "eth0", (2e-5, None, None, None), leg=WIRE, syns=2),
            rec("J3", "node-1", "node-1/any", "cni0", (3e-5, None, None, None), leg=EP_A, iface=3),
            rec("J3", "node-1", "node-1/any", "vethA", (4e-5, 5e-5, None, None), leg=EP_A, iface=7),
            rec("J3", "node-1", "node-1/eth0", "eth0", (rtx + 3e-5, rtx + 5e-5, None, None), leg=EP_B),
            rec("J3", "node-1", "node-1/any", "cni0", (None, rtx + 6e-5, None, None), iface=3,
                leg=("10.0.0.1", 40000, "10.0.0.11", 30080))]
    for r in recs[:5]:
        r.update(tv)
    recs[5]["orig_tsval"] = 2020
    sights = P.sightings(pd.DataFrame(recs, columns=RECORD_COLUMNS), {"node-1": 0.0}, {"node-1": "reference"})
    by_leg = sights.set_index(["resp_h", "label"])["synack"]
    assert pd.isna(by_leg[("10.0.1.10", "node-1/any (cni0)")])  # not A's: it never saw B's SYN
    assert by_leg[("10.9.9.9", "node-1/any (cni0)")] == pytest.approx(T0 + rtx + 6e-5)  # both SYNs
    p = run([r for j in ("J0", "J1", "J2") for r in path(j)] + recs, syn_retransmits={"J3": 1},
            loopback={"J3": "yes"})
    assert kinds(p) == ["syn-retransmit"]


def test_the_first_syn_lost_between_two_points_is_still_found_with_tcp_timestamps():
    recs = [r for j in ("J0", "J1") for r in path(j)]
    lossy = path("J2", base=2.0)
    for r in lossy[:2]:
        r["syn_retransmits"], r["orig_tsval"] = 1, 5000
    for r in lossy[2:]:  # node-2 saw only the retransmission: a later TSval
        r["syn_ts"] += 1.0
        r["ts"], r["orig_tsval"] = r["syn_ts"], 6000
    p = run(recs + lossy, syn_retransmits={"J2": 1}, connect_ms={"J2": 1000.4})
    lost = p[p["kind"] == "syn-lost"]
    assert list(lost["journeys"]) == [["J2"]] and lost.iloc[0]["between"] == "node-1/eth0 -> node-2/eth0"


def test_fewer_syns_after_the_same_first_syn_are_not_a_loss():
    # node-2 saw the first SYN (same TSval), not the retransmission, which went elsewhere
    recs = [r for j in ("J0", "J1") for r in path(j)]
    j2 = path("J2")
    for r in j2:
        r["orig_tsval"] = 5000
    for r in j2[:2]:
        r["syn_retransmits"] = 1
    st = P.steps(P.observations(P.sightings(pd.DataFrame(recs + j2, columns=RECORD_COLUMNS),
                                            {"node-1": 0.0, "node-2": 0.0}, {"node-1": "reference",
                                                                              "node-2": "reference"})))
    row = st[(st["journey"] == "J2") & (st["event"] == "syn") & (st["to_point"] == "node-2/eth0")].iloc[0]
    assert row["same_syn"] is True and row["syns_to"] < row["syns_from"]
    assert "syn-lost" not in set(run(recs + j2, syn_retransmits={"J2": 1})["kind"])


def test_nftables_local_invents_no_delay_and_no_clock_offset():
    a, truth, ids, p = _sample("nftables-local")
    assert list(p["kind"]) == ["syn-retransmit"]  # nothing was held or lost between two points
    failed = {ids[port] for port, t in truth.items() if t["outcome"] != "connected"}
    assert set(p.iloc[0]["journeys"]) == failed
    assert not [n for n in a.inferred if "fits no single offset" in n]
    assert not p.attrs["notes"]  # node-2's clock was measured against node-1's


def test_transmissions_are_matched_per_journey_and_clock_domain():
    from natlens.findings.transmissions import (
        UNKNOWN_TX,
        answered_tx,
        syn_transmissions,
        syn_tx,
        tx_groups,
    )
    s = pd.DataFrame({  # J1 in two clock domains, its SYN retransmitted; J2 without TSvals
        "journey": ["J1", "J1", "J1", "J1", "J2", "J1"],
        "domain": ["a", "a", "a", "b", "a", "b"],
        "syn_id": [100.0, 200.0, np.nan, 200.0, np.nan, 300.0],
        "syn": [1.0, 2.0, np.nan, 2.1, 1.0, 3.0],
        "synack": [np.nan, 2.5, 1.5, 2.6, 1.2, np.nan]})
    tx = syn_transmissions(s)
    assert tx[["journey", "domain", "syn_id", "tx"]].values.tolist() == [
        ["J1", "a", 100.0, 0], ["J1", "a", 200.0, 1], ["J1", "b", 200.0, 0], ["J1", "b", 300.0, 1]]
    gs, gt = tx_groups(s, tx)
    assert gs[0] == gs[1] == gs[2] != gs[3] == gs[5] and gt.tolist() == [gs[0]] * 2 + [gs[3]] * 2
    assert gs[4] not in gt and (gs >= 0).all()
    assert syn_tx(s, tx).tolist() == [0, 1, UNKNOWN_TX, 0, UNKNOWN_TX, 1]
    # a SYN-ACK follows the latest transmission seen in its domain before it
    assert answered_tx(s, "synack", tx).tolist() == [UNKNOWN_TX, 1, 0, 0, UNKNOWN_TX, UNKNOWN_TX]
    assert answered_tx(s, "synack", tx, (gs, gt)).tolist() == answered_tx(s, "synack", tx).tolist()
