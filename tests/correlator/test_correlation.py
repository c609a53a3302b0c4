"""Correlation rules on event time: window edges, per-group isolation, firing resets, bounded memory."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta

import pytest
from sigma.collection import SigmaCollection

from correlator.sigma.correlation import CorrelationEngine

T0 = datetime(2026, 1, 1, tzinfo=UTC)

BASE = """
title: Base A
id: 11111111-1111-4111-8111-111111111111
name: base_a
logsource:
    category: test
detection:
    sel:
        x.kind: a
    condition: sel
---
title: Base B
id: 22222222-2222-4222-8222-222222222222
name: base_b
logsource:
    category: test
detection:
    sel:
        x.kind: b
    condition: sel
"""


def engine(correlation: str, **kw) -> CorrelationEngine:
    col = SigmaCollection.from_yaml(BASE + "---\n" + textwrap.dedent(correlation))
    return CorrelationEngine([r for r in col.rules if hasattr(r, "timespan")], **kw)


def ev(sec: float, src: str = "10.0.0.1", **fields) -> dict:
    return {"@timestamp": (T0 + timedelta(seconds=sec)).isoformat().replace("+00:00", "Z"), "source.ip": src,
            "event.id": f"{src}-{sec}"} | fields


EVENT_COUNT = """
title: Count
name: Count
correlation:
    type: event_count
    rules: [base_a]
    group-by: [source.ip]
    timespan: 10s
    condition:
        gte: 3
"""


def feed(eng: CorrelationEngine, events: list[tuple[dict, str]]) -> list:
    return [f for e, rid in events for f in eng.feed(e, rid)]


A = "11111111-1111-4111-8111-111111111111"
B = "22222222-2222-4222-8222-222222222222"


def test_event_count_window_edges_are_inclusive() -> None:
    eng = engine(EVENT_COUNT)
    assert len(feed(eng, [(ev(0), A), (ev(5), A), (ev(10), A)])) == 1  # 0..10 spans exactly 10 s
    eng = engine(EVENT_COUNT)
    assert feed(eng, [(ev(0), A), (ev(5), A), (ev(10.001), A)]) == []  # the first fell out


def test_firing_clears_the_group_window() -> None:
    eng = engine(EVENT_COUNT)
    fired = feed(eng, [(ev(t), A) for t in range(6)])
    assert len(fired) == 2  # events 0-2, then 3-5: a fresh set each time
    assert [e["event.id"] for e in fired[1].events] == ["10.0.0.1-3", "10.0.0.1-4", "10.0.0.1-5"]
    assert fired[0].group == {"source.ip": "10.0.0.1"} and fired[0].value == 3


def test_groups_are_independent() -> None:
    eng = engine(EVENT_COUNT)
    events = [(ev(t, "10.0.0.1"), A) for t in range(2)] + [(ev(t, "10.0.0.2"), A) for t in range(2)]
    assert feed(eng, events) == []
    assert len(feed(eng, [(ev(3, "10.0.0.2"), A)])) == 1


def test_only_referenced_rules_count() -> None:
    eng = engine(EVENT_COUNT)
    assert feed(eng, [(ev(t), B) for t in range(5)]) == []


def test_value_count_counts_distinct_values() -> None:
    eng = engine("""
        title: Distinct ports
        correlation:
            type: value_count
            rules: [base_a]
            group-by: [source.ip]
            timespan: 1m
            condition:
                field: destination.port
                gte: 3
        """)
    same = [(ev(t, **{"destination.port": 22}), A) for t in range(10)]
    assert feed(eng, same) == []
    fired = feed(eng, [(ev(20, **{"destination.port": 23}), A), (ev(21, **{"destination.port": 80}), A)])
    assert len(fired) == 1 and fired[0].value == 3


def test_temporal_needs_every_rule_in_window() -> None:
    eng = engine("""
        title: Both
        correlation:
            type: temporal
            rules: [base_a, base_b]
            group-by: [source.ip]
            timespan: 30s
        """)
    assert feed(eng, [(ev(0), B), (ev(5), B)]) == []
    assert len(feed(eng, [(ev(20), A)])) == 1
    eng = engine("""
        title: Both
        correlation:
            type: temporal
            rules: [base_a, base_b]
            group-by: [source.ip]
            timespan: 30s
        """)
    assert feed(eng, [(ev(0), B), (ev(31), A)]) == []  # too far apart


def test_temporal_ordered_needs_the_order() -> None:
    spec = """
        title: A then B
        correlation:
            type: temporal_ordered
            rules: [base_a, base_b]
            group-by: [source.ip]
            timespan: 30s
        """
    assert feed(engine(spec), [(ev(0), B), (ev(5), A)]) == []
    assert len(feed(engine(spec), [(ev(0), A), (ev(5), B)])) == 1
    assert len(feed(engine(spec), [(ev(0), B), (ev(1), A), (ev(2), B)])) == 1


def test_value_sum_and_avg() -> None:
    total = engine("""
        title: Bytes out
        correlation:
            type: value_sum
            rules: [base_a]
            group-by: [source.ip]
            timespan: 1m
            condition:
                field: network.bytes
                gt: 1000
        """)
    assert feed(total, [(ev(0, **{"network.bytes": 600}), A)]) == []
    fired = feed(total, [(ev(1, **{"network.bytes": 500}), A)])
    assert len(fired) == 1 and fired[0].value == 1100
    avg = engine("""
        title: Avg
        correlation:
            type: value_avg
            rules: [base_a]
            group-by: [source.ip]
            timespan: 1m
            condition:
                field: network.bytes
                gte: 100
        """)
    assert feed(avg, [(ev(0, **{"network.bytes": 50}), A), (ev(1, **{"network.bytes": 100}), A)]) == []
    assert len(feed(avg, [(ev(2, **{"network.bytes": 150}), A)])) == 1


def test_aliases_map_group_fields_per_rule() -> None:
    eng = engine("""
        title: Same host both sides
        correlation:
            type: temporal
            rules: [base_a, base_b]
            aliases:
                host:
                    base_a: source.ip
                    base_b: destination.ip
            group-by: [host]
            timespan: 1m
        """)
    assert len(feed(eng, [(ev(0, "10.9.9.9"), A), ({**ev(1, "1.1.1.1"), "destination.ip": "10.9.9.9"}, B)])) == 1


def test_late_events_are_ignored_and_counted() -> None:
    eng = engine(EVENT_COUNT)
    feed(eng, [(ev(100), A), (ev(80), A), (ev(101), A)])
    assert eng.stats()["late"] == 1
    assert eng.stats()["entries"] == 2


def test_memory_is_bounded() -> None:
    eng = engine(EVENT_COUNT, max_groups=100, max_entries=2)
    feed(eng, [(ev(t, f"10.1.{t // 250}.{t % 250}"), A) for t in range(1000)])
    st = eng.stats()
    assert st["groups"] == 100 and st["evicted_groups"] == 900
    eng.expire()
    assert eng.stats()["groups"] <= 100
    eng = engine(EVENT_COUNT, max_entries=2)
    assert feed(eng, [(ev(t), A) for t in range(5)]) == []  # never more than 2 entries: gte 3 cannot hold


def test_unsupported_correlation_is_reported() -> None:
    col = SigmaCollection.from_yaml(BASE + "---\n" + textwrap.dedent(EVENT_COUNT) + """---
title: Chained
correlation:
    type: event_count
    rules: [Count]
    group-by: [source.ip]
    timespan: 1m
    condition:
        gte: 2
""")
    eng = CorrelationEngine([r for r in col.rules if hasattr(r, "timespan")])
    assert len(eng.correlations) == 1
    assert [r.title for r, _ in eng.failures] == ["Chained"]


@pytest.mark.parametrize("ts", [None, "not a time"])
def test_event_without_time_counts_at_epoch(ts) -> None:
    eng = engine(EVENT_COUNT)
    e = {"source.ip": "1.2.3.4", "@timestamp": ts}
    assert len(feed(eng, [(e, A), (e, A), (e, A)])) == 1


def test_value_median_and_percentile() -> None:
    median = engine("""
        title: Median
        correlation:
            type: value_median
            rules: [base_a]
            group-by: [source.ip]
            timespan: 1m
            condition:
                field: network.bytes
                gte: 100
        """)
    assert feed(median, [(ev(t, **{"network.bytes": b}), A) for t, b in enumerate([10, 20, 30, 300, 400])]) == []
    fired = feed(median, [(ev(5, **{"network.bytes": 500}), A)])  # median of 10 20 30 300 400 500 = 165
    assert len(fired) == 1 and fired[0].value == 165
    pct = engine("""
        title: P90
        correlation:
            type: value_percentile
            rules: [base_a]
            group-by: [source.ip]
            timespan: 1m
            condition:
                field: network.bytes
                percentile: 90
                gte: 900
        """)
    values = [100] * 9 + [1000]  # inclusive 90th percentile of 9x100 and 1000 = 190
    assert feed(pct, [(ev(t, **{"network.bytes": b}), A) for t, b in enumerate(values)]) == []
    fired = feed(pct, [(ev(20 + t, **{"network.bytes": 1000}), A) for t in range(3)])
    # 9x100 + 2x1000: p90 = 1000 fires; the window is then cleared, so each later 1000 alone fires again
    assert [f.value for f in fired] == [1000, 1000, 1000] and len(fired[0].events) == 11


def test_event_time_reads_timestamps_as_epoch_does() -> None:
    """The minute-cached reading of soc's timestamp form gives epoch()'s float exactly; anything else falls back."""
    import random

    from correlator.events import epoch, to_utc_iso
    from correlator.sigma.correlation import event_time

    rng = random.Random(12)
    stamps = [to_utc_iso(round(rng.uniform(0, 4e9), 6)) for _ in range(20_000)]
    stamps += ["2024-05-01T10:00:60.000000Z", "2024-05-01T10:00:5x.000000Z", "2024-13-01T10:00:00.000000Z",
               "2024-05-01T10:00:00.12345 Z", "2024-05-01T10:00:00Z", "2024-05-01T10:00:00.000000+00:00"]
    for s in stamps:
        assert event_time({"@timestamp": s}) == (epoch(s) or 0.0), s
    assert event_time({}) == 0.0 and event_time({"@timestamp": 5}) == 5.0
