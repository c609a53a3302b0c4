"""ECS event helpers: UTC timestamps, strict JSON in and out, deterministic ids, flat <-> nested conversion."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from typing import Any

_SKIP_IN_ID = ("event.id", "event.ingested")

MAX_DEPTH = 64  # deepest nesting of objects/lists an event may have (SQLite's JSON stops at 1000, Python's sooner)
_INT64 = (-(2**63), 2**63 - 1)  # what SQLite columns and Elasticsearch `long` hold


def to_utc_iso(value: Any) -> str:
    """Return `value` (epoch seconds, datetime or ISO-8601 string) as ISO-8601 UTC with microseconds and `Z`.

    Raises ValueError naming the value for anything else: booleans, NaN/Infinity, out-of-range times.
    """
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
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
        utc = dt.astimezone(UTC)
    except (OverflowError, OSError, ValueError) as exc:  # fromtimestamp(inf) / (-1e18) / (nan), year 0 after offset
        if str(exc).startswith("not a timestamp"):
            raise
        raise ValueError(f"not a timestamp in range: {_short(value)} ({exc})") from None
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"  # 4-digit year, unlike strftime


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} overflows to infinity")
    return value


def _int64(text: str) -> int:
    value = int(text)
    if not _INT64[0] <= value <= _INT64[1]:
        raise ValueError(f"integer {text[:40]} is beyond 64 bits")
    return value


def loads_event(raw: bytes | str) -> dict[str, Any]:
    """Parse one line of strict JSON (RFC 8259, UTF-8) that must be an object a store can hold.

    Raises ValueError with the reason (and character position where json gives one) for invalid JSON or UTF-8,
    NaN/Infinity, numbers that overflow to infinity, integers beyond 64 bits, lone surrogates, nesting deeper than
    MAX_DEPTH, or a value that is not an object.
    """
    # Strict UTF-8 both ways (json.loads would let encoded surrogates through); Unicode errors are ValueErrors.
    text = raw.decode() if isinstance(raw, bytes) else raw
    if text is raw and not text.isascii():
        text.encode()
    try:
        obj = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_int64)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    if text.count("{") + text.count("[") > MAX_DEPTH or "\\ud" in text or "\\uD" in text:
        _check_value(obj)  # only lines that may nest too deep or escape a (maybe lone) surrogate are walked
    return obj


def _check_value(root: Any) -> None:
    """Walk a parsed document (iteratively) and raise ValueError at the first value a store cannot hold."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = [*value.keys(), *value.values()]
        elif isinstance(value, list):
            children = value
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError("a number overflows to infinity (not representable)")
            continue
        elif isinstance(value, int):
            if not _INT64[0] <= value <= _INT64[1] and not isinstance(value, bool):
                raise ValueError(f"integer {_short(value)} is beyond 64 bits")
            continue
        elif isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode()
                except UnicodeEncodeError as exc:
                    raise ValueError(f"invalid Unicode in a string ({exc.reason})") from None
            continue
        else:
            continue
        if depth > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        stack.extend((c, depth + 1) for c in children)


def dumps_event(doc: dict[str, Any]) -> str:
    """Strict JSON text of a document for a store (RFC 8259: what SQLite's and Elasticsearch's JSON accept).

    Raises ValueError when `doc` holds NaN/Infinity, a lone surrogate or nesting too deep to encode.
    """
    try:
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except RecursionError:
        raise ValueError("nested too deep to encode") from None
    if not text.isascii():  # O(1) for the common ASCII text; else one encode to find lone surrogates
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            raise ValueError(f"invalid Unicode in a string ({exc.reason})") from None
    return text


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
        try:
            event["@timestamp"] = to_utc_iso(ts)
        except ValueError as exc:
            raise ValueError(f"@timestamp: {exc}") from None
    eid = event.get("event.id")
    if not eid:
        event["event.id"] = event_id(event)
    elif not isinstance(eid, str):
        raise ValueError(f"event.id must be a string, not {_short(eid)}")
    return event
