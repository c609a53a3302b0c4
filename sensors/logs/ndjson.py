"""Generic NDJSON: one JSON object per line, nested or dotted, with an `@timestamp`."""

from __future__ import annotations

from correlator.events import loads_event
from sensors.logs.fields import flatten, iso
from sensors.logs.registry import register


@register("ndjson")
class NdjsonDecoder:
    """Any JSON object per line; `event.module`/`event.dataset` default to `ndjson`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def header(self, lines: list[bytes]) -> None:
        """NDJSON has no header."""

    def decode(self, raw: bytes) -> dict:
        ev = flatten(loads_event(raw))
        ev.setdefault("event.module", "ndjson")
        ev.setdefault("event.dataset", "ndjson")
        if "@timestamp" not in ev:
            raise ValueError("no @timestamp")
        ev["@timestamp"] = iso(ev["@timestamp"])
        return ev
