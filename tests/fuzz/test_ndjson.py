"""Fuzz the NDJSON readers (`soc events ingest`'s `read_ndjson`, `soc logs ingest`'s LogReader in each format) into a
real SQLite store with random files: valid events, byte mutations of them, NaN/Infinity, huge/negative/boolean
timestamps, numbers beyond 64 bits, lone surrogates, invalid UTF-8, deep nesting.

Properties: no exception escapes; each bad line is exactly one error naming the file and its line (or byte offset);
every line built valid is stored with the @timestamp computed here independently and is searchable; nothing is
refused later than the reader (the pipeline rejects nothing); the store stays readable (search, count, text, hunt).
"""

from __future__ import annotations

import json
import re
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from correlator.pipeline import Pipeline
from correlator.query import Query, Term, Text
from correlator.store import Spool, open_store
from sensors.logs import LogReader
from soc_cli.events import read_ndjson

EPOCH = datetime(1970, 1, 1)
MIN_EPOCH = int((datetime(1, 1, 2) - EPOCH).total_seconds())
MAX_EPOCH = int((datetime(9999, 12, 30) - EPOCH).total_seconds())

scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids,
                                                                                         max_size=3), max_leaves=8)
wild_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6) | st.characters(
    categories=["Cs"])
wild_values = st.recursive(wild_scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
    st.text(max_size=4), kids, max_size=3), max_leaves=6)
timestamps = (st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(lambda d: ("iso", d))
              | st.integers(MIN_EPOCH, MAX_EPOCH).map(lambda s: ("epoch", s)))
HOT = ("source.ip", "source.port", "destination.port", "host.name", "event.dataset", "event.kind")


@st.composite
def good_line(draw: st.DrawFn, n: int) -> tuple[bytes, str, str]:
    """A valid event line, its unique message and its @timestamp as computed here (not by soc)."""
    kind, t = draw(timestamps)
    if kind == "iso":
        ts, want = t.isoformat() + draw(st.sampled_from(["Z", "+00:00", ""])), t
    else:
        ts, want = t, EPOCH + timedelta(seconds=t)
    message = f"good{n}x{draw(st.integers(0, 10**9))}"
    doc = {"@timestamp": ts, "message": message, "f": draw(values)}
    for key in draw(st.lists(st.sampled_from(HOT), max_size=3, unique=True)):
        doc[key] = draw(values)
    line = json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()
    return line, message, want.isoformat(timespec="microseconds") + "Z"


def _deep(depth: int, opener: bytes) -> bytes:
    closer = b"]" if opener == b"[" else b"}"
    inner = b'{"a":' if opener == b"{" else b"["
    return b'{"@timestamp":"2026-11-02T09:00:01Z","d":' + inner * depth + b"1" + closer * depth + b"}"


@st.composite
def wild_line(draw: st.DrawFn, base: bytes) -> bytes:
    """A line that may or may not be valid: a mutation of `base` or a hostile construction."""
    how = draw(st.sampled_from(["mutate", "timestamp", "values", "deep", "utf8", "constant", "issue"]))
    if how == "mutate":
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data)))
            op = draw(st.sampled_from(["insert", "delete", "replace"]))
            byte = draw(st.integers(0, 255))
            if op == "insert":
                data[at:at] = bytes([byte])
            elif at < len(data):
                data[at:at + 1] = b"" if op == "delete" else bytes([byte])
        line = bytes(data)
    elif how == "timestamp":
        ts = draw(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30) | wild_values)
        line = json.dumps({"@timestamp": ts, "m": 1}).encode()
    elif how == "values":
        doc = {"@timestamp": "2026-11-02T09:00:01Z", "f": draw(wild_values)}
        for key in draw(st.lists(st.sampled_from((*HOT, "event.id", "@timestamp")), max_size=2, unique=True)):
            doc[key] = draw(wild_values)
        line = json.dumps(doc, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    elif how == "deep":
        line = _deep(draw(st.integers(30, 12_000)), draw(st.sampled_from([b"[", b"{"])))
    elif how == "utf8":
        at = draw(st.integers(0, len(base)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe2\x82", b"\xc0\xaf"]))
        line = base[:at] + bad + base[at:]
    elif how == "constant":
        const = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999", b"1" * 30]))
        line = b'{"@timestamp":"2026-11-02T09:00:01Z","source.bytes":' + const + b"}"
    else:
        line = draw(st.sampled_from([b'{"@timestamp":1e400}', b'{"@timestamp":-1e18}', b'{"@timestamp":true}',
                                     b'{"@timestamp":"0001-01-01T00:00:00+01:00"}', b'"just a string"', b"[]"]))
    return line.replace(b"\n", b"")


@st.composite
def ndjson_file(draw: st.DrawFn) -> tuple[list[bytes], dict[int, tuple[str, str]]]:
    """Lines (without newline) and, for the lines built valid, index -> (message, expected @timestamp)."""
    lines: list[bytes] = []
    good: dict[int, tuple[str, str]] = {}
    for n in range(draw(st.integers(1, 8))):
        line, message, want = draw(good_line(n))
        if draw(st.booleans()):
            good[len(lines)] = (message, want)
            lines.append(line)
        else:
            lines.append(draw(wild_line(line)))
    return lines, good


def _store_checks(store, good: dict[int, tuple[str, str]], written: int) -> None:
    """Every good line stored once with its timestamp; the store answers search, count, text and hunt."""
    everything = store.search_events(Query(()), 10_000)
    assert len(everything) == written == store.count_events(Query(()))
    for ev in everything:
        json.dumps(ev, allow_nan=False).encode()  # printable as strict JSON, valid UTF-8
    for message, want in good.values():
        hits = store.search_events(Query((Term("message", message),)), 10)
        assert [h["@timestamp"] for h in hits] == [want], message
        assert store.count_events(Query((Text((message.lower(),)),))) == 1
    assert len(store.hunt("1=1", None, None, 10_000)) == written
    assert store.db.execute("SELECT count(*) FROM events WHERE NOT json_valid(doc)").fetchone()[0] == 0


def _tmp() -> tempfile.TemporaryDirectory:
    """A scratch directory in memory when there is one (SQLite's syncs to disk would dominate the run)."""
    return tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None)


def _run(tmp: Path, events) -> tuple[Pipeline, object]:
    store = open_store(f"sqlite:///{tmp / 'soc.db'}")
    store.init()
    pipeline = Pipeline(store, spool=Spool(tmp / "spool"))
    pipeline.run(events)
    return pipeline, store


# Found by the 10,000-case run: UTF-8-encoded surrogates, which json.loads(bytes) decodes with 'surrogatepass'.
SURROGATE_BYTES = ([b'{"@timestamp": "2026-11-02T09:00:01Z", "event.id": "\xed\xa0\x80"}'], {})


@pytest.mark.fuzz
@given(ndjson_file())
@example(SURROGATE_BYTES)
def test_events_ingest_reader(sample: tuple[list[bytes], dict[int, tuple[str, str]]]) -> None:
    lines, good = sample
    with _tmp() as d:
        tmp = Path(d)
        path = tmp / "in.ndjson"
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        errors: list[str] = []
        pipeline, store = _run(tmp, read_ndjson(path, errors))
        try:
            located = [re.match(rf"{re.escape(str(path))}:(\d+): .", e) for e in errors]
            assert all(located), errors
            numbers = [int(m.group(1)) - 1 for m in located]
            assert len(set(numbers)) == len(numbers)  # one error per bad line
            assert not set(numbers) & set(good), errors  # no valid line refused
            blank = sum(1 for line in lines if not line.strip())
            assert len(errors) + pipeline.stats.events_in + blank == len(lines)
            assert pipeline.stats.rejected == 0 and not pipeline.stats.errors  # the reader located every problem
            _store_checks(store, good, pipeline.stats.written)
        finally:
            store.close()


@pytest.mark.fuzz
@pytest.mark.parametrize("fmt", ["ndjson", "suricata-eve", "zeek"])
@given(sample=ndjson_file())
@example(sample=SURROGATE_BYTES)
def test_logs_ingest_reader(fmt: str, sample: tuple[list[bytes], dict[int, tuple[str, str]]]) -> None:
    lines, good = sample
    with _tmp() as d:
        tmp = Path(d)
        path = tmp / "in.log"
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        starts = [sum(len(x) + 1 for x in lines[:i]) for i in range(len(lines))]
        reader = LogReader(str(path), fmt)
        pipeline, store = _run(tmp, (ev for ev in reader.events() if ev is not None))
        try:
            located = [re.match(rf"{re.escape(str(path))}: byte offset (\d+): .", e) for e in reader.errors]
            assert all(located), reader.errors
            offsets = [int(m.group(1)) for m in located]
            assert len(set(offsets)) == len(offsets) and set(offsets) <= set(starts)
            c = reader.counters
            assert c["lines"] == len(lines) and c["errors"] + c["events"] + c["skipped"] == len(lines)
            assert pipeline.stats.rejected == 0 and not pipeline.stats.errors, pipeline.stats.errors
            if fmt == "ndjson":
                assert not {starts[i] for i in good} & set(offsets), reader.errors
                _store_checks(store, good, pipeline.stats.written)
            else:
                _store_checks(store, {}, pipeline.stats.written)
        finally:
            store.close()
