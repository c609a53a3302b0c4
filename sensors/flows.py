"""Bidirectional flow table: 5-tuple + VLAN stack, TCP state and outcome, idle/active timeouts, bounded size.

Packets and bytes count whole frames (`wirelen`, link header included) each way, as tshark, Suricata and Arkime do;
`payload` counts transport payload bytes each way (TCP/UDP data, ICMP beyond its 8-byte header, the whole segment of
other protocols), as Zeek's orig_bytes/resp_bytes: which side sent data, whatever the headers weigh.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from .decode import ICMP, ICMPV6, TCP, UDP, Decoded

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
FIN_RST, SYN_ACK = FIN | RST, SYN | ACK
PORT_PROTOS = frozenset({TCP, UDP})
ECHO = {ICMP: {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17},
        ICMPV6: {128: 129, 129: 128}}  # request/reply pairs share a flow


class Flow:
    """One bidirectional flow; index 0 is the originator (sender of the first packet), 1 the responder."""

    __slots__ = ("key", "version", "proto", "src", "dst", "sport", "dport", "vlans", "start", "last", "pkts", "bytes",
                 "flags", "part", "app", "first_packet", "end_reason", "icmp", "meta", "queue", "isn", "payload")

    def __init__(self, key: tuple, d: Decoded, ts: float, ordinal: int, part: int = 0) -> None:
        self.key = key
        self.version, self.proto, self.vlans = d.version, d.proto, d.vlans
        self.src, self.dst, self.sport, self.dport = d.src, d.dst, d.sport, d.dport
        self.start = self.last = ts
        self.pkts = [0, 0]
        self.bytes = [0, 0]
        self.flags = [0, 0]
        self.payload = [0, 0]
        self.part = part
        self.app = None
        self.first_packet = ordinal
        self.end_reason = ""
        self.icmp = (d.sport, d.dport) if d.proto in (ICMP, ICMPV6) else None
        self.queue = 1  # timeout class, see FlowTable
        self.isn = [None, None]  # TCP initial sequence numbers seen in SYNs, per direction
        self.meta: tuple | None = None  # (source ip, destination ip, community id, direction), set by the sensor

    @property
    def closed(self) -> bool:
        f0, f1 = self.flags
        return bool((f0 | f1) & RST) or bool(f0 & f1 & FIN)

    @property
    def outcome(self) -> str:
        """TCP: established | rejected | unanswered | midstream; others: bidirectional | unidirectional."""
        f0, f1 = self.flags
        if self.proto != TCP:
            return "bidirectional" if self.pkts[1] else "unidirectional"
        if f0 & SYN:
            if f1 & SYN:
                return "established"
            if f1 & RST:
                return "rejected"
            if not self.pkts[1]:
                return "unanswered"
        return "midstream" if not f0 & SYN else "incomplete"


class FlowTable:
    """Flows by normalised key. Each timeout class (closed TCP, open TCP, other) keeps its flows in last-activity
    order, so expiry pops from the front and costs nothing while flows are alive. Expired, evicted and finished
    flows go to `emit`."""

    def __init__(self, emit: Callable[[Flow], None], counters: dict, idle_tcp: float = 300.0,
                 idle_other: float = 120.0, closed_tcp: float = 5.0, active: float = 1800.0,
                 max_flows: int = 200_000) -> None:
        self.emit, self.counters = emit, counters
        self.active, self.max_flows = active, max_flows
        self.timeouts = (closed_tcp, idle_tcp, idle_other)
        self.queues: tuple[OrderedDict[tuple, Flow], ...] = (OrderedDict(), OrderedDict(), OrderedDict())
        self.flows: dict[tuple, Flow] = {}
        self.next_sweep = 0.0

    @staticmethod
    def key(d: Decoded) -> tuple:
        """The direction-independent key of a packet's flow."""
        src, dst, sport, dport = d.src, d.dst, d.sport, d.dport
        proto = d.proto
        if proto in (ICMP, ICMPV6):
            pair = ECHO[proto].get(sport)
            if pair is None:  # not request/reply: a one-way flow per type/code
                return (proto, src, dst, sport, dport, d.vlans)
            sport = dport = min(sport, pair)  # request and reply meet under the request type
        if src < dst or (src == dst and sport <= dport):
            return (proto, src, sport, dst, dport, d.vlans)
        return (proto, dst, dport, src, sport, d.vlans)

    def update(self, d: Decoded, ts: float, wirelen: int, ordinal: int) -> tuple[Flow, int]:
        """Account one packet; return its flow and direction (0 from the originator, 1 towards it)."""
        if ts >= self.next_sweep:
            self.sweep(ts)
        _, src, dst, proto, sport, dport, vlans, flags, _, payload, l4len, cut = d
        if proto in PORT_PROTOS:  # inline of key() for the common case
            key = ((proto, src, sport, dst, dport, vlans) if src < dst or (src == dst and sport <= dport)
                   else (proto, dst, dport, src, sport, vlans))
            data = len(payload)
            if cut and not data:  # headers cut by the snaplen: count what the IP header declares (fail closed)
                data = max(0, l4len - (20 if proto == TCP else 8))
        else:
            key = self.key(d)
            data = max(0, l4len - 8) if proto in (ICMP, ICMPV6) else l4len
        flow = self.flows.get(key)
        if flow is not None:
            direction = 0 if sport == flow.sport and src == flow.src else 1
            if flow.queue == 0 and flags & SYN_ACK == SYN:
                flow.end_reason = "reused"  # a new connection on a finished 5-tuple
                self._finish(flow)
                flow = None
            elif ts - flow.start > self.active:
                flow.end_reason = "active_timeout"
                self._finish(flow)
                flow = self._new(key, d, ts, ordinal, flow.part + 1)
                if direction:  # the continuation keeps the original orientation
                    flow.src, flow.dst, flow.sport, flow.dport = d.dst, d.src, d.dport, d.sport
            else:
                self.queues[flow.queue].move_to_end(key)
        if flow is None:
            flow = self._new(key, d, ts, ordinal, 0)
            direction = 0
        flow.last = ts
        flow.pkts[direction] += 1
        flow.bytes[direction] += wirelen
        flow.payload[direction] += data
        if flags:
            flow.flags[direction] |= flags
            if flags & FIN_RST and flow.queue == 1 and flow.closed:
                del self.queues[1][key]
                self.queues[0][key] = flow
                flow.queue = 0
        return flow, direction

    def _new(self, key: tuple, d: Decoded, ts: float, ordinal: int, part: int) -> Flow:
        if len(self.flows) >= self.max_flows:
            oldest = min((next(iter(q.values())) for q in self.queues if q), key=lambda f: f.last)
            oldest.end_reason = "evicted"
            self.counters["flows_evicted"] += 1
            self._finish(oldest)
        flow = Flow(key, d, ts, ordinal, part)
        flow.queue = 1 if d.proto == TCP else 2
        self.flows[key] = self.queues[flow.queue][key] = flow
        return flow

    def _finish(self, flow: Flow) -> None:
        del self.flows[flow.key]
        del self.queues[flow.queue][flow.key]
        self.emit(flow)

    def sweep(self, now: float) -> None:
        """Emit flows idle for longer than their class's timeout (at most once per second of capture time)."""
        self.next_sweep = now + 1.0
        for queue, timeout in zip(self.queues, self.timeouts, strict=True):
            while queue:
                flow = next(iter(queue.values()))
                if now - flow.last <= timeout:
                    break
                flow.end_reason = "idle_timeout"
                self._finish(flow)

    def flush(self, reason: str = "end_of_input") -> None:
        """Emit every open flow, oldest first."""
        for flow in sorted(self.flows.values(), key=lambda f: (f.start, f.first_packet)):
            flow.end_reason = reason
            self._finish(flow)


__all__ = ["Flow", "FlowTable", "TCP", "UDP"]
