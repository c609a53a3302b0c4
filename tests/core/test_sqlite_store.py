"""The SQLite store: queries agree with a brute-force oracle; idempotence; identity checks; audit chain."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest

from correlator.query import parse_query
from correlator.store import StoreError, open_store
from correlator.store.sqlite import SCHEMA_VERSION

from .oracle import QUERIES, expected, sample_events

EVENTS = sample_events()


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('q') / 'soc.db'}")
    store.init()
    assert store.write_events([dict(e) for e in EVENTS]) == len(EVENTS)
    yield store
    store.close()


@pytest.mark.parametrize("text", QUERIES)
@pytest.mark.parametrize("window", [(None, None), ("2024-05-01T12:00:00Z", "2024-05-01T20:00:00Z")])
def test_queries_agree_with_oracle(loaded, text, window):
    since, until = (datetime.fromisoformat(w.replace("Z", "+00:00")) if w else None for w in window)
    q = parse_query(text, since, until)
    want = expected(EVENTS, q, 10_000)
    got = [e["event.id"] for e in loaded.search_events(q, limit=10_000)]
    assert got == want
    assert loaded.count_events(q) == len(want)
    assert [e["event.id"] for e in loaded.search_events(q, limit=7)] == want[:7]


def test_oracle_queries_are_discriminating():
    """Guard against a vacuous corpus: most queries must match some but not all events."""
    sizes = [len(expected(EVENTS, parse_query(t), 10_000)) for t in QUERIES]
    assert sum(0 < s < len(EVENTS) for s in sizes) >= len(QUERIES) - 4


def test_writes_are_idempotent(sqlite_store):
    batch = [dict(e) for e in EVENTS[:50]]
    assert sqlite_store.write_events(batch) == 50
    assert sqlite_store.write_events(batch + [dict(e) for e in EVENTS[50:60]]) == 10
    assert sqlite_store.count_events(parse_query("")) == 60
    # free text is indexed once per event, not per write
    assert sqlite_store.count_events(parse_query("beacon")) == len(expected(EVENTS[:60], parse_query("beacon"), 999))


def test_prefix_on_ip_field_is_a_clear_error(sqlite_store):
    with pytest.raises(StoreError, match="CIDR"):
        sqlite_store.search_events(parse_query("source.ip:10.*"))


@pytest.mark.parametrize("uri", ["sqlite://host/x.db", "sqlite:", "ftp://x", "nonsense"])
def test_bad_uris(uri):
    with pytest.raises(StoreError):
        open_store(uri)


def test_foreign_database_is_refused_untouched(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (id INTEGER)")
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a soc database"):
        open_store(f"sqlite:///{path}")
    assert path.read_bytes() == before


def test_garbage_file_is_refused_untouched(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        open_store(f"sqlite:///{path}")
    assert path.read_bytes() == b"this is not sqlite" * 100


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "soc.db"
    store = open_store(f"sqlite:///{path}")
    store.init()
    store.db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    store.close()
    with pytest.raises(StoreError, match="newer"):
        open_store(f"sqlite:///{path}")


def test_init_is_idempotent_and_in_wal(sqlite_store):
    sqlite_store.init()
    st = sqlite_store.status()
    assert st["schema_version"] == SCHEMA_VERSION and st["journal_mode"] == "wal" and st["healthy"]


def _alert(uuid: str, risk: float, ts: str) -> dict:
    return {"@timestamp": ts, "soc.alert.uuid": uuid, "soc.alert.risk_score": risk, "soc.alert.severity": "high",
            "soc.alert.workflow_status": "open", "soc.alert.reason": f"reason {uuid}", "source.ip": "10.0.0.1"}


def test_alerts_upsert_order_and_update(sqlite_store):
    sqlite_store.write_alerts([_alert("a", 50, "2024-05-01T10:00:00.000000Z"),
                               _alert("b", 90, "2024-05-01T09:00:00.000000Z"),
                               _alert("c", 50, "2024-05-01T11:00:00.000000Z")])
    sqlite_store.write_alerts([_alert("a", 60, "2024-05-01T10:00:00.000000Z")])  # fold: same uuid, new count
    assert [a["soc.alert.uuid"] for a in sqlite_store.search_alerts(parse_query(""))] == ["b", "a", "c"]
    sqlite_store.update_alert("b", {"soc.alert.workflow_status": "closed"})
    assert sqlite_store.get_alert("b")["soc.alert.workflow_status"] == "closed"
    assert [a["soc.alert.uuid"] for a in sqlite_store.search_alerts(parse_query("soc.alert.workflow_status:open"))] \
        == ["a", "c"]
    assert [a["soc.alert.uuid"] for a in sqlite_store.search_alerts(parse_query("reason c"))] == ["c"]
    with pytest.raises(StoreError):
        sqlite_store.update_alert("nope", {})


def _tamper(store, sql: str, *args) -> None:
    """What an attacker with write access to the file can do: drop the guard triggers, then change rows."""
    store.db.execute("DROP TRIGGER IF EXISTS audit_no_update")
    store.db.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    store.db.execute(sql, args)


@pytest.fixture
def audited(sqlite_store):
    for i in range(1, 6):
        sqlite_store.audit("read", {"n": i, "level": "secret"}, actor="analyst")
    assert sqlite_store.audit_verify() == []
    return sqlite_store


def test_audit_is_append_only(audited):
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        audited.db.execute("UPDATE audit SET actor = 'x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        audited.db.execute("DELETE FROM audit")


def test_audit_detects_edit(audited):
    _tamper(audited, "UPDATE audit SET details = ? WHERE seq = 3", '{"n": 3, "level": "public"}')
    problems = audited.audit_verify()
    assert problems == ["audit entry seq=3: content does not match its hash (edited)"]


def test_audit_detects_delete_in_middle(audited):
    _tamper(audited, "DELETE FROM audit WHERE seq = 2")
    assert any("seq=3" in p and "deleted or reordered" in p for p in audited.audit_verify())


def test_audit_detects_truncation(audited):
    _tamper(audited, "DELETE FROM audit WHERE seq = 5")
    assert any("removed from the end" in p for p in audited.audit_verify())


def test_audit_detects_reorder(audited):
    _tamper(audited, "UPDATE audit SET seq = 100 WHERE seq = 2")
    _tamper(audited, "UPDATE audit SET seq = 2 WHERE seq = 4")
    _tamper(audited, "UPDATE audit SET seq = 4 WHERE seq = 100")
    problems = audited.audit_verify()
    assert any("seq=2" in p for p in problems) and any("seq=4" in p for p in problems)


def test_hunt_runs_sql_within_time_range(sqlite_store):
    sqlite_store.write_events([dict(e) for e in EVENTS])
    since = datetime(2024, 5, 1, 12, tzinfo=UTC)
    got = sqlite_store.hunt("json_extract(doc, '$.\"destination.port\"') = 22", since, None, 10_000)
    want = expected(EVENTS, parse_query("destination.port:22", since), 10_000)
    assert [e["event.id"] for e in got] == want
    with pytest.raises(StoreError, match="hunt query failed"):
        sqlite_store.hunt("no_such_column = 1", None, None)


def test_clearance_hides_items_above_rank(sqlite_store):
    from correlator.query import Clearance, Query

    base = {"@timestamp": "2024-05-01T10:00:00.000000Z", "event.kind": "event"}
    events = [base | {"event.id": f"e{r}", "gov.label.rank": r} for r in range(4)] + [base | {"event.id": "none"}]
    sqlite_store.write_events(events)
    for rank in range(4):
        got = {e["event.id"] for e in sqlite_store.search_events(Query((Clearance(rank),)))}
        assert got == {f"e{r}" for r in range(rank + 1)} | {"none"}
        assert sqlite_store.count_events(Query((Clearance(rank),))) == rank + 2
    sqlite_store.write_alerts([_alert("s", 10, base["@timestamp"]) | {"gov.label.rank": 2}])
    assert sqlite_store.search_alerts(Query((Clearance(1),))) == []
    assert len(sqlite_store.search_alerts(Query((Clearance(2),)))) == 1


def test_a_new_store_file_is_readable_by_its_owner_only(tmp_path):
    """On SQLite the database file is the clearance boundary: soc creates it 0600 (and SQLite gives -wal/-shm the
    same mode), whatever the umask."""
    import os
    import stat

    from correlator.store import open_store

    old = os.umask(0o022)
    try:
        store = open_store(f"sqlite:///{tmp_path / 'soc.db'}")
        store.init()
        store.write_events([{"@timestamp": "2026-11-02T09:00:01Z", "event.id": "e1", "message": "m"}])
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        store.close()
    finally:
        os.umask(old)
    assert modes["soc.db"] == 0o600 and all(m == 0o600 for m in modes.values()), modes
