"""Event helpers: timestamps, deterministic ids, flat/nested round trips."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from correlator.events import event_id, flatten, nest, normalize, parse_ts, to_utc_iso


def test_timestamps_become_utc_with_z():
    assert to_utc_iso(0) == "1970-01-01T00:00:00.000000Z"
    assert to_utc_iso("2024-05-01T12:00:00+02:00") == "2024-05-01T10:00:00.000000Z"
    assert to_utc_iso("2024-05-01T10:00:00") == "2024-05-01T10:00:00.000000Z"  # naive means UTC
    assert to_utc_iso(datetime(2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=3)))) == "2024-05-01T09:00:00.000000Z"
    with pytest.raises(ValueError):
        to_utc_iso("yesterday")


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_timestamp_round_trip(dt):
    assert parse_ts(to_utc_iso(dt)) == dt


def test_event_id_is_deterministic_and_content_sensitive():
    a = {"@timestamp": "2024-05-01T10:00:00.000000Z", "source.ip": "10.0.0.1", "event.sequence": 1}
    b = dict(reversed(list(a.items())))
    assert event_id(a) == event_id(b)  # key order does not matter
    assert event_id(a) == event_id(a | {"event.ingested": "2030-01-01T00:00:00Z", "event.id": "x"})
    assert event_id(a) != event_id(a | {"event.sequence": 2})
    assert len(event_id(a)) == 32


def test_normalize_flattens_and_sets_id_once():
    ev = normalize({"@timestamp": 1714557600, "source": {"ip": "10.0.0.1", "port": 80}, "event": {"kind": "event"}})
    assert ev["@timestamp"] == "2024-05-01T10:00:00.000000Z"
    assert ev["source.ip"] == "10.0.0.1" and ev["event.kind"] == "event"
    first = ev["event.id"]
    assert normalize(dict(ev))["event.id"] == first
    with pytest.raises(ValueError, match="no @timestamp"):
        normalize({"message": "x"})


json_leaf = st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.lists(st.integers(), max_size=3))
keys = st.text(alphabet="abcxyz_", min_size=1, max_size=4)


@given(st.dictionaries(keys, st.one_of(json_leaf, st.dictionaries(keys, json_leaf, min_size=1)), min_size=1))
def test_flatten_nest_round_trip(doc):
    assert nest(flatten(doc)) == doc
