"""Alert storms: when one rule's group keys explode (spoofed sources, a worm), new keys fold into one storm alert.

Per rule, every match that would open a new per-key alert counts its key. When more than `keys` distinct keys did
so within `window` seconds (event time), the rule is in a storm: each further match that would open a per-key alert
folds instead into ONE storm alert per (rule, value of the storm's `field`, e.g. destination.ip = the victim),
which keeps the count of keys, matches and suppressed per-key alerts, first/last seen and sample keys. Keys that
already had an alert keep folding into it. A storm ends when `window` passes without a match folded into it; per-key
alerting then resumes. The storm alert's uuid is sha256(rule id, ("storm", field, value), first match time), so a
re-ingest of the same events rebuilds the same counts under the same id (an upsert, never a double count).

The setting lives on the rule: a Sigma rule's custom attribute `soc_storm: {keys: 50, window: 60, field:
destination.ip}` (any part optional) or `soc_storm: false`; every other rule (policy, Suricata/Zeek signatures) uses
`DEFAULT`.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from correlator.alerts import MAX_ANCESTORS, _hv, build_alert, raise_label

SAMPLE_KEYS = 10


def _show(v: Any) -> str:
    """A field's value as text (one mapping for `soc.alert.storm.value` whatever the field's type)."""
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)


@dataclass(frozen=True)
class StormSpec:
    """More than `keys` distinct keys alerting within `window` seconds starts a storm, folded per `field` value."""

    keys: int = 50
    window: float = 60.0
    field: str = "destination.ip"


DEFAULT = StormSpec()


def storm_spec(custom: dict[str, Any] | None) -> StormSpec | None:
    """The storm setting of a rule from its custom attributes (`soc_storm`); ValueError names what is wrong."""
    raw = (custom or {}).get("soc_storm", True)
    if raw is True or raw is None:
        return DEFAULT
    if raw is False:
        return None
    if not isinstance(raw, dict):
        raise ValueError(f"soc_storm: expected false or a mapping with keys, window, field; got {raw!r}")
    unknown = set(raw) - {"keys", "window", "field"}
    if unknown:
        raise ValueError(f"soc_storm: unknown setting(s) {', '.join(sorted(map(str, unknown)))} "
                         "(expected keys, window, field)")
    keys, window, fld = raw.get("keys", DEFAULT.keys), raw.get("window", DEFAULT.window), raw.get("field",
                                                                                                  DEFAULT.field)
    if not isinstance(keys, int) or isinstance(keys, bool) or keys < 1:
        raise ValueError(f"soc_storm.keys: expected a whole number >= 1, got {keys!r}")
    if not isinstance(window, int | float) or isinstance(window, bool) or window <= 0:
        raise ValueError(f"soc_storm.window: expected seconds > 0, got {window!r}")
    if not isinstance(fld, str) or not fld:
        raise ValueError(f"soc_storm.field: expected a field name, got {fld!r}")
    return StormSpec(keys, float(window), fld)


@dataclass
class _Storm:
    alert: dict[str, Any]
    last: float
    keys: set = field(default_factory=set)


@dataclass
class _RuleState:
    spec: StormSpec
    recent: deque = field(default_factory=deque)  # (time, key) of each new per-key alert (written or suppressed)
    distinct: Counter = field(default_factory=Counter)  # keys in `recent`
    suppressed: dict = field(default_factory=dict)  # key -> start of the per-key alert window it would have opened
    storms: dict = field(default_factory=dict)  # field value -> _Storm


class StormFolder:
    """The storm half of `correlator.alerts.AlertFolder` (`fold_window`: its per-key window)."""

    def __init__(self, fold_window: float) -> None:
        self.fold_window = fold_window
        self.rules: dict[str, _RuleState] = {}

    def fold(self, rule: Any, event: dict[str, Any], ts: float, key: tuple, events: list[dict[str, Any]] | None,
             reason: str | None) -> dict[str, Any] | None:
        """A match that would open a per-key alert: the storm alert it folds into, or None (open the alert)."""
        st = self.rules.get(rule.id)
        if st is None:
            spec = getattr(rule, "storm", DEFAULT)
            if spec is None:
                return None
            st = self.rules[rule.id] = _RuleState(spec)
        spec, recent, distinct = st.spec, st.recent, st.distinct
        while recent and recent[0][0] <= ts - spec.window:
            _, old = recent.popleft()
            distinct[old] -= 1
            if not distinct[old]:
                del distinct[old]
        value = _hv(event.get(spec.field))
        storm = st.storms.get(value)
        if storm is not None and ts - storm.last >= spec.window:  # quiet for a window: that storm is over
            del st.storms[value]
            storm = None
        start = st.suppressed.get(key)
        new = start is None or not start <= ts < start + self.fold_window  # would open a per-key alert
        if new:
            recent.append((ts, key))
            distinct[key] += 1
        if storm is None and len(distinct) <= spec.keys:
            return None
        batch = events or [event]
        if storm is None:
            first = batch[0].get("@timestamp") or event.get("@timestamp")
            group = {spec.field: event[spec.field]} if event.get(spec.field) is not None else {}
            alert = build_alert(rule, event, group, first, reason, batch, ("storm", spec.field, value))
            alert["soc.alert.storm.field"] = spec.field
            alert["soc.alert.storm.value"] = None if event.get(spec.field) is None else _show(event[spec.field])
            alert["soc.alert.storm.threshold"] = spec.keys
            alert["soc.alert.storm.window"] = spec.window
            alert["soc.alert.storm.keys"] = 0
            alert["soc.alert.storm.matches"] = 0
            alert["soc.alert.storm.suppressed"] = 0
            alert["soc.alert.storm.sample"] = []
            alert["soc.alert.suppression.docs_count"] = 0
            alert["soc.alert.ancestors"] = []
            storm = st.storms[value] = _Storm(alert, ts)
        a = storm.alert
        storm.last = max(storm.last, ts)
        a["soc.alert.storm.matches"] += 1
        a["soc.alert.suppression.docs_count"] += len(batch)
        if new:
            st.suppressed[key] = ts
            a["soc.alert.storm.suppressed"] += 1
            if key not in storm.keys:
                storm.keys.add(key)
                a["soc.alert.storm.keys"] = len(storm.keys)
                if len(a["soc.alert.storm.sample"]) < SAMPLE_KEYS:
                    a["soc.alert.storm.sample"].append(", ".join(f"{k}={v}" for k, v in key))
            a["soc.alert.reason"] = (f"alert storm of {rule.title}: {a['soc.alert.storm.keys']} keys on "
                                     f"{spec.field}={a['soc.alert.storm.value']} "
                                     f"({a['soc.alert.storm.suppressed']} per-key alerts folded)")
        end = event.get("@timestamp")
        if end and end > a["soc.alert.suppression.end"]:
            a["soc.alert.suppression.end"] = a["@timestamp"] = end
        raise_label(a, batch)
        anc = a["soc.alert.ancestors"]
        for e in batch:
            if len(anc) < MAX_ANCESTORS and e.get("event.id") and e["event.id"] not in anc:
                anc.append(e["event.id"])
        return a

    def expire(self, watermark: float) -> None:
        """Forget storms quiet for their window and suppressed keys whose would-be alert window ended."""
        for st in self.rules.values():
            for value in [v for v, s in st.storms.items() if s.last + st.spec.window <= watermark]:
                del st.storms[value]
            if st.suppressed:
                horizon = watermark - self.fold_window
                st.suppressed = {k: t for k, t in st.suppressed.items() if t > horizon}
