"""pcap evidence: the extract of an alert's, an incident's or any flow's packets equals scapy's filter of the same
capture by the flows' 5-tuples (either direction) within each flow's start and end (independent truth), on the demo
capture and on corpus captures; the extract carries its label and is refused above the reader's clearance."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest
from scapy.config import conf
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.utils import RawPcapReader

from correlator.evidence import FlowRef, packets_of
from correlator.query import Query, Term
from correlator.store import open_store
from tests.triage.world import DEMO_PCAP, ingest, lines, soc


@pytest.fixture(autouse=True)
def reader(monkeypatch):
    monkeypatch.setattr("correlator.audit.current_actor", lambda: "soc-admin")


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def capture(path: Path) -> list[tuple[float, bytes, tuple | None]]:
    """Every frame of the capture: (time, bytes, (proto, {ip, port}, {ip, port}) as scapy dissects it)."""
    out = []
    with RawPcapReader(str(path)) as reader:
        for data, meta in reader:
            linktype = getattr(reader, "linktype", 1) if not hasattr(meta, "linktype") else meta.linktype
            ts = meta.sec + meta.usec / 1e6 if hasattr(meta, "sec") else (meta.tshigh << 32 | meta.tslow) / meta.tsresol
            if linktype == 0:  # BSD loopback: a 4-byte address family scapy does not map for every OS's AF_INET6
                pkt = (IPv6 if data[4] >> 4 == 6 else IP)(data[4:])
            else:
                pkt = conf.l2types.num2layer[linktype](data)
            ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
            key = None
            if ip is not None:
                l4 = pkt.getlayer(TCP) or pkt.getlayer(UDP)
                icmp = bytes(pkt[ICMP]) if pkt.haslayer(ICMP) else icmpv6(ip) if isinstance(ip, IPv6) else None
                if l4 is not None:
                    key = (l4.name, frozenset({(ip.src, l4.sport), (ip.dst, l4.dport)}))
                elif icmp:
                    key = icmp_key(ip.src, ip.dst, icmp[0], icmp[1])
            out.append((ts, data, key))
    return out


def icmpv6(ip: IPv6) -> bytes | None:
    """The ICMPv6 message after the extension headers (next header 58), as bytes."""
    nh, layer = ip.nh, ip.payload
    while nh in (0, 43, 60) and layer:
        nh, layer = layer.nh, layer.payload
    return bytes(layer) if nh == 58 else None


ECHO = {8: "echo", 0: "echo", 128: "echo6", 129: "echo6"}


def icmp_key(src: str, dst: str, itype: int, code: int) -> tuple:
    """Echo request and reply share a flow (address pair); any other ICMP message is one way per type and code."""
    if itype in ECHO:
        return ("ICMP", ECHO[itype], frozenset({src, dst}))
    return ("ICMP", src, dst, itype, code)


def truth(frames, flows: list[dict]) -> list[bytes]:
    """scapy's filter: frames of the flows' 5-tuples (ICMP: address pair), each within its flow's start..end."""
    wanted = []
    for f in flows:
        if f["network.transport"] in ("tcp", "udp"):
            key = (f["network.transport"].upper(), frozenset({(f["source.ip"], f["source.port"]),
                                                              (f["destination.ip"], f["destination.port"])}))
        else:
            key = icmp_key(f["source.ip"], f["destination.ip"], f["soc.icmp.type"], f["soc.icmp.code"])
        wanted.append((key, epoch(f["event.start"]) - 1e-6, epoch(f["event.end"]) + 1e-6))
    return [data for ts, data, key in frames if any(key == k and lo <= ts <= hi for k, lo, hi in wanted)]


def extracted(path: Path) -> list[bytes]:
    with RawPcapReader(str(path)) as reader:
        return [data for data, _ in reader]


def flows_of_alert(store, alert: dict) -> list[dict]:
    """The alert's flow records, found by the test its own way: each ancestor's community id, the flow whose
    start..end holds the ancestor's time."""
    flows = {}
    for eid in alert["soc.alert.ancestors"]:
        ev = store.search_events(Query((Term("event.id", eid),)), 1)[0]
        candidates = store.search_events(Query((Term("event.dataset", "soc.flow"),
                                                Term("network.community_id", ev["network.community_id"]))), 1000)
        t = epoch(ev["@timestamp"])
        for f in candidates:
            if epoch(f["event.start"]) - 1e-6 <= t <= epoch(f["event.end"]) + 1e-6:
                flows[f["event.id"]] = f
    return list(flows.values())


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    path = tmp_path_factory.mktemp("evidence") / "demo.db"
    ingest(f"sqlite:///{path}", DEMO_PCAP)
    return path


@pytest.fixture
def world(demo, tmp_path):
    copy = tmp_path / "soc.db"
    with sqlite3.connect(demo) as a, sqlite3.connect(copy) as b:
        a.backup(b)
    return f"sqlite:///{copy}"


def test_every_demo_alert_extract_is_exactly_its_flows_packets(world, tmp_path):
    frames = capture(DEMO_PCAP)
    store = open_store(world)
    alerts = store.search_alerts(Query(), 1000)
    assert len(alerts) >= 10
    for alert in alerts:
        out = tmp_path / f"{alert['soc.alert.uuid']}.pcap"
        res = soc(world, "pcap", "extract", "--alert", alert["soc.alert.uuid"], "-o", str(out), "--json")
        assert res.exit_code == 0, res.stderr
        expected = truth(frames, flows_of_alert(store, alert))
        assert expected, alert["soc.alert.rule.name"]
        assert extracted(out) == expected, alert["soc.alert.rule.name"]
        manifest = json.loads(Path(f"{out}.json").read_text())
        assert manifest == lines(res.stdout)[0]
        assert manifest["rank"] == int(alert.get("gov.label.rank") or 0) and manifest["packets"] == len(expected)
    store.close()


def test_an_incident_extract_is_the_union_of_its_alerts_and_carries_its_label(world, tmp_path):
    frames = capture(DEMO_PCAP)
    store = open_store(world)
    alerts = sorted(store.search_alerts(Query(), 1000), key=lambda a: int(a.get("gov.label.rank") or 0))
    two = [alerts[0], alerts[-1]]
    res = soc(world, "incident", "create", "--title", "t", "--alerts", ",".join(a["soc.alert.uuid"] for a in two))
    assert res.exit_code == 0, res.stderr
    out = tmp_path / "incident.pcap"
    res = soc(world, "pcap", "extract", "--incident", "1", "-o", str(out), "--json")
    assert res.exit_code == 0, res.stderr
    flows = {f["event.id"]: f for a in two for f in flows_of_alert(store, a)}
    assert sorted(extracted(out)) == sorted(truth(frames, list(flows.values())))
    top = int(two[-1].get("gov.label.rank") or 0)
    assert lines(res.stdout)[0]["rank"] == top > 0
    # above the reader's clearance: refused, nothing written, the withheld item not named
    below = tmp_path / "below.pcap"
    for argv in (["--incident", "1"], ["--alert", two[-1]["soc.alert.uuid"]]):
        res = soc(world, "pcap", "extract", *argv, "-o", str(below), clearance=top - 1)
        assert res.exit_code == 1 and "above your clearance" in res.stderr and not below.exists(), res.stderr
    audit = [e for e in store.audit_entries() if e["action"] == "evidence-extract"]
    assert audit and audit[-1]["actor"] == "soc-admin" and audit[-1]["details"]["max_rank"] == top
    store.close()


CORPUS = ["zk_ssh-bruteforce.pcap", "sv_real-browsing-mix.pcap", "sv_http-ipv6-dltnull.pcap", "sv_icmpv4-ping.pcap"]


@pytest.mark.parametrize("name", CORPUS)
def test_every_flow_of_a_corpus_capture(corpus, tmp_path, name):
    """Each flow the sensor recorded, extracted alone, is scapy's 5-tuple filter within its start..end."""
    pcap = corpus / "pcaps" / name
    uri = f"sqlite:///{tmp_path / 'soc.db'}"
    ingest(uri, pcap)
    store = open_store(uri)
    flows = store.search_events(Query((Term("event.dataset", "soc.flow"),)), 100_000)
    store.close()
    frames = capture(pcap)
    assert flows
    total = 0
    for f in flows:
        got = list(packets_of([FlowRef(f["log.file.path"], f["soc.flow.first_frame"], f["network.packets"])]))
        assert [r[1] for r in got] == truth(frames, [f]), f
        total += len(got)
    assert total == sum(1 for _, _, key in frames if key is not None)  # every dissected frame in one flow


def test_a_live_ring_capture_gives_recent_flows_their_packets_and_stays_bounded(corpus, tmp_path):
    """Records passed through a RingCapture (as `soc sensor live` does), rotated over many small files: every flow's
    extract is scapy's filter; a size cap keeps only the newest files (older packets say they were rotated out),
    a time cap deletes files past it."""
    from correlator.evidence import EvidenceError, RingCapture
    from correlator.pipeline import Pipeline
    from sensors.capture import read_file
    from sensors.engine import Sensor

    pcap = corpus / "pcaps" / "zk_ssh-bruteforce.pcap"
    ring = RingCapture(tmp_path / "capture", max_bytes=1 << 30, keep=3600, file_bytes=8192)
    sensor = Sensor(sensor_name="live-1")
    sensor.base["soc.capture.ring"] = str(ring.run)
    store = open_store(f"sqlite:///{tmp_path / 'soc.db'}")
    store.init()
    Pipeline(store).run(sensor.run(ring.records(read_file(str(pcap)))))
    flows = store.search_events(Query((Term("event.dataset", "soc.flow"),)), 100_000)
    store.close()
    assert len(list(ring.run.glob("*.pcap"))) > 5
    frames = capture(pcap)
    for f in flows:
        assert f["soc.capture.ring"] == str(ring.run) and "log.file.path" not in f
        ref = FlowRef(f["soc.capture.ring"], f["soc.flow.first_frame"], f["network.packets"], ring=True)
        assert [r[1] for r in packets_of([ref])] == truth(frames, [f])
    small = RingCapture(tmp_path / "small", max_bytes=30_000, keep=3600, file_bytes=8192)
    for _ in small.records(read_file(str(pcap))):
        pass
    kept = list(small.run.glob("*.pcap"))
    assert sum(p.stat().st_size for p in kept) <= 30_000 + 8192 + 2048 and len(kept) < 10
    with pytest.raises(EvidenceError, match="rotated out"):
        list(packets_of([FlowRef(str(small.run), 1, 1, ring=True)]))
    brief = RingCapture(tmp_path / "brief", max_bytes=1 << 30, keep=0, file_bytes=8192)
    for _ in brief.records(read_file(str(pcap))):
        pass
    assert len(list(brief.run.glob("*.pcap"))) == 1
