"""Flood accounting (Zeek SumStats / FastNetMon style): per victim and attack kind, rates against the victim's own
rolling baseline, distinct sources and top talkers, folded into one ``soc.flood`` summary per flood.

Each event that a registered *kind* recognises (``KINDS``, see ``register``) adds packets to the state of
(victim, kind):

- ``syn``: a TCP flow whose originator sent SYN without ACK and got no answer or a reset (victim: its destination);
- ``syn-ack``: a TCP flow that starts with an unsolicited SYN-ACK the victim never asked for (reflection);
- ``udp-amplification``: a UDP flow into the victim from a reflector port (DNS 53, NTP 123, SNMP 161, SSDP 1900,
  memcached 11211, CLDAP 389, ISAKMP 500/4500, chargen 19, WS-Discovery 3702) or, from any port, datagrams of
  ``AMP_MIN_SIZE`` bytes or more — in both cases with no request from the victim in that flow (the
  response-to-request ratio is unbounded);
- ``http``: an HTTP request (``soc.http`` with a method) to the victim;
- ``icmp``: an ICMP request (echo, timestamp, information, address mask) to the victim.

Rates are packets (requests for HTTP) per second over the kind's interval. The victim's baseline is an exponentially
weighted mean of its per-interval rates (half-life ``HALF_LIFE`` s, empty intervals count as zero); intervals far
above it do not teach it, and it is reported once ``WARMUP`` s of history exist. A *flood* of (victim, kind) begins
with the first interval whose rate reaches the kind's ``floor`` (deliberately below any rule threshold: the rules
decide; it is summarised once it has ``min_sources`` distinct sources: a one-host port scan is no SYN flood) and
ends after ``QUIET`` s without such an interval. While it lasts the enricher appends ``soc.flood``
summary events to the batch — when it begins, whenever its peak doubles and every ``REPORT_EVERY`` s — all stamped
with the flood's start, so the shipped rules fold them into one alert per victim and kind whose id is stable for the
whole flood (the store upserts it with the updated counts).

Summary fields: ``destination.ip`` (victim), ``soc.flood.{id,kind,interval,rate,peak,peak_rate,packets,bytes,
sources,top_sources,top_ports,baseline,ratio,summary}``, ``event.start``/``event.end`` and the highest
``gov.label`` of the flood's events. Sources are counted with a HyperLogLog (4096 registers, about 1.6 % error, exact
in practice below a few hundred), so a million spoofed sources cost 4 KiB per flood; top sources and ports are kept
by a bounded heavy-hitter counter. At most ``max_states`` (victim, kind) states are kept (least recently seen
evicted, counted); ``state()`` reports it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from correlator.events import epoch, event_id, to_utc_iso

Event = dict[str, Any]
# A contribution: (victim ip, victim port or None, source ip, peer port or None, packets, bytes)
Hit = tuple[str, int | None, str, int | None, int, int]

HALF_LIFE = 900.0  # s: the baseline's memory
WARMUP = 300.0  # s of history before the baseline is reported (and the relative form can apply)
TEACH_FACTOR = 3.0  # intervals above this multiple of the baseline (and above the floor) do not teach it
QUIET = 120.0  # s without a hot interval ends a flood
REPORT_EVERY = 60.0  # s between summaries of an ongoing flood
RETAIN = 64  # intervals kept per state (late flows within this horizon still count in the rates)
TOP = 10  # top sources / ports reported
AMP_MIN_SIZE = 400  # bytes per datagram: an unsolicited UDP stream this large is amplified whatever the port
REFLECTOR_PORTS = frozenset({19, 53, 123, 161, 389, 500, 1900, 3702, 4500, 11211})
HLL_BITS = 12
MAX_PENDING = 64  # recent contributions held per state while no flood is open (they join one that opens)


@dataclass(frozen=True)
class Kind:
    """An attack kind: which dataset feeds it, how an event contributes, and its accounting parameters.

    ``interval``: seconds per rate bucket; ``floor``: rate (per second) from which an interval is hot (a flood
    begins); ``min_baseline``: the smallest baseline a ratio divides by; ``ports``: which side's port is reported
    (``victim``: the attacked service, ``peer``: the reflectors' source ports); ``min_sources``: distinct sources a
    flood needs before it is summarised (a scan from one host is no SYN flood)."""

    name: str
    dataset: str
    classify: Callable[[Event], Hit | None]
    interval: float = 1.0
    floor: float = 20.0
    min_baseline: float = 1.0
    ports: str = "victim"
    min_sources: int = 1


KINDS: dict[str, Kind] = {}
_BY_DATASET: dict[str, list[Kind]] = {}


def register(kind: Kind) -> Kind:
    """Add an attack kind to the registry (the enricher consults the kinds of each event's dataset)."""
    KINDS[kind.name] = kind
    _BY_DATASET.setdefault(kind.dataset, []).append(kind)
    return kind


def _syn(e: Event) -> Hit | None:
    if e.get("network.transport") != "tcp" or e.get("soc.flow.state") not in ("unanswered", "rejected"):
        return None
    flags = e.get("soc.flow.source_flags") or ()
    if "SYN" not in flags or "ACK" in flags:
        return None
    return (e["destination.ip"], e.get("destination.port"), e["source.ip"], e.get("source.port"),
            e.get("source.packets") or 1, e.get("source.bytes") or 0)


def _syn_ack(e: Event) -> Hit | None:
    if e.get("network.transport") != "tcp":
        return None
    flags = e.get("soc.flow.source_flags") or ()
    if "SYN" not in flags or "ACK" not in flags:
        return None
    answer = e.get("soc.flow.destination_flags") or ()
    if "SYN" in answer or (e.get("destination.packets") and "RST" not in answer):  # a handshake, not a reflection
        return None
    return (e["destination.ip"], e.get("destination.port"), e["source.ip"], e.get("source.port"),
            e.get("source.packets") or 1, e.get("source.bytes") or 0)


def _udp_amp(e: Event) -> Hit | None:
    if e.get("network.transport") != "udp" or e.get("destination.packets"):
        return None  # the victim sent something in this flow: a request, not a reflection
    sport, pkts, size = e.get("source.port"), e.get("source.packets") or 1, e.get("source.bytes") or 0
    if sport not in REFLECTOR_PORTS and size < AMP_MIN_SIZE * pkts:
        return None
    return (e["destination.ip"], e.get("destination.port"), e["source.ip"], sport, pkts, size)


def _http(e: Event) -> Hit | None:
    if not e.get("http.request.method") or not e.get("destination.ip"):
        return None
    return (e["destination.ip"], e.get("destination.port"), e.get("source.ip") or "", e.get("source.port"), 1,
            e.get("http.request.bytes") or 0)


ICMP_REQUESTS = frozenset({8, 13, 15, 17, 128})


def _icmp(e: Event) -> Hit | None:
    if e.get("soc.icmp.type") not in ICMP_REQUESTS or not e.get("destination.ip"):
        return None
    return (e["destination.ip"], None, e.get("source.ip") or "", None, 1, e.get("soc.icmp.payload_bytes") or 0)


register(Kind("syn", "soc.flow", _syn, interval=1.0, floor=20.0, min_baseline=1.0, min_sources=10))
register(Kind("syn-ack", "soc.flow", _syn_ack, interval=60.0, floor=0.1, min_baseline=0.05, ports="peer",
              min_sources=2))
register(Kind("udp-amplification", "soc.flow", _udp_amp, interval=1.0, floor=20.0, min_baseline=1.0, ports="peer",
              min_sources=5))
register(Kind("http", "soc.http", _http, interval=1.0, floor=50.0, min_baseline=1.0))  # nmap's HTTP scripts: 31/s
register(Kind("icmp", "soc.icmp", _icmp, interval=1.0, floor=50.0, min_baseline=1.0))


class _Top:
    """Bounded heavy hitters: counts for at most ``2 * k`` keys, trimmed to the ``k`` largest when full."""

    __slots__ = ("counts", "k")

    def __init__(self, k: int = 4 * TOP) -> None:
        self.k, self.counts = k, {}

    def add(self, key: Any, n: int) -> None:
        c = self.counts
        c[key] = c.get(key, 0) + n
        if len(c) > 2 * self.k:
            self.counts = dict(sorted(c.items(), key=lambda kv: -kv[1])[: self.k])

    def top(self, n: int = TOP) -> list:
        return [k for k, _ in sorted(self.counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[:n]]


class _HLL:
    """HyperLogLog distinct count (linear counting while registers are mostly empty)."""

    __slots__ = ("reg",)
    M = 1 << HLL_BITS

    def __init__(self) -> None:
        self.reg = bytearray(self.M)

    def add(self, item: str) -> None:
        h = int.from_bytes(hashlib.blake2b(item.encode(), digest_size=8).digest(), "big")
        i, rest = h >> (64 - HLL_BITS), h & ((1 << (64 - HLL_BITS)) - 1)
        rank = (64 - HLL_BITS) - rest.bit_length() + 1
        if rank > self.reg[i]:
            self.reg[i] = rank

    def count(self) -> int:
        m, reg = self.M, self.reg
        zeros = reg.count(0)
        est = 0.7213 / (1 + 1.079 / m) * m * m / sum(2.0 ** -r for r in reg)
        if est <= 2.5 * m and zeros:
            est = m * math.log(m / zeros)
        return round(est)


class _State:
    """One (victim, kind): recent interval counts, baseline, and the current flood if any."""

    __slots__ = ("baseline", "buckets", "first", "flood", "head", "label", "meta", "pending", "victim", "weight")

    def __init__(self, victim: str, bucket: int) -> None:
        self.victim = victim
        self.buckets: dict[int, float] = {}
        self.head = bucket  # newest interval seen
        self.first = bucket  # first interval seen (warm-up)
        self.baseline = self.weight = 0.0  # EWMA of interval rates and of ones (bias correction: baseline/weight)
        self.flood: _Flood | None = None
        self.label: tuple[int, Any] = (-1, None)
        self.meta: dict[str, Any] = {}
        self.pending: deque[tuple] = deque(maxlen=MAX_PENDING)  # recent contributions while no flood is open

    def normal(self) -> float:
        """The baseline rate (per second), corrected for the EWMA's start at zero."""
        return self.baseline / self.weight if self.weight else 0.0


class _Flood:
    __slots__ = ("bytes", "hll", "hot_until", "last", "next_report", "packets", "peak", "ports", "reported_packets",
                 "reported_peak", "seq", "sources", "start", "start_baseline")

    def __init__(self, start: float, baseline: float | None) -> None:
        self.start = self.last = start
        self.packets = self.bytes = self.seq = self.reported_packets = 0
        self.peak = self.reported_peak = 0.0
        self.hll, self.sources, self.ports = _HLL(), _Top(), _Top()
        self.hot_until = start + QUIET
        self.next_report = start + REPORT_EVERY
        self.start_baseline = baseline

    def sourced(self, kind: Kind) -> bool:
        """Enough distinct sources to summarise (the heavy-hitter table holds up to 80 keys: exact below that)."""
        return len(self.sources.counts) >= kind.min_sources

    def add(self, source: str, port: int | None, packets: int, nbytes: int) -> None:
        self.packets += packets
        self.bytes += nbytes
        self.hll.add(source)
        self.sources.add(source, packets)
        if port is not None:
            self.ports.add(port, packets)


class FloodEnricher:
    """Pipeline enricher: accounts flood contributions and appends ``soc.flood`` summaries (see module doc)."""

    def __init__(self, kinds: dict[str, Kind] | None = None, max_states: int = 100_000) -> None:
        kinds = KINDS if kinds is None else kinds
        self.kinds = kinds
        self.by_dataset: dict[str, list[Kind]] = {}
        for k in kinds.values():
            self.by_dataset.setdefault(k.dataset, []).append(k)
        self.max_states = max_states
        self.states: OrderedDict[tuple[str, str], _State] = OrderedDict()
        self.seen = self.late = self.evicted = self.summaries = 0
        self.decay = {k.name: 0.5 ** (k.interval / HALF_LIFE) for k in kinds.values()}

    def __call__(self, events: list[Event]) -> None:
        by_dataset, out = self.by_dataset, []
        for e in events:
            kinds = by_dataset.get(e.get("event.dataset"))
            if not kinds:
                continue
            for kind in kinds:
                hit = kind.classify(e)
                if hit is not None:
                    self._add(kind, hit, e, out)
        events.extend(out)

    def _add(self, kind: Kind, hit: Hit, e: Event, out: list[Event]) -> None:
        start = epoch(e.get("event.start") or e.get("@timestamp"))
        if start is None:
            return
        self.seen += 1
        victim, vport, source, pport, packets, nbytes = hit
        key = (victim, kind.name)
        iv = kind.interval
        b0 = int(start // iv)
        end = epoch(e.get("event.end")) if packets > 1 else None
        b1 = max(b0, int(end // iv)) if end is not None else b0
        st = self.states.get(key)
        if st is None:  # history (the baseline's warm-up) starts where the first contribution ends
            st = self.states[key] = _State(victim, b1)
            if len(self.states) > self.max_states:
                self.states.popitem(last=False)
                self.evicted += 1
        else:
            self.states.move_to_end(key)
        if b1 > st.head:
            self._advance(st, kind, b1, out)
        if b1 <= st.head - RETAIN:
            self.late += 1
            return
        share = packets / (b1 - b0 + 1)
        buckets = st.buckets
        for b in range(max(b0, st.head - RETAIN + 1), b1 + 1):
            buckets[b] = buckets.get(b, 0.0) + share
        rate = buckets[b1] / iv
        warm = (st.head - st.first) * iv >= WARMUP
        bar = max(kind.floor, TEACH_FACTOR * st.normal()) if warm else kind.floor  # a hot interval
        fl = st.flood
        if fl is None:
            if rate < bar:
                st.pending.append((b1, source, vport if kind.ports == "victim" else pport, packets, nbytes))
                return
            hot = next(b for b in range(max(b0, st.head - RETAIN + 1), b1 + 1) if buckets[b] >= bar * iv)
            fl = st.flood = _Flood(hot * iv, st.normal() if warm else None)
            for p in st.pending:  # contributions since the flood's first hot interval are the flood's too
                if p[0] >= hot:
                    fl.add(*p[1:])
            st.pending.clear()
        port = vport if kind.ports == "victim" else pport
        fl.add(source, port, packets, nbytes)
        t_end = (b1 + 1) * iv
        fl.last = max(fl.last, end or start)
        if rate >= bar:
            fl.hot_until = max(fl.hot_until, t_end + QUIET)
        if rate > fl.peak:
            fl.peak = rate
        rank = e.get("gov.label.rank")
        if isinstance(rank, int) and rank > st.label[0]:
            st.label = (rank, e.get("gov.label.level"))
        if not st.meta:
            st.meta = {f: e[f] for f in ("observer.name", "log.file.path", "gov.destination.zone",
                                         "gov.destination.organization", "network.transport") if e.get(f) is not None}
        if (fl.seq == 0 or fl.peak >= 2 * fl.reported_peak or start >= fl.next_report) and fl.sourced(kind):
            out.append(self._summary(st, kind, fl))

    def _advance(self, st: _State, kind: Kind, head: int, out: list[Event]) -> None:
        """Close the intervals before ``head``: they teach the baseline (zeros included) and may end the flood (its
        final summary goes to ``out``)."""
        iv, decay, floor = kind.interval, self.decay[kind.name], kind.floor
        b, buckets, base, weight = st.head, st.buckets, st.baseline, st.weight
        gap = head - b
        for x in range(b, b + min(gap, RETAIN)):
            r = buckets.get(x, 0.0) / iv
            if (x - st.first) * iv < WARMUP or r <= max(TEACH_FACTOR * base / (weight or 1.0), floor):
                base, weight = decay * base + (1 - decay) * r, decay * weight + (1 - decay)
        if gap > RETAIN:
            d = decay ** (gap - RETAIN)
            base, weight = base * d, weight * d + (1 - d)
        st.baseline, st.weight, st.head = base, weight, head
        for x in [x for x in buckets if x <= head - RETAIN]:
            del buckets[x]
        fl = st.flood
        if fl is not None and head * iv >= fl.hot_until:
            if fl.packets != fl.reported_packets and fl.sourced(kind):
                out.append(self._summary(st, kind, fl))
            st.flood = None

    def flush(self) -> list[Event]:
        """End of input: the final summary of every open flood that changed since its last one (the pipeline calls
        this before flushing detectors)."""
        out = []
        for (_, name), st in self.states.items():
            fl = st.flood
            if fl is not None and fl.packets != fl.reported_packets and fl.sourced(self.kinds[name]):
                out.append(self._summary(st, self.kinds[name], fl))
        return out

    def _summary(self, st: _State, kind: Kind, fl: _Flood) -> Event:
        victim = st.victim
        fl.seq += 1
        fl.reported_packets = fl.packets
        fl.reported_peak = fl.peak
        fl.next_report = fl.last + REPORT_EVERY
        self.summaries += 1
        fid = hashlib.sha256(json.dumps([victim, kind.name, fl.start]).encode()).hexdigest()[:32]
        tops = fl.sources.top()
        ev: Event = {
            **st.meta,
            "@timestamp": to_utc_iso(fl.start), "event.kind": "event", "event.module": "soc",
            "event.dataset": "soc.flood", "event.category": ["network"], "event.type": ["info"],
            "event.start": to_utc_iso(fl.start), "event.end": to_utc_iso(fl.last),
            "destination.ip": victim, "related.ip": [victim, *tops],
            "soc.flood.id": fid, "soc.flood.kind": kind.name, "soc.flood.summary": fl.seq,
            "soc.flood.interval": kind.interval, "soc.flood.peak": round(fl.peak * kind.interval),
            "soc.flood.peak_rate": round(fl.peak, 3), "soc.flood.packets": fl.packets, "soc.flood.bytes": fl.bytes,
            "soc.flood.sources": max(fl.hll.count(), min(len(fl.sources.counts), 1)),
            "soc.flood.top_sources": tops, "soc.flood.top_ports": fl.ports.top(),
        }
        if kind.ports == "victim" and (vports := fl.ports.top(1)):
            ev["destination.port"] = vports[0]
        if fl.start_baseline is not None:
            ev["soc.flood.baseline"] = round(fl.start_baseline, 3)
            ev["soc.flood.ratio"] = round(fl.peak / max(fl.start_baseline, kind.min_baseline), 2)
        if st.label[0] >= 0:
            ev["gov.label.rank"], ev["gov.label.level"] = st.label
        ev["event.id"] = event_id(ev)  # of the content: the same input gives the same summary, another is kept
        return ev

    def state(self) -> dict[str, int]:
        """States held, floods open, and counters (contributions seen, late, evicted states, summaries)."""
        return {"states": len(self.states), "floods": sum(1 for s in self.states.values() if s.flood),
                "seen": self.seen, "late": self.late, "evicted_states": self.evicted, "summaries": self.summaries}
