"""Floods: the four real DDoS captures each raise exactly their flood alert through `soc sensor pcap` (victim, kind,
counts against tshark); scapy-crafted HTTP and ICMP floods alert; the benign corpus stays silent; the relative form
judges a busy portal and a quiet server each on its own normal; state is bounded.

Regenerate the rules' samples (after a deliberate change): ``.venv/bin/python -m tests.correlator.test_flood``.
"""

from __future__ import annotations

import csv
import json
import random
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from correlator.events import normalize
from correlator.flood import KINDS, FloodEnricher
from correlator.sigma import SHIPPED_RULES
from correlator.sigma.detector import SigmaDetector, SigmaEngine
from correlator.sigma.loader import load_placeholders
from tests.policy.traffic import session, write

T0 = 1_793_000_000.0  # 2026-10-26T07:33:20Z
VICTIM = "172.16.10.10"  # the citizen portal (portal-dmz in the shipped policy)
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
RULES = {"syn": "net_flood_syn", "syn-ack": "net_flood_syn_ack", "udp-amplification": "net_flood_udp_amplification",
         "http": "net_flood_http", "icmp": "net_flood_icmp"}
CORPUS_KIND = {"pkt.TCP.synflood.spoofed.pcap": "syn", "amp.TCP.syn.optionallyACK.optionallysamePort.pcapng": "syn-ack",
               "amp.UDP.isakmp.pcap": "udp-amplification", "amp.UDP.snmp.src161.pcapng": "udp-amplification"}


# --- traffic (scapy; seeded) ---------------------------------------------------------------------------------------
def _ips(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [".".join(str(rng.randint(lo, hi)) for lo, hi in ((1, 223), (0, 255), (0, 255), (1, 254))) for _ in range(n)]


def syn_flood(n: int, rate: float, sources: int, seed: int = 1, victim: str = VICTIM, port: int = 443) -> list:
    rng, ips = random.Random(seed), _ips(sources, seed)
    out = []
    for i in range(n):
        p = ETH / IP(src=ips[i % sources], dst=victim) / TCP(sport=rng.randint(1024, 65535), dport=port, flags="S")
        p.time = T0 + i / rate
        out.append(p)
    return out


def syn_ack_reflection(n: int, period: float, reflectors: int, seed: int = 2, victim: str = VICTIM) -> list:
    ips, out = _ips(reflectors, seed), []
    for i in range(n):
        p = ETH / IP(src=ips[i % reflectors], dst=victim) / TCP(sport=443, dport=40000 + i, flags="SA")
        p.time = T0 + i * period
        out.append(p)
    return out


def udp_amplification(n: int, rate: float, sources: int, sport: int = 123, size: int = 468, seed: int = 3,
                      victim: str = VICTIM) -> list:
    rng, ips, out = random.Random(seed), _ips(sources, seed), []
    for i in range(n):
        p = ETH / IP(src=ips[i % sources], dst=victim) / UDP(sport=sport, dport=rng.randint(1024, 65535)) / (
            b"\x00" * size)
        p.time = T0 + i / rate
        out.append(p)
    return out


def http_requests(n: int, rate: float, clients: int, seed: int = 4, server: str = VICTIM, start: float = T0) -> list:
    ips, out = _ips(clients, seed), []
    req = b"GET /services HTTP/1.1\r\nHost: portal.gov.example\r\n\r\n"
    res = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    for i in range(n):
        out += session(ips[i % clients], server, 80, start + i / rate, [(0, req), (1, res)], sport=20000 + i % 40000)
    return out


def icmp_flood(n: int, rate: float, sources: int, seed: int = 5, victim: str = VICTIM) -> list:
    ips, out = _ips(sources, seed), []
    for i in range(n):
        p = ETH / IP(src=ips[i % sources], dst=victim) / ICMP(type=8, id=i % 65536, seq=i % 65536) / (b"x" * 56)
        p.time = T0 + i / rate
        out.append(p)
    return out


# --- the real path -------------------------------------------------------------------------------------------------
def sensor_events(pcap: Path) -> list[dict]:
    from sensors.capture import read_file
    from sensors.engine import Sensor

    return [normalize(e) for e in Sensor("sample").run(read_file(str(pcap)))]


def summaries(events: list[dict], enricher: FloodEnricher | None = None, batch: int = 2000) -> list[dict]:
    """The enricher over ``events`` in pipeline-sized batches, flushed at the end: the summaries it appended."""
    fe = enricher or FloodEnricher()
    out = []
    for i in range(0, len(events), batch):
        b = events[i:i + batch]
        n = len(b)
        fe(b)
        out += b[n:]
    return out + fe.flush()


@pytest.fixture(scope="module")
def shipped() -> SigmaEngine:
    return SigmaEngine.load([SHIPPED_RULES], "ecs", load_placeholders([SHIPPED_RULES]))


def flood_alerts(engine: SigmaEngine, events: list[dict]) -> list[dict]:
    """Alerts of the flood rules, as the detector folds and upserts them (the last version of each id)."""
    det = SigmaDetector(engine)
    by_id: dict[str, dict] = {}
    for a in det.detect(events) + det.flush():
        if "soc.flood.kind" in a:
            by_id[a["soc.alert.uuid"]] = a
    return list(by_id.values())


def traffic_alerts(engine: SigmaEngine, packets: list, tmp: Path) -> tuple[list[dict], list[dict]]:
    sums = summaries(sensor_events(write(tmp / "t.pcap", packets)))
    return flood_alerts(engine, sums), sums


# --- samples: the enricher's real summaries of crafted floods -------------------------------------------------------
SAMPLE_TRAFFIC = {
    "syn": (lambda: syn_flood(3000, 2000, 300), lambda: syn_flood(1200, 600, 300)),  # 600/s: under the static 1000
    "syn-ack": (lambda: syn_ack_reflection(60, 2.0, 5), lambda: syn_ack_reflection(60, 2.0, 2)),  # 2 reflectors
    "udp-amplification": (lambda: udp_amplification(2000, 1000, 200),
                          lambda: udp_amplification(2000, 1000, 20)),  # 20 sources: under the static 50
    "http": (lambda: http_requests(900, 300, 60), lambda: http_requests(300, 100, 60)),  # 100/s: under 200
    "icmp": (lambda: icmp_flood(1500, 1000, 30), lambda: icmp_flood(800, 400, 30)),  # 400/s: under 500
}


def sample_events(kind: str, positive: bool, tmp: Path) -> list[dict]:
    pkts = SAMPLE_TRAFFIC[kind][0 if positive else 1]()
    return [s for s in summaries(sensor_events(write(tmp / f"{kind}.pcap", pkts))) if s["soc.flood.kind"] == kind]


def write_samples(tmp: Path) -> None:
    from correlator.sigma.testing import run_rules

    for kind, rule in RULES.items():
        d = SHIPPED_RULES / "tests" / rule
        d.mkdir(exist_ok=True)
        for positive, name in ((True, "positive"), (False, "negative")):
            lines = [json.dumps(e) + "\n" for e in sample_events(kind, positive, tmp)]
            (d / f"{name}.ndjson").write_text("".join(lines), encoding="utf-8")
        results, _ = run_rules([SHIPPED_RULES / "network" / f"{rule}.yml"], [d / "positive.ndjson"])
        n = sum(r.matches for r in results)  # the summaries past the thresholds (folded into one alert)
        (d / "info.yml").write_text(
            "regression_tests_info:\n"
            f"    - name: Positive samples\n      type: ndjson\n      match_count: {n}\n"
            f"      path: tests/{rule}/positive.ndjson\n"
            f"    - name: Negative samples\n      type: ndjson\n      match_count: 0\n"
            f"      path: tests/{rule}/negative.ndjson\n", encoding="utf-8")


@pytest.mark.parametrize("kind", sorted(RULES))
def test_samples_are_the_enrichers_output(tmp_path: Path, kind: str) -> None:
    d = SHIPPED_RULES / "tests" / RULES[kind]
    for positive, name in ((True, "positive"), (False, "negative")):
        shipped = [json.loads(x) for x in (d / f"{name}.ndjson").read_text(encoding="utf-8").splitlines()]
        assert shipped == sample_events(kind, positive, tmp_path), name


# --- crafted floods through the sensor: one alert per victim and kind, folded, with the right counts ---------------
CRAFTED = {  # kind: (traffic, packets that count, sources, peak per interval)
    "http": (lambda: http_requests(900, 300, 60), 900, 60, 300),
    "icmp": (lambda: icmp_flood(3000, 1000, 40), 3000, 40, 1000),
    "syn": (lambda: syn_flood(5000, 2500, 1000), 5000, 1000, 2500),
    "udp-amplification": (lambda: udp_amplification(3000, 1500, 300, sport=11211), 3000, 300, 1500),
}


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_crafted_flood_raises_one_alert_with_its_counts(tmp_path: Path, shipped: SigmaEngine, kind: str) -> None:
    build, packets, sources, peak = CRAFTED[kind]
    alerts, sums = traffic_alerts(shipped, build(), tmp_path)
    assert len(alerts) == 1, [a["soc.alert.reason"] for a in alerts]
    a = alerts[0]
    assert a["destination.ip"] == VICTIM and a["soc.flood.kind"] == kind
    assert a["soc.flood.packets"] == packets and a["soc.flood.sources"] == pytest.approx(sources, rel=0.03)
    assert a["soc.flood.peak_rate"] == pytest.approx(peak, rel=0.02)  # flows crossing a second boundary: 2 %
    assert len(a["soc.flood.top_sources"]) == min(10, sources) and VICTIM in a["related.ip"]
    matching = [s for s in sums if s["soc.flood.peak_rate"] >= a["soc.flood.peak_rate"] / 8]
    assert len(sums) > 1 and 1 <= a["soc.alert.suppression.docs_count"] <= len(matching)  # the later ones folded in
    assert kind in a["soc.alert.reason"] and str(a["soc.flood.sources"]) in a["soc.alert.reason"]
    assert "T1498" in json.dumps(a["soc.alert.rule.threat"]) or "T1499" in json.dumps(a["soc.alert.rule.threat"])


def test_two_floods_apart_are_two_alerts_and_one_flood_keeps_its_id(tmp_path: Path, shipped: SigmaEngine) -> None:
    first = syn_flood(4000, 2000, 500, seed=7)
    second = syn_flood(4000, 2000, 500, seed=8)
    for p in second:
        p.time += 3600
    alerts, sums = traffic_alerts(shipped, first + second, tmp_path)
    assert len(alerts) == 2 and len({s["soc.flood.id"] for s in sums}) == 2
    assert sorted(a["soc.flood.packets"] for a in alerts) == [4000, 4000]
    # a long flood (10 minutes at 60/s, 30 times the host's normal) keeps one id: every summary has the flood's start
    history = _synthetic_flows(T0 - 900, 900, 2)
    long = [s for s in summaries([normalize(e) for e in history + _synthetic_flows(T0, 600, 60)])
            if s["event.end"] >= "2026-10-26T07:33:20"]
    assert len({s["@timestamp"] for s in long}) == 1 and len(long) >= 10
    assert long[-1]["soc.flood.packets"] == 600 * 60 and long[-1]["soc.flood.ratio"] >= 10


def _synthetic_flows(start: float, seconds: int, rate: int) -> list[dict]:
    """Unanswered SYN flows (as the sensor emits them) at ``rate`` per second."""
    from correlator.events import to_utc_iso

    out = []
    for i in range(seconds * rate):
        t = to_utc_iso(start + i / rate)
        out.append({"@timestamp": t, "event.start": t, "event.end": t, "event.dataset": "soc.flow",
                    "network.transport": "tcp", "soc.flow.state": "unanswered", "soc.flow.source_flags": ["SYN"],
                    "source.ip": f"10.{i % 200}.{i // 200 % 250}.1", "source.port": 1024 + i % 60000,
                    "destination.ip": VICTIM, "destination.port": 443, "source.packets": 1, "source.bytes": 60,
                    "destination.packets": 0})
    return out


# --- relative form: each host on its own normal (request events as the HTTP parser emits them) --------------------
def _requests(server: str, start: float, seconds: float, rate: float, clients: int = 50) -> list[dict]:
    from correlator.events import to_utc_iso

    n = int(seconds * rate)
    return [{"@timestamp": to_utc_iso(start + i / rate), "event.dataset": "soc.http", "http.request.method": "GET",
             "source.ip": f"198.18.{i % clients // 250}.{i % clients % 250 + 1}", "destination.ip": server,
             "destination.port": 443} for i in range(n)]


def test_relative_form_judges_each_host_on_its_own_normal(shipped: SigmaEngine) -> None:
    busy, quiet = "172.16.10.10", "10.10.1.20"
    normal = _requests(busy, T0, 900, 60) + _requests(quiet, T0, 900, 0.5)
    burst = _requests(busy, T0 + 900, 20, 250) + _requests(quiet, T0 + 900, 20, 60)  # busy: 4x, quiet: 120x
    events = sorted(normal + burst, key=lambda e: e["@timestamp"])
    sums = summaries(events)
    alerts = flood_alerts(shipped, sums)
    assert [a["destination.ip"] for a in alerts] == [quiet]  # 60/s is under the static 200, but 120x its normal
    q = alerts[0]
    assert q["soc.flood.ratio"] >= 10 and q["soc.flood.peak_rate"] == pytest.approx(60, abs=1)
    b = max((s for s in sums if s["destination.ip"] == busy), key=lambda s: s["soc.flood.peak_rate"])
    assert b["soc.flood.peak_rate"] >= 200 and b["soc.flood.ratio"] < 10  # the static form alone would fire
    assert b["soc.flood.baseline"] == pytest.approx(60, rel=0.1)


def test_bounded_state() -> None:
    fe = FloodEnricher(max_states=100)
    events = [normalize(e) for i in range(1000) for e in _requests(f"10.77.{i // 250}.{i % 250}", T0 + i, 1, 3)]
    summaries(events, fe)
    s = fe.state()
    assert s["states"] == 100 and s["evicted_states"] == 900 and s["seen"] == 3000 and s["summaries"] == 0


# --- the real captures ----------------------------------------------------------------------------------------------
def _cli_alerts(pcap: Path, tmp: Path) -> list[dict]:
    """`soc sensor pcap` into a fresh store; the stored alerts (the test reads the store as the pipeline wrote it)."""
    from correlator.query import Query
    from correlator.store import open_store

    uri = f"sqlite:///{tmp / (pcap.name + '.db')}"
    res = subprocess.run([str(Path(".venv/bin/soc").resolve()), "sensor", "pcap", str(pcap), "--store", uri],
                         capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr
    st = open_store(uri)
    try:
        return st.search_alerts(Query(), limit=100_000)
    finally:
        st.close()


def _tshark(pcap: Path, display_filter: str, *fields: str) -> list[list[str]]:
    from tests.debian import require

    tshark = require("tshark", "tshark", "independent packet counts for the flood captures")
    out = subprocess.run([tshark, "-r", str(pcap), "-Y", display_filter, "-T", "fields",
                          *[x for f in fields for x in ("-e", f)]], capture_output=True, text=True, check=True)
    return [line.split("\t") for line in out.stdout.splitlines()]


TRUTH_FILTER = {"syn": "tcp.flags.syn==1 && tcp.flags.ack==0 && ip.dst==10.10.10.10",
                "syn-ack": "tcp.flags.syn==1 && tcp.flags.ack==1 && ip.dst==10.10.10.10",
                "udp-amplification": "udp && ip.dst==10.10.10.10 && !icmp"}


@pytest.mark.corpus
@pytest.mark.parametrize("name", sorted(CORPUS_KIND))
def test_each_ddos_capture_raises_exactly_its_flood_alert(corpus: Path, tmp_path: Path, name: str) -> None:
    rows = {r["file"]: r for r in csv.DictReader((corpus / "ddos" / "MANIFEST.tsv").open(encoding="utf-8"),
                                                  delimiter="\t")}
    assert sorted(rows) == sorted(CORPUS_KIND)  # a new capture needs its expected kind here
    pcap = corpus / "ddos" / name
    alerts = _cli_alerts(pcap, tmp_path)
    assert len(alerts) == 1, [a["soc.alert.reason"] for a in alerts]  # its flood alert and nothing else
    a = alerts[0]
    kind = CORPUS_KIND[name]
    assert (a["destination.ip"], a["soc.flood.kind"]) == ("10.10.10.10", kind)
    truth = _tshark(pcap, TRUTH_FILTER[kind], "ip.src", "tcp.srcport", "udp.srcport")
    assert a["soc.flood.packets"] == len(truth)
    assert a["soc.flood.sources"] == pytest.approx(len({r[0] for r in truth}), rel=0.03)
    ports = [int(r[1] or r[2]) for r in truth]
    if kind != "syn":  # reflections name the reflectors' port
        assert a["soc.flood.top_ports"][0] == max(set(ports), key=ports.count)
    assert a["soc.alert.rule.name"].split()[0] in ("SYN", "SYN-ACK", "UDP")


@pytest.mark.corpus
def test_benign_corpus_stays_silent(corpus: Path, shipped: SigmaEngine) -> None:
    pcaps = sorted(p for p in (corpus / "pcaps").iterdir() if p.suffix in (".pcap", ".pcapng"))
    assert len(pcaps) > 30
    seen = 0
    for pcap in pcaps:
        fe = FloodEnricher()
        sums = summaries(sensor_events(pcap), fe)
        seen += fe.state()["seen"]
        assert flood_alerts(shipped, sums) == [], pcap.name
        assert sums == [], pcap.name  # nothing reaches a floor: benign captures store no soc.flood events at all
    assert seen > 1000  # the kinds saw traffic (scans' unanswered SYNs, pings, HTTP requests)


def test_every_kind_has_a_rule_with_samples() -> None:
    assert sorted(KINDS) == sorted(RULES)
    for rule in RULES.values():
        assert (SHIPPED_RULES / "network" / f"{rule}.yml").is_file()
        assert (SHIPPED_RULES / "tests" / rule / "positive.ndjson").stat().st_size > 0


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        write_samples(Path(d))
