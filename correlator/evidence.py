"""Evidence: the packets of an alert's (or an incident's) flows, cut from the capture they came from.

The sensor records where a flow's packets are at no cost per packet: every event of a flow carries the capture
(`log.file.path`, and `soc.capture.bpf` when a filter chose the packets) and the ordinal of the flow's first packet
in that reading (`soc.flow.first_frame`); the flow record adds how many packets it has (`network.packets`).
Extraction re-reads the capture with the same reader and filter, decodes from the first frame on with the same
decoder, and keeps the next `network.packets` packets whose flow key (`sensors.flows.FlowTable.key`: 5-tuple and
VLANs, both directions) is the flow's: exactly the packets the sensor counted for it. Frames are written as
captured (caplen bytes, original length, microsecond timestamps) to a classic pcap.

The extract is derived from its alert or incident: it carries their label (a `<out>.json` manifest names it, the
alerts, flows and the file's SHA-256), only what the reader may see is extracted, and it is audited.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from correlator import incidents
from correlator.gate import Gate
from correlator.query import Query, Term

PCAP_HEADER = struct.Struct("<IHHiIII")
RECORD_HEADER = struct.Struct("<IIII")


class EvidenceError(ValueError):
    """No evidence can be cut: the alert or incident is unknown or withheld, or none of its flows has packets on
    file (live capture, logs); the message says which."""


@dataclass(frozen=True)
class FlowRef:
    """Where one flow's packets are: the capture, its filter, the first packet's ordinal and how many packets."""

    path: str
    first_frame: int
    packets: int
    bpf: str | None = None
    community_id: str | None = None


@dataclass
class Extract:
    """What was written: packets and flows, the label it carries, and what could not be found."""

    output: str
    packets: int = 0
    flows: list[FlowRef] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    rank: int = 0
    level: str | None = None
    sha256: str = ""
    problems: list[str] = field(default_factory=list)

    def manifest(self) -> dict[str, Any]:
        return asdict(self) | {"flows": [asdict(f) for f in self.flows]}


def flows_of(gate: Gate, alerts: Sequence[dict[str, Any]]) -> tuple[list[FlowRef], list[str]]:
    """The flows of the alerts' events (read through the gate), and a problem for each event whose packets cannot
    be located (no capture file: live capture or logs; its flow record unreadable)."""
    events: dict[str, dict[str, Any]] = {}
    for eid in dict.fromkeys(e for a in alerts for e in a.get("soc.alert.ancestors", [])):
        for ev in gate.search_events(Query((Term("event.id", eid),)), 1, f"evidence: event {eid}").items:
            events[eid] = ev
    refs: dict[tuple[str, int], FlowRef] = {}
    problems: list[str] = []
    for eid, ev in events.items():
        path, first = ev.get("log.file.path"), ev.get("soc.flow.first_frame")
        if not path or not isinstance(first, int):
            problems.append(f"event {eid} ({ev.get('event.dataset')}): no capture file recorded (live capture, logs, "
                            "or read by an older sensor)")
            continue
        if (path, first) in refs:
            continue
        flow = ev if ev.get("event.dataset") == "soc.flow" else next(iter(gate.search_events(Query((
            Term("event.dataset", "soc.flow"), Term("log.file.path", path), Term("soc.flow.first_frame", first))), 1,
            f"evidence: flow of event {eid}").items), None)
        if flow is None or not isinstance(flow.get("network.packets"), int):
            problems.append(f"event {eid}: its flow record ({path}, frame {first}) is not in the store")
            continue
        refs[(path, first)] = FlowRef(path, first, flow["network.packets"], ev.get("soc.capture.bpf"),
                                      ev.get("network.community_id"))
    return sorted(refs.values(), key=lambda r: (r.path, r.first_frame)), problems


def packets_of(flows: Sequence[FlowRef]) -> Iterator[tuple[float, bytes, int, int]]:
    """The flows' records `(ts, data, wirelen, linktype)` in capture order, file by file (one pass per file)."""
    from sensors.capture import BpfFilter, read_file
    from sensors.decode import Counters, PacketDecoder
    from sensors.flows import FlowTable

    by_file: dict[tuple[str, str | None], dict[int, int]] = {}
    for f in flows:
        by_file.setdefault((f.path, f.bpf), {})[f.first_frame] = f.packets
    for (path, bpf), wanted in sorted(by_file.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        records: Iterator = read_file(path)
        if bpf:
            records = BpfFilter(bpf).apply(records)
        decode, key_of = PacketDecoder(Counters()).decode, FlowTable.key
        start, left = min(wanted), dict(wanted)
        active: dict[tuple, int] = {}
        try:
            for n, rec in enumerate(records, 1):
                if n < start:
                    continue
                d = decode(rec[1], rec[3], rec[0])
                if d is None:
                    continue
                key = key_of(d)
                if n in left:
                    active[key] = left.pop(n)
                if active.get(key, 0) > 0:
                    active[key] -= 1
                    yield rec
                    if not left and not any(active.values()):
                        break
        finally:
            records.close()


def write_pcap(records: Iterator[tuple[float, bytes, int, int]], out: Path) -> tuple[int, str]:
    """Write records to a classic pcap (µs timestamps, the records' link type); (packets written, SHA-256)."""
    digest, n, linktype = hashlib.sha256(), 0, None
    with out.open("wb") as fh:
        for ts, data, wirelen, lt in records:
            if linktype is None:
                linktype = lt
                head = PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, 262144, lt)
                fh.write(head), digest.update(head)
            elif lt != linktype:
                raise EvidenceError(f"{out}: the flows' captures mix link types {linktype} and {lt}; extract them "
                                    "one alert at a time")
            sec = int(ts)
            usec = round((ts - sec) * 1e6)
            if usec >= 1_000_000:
                sec, usec = sec + 1, usec - 1_000_000
            rec = RECORD_HEADER.pack(sec, usec, len(data), wirelen) + data
            fh.write(rec), digest.update(rec)
            n += 1
    return n, digest.hexdigest()


def extract(gate: Gate, out: Path, alert: str | None = None, incident: int | None = None) -> Extract:
    """Cut the packets of an alert's (or every alert of an incident's) flows into `out`, with `<out>.json` naming
    the label and sources; audited as `evidence-extract`. EvidenceError when nothing can be extracted."""
    if alert is not None:
        read = gate.get_alert(alert)
        if not read.items:
            raise EvidenceError(f"no alert {alert} (unknown, or above your clearance)")
        alerts, source = read.items, read.items[0]
    else:
        try:
            source = incidents.get(gate, int(incident or 0))
        except incidents.IncidentError as exc:
            raise EvidenceError(str(exc)) from None
        alerts = incidents.alerts_of(gate, source).items
    flows, problems = flows_of(gate, alerts)
    if not flows:
        raise EvidenceError("no packets on file for " + (f"alert {alert}" if alert else f"incident {incident}") +
                            (": " + "; ".join(problems[:5]) if problems else ": its alerts name no events"))
    missing = [f.path for f in flows if not Path(f.path).is_file()]
    if missing:
        raise EvidenceError(f"capture file(s) gone: {', '.join(sorted(set(missing)))}")
    result = Extract(str(out), flows=flows, alerts=[a["soc.alert.uuid"] for a in alerts],
                     rank=int(source.get("gov.label.rank") or 0), level=source.get("gov.label.level"),
                     problems=problems)
    result.packets, result.sha256 = write_pcap(packets_of(flows), out)
    Path(f"{out}.json").write_text(json.dumps(result.manifest(), indent=2) + "\n")
    gate.store.audit("evidence-extract", {"output": str(out), "sha256": result.sha256, "packets": result.packets,
                                          "alert": alert, "incident": incident, "max_rank": result.rank},
                     actor=gate.reader.user)
    return result
