"""Evidence: the packets of an alert's (or an incident's) flows, cut from the capture they came from.

The sensor records where a flow's packets are at no cost per packet: every event of a flow carries the capture
(`log.file.path`, and `soc.capture.bpf` when a filter chose the packets) and the ordinal of the flow's first packet
in that reading (`soc.flow.first_frame`); the flow record adds how many packets it has (`network.packets`).
Extraction re-reads the capture with the same reader and filter, decodes from the first frame on with the same
decoder, and keeps the next `network.packets` packets whose flow key (`sensors.flows.FlowTable.key`: 5-tuple and
VLANs, both directions) is the flow's: exactly the packets the sensor counted for it. Frames are written as
captured (caplen bytes, original length, microsecond timestamps) to a classic pcap.

Live capture keeps a bounded rolling capture (`RingCapture`): the packets the sensor reads are also written to
`<root>/<run>/<ordinal of the file's first packet>.pcap` (root: `$SOC_HOME/capture/<interface>`), files rotated at
a size and the oldest deleted while the folder holds more than its size cap or keeps them past its time cap. The
run's events carry `soc.capture.ring` (the run's folder) instead of a file; the extract reads that folder's files in
order, so recent alerts have packets and older ones say theirs were rotated out.

The extract is derived from its alert or incident: it carries their label (a `<out>.json` manifest names it, the
alerts, flows and the file's SHA-256), only what the reader may see is extracted, and it is audited.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
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

    path: str  # a capture file, or a ring capture's run folder (`ring`)
    first_frame: int
    packets: int
    bpf: str | None = None
    community_id: str | None = None
    ring: bool = False


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
    ids = list(dict.fromkeys(e for a in alerts for e in a.get("soc.alert.ancestors", [])))
    events = gate.search_events_any([Query((Term("event.id", e),)) for e in ids], len(ids),
                                    f"evidence: the events of {len(alerts)} alert(s)").items if ids else []
    located: dict[tuple[str, int], tuple[str, dict[str, Any]]] = {}  # (capture, first frame) -> (where, an event)
    flows: dict[tuple[str, int], dict[str, Any]] = {}
    problems: list[str] = []
    for ev in events:
        where = "soc.capture.ring" if ev.get("soc.capture.ring") else "log.file.path"
        path, first = ev.get(where), ev.get("soc.flow.first_frame")
        if not path or not isinstance(first, int):
            problems.append(f"event {ev['event.id']} ({ev.get('event.dataset')}): no capture recorded (logs, a live "
                            "capture without --ring, or read by an older sensor)")
            continue
        located.setdefault((path, first), (where, ev))
        if ev.get("event.dataset") == "soc.flow":
            flows[(path, first)] = ev
    missing = [k for k in located if k not in flows]
    if missing:  # the flow records of application events (DNS, HTTP, …): one read
        found = gate.search_events_any([Query((Term("event.dataset", "soc.flow"), Term(located[k][0], k[0]),
                                               Term("soc.flow.first_frame", k[1]))) for k in missing],
                                       1_000_000, f"evidence: the flows of {len(missing)} event(s)").items
        for f in found:
            for where in ("soc.capture.ring", "log.file.path"):
                if (f.get(where), f.get("soc.flow.first_frame")) in located:
                    flows.setdefault((f[where], f["soc.flow.first_frame"]), f)
    refs = []
    for (path, first), (where, ev) in located.items():
        flow = flows.get((path, first))
        if flow is None or not isinstance(flow.get("network.packets"), int):
            problems.append(f"event {ev['event.id']}: its flow record ({path}, frame {first}) is not in the store")
            continue
        refs.append(FlowRef(path, first, flow["network.packets"], ev.get("soc.capture.bpf"),
                            ev.get("network.community_id"), where == "soc.capture.ring"))
    return sorted(refs, key=lambda r: (r.path, r.first_frame)), problems


def packets_of(flows: Sequence[FlowRef], check: Callable[[], object] | None = None
               ) -> Iterator[tuple[float, bytes, int, int]]:
    """The flows' records `(ts, data, wirelen, linktype)` in capture order, file by file (one pass per file);
    `check()` (a deadline: it raises to stop) is called every CHECK_EVERY records read."""
    from sensors.capture import BpfFilter, read_file
    from sensors.decode import Counters, PacketDecoder
    from sensors.flows import FlowTable

    by_file: dict[tuple[str, str | None, bool], dict[int, int]] = {}
    for f in flows:
        by_file.setdefault((f.path, f.bpf, f.ring), {})[f.first_frame] = f.packets
    for (path, bpf, ring), wanted in sorted(by_file.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        start, left = min(wanted), dict(wanted)
        if ring:
            source: Iterator = ring_records(Path(path), start)
            records: Iterator = source
        else:
            source = read_file(path)
            if bpf:
                source = BpfFilter(bpf).apply(source)
            records = enumerate(source, 1)
        if check is not None:
            records = _checked(records, check)
        decode, key_of = PacketDecoder(Counters()).decode, FlowTable.key
        active: dict[tuple, int] = {}
        try:
            for n, rec in records:
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
            source.close()


CHECK_EVERY = 4096


def _checked(records: Iterator[tuple[int, Any]], check: Callable[[], object]) -> Iterator[tuple[int, Any]]:
    """`records`, calling `check()` before the first and every CHECK_EVERY after."""
    for i, rec in enumerate(records):
        if not i % CHECK_EVERY:
            check()
        yield rec


def ring_records(run: Path, start: int) -> Iterator[tuple[int, tuple[float, bytes, int, int]]]:
    """(ordinal, record) of a ring capture's run from the file holding ordinal `start` on; EvidenceError when that
    packet has been rotated out."""
    from sensors.capture import read_file

    files = sorted((int(p.stem), p) for p in run.glob("*.pcap") if p.stem.isdigit())
    first = [i for i, (n, _) in enumerate(files) if n <= start]
    if not first:
        raise EvidenceError(f"{run}: packet {start} was rotated out of the ring capture")
    for n, path in files[first[-1]:]:
        yield from enumerate(read_file(str(path)), n)


class RingCapture:
    """A bounded rolling capture of live records: `<root>/<run>/<first ordinal>.pcap` files of at most `file_bytes`;
    the oldest files of every run under `root` are deleted while they hold more than `max_bytes` or are older than
    `keep` seconds (checked at each rotation)."""

    def __init__(self, root: Path, max_bytes: int, keep: float, file_bytes: int | None = None) -> None:
        self.root, self.max_bytes, self.keep = root, max_bytes, keep
        self.file_bytes = file_bytes or max(1 << 20, max_bytes // 20)
        self.run = root / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}"  # made at the first packet
        self.fh: Any = None
        self.size = 0
        self.linktype: int | None = None

    def records(self, records: Iterable[tuple[float, bytes, int, int]]) -> Iterator[tuple[float, bytes, int, int]]:
        """Pass `records` through, writing each (the sensor numbers them 1, 2, … as the ring does)."""
        try:
            for n, rec in enumerate(records, 1):
                ts, data, wirelen, lt = rec
                if self.fh is None or self.size >= self.file_bytes or lt != self.linktype:
                    self._rotate(n, lt)
                sec = int(ts)
                self.fh.write(RECORD_HEADER.pack(sec, min(999_999, round((ts - sec) * 1e6)), len(data), wirelen))
                self.fh.write(data)
                self.size += 16 + len(data)
                yield rec
        finally:
            if self.fh is not None:
                self.fh.close()

    def _rotate(self, n: int, linktype: int) -> None:
        if self.fh is not None:
            self.fh.close()
        self.run.mkdir(parents=True, exist_ok=True)
        self.fh = (self.run / f"{n}.pcap").open("wb")
        self.fh.write(PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
        self.size, self.linktype = PCAP_HEADER.size, linktype
        self.prune()

    def prune(self) -> None:
        """Delete the oldest files (never the one being written) past the size or age cap; empty runs go too."""
        files = sorted((p.stat().st_mtime, p) for p in self.root.glob("*/*.pcap"))
        total, now = sum(p.stat().st_size for _, p in files), time.time()
        current = self.fh.name if self.fh is not None else None
        for mtime, path in files:
            if str(path) == current or (total <= self.max_bytes and now - mtime <= self.keep):
                continue
            total -= path.stat().st_size
            path.unlink()
        for run in self.root.iterdir():
            if run.is_dir() and run != self.run and not any(run.iterdir()):
                shutil.rmtree(run, ignore_errors=True)


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


def extract(gate: Gate, out: Path, alert: str | None = None, incident: int | None = None,
            check: Callable[[], object] | None = None) -> Extract:
    """Cut the packets of an alert's (or every alert of an incident's) flows into `out`, with `<out>.json` naming
    the label and sources; audited as `evidence-extract`. EvidenceError when nothing can be extracted; whatever
    `check()` raises while the captures are read (a playbook step's deadline) stops it with no file left."""
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
    missing = [f.path for f in flows if not (Path(f.path).is_dir() if f.ring else Path(f.path).is_file())]
    if missing:
        raise EvidenceError(f"capture file(s) gone: {', '.join(sorted(set(missing)))}")
    result = Extract(str(out), flows=flows, alerts=[a["soc.alert.uuid"] for a in alerts],
                     rank=int(source.get("gov.label.rank") or 0), level=source.get("gov.label.level"),
                     problems=problems)
    try:
        result.packets, result.sha256 = write_pcap(packets_of(flows, check), out)
    except BaseException:
        out.unlink(missing_ok=True)  # no partial evidence
        raise
    Path(f"{out}.json").write_text(json.dumps(result.manifest(), indent=2) + "\n")
    gate.store.audit("evidence-extract", {"output": str(out), "sha256": result.sha256, "packets": result.packets,
                                          "alert": alert, "incident": incident, "max_rank": result.rank},
                     actor=gate.reader.user)
    return result
