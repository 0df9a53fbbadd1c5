"""The scope stage: which Services and which time window an analysis is about.

Why: `--service` and `--start/--end` must narrow every finding (SNAT, loopback, latency,
problems, capture quality, load balancer, verdict, summary) the same way, so the scope is
applied once, to the service journeys, before anything is computed from them; and a scope
that cannot be right (a Service the incident does not have, a bad time, a reversed window,
one outside the captures) is a one-line NatlensError instead of empty tables.

Two steps, because the first needs nothing but the options and the second needs the bundle:

    request = parse_scope(services, start, end)   # syntax; raises NatlensError
    scope = request.resolve(known_services(inventory, service_journeys), capture_span(inputs))
    service_journeys, scope = apply_scope(service_journeys, scope)

Services are written as VIP, VIP:PORT, VIP:PORT/PROTO (IPv6 in brackets with a port:
``[2001:db8::1]:80/tcp``), NS/NAME or NS/NAME:PORT (as incident.yaml names them). Times are
ISO 8601 (UTC unless they name a zone), epoch seconds, or a time of day (``06:39:53``),
which takes the captures' UTC date when they all fall on one day.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timezone

import pandas as pd

from natlens._grouped import rows_where
from natlens.errors import NatlensError

PROTOS = ("tcp", "udp", "sctp")
TIME_FORMS = ("ISO 8601 (2026-12-01T06:39:53Z; UTC unless a zone is given), epoch seconds "
              "(1795675193) or a time of day (06:39:53)")
SERVICE_FORMS = "VIP, VIP:PORT, VIP:PORT/PROTO, NAMESPACE/NAME or NAMESPACE/NAME:PORT"

_EPOCH = re.compile(r"^\d{9,}(\.\d*)?$|^\d+\.\d+$")
_TIME_OF_DAY = re.compile(r"^\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?$")
_NAME = re.compile(r"^(?P<ns>[a-z0-9]([-a-z0-9]*[a-z0-9])?)/(?P<name>[a-z0-9]([-.a-z0-9]*[a-z0-9])?)"
                   r"(:(?P<port>\d{1,5}))?(/(?P<proto>[a-z]+))?$")
_ADDR_PORT = re.compile(r"^(\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<v4>[0-9.]+)):(?P<port>\d{1,5})(/(?P<proto>[A-Za-z]+))?$")


@dataclass(frozen=True)
class Service:
    """One Service the incident knows: its load-balancer VIP, port, protocol and name."""

    vip: str
    port: int
    proto: str
    name: str | None = None  # "namespace/name" when the inventory names it

    @property
    def key(self) -> str:
        """The Service as the tables write it: "VIP:port/proto"."""
        return f"{self.vip}:{self.port}/{self.proto}"

    def label(self) -> str:
        """"default/web (198.19.0.10:80/tcp)" when named, else the key."""
        return f"{self.name} ({self.key})" if self.name else self.key


@dataclass(frozen=True)
class ServiceSpec:
    """A --service value as parsed: an address or a name, with the port and protocol it gives."""

    text: str
    vip: str | None = None
    name: str | None = None
    port: int | None = None
    proto: str | None = None

    def matches(self, s: Service) -> bool:
        """Whether the known Service `s` is one this spec names."""
        same = s.vip == self.vip if self.vip is not None else s.name == self.name
        return (same and (self.port is None or s.port == self.port)
                and (self.proto is None or s.proto == self.proto))


@dataclass(frozen=True)
class Scope:
    """The resolved scope: the Services (empty: every Service), the window as epoch seconds
    (None: open), and once applied how many service journeys it kept and left out."""

    services: tuple[Service, ...] = ()
    lo: float | None = None
    hi: float | None = None
    asked: dict = field(default_factory=dict)  # the options as given: services, start, end
    journeys_in: int | None = None
    journeys_out: int | None = None

    def keep(self, journeys: pd.DataFrame) -> pd.Series:
        """Boolean mask of the journeys in scope (to one of the Services, starting in the window)."""
        keep = pd.Series(True, index=journeys.index, dtype=bool)
        if journeys.empty:
            return keep
        if self.services:
            wanted = {(s.vip, s.port, s.proto) for s in self.services}
            port = pd.to_numeric(journeys["vport"], errors="coerce").fillna(-1).astype(int)
            keep &= pd.Series([(_norm(v), p, pr) in wanted for v, p, pr in
                               zip(journeys["vip"], port, journeys["proto"], strict=True)],
                              index=journeys.index, dtype=bool)
        ts = pd.to_numeric(journeys["ts"], errors="coerce")
        if self.lo is not None:
            keep &= (ts >= self.lo).fillna(False)
        if self.hi is not None:
            keep &= (ts <= self.hi).fillna(False)
        return keep

    def to_dict(self) -> dict:
        """summary.json's ``scope``: Services, window as ISO UTC, journeys in and out of scope."""
        return {"services": [{"service": s.key, "name": s.name} for s in self.services],
                "start": iso_utc(self.lo), "end": iso_utc(self.hi),
                "journeys": {"in": self.journeys_in, "out": self.journeys_out},
                "asked": dict(self.asked)}


@dataclass(frozen=True)
class ScopeRequest:
    """The options as parsed (syntax checked), before they are checked against the incident."""

    services: tuple[ServiceSpec, ...] = ()
    start: float | time | None = None  # epoch seconds, or a time of day still without a date
    end: float | time | None = None
    asked: dict = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True when no option narrows anything: the analysis has no scope."""
        return not self.services and self.start is None and self.end is None

    def resolve(self, known: Sequence[Service], span: tuple[float, float] | None) -> Scope:
        """The Scope on this incident: every Service spec must name a known Service, the window
        must run forwards and overlap the captures' `span` (epoch seconds; None: no packet)."""
        chosen = resolve_services(self.services, known)
        lo, hi = _on_day(self.start, "start", span), _on_day(self.end, "end", span)
        check_window(lo, hi, span, self.asked)
        return Scope(services=chosen, lo=lo, hi=hi, asked=dict(self.asked))


def parse_scope(services: Iterable[str] = (), start: str | float | None = None,
                end: str | float | None = None) -> ScopeRequest:
    """Parse the scope options (NatlensError naming the option and the forms it takes). A window
    given as two full times is checked to run forwards here already."""
    specs = tuple(parse_service(s) for s in (services or ()) if str(s).strip())
    lo, hi = parse_time(start, "start"), parse_time(end, "end")
    asked = {"services": [s.text for s in specs], "start": _asked(start), "end": _asked(end)}
    if isinstance(lo, float) and isinstance(hi, float):
        check_window(lo, hi, None, asked)
    return ScopeRequest(services=specs, start=lo, end=hi, asked=asked)


def parse_service(text: str) -> ServiceSpec:
    """One --service value: VIP, VIP:PORT, VIP:PORT/PROTO, NS/NAME or NS/NAME:PORT."""
    t = str(text).strip()
    m = _NAME.match(t)
    if m:
        return ServiceSpec(t, name=f"{m['ns']}/{m['name']}", port=_port(m["port"], t),
                           proto=_proto(m["proto"], t))
    m = _ADDR_PORT.match(t)
    vip, port, proto = (m["v6"] or m["v4"], m["port"], m["proto"]) if m else (t.strip("[]"), None, None)
    try:
        vip = str(ipaddress.ip_address(vip))
    except ValueError:
        raise NatlensError(f"Service {t!r}: expected {SERVICE_FORMS} (e.g. 198.19.0.10:80/tcp "
                           "or default/web)") from None
    return ServiceSpec(t, vip=vip, port=_port(port, t), proto=_proto(proto, t))


def parse_time(value: str | float | None, what: str) -> float | time | None:
    """A --start/--end value as epoch seconds (UTC), a time of day still without its date, or
    None for "" / None. NatlensError for anything else, naming `what` and the accepted forms."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _epoch(float(value), str(value), what)
    t = str(value).strip()
    if _EPOCH.match(t):
        return _epoch(float(t), t, what)
    try:
        if _TIME_OF_DAY.match(t):
            return time.fromisoformat(_zulu(t))
        ts = datetime.fromisoformat(_zulu(t))
    except ValueError:
        raise NatlensError(f"{what} time {t!r} is not a time: give {TIME_FORMS}") from None
    ts = ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts
    return ts.timestamp()


def check_window(lo: float | None, hi: float | None, span: tuple[float, float] | None,
                 asked: dict) -> None:
    """NatlensError when the window runs backwards or lies outside the captures' `span`."""
    if lo is not None and hi is not None and lo > hi:
        raise NatlensError(f"start time {asked.get('start')!r} ({utc_text(lo)}) is after end time "
                           f"{asked.get('end')!r} ({utc_text(hi)}): the window runs backwards")
    if span is None or (lo is None and hi is None):
        return
    first, last = span
    if (hi is not None and hi < first) or (lo is not None and lo > last):
        given = f"{utc_text(lo) if lo is not None else 'the first packet'} to " \
                f"{utc_text(hi) if hi is not None else 'the last packet'}"
        raise NatlensError(f"the time window {given} holds no packet: the captures span "
                           f"{utc_text(first)} to {utc_text(last)}")


def known_services(inventory, service_journeys: pd.DataFrame) -> list[Service]:
    """The Services a scope may name: the inventory's load-balancer VIPs with their names; when
    it knows none, the VIP:port/proto the service journeys go to (unnamed)."""
    s = inventory.services
    rows = s[s["lb_ip"].notna()] if not s.empty else s
    if len(rows):
        out = {Service(_norm(r.lb_ip), int(r.port), str(r.proto),
                       (f"{r.namespace}/{r.name}" if r.namespace else str(r.name)) if _present(r.name) else None)
               for r in rows.itertuples() if _present(r.port)}
        return sorted(out, key=lambda x: (x.name or "~", x.key))
    j = service_journeys.dropna(subset=["vip", "vport"])
    return sorted({Service(_norm(v), int(p), str(pr)) for v, p, pr in
                   zip(j["vip"], j["vport"], j["proto"], strict=True)}, key=lambda x: x.key)


def capture_span(inputs: Sequence[dict]) -> tuple[float, float] | None:
    """(first, last) packet time of all captures, epoch seconds; None when none holds a packet."""
    firsts = [c["first_ts"] for c in inputs if c.get("first_ts") is not None]
    lasts = [c["last_ts"] for c in inputs if c.get("last_ts") is not None]
    return (float(min(firsts)), float(max(lasts))) if firsts and lasts else None


def apply_scope(service_journeys: pd.DataFrame, scope: Scope | None) -> tuple[pd.DataFrame, Scope | None]:
    """The service journeys in scope, and the scope with how many were kept and left out."""
    if scope is None:
        return service_journeys, None
    keep = scope.keep(service_journeys)
    kept = rows_where(service_journeys, keep)
    if kept.empty and len(service_journeys):  # a report of nothing would read as "all is well"
        ts = pd.to_numeric(service_journeys["ts"], errors="coerce")
        asked = " ".join(f"--{k} {v}" for k, v in (("start", scope.asked.get("start")), ("end", scope.asked.get("end")))
                         if v) + "".join(f" --service {x}" for x in scope.asked.get("services") or [])
        raise NatlensError(f"{asked.strip()}: none of the incident's {len(service_journeys)} connections to its "
                           f"Services is in this scope (they start between {utc_text(ts.min())} and {utc_text(ts.max())})")
    return kept, replace(scope, journeys_in=int(len(kept)), journeys_out=int(len(service_journeys) - len(kept)))


def describe_scope(scope: dict | None, what: str = "report") -> str | None:
    """One plain sentence for a report banner from summary.json's ``scope`` (None: no scope),
    e.g. "This report covers only Service default/web-local (198.19.0.10:80/tcp) between
    06:39:53 and 06:39:54 UTC: 12 of the incident's 20 connections."; `what` names the
    document ("analysis" for the CLI)."""
    if not scope:
        return None
    svcs = scope.get("services") or []
    svc = ""
    if svcs:
        names = [f"{s['name']} ({s['service']})" if s.get("name") else s["service"] for s in svcs]
        svc = f" Service{'s' if len(names) > 1 else ''} {_and(names)}"
    when = _when(scope.get("start"), scope.get("end"))
    j = scope.get("journeys") or {}
    kept, out = j.get("in"), j.get("out")
    tally = (f": {kept:,} of the incident's {kept + out:,} connection{'s' if kept + out != 1 else ''}"
             if kept is not None and out is not None else "")
    if not svc and not when:
        return None
    return f"This {what} covers only{svc or ' connections'}{when}{tally}."


def iso_utc(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with microseconds ("2026-12-01T06:39:53.000000Z"), or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_text(ts: float) -> str:
    """Epoch seconds as "2026-12-01 06:39:53.123 UTC" for messages."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _when(start: str | None, end: str | None) -> str:
    """" between 06:39:53 and 06:39:54 UTC" (dates shown only when the two differ)."""
    if not start and not end:
        return ""
    lo, hi = (_parse_iso(start), _parse_iso(end))
    one_day = lo is not None and hi is not None and lo.date() == hi.date()

    def fmt(d: datetime) -> str:
        text = d.strftime("%H:%M:%S" if one_day else "%Y-%m-%d %H:%M:%S")
        return text + f".{d.microsecond // 1000:03d}" if d.microsecond else text

    if lo is not None and hi is not None:
        return f" between {fmt(lo)} and {fmt(hi)} UTC"
    return f" from {fmt(lo)} UTC" if lo is not None else f" until {fmt(hi)} UTC"


def _parse_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(_zulu(text)) if text else None


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def resolve_services(specs: Sequence[ServiceSpec], known: Sequence[Service]) -> tuple[Service, ...]:
    """The known Services the specs name, in the order given; NatlensError for a spec that names
    none, listing the incident's Services."""
    chosen: list[Service] = []
    for spec in specs:
        hits = [s for s in known if spec.matches(s)]
        if not hits:
            listed = ", ".join(s.label() for s in known) or "none (no load-balancer Service is known)"
            raise NatlensError(f"unknown Service {spec.text!r}; the incident's Services: {listed}")
        chosen += [s for s in hits if s not in chosen]
    return tuple(chosen)


def _on_day(value: float | time | None, what: str, span: tuple[float, float] | None) -> float | None:
    """A time of day on the captures' UTC date (they must cover one day only); others as they are."""
    if not isinstance(value, time):
        return value
    if span is None:
        raise NatlensError(f"{what} time {value.isoformat()!r} names no date and the captures hold "
                           "no packet to take it from: give a full ISO 8601 time")
    first, last = (datetime.fromtimestamp(t, timezone.utc).date() for t in span)
    if first != last:
        raise NatlensError(f"{what} time {value.isoformat()!r} names no date and the captures span "
                           f"more than one UTC day ({utc_text(span[0])} to {utc_text(span[1])}): "
                           "give the date too")
    return _combine(first, value)


def _combine(day: date, tod: time) -> float:
    return datetime.combine(day, tod.replace(tzinfo=tod.tzinfo or timezone.utc)).timestamp()


def _epoch(v: float, text: str, what: str) -> float:
    """Epoch seconds, checked to be a date Python can show (years 1970-9999)."""
    if not 0 <= v < 253402300800:
        raise NatlensError(f"{what} time {text!r} is not a time: epoch seconds must be between 0 and "
                           f"253402300799 (year 9999); give {TIME_FORMS}")
    return v


def _zulu(t: str) -> str:
    return t[:-1] + "+00:00" if t.endswith(("Z", "z")) else t


def _port(text: str | None, spec: str) -> int | None:
    if text is None:
        return None
    port = int(text)
    if not 0 < port < 65536:
        raise NatlensError(f"Service {spec!r}: port {port} is not between 1 and 65535")
    return port


def _proto(text: str | None, spec: str) -> str | None:
    if text is None:
        return None
    if text.lower() not in PROTOS:
        raise NatlensError(f"Service {spec!r}: protocol {text!r} is not one of {', '.join(PROTOS)}")
    return text.lower()


def _asked(v: str | float | None) -> str | None:
    return None if v is None or (isinstance(v, str) and not v.strip()) else str(v).strip()


def _norm(ip: object) -> str:
    try:
        return str(ipaddress.ip_address(str(ip)))
    except ValueError:
        return str(ip)


def _present(v: object) -> bool:
    return v is not None and not (isinstance(v, float) and pd.isna(v)) and v is not pd.NA
