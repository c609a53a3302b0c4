"""Sigma correlation rules on event time: sliding windows per group-by key, bounded memory.

Semantics (documented in docs/detection.md):
- A window holds, per correlation rule and group key, the matches of the referenced rules whose event time lies in
  ``[t - timespan, t]`` where ``t`` is the newest event time of that group (both edges inclusive).
- The condition is evaluated when a match arrives. When it holds, the correlation fires once and that group's window
  is cleared, so the next firing needs a fresh set of matches (alerts then fold repeats, see correlator.alerts).
- Late events (older than the group's window) are counted and ignored. A group whose newest event is older than
  ``watermark - timespan`` is dropped; at most ``max_groups`` groups per rule (oldest evicted, counted) and
  ``max_entries`` matches per group (oldest dropped) are kept, so memory is bounded.
- ``temporal``: every referenced rule matched in the window; ``temporal_ordered``: they matched in the listed order.
- ``value_count`` counts distinct values of the field; ``value_sum/avg/median/percentile`` aggregate its numbers.
"""

from __future__ import annotations

import operator
import statistics
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sigma.correlations import (
    SigmaCorrelationConditionOperator as Op,
)
from sigma.correlations import (
    SigmaCorrelationRule,
    SigmaCorrelationType,
)

from correlator.events import epoch

OPS = {Op.LT: operator.lt, Op.LTE: operator.le, Op.GT: operator.gt, Op.GTE: operator.ge, Op.EQ: operator.eq,
       Op.NEQ: operator.ne}
SUPPORTED = {
    SigmaCorrelationType.EVENT_COUNT, SigmaCorrelationType.VALUE_COUNT, SigmaCorrelationType.TEMPORAL,
    SigmaCorrelationType.TEMPORAL_ORDERED, SigmaCorrelationType.VALUE_SUM, SigmaCorrelationType.VALUE_AVG,
    SigmaCorrelationType.VALUE_MEDIAN, SigmaCorrelationType.VALUE_PERCENTILE,
}


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


@dataclass
class Firing:
    """A correlation that fired: its rule, group, the matched events in the window and the aggregate value."""

    rule: SigmaCorrelationRule
    group: dict[str, Any]
    events: list[dict[str, Any]]
    value: float
    start: float
    end: float


class _Window:
    """One group's matches: ``entries`` (ts, ref index, value, event), ``values`` value -> how many entries hold
    it (value correlations only), ``last`` the newest event time."""

    __slots__ = ("entries", "values", "last")

    def __init__(self, last: float) -> None:
        self.entries: deque = deque()
        self.values: dict = {}
        self.last = last


class Correlation:
    """One correlation rule's state."""

    def __init__(self, rule: SigmaCorrelationRule, ref_ids: list[str], max_groups: int, max_entries: int) -> None:
        if rule.type not in SUPPORTED:
            raise ValueError(f"correlation type {rule.type} not supported")
        self.rule = rule
        self.ref_ids = ref_ids
        self.span = float(rule.timespan.seconds)
        self.group_by = list(rule.group_by or [])
        cond = rule.condition
        self.op = OPS[cond.op] if rule.type not in (SigmaCorrelationType.TEMPORAL,
                                                    SigmaCorrelationType.TEMPORAL_ORDERED) or cond else None
        self.count = getattr(cond, "count", None)
        fr = getattr(cond, "fieldref", None)
        self.fieldref = fr[0] if isinstance(fr, list) else fr
        self.percentile = getattr(cond, "percentile", None)
        # alias -> {ref index -> field}
        self.aliases: dict[str, dict[int, str]] = {}
        position = {ref.reference: i for i, ref in enumerate(rule.rules or [])}
        for alias in rule.aliases:
            self.aliases[alias.alias] = {position[ref.reference]: fname for ref, fname in alias.mapping.items()
                                         if ref.reference in position}
        # per referenced rule: the event fields of the group-by (aliases resolved) and of the aggregated value
        self.fields = [[self._field(g, i) for g in self.group_by] for i in range(len(ref_ids))]
        self.value_fields = [self._field(self.fieldref, i) if self.fieldref else "" for i in range(len(ref_ids))]
        self.keys = [_key_of(fs) for fs in self.fields]  # per referenced rule: event -> group key (a tuple)
        t = rule.type
        self._holds = (self._event_count if t == SigmaCorrelationType.EVENT_COUNT else
                       self._value_count if t == SigmaCorrelationType.VALUE_COUNT else
                       self._temporal if t in (SigmaCorrelationType.TEMPORAL,
                                               SigmaCorrelationType.TEMPORAL_ORDERED) else
                       self._aggregate)
        # fewer entries than this cannot satisfy the condition (a count of at least N needs N matches): the
        # condition is not evaluated before (most feeds are below the threshold)
        self.min_entries = _min_entries(t, cond, len(ref_ids))
        self.groups: OrderedDict[Any, _Window] = OrderedDict()  # group key (value, or tuple of values) -> window
        self.max_groups = max_groups
        self.max_entries = max_entries
        self.late = 0
        self.evicted = 0

    def _field(self, name: str, ref: int) -> str:
        m = self.aliases.get(name)
        return m.get(ref, name) if m else name

    def feed(self, event: dict[str, Any], ref: int, ts: float) -> Firing | None:
        key: Any = self.keys[ref](event)
        groups = self.groups
        try:
            w = groups.get(key)
        except TypeError:  # a list value: its tuple is the key
            key = tuple([_hashable(v) for v in key])
            w = groups.get(key)
        if w is None:
            w = groups[key] = _Window(ts)
            if len(groups) > self.max_groups:
                groups.popitem(last=False)
                self.evicted += 1
        else:
            groups.move_to_end(key)
            last = w.last
            if ts < last - self.span:
                self.late += 1
                return None
            if ts > last:
                w.last = ts
        entries = w.entries
        if self.fieldref:
            value = event.get(self.value_fields[ref])
            if type(value) is list:
                value = tuple(value)
            values = w.values
            values[value] = values.get(value, 0) + 1
            entries.append((ts, ref, value, event))
        else:
            entries.append((ts, ref, None, event))
        lo = w.last - self.span
        if entries[0][0] < lo or len(entries) > self.max_entries:
            self._trim(w, lo)
        if len(entries) < self.min_entries:
            return None
        hit, agg = self._holds(w)
        if not hit:
            return None
        entries = list(w.entries)
        del self.groups[key]
        group = {}
        for g, f in zip(self.group_by, self.fields[ref], strict=True):
            v = event.get(f)
            if v is not None:
                group[g] = v
        return Firing(self.rule, group, [x[3] for x in entries], agg, entries[0][0], entries[-1][0])

    def _trim(self, w: _Window, lo: float) -> None:
        """Drop entries older than ``lo`` and beyond ``max_entries`` (oldest first)."""
        entries, values = w.entries, w.values
        while entries and (entries[0][0] < lo or len(entries) > self.max_entries):
            _, _, v, _ = entries.popleft()
            if self.fieldref:
                if values[v] == 1:
                    del values[v]
                else:
                    values[v] -= 1

    def _event_count(self, w: _Window) -> tuple[bool, float]:
        n = len(w.entries)
        return self.op(n, self.count), n

    def _value_count(self, w: _Window) -> tuple[bool, float]:
        n = len(w.values) - (None in w.values)  # distinct values, kept incrementally
        return self.op(n, self.count), n

    def _temporal(self, w: _Window) -> tuple[bool, float]:
        need = len(self.ref_ids)
        if self.rule.type == SigmaCorrelationType.TEMPORAL:
            seen = len({r for _, r, _, _ in w.entries})
        else:
            seen = 0
            for _, r, _, _ in w.entries:
                if r == seen:
                    seen += 1
                    if seen == need:
                        break
        if self.op is None or self.count is None:
            return seen == need, seen
        return seen == need and self.op(seen, self.count), seen

    def _aggregate(self, w: _Window) -> tuple[bool, float]:
        t = self.rule.type
        nums = [n for _, _, v, _ in w.entries if (n := _number(v)) is not None]
        if not nums:
            return False, 0.0
        if t == SigmaCorrelationType.VALUE_SUM:
            agg = float(sum(nums))
        elif t == SigmaCorrelationType.VALUE_AVG:
            agg = sum(nums) / len(nums)
        elif t == SigmaCorrelationType.VALUE_MEDIAN:
            agg = float(statistics.median(nums))
        else:
            p = self.percentile or 50
            agg = float(statistics.quantiles(nums, n=100, method="inclusive")[p - 1]) if len(nums) > 1 and 0 < p < 100 \
                else float(nums[0])
        return self.op(agg, self.count), agg

    def expire(self, watermark: float) -> None:
        """Drop groups whose newest match is older than ``watermark - timespan``."""
        stale = [k for k, w in self.groups.items() if w.last < watermark - self.span]
        for k in stale:
            del self.groups[k]

    def size(self) -> tuple[int, int]:
        return len(self.groups), sum(len(w.entries) for w in self.groups.values())


def _key_of(fields: list[str]) -> Callable[[dict[str, Any]], tuple]:
    """The group key of an event: the tuple of its group-by fields' values (None when absent)."""
    if len(fields) == 1:
        a, = fields
        return lambda e: (e.get(a),)
    if len(fields) == 2:
        a, b = fields
        return lambda e: (e.get(a), e.get(b))
    return lambda e: tuple(map(e.get, fields))


def _min_entries(t: SigmaCorrelationType, cond: Any, refs: int) -> int:
    """Fewest window entries with which the condition can hold: every referenced rule for temporal ones; for
    counts (events, distinct values: never more than the entries) compared with >, >= or ==, the count itself."""
    if t in (SigmaCorrelationType.TEMPORAL, SigmaCorrelationType.TEMPORAL_ORDERED):
        return refs
    count = getattr(cond, "count", None)
    if t in (SigmaCorrelationType.EVENT_COUNT, SigmaCorrelationType.VALUE_COUNT) and isinstance(count, int):
        if cond.op == Op.GT:
            return count + 1
        if cond.op in (Op.GTE, Op.EQ):
            return count
    return 1


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _ref_id(ref: Any) -> str:
    r = ref.rule
    return str(r.id or r.name or r.title)


class CorrelationEngine:
    """Feeds base-rule matches to every correlation rule that references them."""

    def __init__(self, rules: list[SigmaCorrelationRule], max_groups: int = 10_000, max_entries: int = 1_000) -> None:
        self.correlations: list[Correlation] = []
        self.by_rule: dict[str, list[tuple[Correlation, int]]] = {}
        self.failures: list[tuple[SigmaCorrelationRule, str]] = []
        for r in rules:
            try:
                if any(isinstance(ref.rule, SigmaCorrelationRule) for ref in r.rules or []):
                    raise ValueError("correlation of correlations is not supported")
                ids = [_ref_id(ref) for ref in r.rules or []]
                c = Correlation(r, ids, max_groups, max_entries)
            except (ValueError, KeyError, AttributeError) as e:
                self.failures.append((r, str(e)))
                continue
            self.correlations.append(c)
            for i, rid in enumerate(ids):
                self.by_rule.setdefault(rid, []).append((c, i))
        self.watermark = 0.0
        self._since_expire = 0

    def referenced(self) -> set[str]:
        return set(self.by_rule)

    def feed(self, event: dict[str, Any], rule_id: str, ts: float | None = None) -> list[Firing]:
        """Feed one match of base rule ``rule_id``; ``ts`` is the event time if the caller has it."""
        targets = self.by_rule.get(rule_id)
        if not targets:
            return []
        return self.feed_targets(event, targets, event_time(event) if ts is None else ts)

    def feed_targets(self, event: dict[str, Any], targets: list[tuple[Correlation, int]], ts: float) -> list[Firing]:
        """``feed`` for callers that looked ``by_rule[rule_id]`` up once (the detector, per compiled rule)."""
        if ts > self.watermark:
            self.watermark = ts
        out = []
        for c, ref in targets:  # a loop, not a comprehension: no frame per call on Python 3.11
            f = c.feed(event, ref, ts)
            if f is not None:
                out.append(f)
        self._since_expire += 1
        if self._since_expire >= 10_000:
            self.expire()
        return out

    def expire(self) -> None:
        self._since_expire = 0
        for c in self.correlations:
            c.expire(self.watermark)

    def stats(self) -> dict[str, int]:
        groups = entries = late = evicted = 0
        for c in self.correlations:
            g, e = c.size()
            groups, entries, late, evicted = groups + g, entries + e, late + c.late, evicted + c.evicted
        return {"rules": len(self.correlations), "groups": groups, "entries": entries, "late": late,
                "evicted_groups": evicted}


_MINUTES: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM" -> epoch microseconds (the minutes of recent events)


def event_time(event: dict[str, Any]) -> float:
    """Event time in epoch seconds from ``@timestamp`` (0 when absent or unparsable). soc's own form
    (``2024-05-01T10:00:00.123456Z``) is read from a cache of its minute, exactly as ``epoch`` reads it."""
    v = event.get("@timestamp")
    if type(v) is str and len(v) == 27 and v[26] == "Z" and v[19] == "." and v[16] == ":":
        secs, micros = v[17:19], v[20:26]
        if secs < "60" and secs.isdigit() and micros.isdigit() and secs.isascii() and micros.isascii():
            base = _MINUTES.get(v[:16])
            if base is None:
                m = epoch(v[:16] + ":00Z")
                if m is not None:
                    if len(_MINUTES) >= 4096:
                        _MINUTES.clear()
                    base = _MINUTES[v[:16]] = round(m) * 1_000_000
            if base is not None:
                return (base + int(secs) * 1_000_000 + int(micros)) / 1_000_000
    t = epoch(v)
    return 0.0 if t is None else t
