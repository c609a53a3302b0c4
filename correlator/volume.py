"""Outbound volume per host and hour against the host's own rolling baseline (theft of information by volume).

For each flow (``soc.flow``) that leaves the organization — the classification policy (run before this enricher)
placed its source in an organization and its destination outside it (another organization or no organization, the
internet) — the bytes the inside host sent (``source.bytes``) are added to that host's current hour (event time,
the flow's start). Closed hours teach the host's baseline: an exponentially weighted mean of its hourly outbound
bytes (half-life ``HALF_LIFE_HOURS``, hours without traffic count as zero) and the number of hours of history.

The flow whose bytes take the host's hour past ``FIRST_CHECKPOINT`` and each doubling after it (1 MiB, 2 MiB,
4 MiB, ...) is annotated, so a rule sees a handful of events per host and hour, never every flow:

- ``soc.volume.hour_bytes``: the host's outbound bytes this hour so far (to destinations outside its organization);
- ``soc.volume.baseline``: its usual hourly bytes (absent until the first hour closed);
- ``soc.volume.hours``: hours of history behind the baseline;
- ``soc.volume.ratio``: ``hour_bytes / max(baseline, MIN_BASELINE)``;
- ``soc.volume.destinations``: distinct outside destinations this hour (up to ``MAX_DESTINATIONS``).

The flow keeps its ``gov.label`` (the policy's label of what it carries), so the alert ranks exfiltration of
classified data highest. At most ``max_hosts`` hosts are kept (least recently seen evicted, counted).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from correlator.events import epoch

HALF_LIFE_HOURS = 72.0
FIRST_CHECKPOINT = 1 << 20  # bytes
MIN_BASELINE = 64 * 1024  # bytes per hour a ratio divides by at least
MAX_DESTINATIONS = 64


class _Host:
    __slots__ = ("baseline", "checkpoint", "dests", "hour", "hour_bytes", "hours", "weight")

    def __init__(self, hour: int) -> None:
        self.hour, self.hour_bytes, self.checkpoint = hour, 0, FIRST_CHECKPOINT
        self.baseline = self.weight = 0.0
        self.hours = 0
        self.dests: set[str] = set()


class VolumeEnricher:
    """Pipeline enricher: annotates checkpoint flows with ``soc.volume.*`` (see module doc)."""

    def __init__(self, max_hosts: int = 200_000) -> None:
        self.max_hosts = max_hosts
        self.hosts: OrderedDict[str, _Host] = OrderedDict()
        self.seen = self.late = self.evicted = 0
        self.decay = 0.5 ** (1 / HALF_LIFE_HOURS)

    def __call__(self, events: list[dict[str, Any]]) -> None:
        for e in events:
            if e.get("event.dataset") != "soc.flow":
                continue
            org = e.get("gov.source.organization")
            if not org or e.get("gov.destination.organization") == org:
                continue
            sent = e.get("source.bytes")
            t = epoch(e.get("event.start") or e.get("@timestamp"))
            if not sent or t is None:
                continue
            self._add(e, e["source.ip"], int(t // 3600), sent)

    def _add(self, e: dict[str, Any], ip: str, hour: int, sent: int) -> None:
        self.seen += 1
        h = self.hosts.get(ip)
        if h is None:
            h = self.hosts[ip] = _Host(hour)
            if len(self.hosts) > self.max_hosts:
                self.hosts.popitem(last=False)
                self.evicted += 1
        else:
            self.hosts.move_to_end(ip)
        if hour < h.hour:  # a flow of an hour already closed: its bytes are history now
            self.late += 1
            return
        if hour > h.hour:
            self._close(h, hour)
        h.hour_bytes += sent
        if len(h.dests) < MAX_DESTINATIONS:
            h.dests.add(e.get("destination.ip") or "")
        if h.hour_bytes < h.checkpoint:
            return
        while h.checkpoint <= h.hour_bytes:
            h.checkpoint *= 2
        e["soc.volume.hour_bytes"] = h.hour_bytes
        e["soc.volume.hours"] = h.hours
        e["soc.volume.destinations"] = len(h.dests)
        base = h.baseline / h.weight if h.weight else None
        if base is not None:
            e["soc.volume.baseline"] = round(base)
        e["soc.volume.ratio"] = round(h.hour_bytes / max(base or 0.0, MIN_BASELINE), 2)

    def _close(self, h: _Host, hour: int) -> None:
        """Hours h.hour .. hour - 1 are over: the first with its bytes, the rest empty, teach the baseline."""
        d = self.decay
        gap = hour - h.hour
        h.baseline, h.weight = d * h.baseline + (1 - d) * h.hour_bytes, d * h.weight + (1 - d)
        if gap > 1:  # empty hours
            k = d ** (gap - 1)
            h.baseline, h.weight = h.baseline * k, h.weight * k + (1 - k)
        h.hours += gap
        h.hour, h.hour_bytes, h.checkpoint = hour, 0, FIRST_CHECKPOINT
        h.dests.clear()

    def state(self) -> dict[str, int]:
        """Hosts held and counters (flows seen, late, evicted hosts)."""
        return {"hosts": len(self.hosts), "seen": self.seen, "late": self.late, "evicted_hosts": self.evicted}
