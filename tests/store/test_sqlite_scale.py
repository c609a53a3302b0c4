"""The embedded store at backbone scale (issue 16): the label rank as an indexed column (clearance and withheld counts
from index entries), an old store migrating to it, retention (`soc store prune`) and kill -9 during ingest and prune.

Truth is the brute-force oracle of tests/core (the query model evaluated in Python over the events written)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from correlator.events import event_id, to_utc_iso
from correlator.query import Clearance, Query, Range, parse_query
from correlator.store import open_store
from correlator.store import sqlite as sqlite_store
from correlator.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SQLiteStore, _statements, ip_bytes
from soc_cli.main import app
from tests.core.oracle import QUERIES, expected, sample_events

SOC = str(Path(sys.executable).with_name("soc"))


def labelled(n: int = 600) -> list[dict]:
    """The oracle's events, a third of them labelled (ranks 1-3), ids recomputed."""
    out = []
    for i, ev in enumerate(sample_events(n)):
        ev = {k: v for k, v in ev.items() if k != "event.id"}
        if i % 3 == 0:
            ev["gov.label.rank"] = 1 + i % 9 // 3
        ev["event.id"] = event_id(ev)
        out.append(ev)
    return out


EVENTS = labelled()


def truth(q: Query, max_rank: int | None = None, above: int | None = None) -> list[str]:
    """The oracle's answer among the events a reader of `max_rank` may see (or, with `above`, those withheld)."""
    rank = {e["event.id"]: e.get("gov.label.rank", 0) for e in EVENTS}
    keep = [i for i in expected(EVENTS, q, 10**6)
            if (max_rank is None or rank[i] <= max_rank) and (above is None or rank[i] > above)]
    return keep


def _old_store(path: Path, events: list[dict]) -> None:
    """A version-6 store (before the rank column) holding `events`, written as soc 6 wrote them."""
    db = sqlite3.connect(path, isolation_level=None)
    db.create_function("soc_ip", 1, ip_bytes, deterministic=True)
    for script in MIGRATIONS[:6]:
        for statement in _statements(script):
            db.execute(statement)
    db.execute("INSERT INTO meta VALUES ('application', 'soc'), ('schema_version', '6')")
    from correlator.query import searchable_text
    from correlator.store.sqlite import _category, _column

    for ev in events:
        cur = db.execute(
            "INSERT INTO events (id, ts, kind, category, dataset, src_ip, src_port, dst_ip, dst_port, host, observer,"
            " doc) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (ev["event.id"], ev["@timestamp"], _column(ev.get("event.kind")), _category(ev.get("event.category")),
             _column(ev.get("event.dataset")), ip_bytes(ev.get("source.ip")), _column(ev.get("source.port")),
             ip_bytes(ev.get("destination.ip")), _column(ev.get("destination.port")), _column(ev.get("host.name")),
             _column(ev.get("observer.name")), json.dumps(ev)))
        db.execute("INSERT INTO events_fts (rowid, text) VALUES (?, ?)", (cur.lastrowid, searchable_text(ev)))
    db.close()


@pytest.fixture(scope="module", params=["new", "migrated"])
def store(request, tmp_path_factory):
    """The labelled events in a store written by this soc, and in a version-6 store migrated on opening."""
    path = tmp_path_factory.mktemp(request.param) / "soc.db"
    if request.param == "migrated":
        _old_store(path, EVENTS)
        s = open_store(f"sqlite:///{path}")
        s.init()
    else:
        s = open_store(f"sqlite:///{path}")
        s.init()
        assert s.write_events([dict(e) for e in EVENTS]) == len(EVENTS)
    yield s
    s.close()


@pytest.mark.parametrize("walk_seconds, seeks", [(60.0, 0), (0.0, 10**9)],
                         ids=["walk-time-index+fts-count", "sort-matches+sql-count"])
@pytest.mark.parametrize("text", QUERIES)
def test_counts_and_pages_under_clearance_agree_with_the_oracle(store, text, walk_seconds, seeks, monkeypatch):
    """Both plans of a page (the time-index walk, and with no time for it the sort of the matches) and both counts
    of free text (the FTS index's less the labelled events, and SQL over the matches' rows) give the oracle's answer."""
    monkeypatch.setattr(sqlite_store, "WALK_SECONDS", walk_seconds)
    monkeypatch.setattr(sqlite_store, "SEEKS_PER_ROW", seeks)
    assert (store._within("SELECT doc FROM events", [], walk_seconds) is None) == (walk_seconds == 0)
    q = parse_query(text)
    for max_rank in (0, 1, 3):
        cleared = replace(q, clauses=(*q.clauses, Clearance(max_rank)))
        withheld = replace(q, clauses=(*q.clauses, Range("gov.label.rank", gt=max_rank)))
        want = truth(q, max_rank=max_rank)
        assert store.count_events(cleared) == len(want)
        assert [e["event.id"] for e in store.search_events(cleared, 10**6)] == want
        assert [e["event.id"] for e in store.search_events(cleared, 5)] == want[:5]
        assert store.count_events(withheld) == len(truth(q, above=max_rank))


def test_rank_is_a_column_and_counts_read_only_index_entries(store):
    assert store.status()["schema_version"] == SCHEMA_VERSION == 8
    ranks = dict(store.db.execute("SELECT rank, count(*) FROM events GROUP BY rank").fetchall())
    assert ranks == {r: sum(1 for e in EVENTS if e.get("gov.label.rank", 0) == r) for r in (0, 1, 2, 3)}
    for text in ("source.ip:10.1.0.0/16", "destination.port:22", "event.dataset:soc.dns", "source.ip:10.1.2.3"):
        q = parse_query(text)
        where, params = store._where(replace(q, clauses=(*q.clauses, Clearance(1))), _hot())
        plan = " ".join(r[3] for r in store.db.execute(f"EXPLAIN QUERY PLAN SELECT count(*) FROM events WHERE {where}",
                                                       params))
        assert "COVERING INDEX" in plan, (text, plan)


def _hot() -> dict[str, str]:
    from correlator.store.sqlite import HOT_COLUMNS

    return HOT_COLUMNS


def test_a_label_sqlite_cannot_hold_as_a_number_is_withheld_from_everyone(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'soc.db'}")
    s.init()
    odd = {"@timestamp": "2024-05-01T00:00:00.000000Z", "event.sequence": 1, "gov.label.rank": 2**70}
    s.write_events([odd | {"event.id": event_id(odd)}])
    assert s.count_events(Query((Clearance(10**9),))) == 0
    assert s.count_events(Query((Range("gov.label.rank", gt=10**9),))) == 1


def test_free_text_counts_follow_every_write(tmp_path, monkeypatch):
    """The free-text count reuses its count of labelled events only while nothing changed: a write by another
    connection (a sensor) or by this one is seen by the next count."""
    monkeypatch.setattr(sqlite_store, "SEEKS_PER_ROW", 0)  # the FTS count however many events are labelled
    uri = f"sqlite:///{tmp_path / 'soc.db'}"
    sensor, reader = open_store(uri), open_store(uri)
    sensor.init()
    batches = [EVENTS[i:i + 200] for i in range(0, 600, 200)]
    q = parse_query("beacon")
    withheld, cleared = (replace(q, clauses=(*q.clauses, c)) for c in (Range("gov.label.rank", gt=0), Clearance(0)))
    written: list[dict] = []
    for batch, writer in zip(batches, (sensor, reader, sensor), strict=True):
        writer.write_events([dict(e) for e in batch])
        written += batch
        want = [e for e in written if e["event.id"] in set(expected(written, q, 10**6))]
        for _ in range(2):
            assert reader.count_events(withheld) == sum(e.get("gov.label.rank", 0) > 0 for e in want)
            assert reader.count_events(cleared) == sum(e.get("gov.label.rank", 0) == 0 for e in want)
    assert reader._count_text(cleared) is not None
    monkeypatch.setattr(sqlite_store, "SEEKS_PER_ROW", 40)  # a third labelled: a seek each would cost more
    sensor.write_events([])  # nothing changed: the cached decision stands until a write
    assert reader._count_text(cleared) is not None
    written.append({**EVENTS[0], "event.id": "x" * 32})
    sensor.write_events([dict(written[-1])])
    assert reader._count_text(cleared) is None
    want = [e for e in written if e["event.id"] in set(expected(written, q, 10**6))]
    assert reader.count_events(cleared) == sum(e.get("gov.label.rank", 0) == 0 for e in want)


# -- retention -------------------------------------------------------------------------------------------------------


def _days(n_days: int, per_day: int, start: datetime) -> list[dict]:
    out = []
    for d in range(n_days):
        for i in range(per_day):
            ev = {"@timestamp": to_utc_iso(start + timedelta(days=d, seconds=i * 7)), "event.dataset": "soc.flow",
                  "event.sequence": d * per_day + i, "message": f"flow day{d} n{i % 10}",
                  "source.ip": f"10.{d}.0.{i % 250 + 1}"}
            ev["event.id"] = event_id(ev)
            out.append(ev)
    return out


def _fts_consistent(s: SQLiteStore) -> None:
    """Every event has its free-text entry and no entry outlives its event (counted straight from the FTS index)."""
    s.db.execute("INSERT INTO events_fts (events_fts) VALUES ('integrity-check')")
    events = s.db.execute("SELECT count(*) FROM events").fetchone()[0]
    assert s.db.execute("SELECT count(*) FROM events_fts WHERE events_fts MATCH 'flow'").fetchone()[0] == events


def test_prune_deletes_exactly_the_old_events_and_their_text(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'soc.db'}")
    s.init()
    start = datetime(2024, 1, 1, tzinfo=UTC)
    events = _days(6, 300, start)
    s.write_events([dict(e) for e in events])
    cutoff = start + timedelta(days=2, hours=12)
    old = [e for e in events if e["@timestamp"] < to_utc_iso(cutoff)]
    assert s.prune(cutoff, batch=97) == len(old) == 900
    assert s.count_events(Query(())) == len(events) - len(old)
    assert s.count_events(parse_query("day0")) == 0 and s.count_events(parse_query("day4")) == 300
    _fts_consistent(s)
    assert s.audit_entries()[-1]["action"] == "store-prune"
    assert s.audit_entries()[-1]["details"] == {"before": to_utc_iso(cutoff), "events": 900}
    # everything pruned: new rows take the freed rowids; no stale text entry may match them
    assert s.prune(start + timedelta(days=30)) == len(events) - 900
    fresh = _days(1, 50, start + timedelta(days=40))
    fresh = [e | {"message": "newday"} for e in fresh]
    for e in fresh:
        e["event.id"] = event_id({k: v for k, v in e.items() if k != "event.id"})
    s.write_events(fresh)
    assert s.count_events(parse_query("day0")) == 0 and s.count_events(parse_query("newday")) == 50
    # pruned events written again are new again (ids are content, not history)
    assert s.write_events([dict(e) for e in old[:10]]) == 10


def test_prune_cli_takes_the_age_from_the_flag_or_the_store_uri(soc_env: Path):
    runner = CliRunner()
    db = soc_env / "soc.db"
    s = open_store(f"sqlite:///{db}")
    s.init()
    now = datetime.now(UTC).replace(microsecond=0)
    events = [e for d in (100, 50, 1) for e in _days(1, 10, now - timedelta(days=d))]
    s.write_events(events)
    s.close()
    res = runner.invoke(app, ["store", "prune", "--store", f"sqlite:///{db}"])
    assert res.exit_code == 2 and "no --older-than and no retention=" in res.output
    res = runner.invoke(app, ["store", "prune", "--older-than", "ninety", "--store", f"sqlite:///{db}"])
    assert res.exit_code == 2 and "not a duration" in res.output
    res = runner.invoke(app, ["store", "prune", "--older-than", "90d", "--json", "--store", f"sqlite:///{db}"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["deleted_events"] == 10
    res = runner.invoke(app, ["store", "prune", "--json", "--store", f"sqlite:///{db}?retention=30d"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["deleted_events"] == 10
    assert open_store(f"sqlite:///{db}").count_events(Query(())) == 10


# -- kill -9 ---------------------------------------------------------------------------------------------------------

_WORKER = """
import sys
from datetime import UTC, datetime, timedelta
from correlator.store import open_store
from correlator.store import sqlite as sqlite_store
from tests.store.test_sqlite_scale import _days
s = open_store(sys.argv[2])
s.init()
if sys.argv[1] == "ingest":
    events = _days(30, 2000, datetime(2024, 1, 1, tzinfo=UTC))
    for i in range(0, len(events), 500):
        s.write_events(events[i:i + 500])
        print(i + 500, flush=True)
else:
    print("start", flush=True)
    s.prune(datetime(2024, 1, 29, tzinfo=UTC), batch=500)
print("done", flush=True)
"""


def _run_and_kill(mode: str, uri: str, after_lines: int) -> bool:
    """Start the worker, SIGKILL it once it printed `after_lines` lines; True when it was killed mid-way."""
    root = Path(__file__).resolve().parents[2]
    p = subprocess.Popen([sys.executable, "-c", _WORKER, mode, uri], stdout=subprocess.PIPE, text=True, cwd=root,
                         env=os.environ | {"PYTHONPATH": str(root)})
    assert p.stdout is not None
    for _ in range(after_lines):
        line = p.stdout.readline()
        assert line and line.strip() != "done", "the worker finished before it could be killed; give it more work"
    if mode == "prune":
        time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.wait()
    return p.returncode == -signal.SIGKILL


def test_kill_9_during_ingest_and_prune_loses_and_duplicates_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'soc.db'}"
    events = _days(30, 2000, datetime(2024, 1, 1, tzinfo=UTC))
    assert _run_and_kill("ingest", uri, 20)
    s = open_store(uri)
    s.init()
    stored = s.count_events(Query(()))
    assert 10_000 <= stored < len(events) and stored % 500 == 0  # whole batches only
    _fts_consistent(s)
    assert s.write_events([dict(e) for e in events]) == len(events) - stored  # the rest, nothing twice
    assert s.count_events(Query(())) == len(events)
    s.close()

    cutoff = to_utc_iso(datetime(2024, 1, 29, tzinfo=UTC))
    old = sum(e["@timestamp"] < cutoff for e in events)
    assert _run_and_kill("prune", uri, 1)
    s = open_store(uri)
    left = s.count_events(Query(()))
    assert len(events) - old < left < len(events), "killed before or after the prune: nothing was interrupted"
    _fts_consistent(s)
    s.prune(datetime(2024, 1, 29, tzinfo=UTC))
    assert s.count_events(Query(())) == len(events) - old
    kept = sorted((e for e in events if e["@timestamp"] >= cutoff), key=lambda e: e["@timestamp"], reverse=True)
    assert [e["event.id"] for e in s.search_events(Query(()), 10**6)] == [e["event.id"] for e in kept]
    _fts_consistent(s)


# -- start-up --------------------------------------------------------------------------------------------------------


def test_soc_group_loads_only_its_own_module():
    """`soc events search` pays for the events group's imports only (the issue's queries are wall time with start-up);
    help, version, a typo and the app imported elsewhere load every group."""
    from soc_cli.main import GROUPS, groups_to_load

    assert groups_to_load(["/usr/bin/soc", "--store", "events", "-v", "store", "status"]) == ["store"]
    assert groups_to_load(["/usr/bin/soc", "events", "search", "flow"]) == ["events"]
    for argv in (["soc", "--help"], ["soc", "version"], ["soc", "evnts"], ["pytest", "events"], ["soc"]):
        assert groups_to_load(argv) == GROUPS
    code = ("import sys; sys.argv = ['soc', 'events', 'search', '--help']; import soc_cli.main as m; "
            "print(sorted(n for n in ('scapy', 'playbooks.cacao', 'soc_cli.alerts') if n in sys.modules))")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    assert out.stdout.strip() == "[]"
