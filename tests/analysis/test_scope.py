"""The scope stage (natlens.findings.scope): --service / --start / --end parsed, checked against
the incident, and applied to every finding alike."""

from __future__ import annotations

import json
from datetime import datetime, time, timezone

import pandas as pd
import pytest
from analysis_helpers import samples_dir

from natlens.errors import NatlensError
from natlens.findings.scope import (
    Scope,
    Service,
    apply_scope,
    capture_span,
    describe_scope,
    parse_scope,
    parse_service,
    parse_time,
)

DAY = datetime(2026, 11, 26, tzinfo=timezone.utc)
SPAN = (DAY.timestamp() + 6 * 3600 + 40 * 60 + 1.2, DAY.timestamp() + 6 * 3600 + 40 * 60 + 4.4)  # 06:40:01-04
KNOWN = [Service("198.19.0.10", 80, "tcp", "default/web-local"),
         Service("198.19.0.11", 80, "tcp", "default/web-cluster"),
         Service("198.19.0.11", 53, "udp", "default/web-cluster")]


def at(hms: str) -> float:
    """Epoch seconds of a time of day on DAY (UTC)."""
    return datetime.combine(DAY.date(), time.fromisoformat(hms), timezone.utc).timestamp()


# --- parsing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, want", [
    ("2026-11-26T06:40:02Z", "06:40:02"),
    ("2026-11-26T06:40:02", "06:40:02"),            # no zone: UTC
    ("2026-11-26 08:40:02+02:00", "06:40:02"),      # a zone is honoured
    ("2026-11-26T06:40:02.250Z", "06:40:02.250"),
])
def test_iso_times_are_utc_unless_zoned(text, want):
    assert parse_time(text, "start") == pytest.approx(at(want))


def test_epoch_seconds_are_accepted_as_text_and_as_numbers():
    """Epoch seconds failed with 'year 1795675193 is out of range'."""
    assert parse_time("1795675202", "start") == 1795675202.0
    assert parse_time("1795675202.5", "end") == 1795675202.5
    assert parse_time(1795675202, "end") == 1795675202.0


def test_a_bare_time_of_day_waits_for_the_captures_date():
    """A bare time was taken as today's date: every table empty."""
    assert parse_time("06:40:02", "start") == time(6, 40, 2)
    s = parse_scope((), "06:40:02", "06:40:03.5").resolve(KNOWN, SPAN)
    assert (s.lo, s.hi) == (pytest.approx(at("06:40:02")), pytest.approx(at("06:40:03.5")))


def test_a_time_of_day_is_refused_when_the_captures_span_two_days():
    two_days = (SPAN[0], SPAN[0] + 86400)
    with pytest.raises(NatlensError, match=r"start time '06:40:02' names no date and the captures span more "
                                           r"than one UTC day .*give the date too"):
        parse_scope((), "06:40:02").resolve(KNOWN, two_days)


@pytest.mark.parametrize("bad", ["yesterday", "now", "2026-13-01", "25:00", "1e9x"])
def test_a_bad_time_names_the_option_and_the_forms(bad):
    with pytest.raises(NatlensError, match=rf"^start time {bad!r} is not a time: give ISO 8601 .*epoch "
                                           r"seconds .*time of day"):
        parse_time(bad, "start")


def test_empty_times_are_no_bound():
    assert parse_time("", "start") is None and parse_time(None, "end") is None
    assert parse_scope((), "", "").empty


@pytest.mark.parametrize("text, want", [
    ("198.19.0.10", ("198.19.0.10", None, None, None)),
    ("198.19.0.10:80", ("198.19.0.10", None, 80, None)),
    ("198.19.0.10:80/TCP", ("198.19.0.10", None, 80, "tcp")),
    ("[2001:db8::a]:443/tcp", ("2001:db8::a", None, 443, "tcp")),
    ("2001:DB8::A", ("2001:db8::a", None, None, None)),
    ("default/web-local", (None, "default/web-local", None, None)),
    ("default/web-local:80", (None, "default/web-local", 80, None)),
])
def test_service_forms(text, want):
    s = parse_service(text)
    assert (s.vip, s.name, s.port, s.proto) == want


@pytest.mark.parametrize("bad, message", [
    ("nope", "Service 'nope': expected VIP, VIP:PORT, VIP:PORT/PROTO, NAMESPACE/NAME"),
    ("198.19.0.10:99999", "port 99999 is not between 1 and 65535"),
    ("198.19.0.10:80/icmp", "protocol 'icmp' is not one of tcp, udp, sctp"),
])
def test_bad_service_syntax(bad, message):
    with pytest.raises(NatlensError, match=message):
        parse_service(bad)


# --- validation against the incident ---------------------------------------------------------

@pytest.mark.parametrize("spec", ["10.0.0.1:443", "198.19.0.10:80/udp", "default/web"])
def test_an_unknown_service_lists_the_known_ones(spec):
    """A Service that does not exist was accepted (exit 0, empty tables)."""
    with pytest.raises(NatlensError) as e:
        parse_scope([spec]).resolve(KNOWN, SPAN)
    assert str(e.value) == (f"unknown Service {spec!r}; the incident's Services: default/web-local "
                            "(198.19.0.10:80/tcp), default/web-cluster (198.19.0.11:80/tcp), "
                            "default/web-cluster (198.19.0.11:53/udp)")


def test_names_and_addresses_resolve_to_every_port_they_cover():
    s = parse_scope(["default/web-cluster"]).resolve(KNOWN, SPAN)
    assert [x.key for x in s.services] == ["198.19.0.11:80/tcp", "198.19.0.11:53/udp"]
    s = parse_scope(["198.19.0.11:53", "default/web-local:80"]).resolve(KNOWN, SPAN)
    assert [x.label() for x in s.services] == ["default/web-cluster (198.19.0.11:53/udp)",
                                                "default/web-local (198.19.0.10:80/tcp)"]


def test_a_reversed_window_is_refused_before_the_captures_are_read():
    with pytest.raises(NatlensError, match=r"start time '2026-11-26T06:40:03Z' \(2026-11-26 06:40:03.000 UTC\) "
                                           r"is after end time .* the window runs backwards"):
        parse_scope((), "2026-11-26T06:40:03Z", "2026-11-26T06:40:02Z")
    with pytest.raises(NatlensError, match="runs backwards"):  # times of day: once they have a date
        parse_scope((), "06:40:03", "06:40:02").resolve(KNOWN, SPAN)


@pytest.mark.parametrize("start, end", [("2026-01-01", "2026-01-02"), ("06:40:05", ""), ("", "06:40:01")])
def test_a_window_outside_the_captures_says_their_span(start, end):
    with pytest.raises(NatlensError, match=r"holds no packet: the captures span 2026-11-26 06:40:01.200 UTC "
                                           r"to 2026-11-26 06:40:04.400 UTC$"):
        parse_scope((), start, end).resolve(KNOWN, SPAN)


def test_capture_span_is_over_every_capture_with_packets():
    inputs = [{"first_ts": 5.0, "last_ts": 9.0}, {"first_ts": None, "last_ts": None}, {"first_ts": 3.0, "last_ts": 7.0}]
    assert capture_span(inputs) == (3.0, 9.0) and capture_span([{"first_ts": None}]) is None


# --- applying and describing -----------------------------------------------------------------

def test_apply_scope_keeps_the_services_journeys_in_the_window_and_counts_both():
    j = pd.DataFrame({"journey": ["J0", "J1", "J2", "J3"], "vip": ["198.19.0.10", "198.19.0.11", "198.19.0.10", None],
                      "vport": [80, 80, 80, None], "proto": ["tcp"] * 4,
                      "ts": [at("06:40:01.5"), at("06:40:02"), at("06:40:03.9"), at("06:40:02")]})
    scope = parse_scope(["198.19.0.10"], "06:40:01", "06:40:03").resolve(KNOWN, SPAN)
    kept, scope = apply_scope(j, scope)
    assert list(kept["journey"]) == ["J0"] and (scope.journeys_in, scope.journeys_out) == (1, 3)
    assert apply_scope(j, None) == (j, None)


def test_describe_scope_is_one_plain_sentence():
    scope = Scope(services=(KNOWN[0],), lo=at("06:39:53"), hi=at("06:39:54"), journeys_in=12, journeys_out=8)
    assert describe_scope(scope.to_dict()) == ("This report covers only Service default/web-local "
                                               "(198.19.0.10:80/tcp) between 06:39:53 and 06:39:54 UTC: "
                                               "12 of the incident's 20 connections.")
    assert describe_scope(Scope(lo=at("06:39:53.5"), journeys_in=1, journeys_out=0).to_dict(), "analysis") == \
        "This analysis covers only connections from 2026-11-26 06:39:53.500 UTC: 1 of the incident's 1 connection."
    assert describe_scope(None) is None


# --- the analysis core: every finding on the scoped journeys ---------------------------------

@pytest.fixture(scope="module")
def mixed():
    from natlens.findings import analyze

    d = samples_dir() / "mixed"
    return analyze(d), analyze(d, services=["default/web-local"])


def test_with_a_service_every_section_holds_only_that_service(mixed):
    """--service filtered the SNAT table only: loopback, hops, outcomes and latency showed every
    Service, and the summary counted the whole incident."""
    full, a = mixed
    key = "198.19.0.10:80/tcp"
    assert set(full.service_journeys["service"]) == {key, "198.19.0.11:80/tcp"}
    assert set(a.service_journeys["service"]) == {key}
    assert set(a.snat["service"]) == {key} and set(a.loopback["service"]) == {key}
    assert set(a.latency["journey"]) == set(a.service_journeys["journey"])
    assert {f.service for f in a.lb} == {key} and {m.service for m in a.mechanisms} == {key}
    ids = set(a.service_journeys["journey"])
    assert all(set(p) <= ids for p in a.problems["journeys"]) if len(a.problems) else True
    s = a.summary()
    json.dumps(s, allow_nan=False)
    own = full.service_journeys[full.service_journeys["service"] == key]
    assert s["connections"]["total"] == len(own) == sum(r["connections"] for r in s["snat"])
    assert s["connections"]["failed"] == int(own["outcome"].isin(["timed out", "reset"]).sum())
    assert s["loopback"]["hits"] == int((own["loopback"] == "yes").sum())
    assert s["latency_ms"]["connect"]["count"] == int(own["connect_ms"].notna().sum())
    assert {r["service"] for r in s["failures"]["by_service"]} <= {key}
    assert s["scope"] == {"services": [{"service": key, "name": "default/web-local"}], "start": None, "end": None,
                          "journeys": {"in": len(own), "out": len(full.service_journeys) - len(own)},
                          "asked": {"services": ["default/web-local"], "start": None, "end": None}}
    assert full.summary()["scope"] is None and "default/web-local" in s["verdict"]["headline"]


def test_a_window_with_no_connection_is_an_error_naming_the_connections_span(mixed):
    """A scope that keeps none of the connections used to give a report of nothing ("no loopback
    detected", "no change is needed"), although the incident had failures."""
    from natlens.errors import NatlensError
    from natlens.findings import analyze

    full, _ = mixed
    first = min(c["first_ts"] for c in full.inputs)
    with pytest.raises(NatlensError, match=r"none of the incident's 40 connections to its Services is in this "
                                           r"scope \(they start between 2026-11-26 06:40:01\.\d{3} UTC and "):
        analyze(samples_dir() / "mixed", start=first, end=first + 1e-3)  # before the first SYN
