"""ECS event helpers: UTC timestamps, deterministic ids, flat <-> nested conversion."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

_SKIP_IN_ID = ("event.id", "event.ingested")


def to_utc_iso(value: Any) -> str:
    """Return `value` (epoch seconds, datetime or ISO-8601 string) as ISO-8601 UTC with microseconds and `Z`."""
    if isinstance(value, (int, float)):
        dt = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
    else:
        raise ValueError(f"not a timestamp: {value!r}")
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(value: str) -> datetime:
    """Parse an ISO-8601 timestamp (as written by `to_utc_iso`) into an aware UTC datetime."""
    return datetime.fromisoformat(to_utc_iso(value)[:-1] + "+00:00")


def epoch(value: Any) -> float | None:
    """Epoch seconds of a timestamp: a number, or ISO-8601 (without a zone: UTC); None when absent or unparsable."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        d = datetime.fromisoformat(value)  # fast path: soc's own ISO-8601 UTC with Z
        return (d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp()
    except (TypeError, ValueError):
        try:
            return parse_ts(str(value)).timestamp()
        except ValueError:
            return None


def event_id(event: dict[str, Any]) -> str:
    """Deterministic id: SHA-256 (32 hex chars) of the canonical JSON of the event without id/ingest time."""
    body = {k: v for k, v in event.items() if k not in _SKIP_IN_ID}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested ECS JSON into dotted keys; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """Nest dotted keys into ECS JSON objects (`{"a.b": 1}` -> `{"a": {"b": 1}}`).

    Where a key is both a leaf and a parent (rare in ECS), the leaf keeps its dotted name at that level.
    """
    out: dict[str, Any] = {}
    for key in sorted(flat, key=lambda k: k.count(".")):
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                node[".".join(parts[i:])] = flat[key]
                break
            node = child
        else:  # shallower keys come first, so a leaf never lands on an object already built
            node[parts[-1]] = flat[key]
    return out


def normalize(event: dict[str, Any]) -> dict[str, Any]:
    """Make a producer's event conform: flat keys, UTC `@timestamp`, `event.id`. Raises ValueError if unusable."""
    if any(isinstance(v, dict) for v in event.values()):
        event = flatten(event)
    ts = event.get("@timestamp")
    if ts is None:
        raise ValueError("event has no @timestamp")
    if not (isinstance(ts, str) and len(ts) == 27 and ts[-1] == "Z"):
        event["@timestamp"] = to_utc_iso(ts)
    if not event.get("event.id"):
        event["event.id"] = event_id(event)
    return event
