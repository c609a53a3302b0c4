"""Bidirectional flow table: 5-tuple + VLAN stack, TCP state and outcome, idle/active timeouts, bounded size.

Packets and bytes count whole frames (`wirelen`, link header included) each way, as tshark, Suricata and Arkime do.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from .decode import ICMP, ICMPV6, TCP, UDP, Decoded

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
ECHO = {ICMP: {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17},
        ICMPV6: {128: 129, 129: 128}}  # request/reply pairs share a flow


class Flow:
    """One bidirectional flow; index 0 is the originator (sender of the first packet), 1 the responder."""

    __slots__ = ("key", "version", "proto", "src", "dst", "sport", "dport", "vlans", "start", "last", "pkts", "bytes",
                 "flags", "part", "app", "first_packet", "end_reason", "icmp", "meta")

    def __init__(self, key: tuple, d: Decoded, ts: float, ordinal: int, part: int = 0) -> None:
        self.key = key
        self.version, self.proto, self.vlans = d.version, d.proto, d.vlans
        self.src, self.dst, self.sport, self.dport = d.src, d.dst, d.sport, d.dport
        self.start = self.last = ts
        self.pkts = [0, 0]
        self.bytes = [0, 0]
        self.flags = [0, 0]
        self.part = part
        self.app = None
        self.first_packet = ordinal
        self.end_reason = ""
        self.icmp = (d.sport, d.dport) if d.proto in (ICMP, ICMPV6) else None
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
    """Flows by normalised key, least recently active first; expired, evicted and finished flows go to `emit`."""

    def __init__(self, emit: Callable[[Flow], None], counters: dict, idle_tcp: float = 300.0,
                 idle_other: float = 120.0, active: float = 1800.0, max_flows: int = 200_000) -> None:
        self.emit, self.counters = emit, counters
        self.idle_tcp, self.idle_other, self.active, self.max_flows = idle_tcp, idle_other, active, max_flows
        self.flows: OrderedDict[tuple, Flow] = OrderedDict()
        self.next_sweep = 0.0

    @staticmethod
    def key(d: Decoded) -> tuple[tuple, bool]:
        """(normalised key, True when the packet goes from the lower to the higher endpoint)."""
        src, dst, sport, dport = d.src, d.dst, d.sport, d.dport
        proto = d.proto
        if proto in (ICMP, ICMPV6):
            pair = ECHO[proto].get(sport)
            if pair is None:  # not request/reply: a one-way flow per type/code
                return (proto, src, dst, sport, dport, d.vlans), True
            sport = dport = min(sport, pair)  # request and reply meet under the request type
        fwd = src < dst or (src == dst and sport <= dport)
        if fwd:
            return (proto, src, sport, dst, dport, d.vlans), True
        return (proto, dst, dport, src, sport, d.vlans), False

    def update(self, d: Decoded, ts: float, wirelen: int, ordinal: int) -> tuple[Flow, int]:
        """Account one packet; return its flow and direction (0 from the originator, 1 towards it)."""
        if ts >= self.next_sweep:
            self.sweep(ts)
        key, _ = self.key(d)
        flows = self.flows
        flow = flows.get(key)
        if flow is not None:
            direction = 0 if d.src == flow.src and d.sport == flow.sport else 1
            if flow.proto == TCP and d.flags & (SYN | ACK) == SYN and flow.closed:
                flow.end_reason = "reused"  # a new connection on a finished 5-tuple
                self._finish(key, flow)
                flow = None
            elif ts - flow.start > self.active:
                flow.end_reason = "active_timeout"
                self._finish(key, flow)
                flow = Flow(key, d, ts, ordinal, flow.part + 1)
                flow.src, flow.dst, flow.sport, flow.dport = (
                    (d.src, d.dst, d.sport, d.dport) if direction == 0 else (d.dst, d.src, d.dport, d.sport))
                flows[key] = flow
            else:
                flows.move_to_end(key)
        if flow is None:
            if len(flows) >= self.max_flows:
                old_key, old = next(iter(flows.items()))
                old.end_reason = "evicted"
                self.counters["flows_evicted"] += 1
                self._finish(old_key, old)
            flow = flows[key] = Flow(key, d, ts, ordinal)
            direction = 0
        flow.last = ts
        flow.pkts[direction] += 1
        flow.bytes[direction] += wirelen
        flow.flags[direction] |= d.flags
        return flow, direction

    def _finish(self, key: tuple, flow: Flow) -> None:
        del self.flows[key]
        self.emit(flow)

    def sweep(self, now: float) -> None:
        """Emit flows idle for longer than their timeout (checked at most once per second of capture time)."""
        self.next_sweep = now + 1.0
        flows, shortest = self.flows, min(self.idle_tcp, self.idle_other, 5.0)
        expired = []
        for key, flow in flows.items():
            idle = now - flow.last
            if idle <= shortest:
                break
            limit = (5.0 if flow.closed else self.idle_tcp) if flow.proto == TCP else self.idle_other
            if idle > limit:
                expired.append((key, flow))
        for key, flow in expired:
            flow.end_reason = "idle_timeout"
            self._finish(key, flow)

    def flush(self, reason: str = "end_of_input") -> None:
        """Emit every open flow."""
        for key, flow in list(self.flows.items()):
            flow.end_reason = reason
            self._finish(key, flow)


__all__ = ["Flow", "FlowTable", "TCP", "UDP"]
