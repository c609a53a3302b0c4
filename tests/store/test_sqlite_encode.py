"""The SQLite write path's orjson encoding stores what `dumps_event` (the stdlib `json` encoder) would: the same keys
in the same order, values that parse back equal (floats, non-ASCII, 64-bit and bigger integers, nesting), and the
same refusals (NaN, Infinity, lone surrogates) with the event named."""

from __future__ import annotations

import json
import math

import pytest

from correlator.events import dumps_event
from correlator.store.base import StoreRejected
from correlator.store.sqlite import SQLiteStore

CASES = [
    {"z": 1, "a": 2, "m": [3, {"y": 1, "b": 2}]},  # key order kept, nested
    {"f": [0.1, 1e16, 1e-7, -0.0, 5e-324, 1.7976931348623157e308, 123456.789]},
    {"s": "é 日本 \U0001f600 \x00 \u2028 \"q\" \\"},
    {"i": [2**63 - 1, -(2**63), 2**63, 2**64 - 1, 2**64, 10**30, True, False]},  # beyond 64 bits: json's path
    {"n": None, "text": "nullable"},
    {"k": {1: "int key"}},  # json turns it into "1"; orjson refuses, the fallback encodes it
    {"deep": json.loads("[" * 300 + "]" * 300)},  # deeper than orjson's limit
]


def _stored(tmp_path, docs: list[dict]) -> tuple[list[str], list[dict]]:
    store = SQLiteStore(tmp_path / "s.db")
    store.init()
    events = [{"event.id": f"e{i}", "@timestamp": "2024-05-01T00:00:00.000000Z", **d} for i, d in enumerate(docs)]
    assert store.write_events(events) == len(events)
    return [r[0] for r in store.db.execute("SELECT doc FROM events ORDER BY rowid")], events


def test_stored_documents_parse_back_as_dumps_event_writes_them(tmp_path):
    stored, events = _stored(tmp_path, CASES)
    for text, ev in zip(stored, events, strict=True):
        want = json.loads(dumps_event(ev))
        got = json.loads(text)
        assert got == want and list(got) == list(want)
        assert json.dumps(got) == json.dumps(want)  # same float values, same nested key order


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "\ud800", [1.0, math.nan], {"x": "a\udfffb"}])
def test_what_dumps_event_refuses_is_refused_alone(tmp_path, bad):
    with pytest.raises(ValueError) as want:
        dumps_event({"v": bad})
    store = SQLiteStore(tmp_path / "s.db")
    store.init()
    good = {"event.id": "ok", "@timestamp": "2024-05-01T00:00:00.000000Z", "v": 1}
    with pytest.raises(StoreRejected) as got:
        store.write_events([{"event.id": "bad", "@timestamp": "2024-05-01T00:00:00.000000Z", "v": bad}, good])
    assert "event bad" in str(got.value) and str(want.value) in str(got.value)
    assert [r[0] for r in store.db.execute("SELECT id FROM events")] == ["ok"]


def test_free_text_rows_belong_to_their_events_with_and_without_duplicates(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    store.init()

    def ev(i: int) -> dict:
        return {"event.id": f"e{i}", "@timestamp": "2024-05-01T00:00:00.000000Z", "word": f"w{i}x"}

    assert store.write_events([ev(i) for i in range(5)]) == 5  # all new
    assert store.write_events([ev(i) for i in (3, 5, 4, 6, 6, 7)]) == 3  # stored ones and a repeat inside the batch
    for i in range(8):
        rowids = [r[0] for r in store.db.execute("SELECT rowid FROM events_fts WHERE events_fts MATCH ?", (f"w{i}x",))]
        assert [r[0] for r in store.db.execute("SELECT id FROM events WHERE rowid = ?", rowids)] == [f"e{i}"]
