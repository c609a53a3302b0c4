"""The sensor: packet records in, flat ECS events out (flows, DNS, HTTP, TLS, SSH, ICMP), with counters.

```python
sensor = Sensor(sensor_name="gw1", home_net=["10.0.0.0/8"], source="/data/x.pcap")
for event in sensor.run(capture.read_file("/data/x.pcap")):
    ...
sensor.stats()   # packets read / decoded / malformed / truncated / unknown link, flows emitted / evicted, events
```
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from struct import error as StructError

from .apps import TcpApp
from .community import community_id
from .decode import ICMP, ICMPV6, TCP, UDP, Counters, PacketDecoder
from .flows import ACK, FIN, PORT_PROTOS, RST, SYN, Flow, FlowTable
from .protocols import dns

TRANSPORT = {TCP: "tcp", UDP: "udp", ICMP: "icmp", ICMPV6: "ipv6-icmp"}
CATEGORY = {"flow": ["network"], "dns": ["network"], "http": ["network", "web"], "tls": ["network"],
            "ssh": ["network"], "icmp": ["network"]}
TYPE = {"dns": ["protocol", "info"], "http": ["protocol", "access"], "tls": ["protocol", "connection"],
        "ssh": ["protocol", "connection"], "icmp": ["protocol", "info"]}
OUTCOME = {"established": "success", "rejected": "failure", "unanswered": "failure"}
FLAG_NAMES = ((SYN, "SYN"), (ACK, "ACK"), (FIN, "FIN"), (RST, "RST"), (0x08, "PSH"), (0x20, "URG"))
DNS_PORTS, ICMPS = dns.PORTS, frozenset({ICMP, ICMPV6})
FLAG_LISTS = [tuple(n for bit, n in FLAG_NAMES if flags & bit) for flags in range(64)]
FLIP = {"inbound": "outbound", "outbound": "inbound"}


_second = [-1, ""]  # the last formatted second: events come in time order, so most share it


def iso(ts: float) -> str:
    """Epoch seconds → ISO-8601 UTC with microseconds and `Z`."""
    sec = int(ts)
    usec = round((ts - sec) * 1e6)
    if usec >= 1_000_000:
        sec, usec = sec + 1, usec - 1_000_000
    if sec != _second[0]:
        _second[0], _second[1] = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{_second[1]}.{usec:06d}Z"


def _ip(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


class Sensor:
    """Turns packet records `(ts, data, wirelen, linktype)` into ECS events."""

    def __init__(self, sensor_name: str | None = None, home_net: Sequence[str] = (), source: str | None = None,
                 community_seed: int = 0, **flow_options: float) -> None:
        self.counters = Counters()
        self.events = Counters()
        self.decoder = PacketDecoder(self.counters)
        self.table = FlowTable(self._flow_done, self.counters, **flow_options)
        self.home = [ipaddress.ip_network(n.strip(), strict=False) for n in home_net if n.strip()]
        self.base: dict = {"event.kind": "event", "event.module": "soc", "observer.type": "sensor",
                           "observer.name": sensor_name or socket.gethostname()}
        if source:
            self.base["log.file.path"] = source
        self.out: list[dict] = []
        self.seq = 0
        self.packets = 0
        self.decoded = 0
        self.community_seed = community_seed

    # --- packet loop -------------------------------------------------------------------------------------
    def run(self, records: Iterable[tuple[float, bytes, int, int]], flush: bool = True) -> Iterator[dict]:
        """Process records and yield events as they are produced; open flows are flushed at the end."""
        decode, update, out, counters = self.decoder.decode, self.table.update, self.out, self.counters
        snap_cut = 0
        n, ok = self.packets, self.decoded
        try:
            for ts, data, wirelen, linktype in records:
                n += 1
                if len(data) < wirelen:
                    snap_cut += 1
                d = decode(data, linktype, ts)
                if d is None:
                    continue
                ok += 1
                flow, direction = update(d, ts, wirelen, n)
                _, _, _, proto, sport, dport, _, flags, seq, payload, l4len, cut = d
                if cut and len(data) >= wirelen:  # the IP header claims more than the whole frame holds
                    counters["ip_length_beyond_frame"] += 1
                if proto == TCP:
                    if flags & SYN:  # the SYN takes one sequence number: its data (TCP Fast Open) starts at ISN + 1
                        flow.isn[direction] = seq
                        seq = (seq + 1) & 0xFFFFFFFF
                    if payload:
                        app = flow.app
                        if app is None:
                            app = flow.app = TcpApp(flow.isn)
                        if not app.done:
                            for res in app.feed(direction, seq, payload, ts, sport, dport):
                                self._app_event(flow, res)
                elif proto == UDP:
                    if payload and (dport in DNS_PORTS or sport in DNS_PORTS):
                        self._udp_dns(flow, direction, payload, ts)
                elif proto in ICMPS:
                    self._icmp(flow, direction, sport, dport, l4len, ts)
                if out:
                    yield from out
                    out.clear()
        finally:
            self.packets, self.decoded = n, ok
            counters["snaplen_cut"] += snap_cut
        if flush:
            yield from self.flush()

    def flush(self) -> list[dict]:
        """Emit all open flows and held application events (end of input or capture stop)."""
        self.table.flush()
        self.decoder.defrag.flush()
        events, self.out[:] = list(self.out), []
        return events

    def stats(self) -> dict:
        """Counters: packets read/decoded/malformed/truncated/unknown link, fragments, flows, events per type."""
        c = self.counters
        return {"packets_read": self.packets, "packets_decoded": self.decoded,
               "malformed": c["malformed"], "truncated": c["truncated"], "header_cut": c["header_cut"],
               "ip_length_beyond_frame": c["ip_length_beyond_frame"],
               "snaplen_cut": c["snaplen_cut"],
               "unknown_link_type": c["unknown_link"], "non_ip": c["non_ip"], "fragments": c["fragments"],
               "reassembled": c["reassembled"], "fragments_incomplete": c["fragments_incomplete"],
               "flows_emitted": c["flows_emitted"], "flows_evicted": c["flows_evicted"],
               "flows_open": len(self.table.flows), "dns_malformed": c["dns_malformed"],
               "tcp_stream_gaps": c["tcp_stream_gaps"], "tcp_overlap_different_data": c["tcp_overlap_different_data"],
               "events": dict(self.events)}

    # --- event building ----------------------------------------------------------------------------------
    def _flow_meta(self, flow: Flow) -> tuple:
        """(source ip, destination ip, direction, fields common to all the flow's events), computed once."""
        meta = flow.meta
        if meta is None:
            src, dst = _ip(flow.src), _ip(flow.dst)
            sport, dport = flow.icmp if flow.icmp is not None else (flow.sport, flow.dport)
            common = {**self.base, "network.transport": TRANSPORT.get(flow.proto, str(flow.proto)),
                      "network.iana_number": str(flow.proto), "network.type": "ipv4" if flow.version == 4 else "ipv6",
                      "soc.flow.first_frame": flow.first_packet}  # with log.file.path: where its packets are
            cid = community_id(flow.proto, flow.src, flow.dst, sport, dport, self.community_seed)
            if cid:
                common["network.community_id"] = cid
            if flow.vlans:
                common["network.vlan.id"] = str(flow.vlans[0])
                if len(flow.vlans) > 1:
                    common["network.inner.vlan.id"] = str(flow.vlans[1])
                    common["soc.vlan.ids"] = [str(v) for v in flow.vlans]
            meta = flow.meta = (src, dst, self._direction(src, dst), common)
        return meta

    def _direction(self, src: str, dst: str) -> str | None:
        if not self.home:
            return None
        s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
        s_in, d_in = any(s in n for n in self.home), any(d in n for n in self.home)
        return ("internal" if d_in else "outbound") if s_in else ("inbound" if d_in else "external")

    def _event(self, dataset: str, ts: float, flow: Flow, reverse: bool) -> dict:
        src, dst, direction, common = self._flow_meta(flow)
        sport, dport = flow.sport, flow.dport
        if reverse:
            src, dst, sport, dport, direction = dst, src, dport, sport, FLIP.get(direction, direction)
        self.seq += 1
        ev = {**common, "@timestamp": iso(ts), "event.category": [*CATEGORY[dataset]],
              "event.dataset": "soc." + dataset, "event.sequence": self.seq, "source.ip": src, "destination.ip": dst,
              "related.ip": [src, dst] if src != dst else [src]}
        if "soc.vlan.ids" in common:
            ev["soc.vlan.ids"] = [*common["soc.vlan.ids"]]
        if flow.proto in PORT_PROTOS:
            ev["source.port"], ev["destination.port"] = sport, dport
        if direction:
            ev["network.direction"] = direction
        if dataset != "flow":
            ev["event.type"] = [*TYPE[dataset]]
            ev["network.protocol"] = dataset
        self.events[ev["event.dataset"]] += 1
        return ev

    def _app_event(self, flow: Flow, res: tuple[int, str, dict, float]) -> None:
        direction, dataset, fields, ts = res
        ev = self._event(dataset, ts or flow.last, flow, direction == 1)
        ev.update(fields)
        self.out.append(ev)

    def _udp_dns(self, flow: Flow, direction: int, payload: bytes, ts: float) -> None:
        try:
            fields = dns.parse(payload)
        except (ValueError, IndexError, UnicodeDecodeError, StructError):
            self.counters["dns_malformed"] += 1
            return
        ev = self._event("dns", ts, flow, direction == 1)
        ev.update(fields)
        self.out.append(ev)

    def _icmp(self, flow: Flow, direction: int, itype: int, code: int, l4len: int, ts: float) -> None:
        ev = self._event("icmp", ts, flow, direction == 1)
        ev["soc.icmp.type"], ev["soc.icmp.code"] = itype, code
        ev["soc.icmp.payload_bytes"] = max(0, l4len - 8)
        self.out.append(ev)

    def _flow_done(self, flow: Flow) -> None:
        """FlowTable callback: held application events, then the flow record."""
        app = flow.app
        if app is not None:
            for res in app.finish():
                self._app_event(flow, res)
            if app.gaps:
                self.counters["tcp_stream_gaps"] += app.gaps
            if app.conflicts:
                self.counters["tcp_overlap_different_data"] += app.conflicts
        ev = self._event("flow", flow.start, flow, False)
        if flow.end_reason == "active_timeout":
            types = ["connection", "start"] if flow.part == 0 else ["connection"]
        else:
            types = ["connection", "start", "end"] if flow.part == 0 else ["connection", "end"]
        (p0, p1), (b0, b1), outcome = flow.pkts, flow.bytes, flow.outcome
        ev["event.type"] = types
        ev["event.start"] = ev["@timestamp"]
        ev["event.end"] = iso(flow.last)
        ev["event.duration"] = round((flow.last - flow.start) * 1e9)
        ev["source.packets"], ev["source.bytes"], ev["destination.packets"], ev["destination.bytes"] = p0, b0, p1, b1
        ev["network.packets"], ev["network.bytes"] = p0 + p1, b0 + b1
        ev["soc.flow.source_payload_bytes"], ev["soc.flow.destination_payload_bytes"] = flow.payload
        ev["soc.flow.state"], ev["soc.flow.end_reason"] = outcome, flow.end_reason
        if app is not None and app.proto:
            ev["network.protocol"] = app.proto
        if app is not None and app.conflicts:  # Suricata: stream.reassembly_overlap_different_data
            ev["soc.flow.overlap_different_data"] = app.conflicts
        if flow.proto == TCP:
            ev["soc.flow.source_flags"] = list(FLAG_LISTS[flow.flags[0] & 0x3F])
            ev["soc.flow.destination_flags"] = list(FLAG_LISTS[flow.flags[1] & 0x3F])
            if outcome in OUTCOME:
                ev["event.outcome"] = OUTCOME[outcome]
        elif flow.icmp is not None:
            ev["soc.icmp.type"], ev["soc.icmp.code"] = flow.icmp
        self.counters["flows_emitted"] += 1
        self.out.append(ev)
