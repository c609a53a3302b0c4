"""Beaconing: BeaconEnricher statistics against a from-scratch recomputation, and the shipped rule on traffic built
with scapy and run through the real sensor (jittered beacons fire once; browsing, a long connection, a handful of
connections and a resolver's query stream do not), on every real capture, and with bounded memory.

Regenerate the rule's samples (after a deliberate change): ``.venv/bin/python -m tests.correlator.test_beacon``.
"""

from __future__ import annotations

import csv
import json
import random
import re
import statistics
from pathlib import Path

import pytest

from correlator.beacon import FULL_CONNECTIONS, MIN_CONNECTIONS, BeaconEnricher
from correlator.events import normalize
from correlator.sigma import SHIPPED_RULES
from correlator.sigma.detector import SigmaDetector, SigmaEngine
from correlator.sigma.loader import load_placeholders
from tests.policy.traffic import dns_exchange, session, write

RULE = SHIPPED_RULES / "network" / "net_beaconing.yml"
SAMPLES = SHIPPED_RULES / "tests" / "net_beaconing"
TITLE = "Beaconing - Regular Connections From One Host To One Service"
T0 = 1_793_000_000.0  # 2026-10-26T07:33:20Z
CLIENT, C2 = "10.20.0.7", "198.51.100.80"


# --- traffic (scapy packets; seeded, so every run and the samples are the same) ------------------------------------
def beacon(start: float, period: float, jitter: float, n: int, seed: int, client: str = CLIENT, server: str = C2,
           port: int = 443, misses: int = 0) -> list:
    """``n`` check-ins every ``period`` s +- ``jitter`` (fraction), request 200-1200 B and reply 100-4000 B each;
    ``misses`` check-ins are skipped (the implant slept through them)."""
    rng = random.Random(seed)
    skipped = set(rng.sample(range(1, n), misses)) if misses else set()
    out, t = [], start
    for i in range(n):
        if i not in skipped:
            talk = [(0, rng.randbytes(rng.randint(200, 1200))), (1, rng.randbytes(rng.randint(100, 4000)))]
            out += session(client, server, port, t, talk, sport=40000 + i)
        t += period * (1 + rng.uniform(-jitter, jitter))
    return out


def browsing(start: float, minutes: float, seed: int, client: str = "10.20.0.8",
             servers: tuple[str, ...] = ("203.0.113.10", "203.0.113.11", "192.0.2.44")) -> list:
    """A person reading pages: think times log-normal (median 30 s), each page opens 1-6 connections in a burst
    of under half a second to one or two of a few sites, responses 0.5-60 kB."""
    rng = random.Random(seed)
    out, t, sport = [], start, 30000
    while t < start + minutes * 60:
        for server in rng.sample(servers, rng.randint(1, min(2, len(servers)))):
            for _ in range(rng.randint(1, 6)):
                sport += 1
                talk = [(0, rng.randbytes(rng.randint(300, 900))), (1, rng.randbytes(rng.randint(500, 1400)))]
                out += session(client, server, 443, t + rng.uniform(0, 0.5), talk, sport=sport)
        t += rng.lognormvariate(3.4, 1.0)
    return out


def resolver_stream(start: float, seconds: float, seed: int, resolver: str = "10.20.0.53",
                    upstream: str = "192.0.2.53") -> list:
    """A recursive resolver forwarding its clients' queries upstream: Poisson arrivals (2/s), distinct names."""
    rng = random.Random(seed)
    out, t, n = [], start, 0
    while t < start + seconds:
        n += 1
        name = f"{rng.choice(['www', 'mail', 'cdn', 'api', 'img'])}{n}.{rng.choice(['example', 'example.org'])}."
        out += dns_exchange(resolver, upstream, name, t, sport=20000 + n % 40000)
        t += rng.expovariate(2.0)
    return out


def long_lived(start: float, hours: float, client: str = CLIENT, server: str = "192.0.2.90") -> list:
    """One TCP connection exchanging a keep-alive every 10 s."""
    talk = [(d, b"k" * 40) for _ in range(int(hours * 360)) for d in (0, 1)]
    pkts = session(client, server, 8443, start, talk, sport=41000)
    for i, p in enumerate(pkts[3:-3]):
        p.time = start + 0.01 + (i // 2) * 10 + (i % 2) * 0.001
    pkts[-3].time, pkts[-2].time, pkts[-1].time = (start + hours * 3600 + k for k in (1, 1.001, 1.002))
    return pkts


# --- the real path: pcap -> sensor -> enricher -> shipped rules -----------------------------------------------------
def sensor_events(pcap: Path, **flow_options: float) -> list[dict]:
    from sensors.capture import read_file
    from sensors.engine import Sensor

    return list(Sensor("sample", **flow_options).run(read_file(str(pcap))))


def enriched(packets: list, tmp: Path, name: str = "t.pcap", **flow_options: float) -> list[dict]:
    events = sensor_events(write(tmp / name, packets), **flow_options)
    BeaconEnricher()(events)
    return events


@pytest.fixture(scope="module")
def shipped() -> SigmaEngine:
    return SigmaEngine.load([SHIPPED_RULES], "ecs", load_placeholders([SHIPPED_RULES]))


def beacon_alerts(engine: SigmaEngine, events: list[dict]) -> list[dict]:
    det = SigmaDetector(engine)
    alerts = det.detect([normalize(e) for e in events]) + det.flush()
    return [a for a in alerts if a["soc.alert.rule.name"] == TITLE]


# --- the rule's samples: the enricher's real output over sensor flows ---------------------------------------------
def negative_traffic() -> list:
    """Near misses, each failing one condition: a 2 s automated login loop (interval), six check-ins a minute apart
    (count), a host resolving a name every minute through a sanctioned resolver (exclusion), and a person browsing
    (regularity)."""
    fast = beacon(T0, 2.0, 0.05, 20, 11, client="10.20.0.9", server="192.0.2.21", port=21)
    handful = beacon(T0, 60.0, 0.0, 6, 12, client="10.20.0.9", server="192.0.2.80")
    rng = random.Random(13)
    sanctioned = [p for i in range(20)
                  for p in dns_exchange("10.20.0.9", "10.0.0.53", "updates.example.", T0 + i * 60 + rng.uniform(0, 1),
                                        sport=50000 + i)]
    return fast + handful + sanctioned + browsing(T0, 15, 14, servers=("203.0.113.10",))


SAMPLE_TRAFFIC = {"positive": lambda: beacon(T0, 60, 0.10, 30, 1), "negative": negative_traffic}


def sample_events(kind: str, tmp: Path) -> list[dict]:
    return [e for e in enriched(SAMPLE_TRAFFIC[kind](), tmp, f"{kind}.pcap") if e["event.dataset"] == "soc.flow"]


def write_samples(tmp: Path) -> None:
    SAMPLES.mkdir(exist_ok=True)
    for kind in SAMPLE_TRAFFIC:
        lines = [json.dumps(e) + "\n" for e in sample_events(kind, tmp)]
        (SAMPLES / f"{kind}.ndjson").write_text("".join(lines), encoding="utf-8")


@pytest.mark.parametrize("kind", sorted(SAMPLE_TRAFFIC))
def test_samples_are_the_enrichers_output(tmp_path: Path, kind: str) -> None:
    shipped = [json.loads(x) for x in (SAMPLES / f"{kind}.ndjson").read_text(encoding="utf-8").splitlines()]
    assert shipped == sample_events(kind, tmp_path)


def test_negative_sample_misses_each_condition_for_its_own_reason(tmp_path: Path) -> None:
    by_dst: dict[str, list[dict]] = {}
    for e in sample_events("negative", tmp_path):
        by_dst.setdefault(e["destination.ip"], []).append(e)
    last = {d: es[-1] for d, es in by_dst.items()}
    assert last["192.0.2.21"]["soc.beacon.score"] >= 0.8 and last["192.0.2.21"]["soc.beacon.interval"] < 10
    handful = last["192.0.2.80"]  # perfectly regular, too few (and the count subscore says so)
    assert handful["soc.beacon.count"] == 6 and handful["soc.beacon.jitter"] == 0 and handful["soc.beacon.score"] < 0.8
    at16 = next(e for e in by_dst["10.0.0.53"] if e["soc.beacon.count"] == 16)  # would fire but for the exclusion
    assert at16["soc.beacon.score"] >= 0.8 and at16["soc.beacon.jitter"] <= 0.3 and at16["soc.beacon.interval"] >= 10
    web = [e for e in by_dst["203.0.113.10"] if e["soc.beacon.count"] in (16, 32)]
    assert web and all(e["soc.beacon.jitter"] > 0.3 for e in web)


# --- statistics: the streaming window against a from-scratch computation ------------------------------------------
def _reference(starts: list[float], sizes: list[float]) -> dict:
    """The documented formula computed directly with `statistics` over the window's connections."""

    def sub(values: list[float]) -> tuple[float, float, float]:
        q1, med, q3 = statistics.quantiles(values, n=4, method="inclusive")
        rel = statistics.median(abs(v - med) for v in values) / med if med > 0 else 1.0
        spread = q3 - q1
        skew = (q3 + q1 - 2 * med) / spread if spread >= 0.2 * med and q1 < med < q3 else 0.0
        return med, rel, ((1 - abs(skew)) + max(0.0, 1 - rel)) / 2

    order = sorted(range(len(starts)), key=lambda i: starts[i])
    t = [starts[i] for i in order]
    interval, jitter, ts = sub([b - a for a, b in zip(t, t[1:], strict=False)])
    _, size_jitter, ds = sub([sizes[i] for i in order])
    score = 0.5 * ts + 0.25 * ds + 0.25 * min(1.0, len(t) / FULL_CONNECTIONS)
    return {"soc.beacon.interval": round(interval, 3), "soc.beacon.jitter": round(jitter, 4),
            "soc.beacon.size_jitter": round(size_jitter, 4), "soc.beacon.score": round(score, 4),
            "soc.beacon.duration": round(t[-1] - t[0], 3)}


def _flow(start: float, size: int, dst: str = C2, port: int = 443, part: int = 0) -> dict:
    from sensors.engine import iso

    return {"@timestamp": iso(start), "event.start": iso(start), "event.dataset": "soc.flow",
            "event.type": ["connection", "start", "end"] if part == 0 else ["connection", "end"],
            "source.ip": CLIENT, "destination.ip": dst, "destination.port": port, "network.transport": "tcp",
            "source.bytes": size}


@pytest.mark.parametrize("window", [8, 32])
def test_streaming_statistics_equal_recomputation_with_out_of_order_starts(window: int) -> None:
    rng = random.Random(window)
    starts = [T0 + i * 30 + rng.uniform(-20, 20) for i in range(120)]  # neighbours swap order often
    arrival = sorted(range(120), key=lambda i: starts[i] + rng.uniform(0, 90))  # emitted when flows end
    sizes = [rng.choice([300, 310, 320, 900, 2000]) for _ in range(120)]
    enricher = BeaconEnricher(window=window)
    held: list[int] = []
    checked = 0
    for i in arrival:
        ev = _flow(starts[i], sizes[i])
        enricher([ev])
        if len(held) == window and starts[i] < min(starts[j] for j in held):
            assert "soc.beacon.count" not in ev  # older than the full window: late, not annotated
            continue
        held = sorted([*held, i], key=lambda j: starts[j])[-window:]
        assert ev["soc.beacon.count"] == enricher.seen - enricher.late
        if len(held) >= MIN_CONNECTIONS:
            want = _reference([starts[j] for j in held], [sizes[j] for j in held])
            assert {k: ev[k] for k in want} == pytest.approx(want, abs=2e-4)
            checked += 1
    assert checked > 100 and enricher.state()["connections"] == window


def test_only_connection_starts_count() -> None:
    enricher = BeaconEnricher()
    events = [_flow(T0 + 60 * i, 500, part=1) for i in range(20)] + [{"event.dataset": "soc.dns", "@timestamp": "x"}]
    enricher(events)
    assert not any("soc.beacon.count" in e for e in events) and enricher.state()["pairs"] == 0


def test_bounded_memory_evicts_least_recently_seen_pairs() -> None:
    enricher = BeaconEnricher(window=16, max_pairs=100)
    sizes = []
    for i in range(1000):
        enricher([_flow(T0 + k * 60, 400, dst=f"10.99.{i // 250}.{i % 250}") for k in range(20)])
        if i in (99, 999):
            sizes.append(enricher.state()["bytes"])
    s = enricher.state()
    assert s["pairs"] == 100 and s["evicted_pairs"] == 900 and s["connections"] == 100 * 16 and s["seen"] == 20_000
    assert sizes[1] <= sizes[0] * 1.1  # ten times the pairs, the same memory (give or take dict slack)
    assert sizes[1] / 100 < 3 * (4 * 16 * 8)  # per pair: four arrays of `window` doubles, with overheads
    kept = _flow(T0 + 21 * 60, 400, dst="10.99.3.249")  # the most recent pair is still there
    gone = _flow(T0 + 21 * 60, 400, dst="10.99.0.0")  # the first one was evicted: starts over
    enricher([kept, gone])
    assert kept["soc.beacon.count"] == 21 and gone["soc.beacon.count"] == 1
    with pytest.raises(ValueError):
        BeaconEnricher(window=3)


# --- the real path: scapy pcap -> sensor -> enricher -> shipped Sigma rule ----------------------------------------
POSITIVES = {  # each runs past the first checkpoint (16 connections), not the second (32)
    "60s-10pct-30x": lambda: beacon(T0, 60, 0.10, 30, 1),
    "45s-30pct-30x": lambda: beacon(T0, 45, 0.30, 30, 2),
    "300s-20pct-31x-4missed": lambda: beacon(T0, 300, 0.20, 31, 3, misses=4),
    "3600s-5pct-20x": lambda: beacon(T0, 3600, 0.05, 20, 6),
}


@pytest.mark.parametrize("name", sorted(POSITIVES))
def test_jittered_beacon_fires_once(tmp_path: Path, shipped: SigmaEngine, name: str) -> None:
    events = enriched(POSITIVES[name](), tmp_path)
    alerts = beacon_alerts(shipped, events)
    assert len(alerts) == 1, [a["soc.alert.reason"] for a in alerts]
    a = alerts[0]
    assert (a["source.ip"], a["destination.ip"]) == (CLIENT, C2)
    assert a["soc.alert.suppression.docs_count"] == 1 and a["soc.alert.severity"] == "medium"
    assert "T1071" in json.dumps(a["soc.alert.rule.threat"])


def test_persistent_beacon_realerts_with_backoff(tmp_path: Path, shipped: SigmaEngine) -> None:
    alerts = beacon_alerts(shipped, enriched(beacon(T0, 60, 0.10, 200, 8), tmp_path))  # 3 h 20 min
    assert len(alerts) == 4  # at the 16th, 32nd, 64th and 128th check-in, not at each of 185 after the 16th
    starts = [a["soc.alert.suppression.start"] for a in alerts]
    assert starts == sorted(starts) and len(set(a["soc.alert.uuid"] for a in alerts)) == 4


def _handful() -> list:
    return beacon(T0, 60, 0.0, 6, 7)


NEGATIVES = {
    "browsing-2h": (lambda: browsing(T0, 120, 4), {}),
    "resolver-stream-10min": (lambda: resolver_stream(T0, 600, 5), {}),
    "long-lived-1h": (lambda: long_lived(T0, 1.0), {"active": 60.0}),  # cut into ~60 parts a minute apart
    "handful-perfect": (_handful, {}),
}


@pytest.mark.parametrize("name", sorted(NEGATIVES))
def test_benign_traffic_does_not_fire(tmp_path: Path, shipped: SigmaEngine, name: str) -> None:
    build, options = NEGATIVES[name]
    events = enriched(build(), tmp_path, **options)
    assert beacon_alerts(shipped, events) == []
    flows = [e for e in events if e["event.dataset"] == "soc.flow"]
    counts = [e.get("soc.beacon.count", 0) for e in flows]
    if name == "long-lived-1h":  # the trap was there: periodic parts of one connection, counted once
        assert len(flows) > 50 and counts.count(1) == 1 and max(counts) == 1
    elif name == "handful-perfect":  # perfectly regular, but too few
        assert max(counts) == 6 and flows[-1]["soc.beacon.jitter"] == 0
    else:  # the rule was consulted: pairs passed its count checkpoints
        assert max(counts) >= 64


def test_standard_pipeline_with_the_enricher_stores_one_beacon_alert(tmp_path: Path, sqlite_store) -> None:
    from correlator.query import Query
    from soc_cli.wiring import build_pipeline

    pipeline = build_pipeline(sqlite_store)
    pipeline.enrichers.append(BeaconEnricher())  # the one-line change soc_cli/wiring.py needs
    events = sensor_events(write(tmp_path / "b.pcap", beacon(T0, 60, 0.10, 30, 1)))
    stats = pipeline.run(events)
    assert stats.rejected == 0
    alerts = [a for a in sqlite_store.search_alerts(Query(), limit=100) if a["soc.alert.rule.name"] == TITLE]
    assert len(alerts) == 1 and alerts[0]["destination.ip"] == C2


# --- real captures: none is described as containing a beacon (pcaps/MANIFEST.tsv), none may fire ------------------
@pytest.mark.corpus
def test_no_real_capture_fires(corpus: Path, shipped: SigmaEngine) -> None:
    rows = list(csv.DictReader((corpus / "pcaps" / "MANIFEST.tsv").open(encoding="utf-8"), delimiter="\t"))
    described = [r["file"] for r in rows if re.search(r"beacon|\bc2\b|command.and.control|implant|\brat\b",
                                                      r["contents"], re.I)]
    assert described == []  # a capture described as a beacon would be expected to fire instead
    pcaps = sorted(p for p in (corpus / "pcaps").iterdir() if p.suffix in (".pcap", ".pcapng"))
    assert [p.name for p in pcaps] == sorted(r["file"] for r in rows)
    scored: dict[str, list[dict]] = {}
    for pcap in pcaps:
        events = sensor_events(pcap)
        BeaconEnricher()(events)
        scored[pcap.name] = [e for e in events if "soc.beacon.score" in e]
        assert beacon_alerts(shipped, events) == [], pcap.name
    assert sum(map(len, scored.values())) > 150  # the statistics ran (brute force, browsing, nmap, HTTP)
    # the FTP brute force is machine-regular (score >= 0.8) but a login every ~2 s is no check-in period
    ftp = max(scored["zk_ftp-bruteforce.pcap"], key=lambda e: e["soc.beacon.score"])
    assert ftp["soc.beacon.score"] >= 0.8 and ftp["soc.beacon.interval"] < 10


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        write_samples(Path(d))
