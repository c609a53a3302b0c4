"""The embedded default store: one SQLite file in WAL mode.

Events are kept as flat JSON (`doc`) with indexed hot columns; IP columns hold 16-byte addresses (IPv4 mapped
into IPv6) so CIDR queries are index range scans. Free text uses an FTS5 index over each event's string values.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from correlator.alerts import keep_workflow
from correlator.audit import GENESIS, Anchors, current_actor
from correlator.events import dumps_event, to_utc_iso
from correlator.query import (
    Cidr,
    Clause,
    Clearance,
    Prefix,
    Query,
    Range,
    Term,
    Text,
    Wildcard,
    searchable_text,
    tokens,
)
from correlator.store.base import Store, StoreError, StoreMissing, StoreRejected, StoreUnavailable

SCHEMA_VERSION = 8
APPLICATION = "soc"

# Each migration takes the database from version i to i + 1 (index 0 creates version 1).
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE events (
        rowid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        ts TEXT NOT NULL,
        kind TEXT, category TEXT, dataset TEXT,
        src_ip BLOB, src_port INTEGER, dst_ip BLOB, dst_port INTEGER,
        host TEXT, observer TEXT,
        doc TEXT NOT NULL
    );
    CREATE INDEX events_ts ON events (ts);
    CREATE INDEX events_kind ON events (kind, ts);
    CREATE INDEX events_category ON events (category, ts);
    CREATE INDEX events_dataset ON events (dataset, ts);
    CREATE INDEX events_src_ip ON events (src_ip);
    CREATE INDEX events_dst_ip ON events (dst_ip);
    CREATE INDEX events_src_port ON events (src_port);
    CREATE INDEX events_dst_port ON events (dst_port);
    CREATE INDEX events_host ON events (host);
    CREATE INDEX events_observer ON events (observer);
    CREATE VIRTUAL TABLE events_fts USING fts5 (text, content='', tokenize="unicode61 remove_diacritics 0");
    CREATE TABLE alerts (
        uuid TEXT PRIMARY KEY,
        ts TEXT NOT NULL,
        severity TEXT, risk_score REAL, rule_id TEXT, workflow_status TEXT,
        doc TEXT NOT NULL
    );
    CREATE INDEX alerts_ts ON alerts (ts);
    CREATE INDEX alerts_risk ON alerts (risk_score, ts);
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        ts TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, details TEXT NOT NULL,
        prev_hash TEXT NOT NULL, hash TEXT NOT NULL
    );
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
    """,
    # 2: incidents (correlator.incidents), numbered 1, 2, … ; the whole document in `doc`
    """
    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY,
        ts TEXT NOT NULL,
        status TEXT, severity TEXT, assignee TEXT,
        doc TEXT NOT NULL
    );
    CREATE INDEX incidents_status ON incidents (status, id);
    """,
    # 3: small documents by kind (alert suppressions, …) and the triage queue's index (status, then risk order)
    """
    CREATE TABLE records (kind TEXT NOT NULL, id TEXT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (kind, id));
    CREATE INDEX alerts_status ON alerts (workflow_status, risk_score, ts);
    """,
    # 4: the triage queue at scale: the label rank as a column (clearance and withheld counts use its index), the
    # queue's exact order per status (a first page reads 100 index entries, no sort), alerts by rule (suppressions)
    """
    ALTER TABLE alerts ADD COLUMN rank INTEGER NOT NULL DEFAULT 0;
    UPDATE alerts SET rank = coalesce(json_extract(doc, '$."gov.label.rank"'), 0);
    CREATE INDEX alerts_rank ON alerts (rank);
    CREATE INDEX alerts_rule ON alerts (rule_id);
    DROP INDEX alerts_status;
    CREATE INDEX alerts_queue ON alerts (workflow_status, risk_score DESC, ts DESC, uuid);
    """,
    # 5: an alert's addresses as columns (16-byte, as events'), so a suppression (rule + key) reads only the
    # alerts it matches; the queue's order per status and severity (--severity high: no walk over other severities)
    """
    ALTER TABLE alerts ADD COLUMN src_ip BLOB;
    ALTER TABLE alerts ADD COLUMN dst_ip BLOB;
    UPDATE alerts SET src_ip = soc_ip(json_extract(doc, '$."source.ip"')),
                      dst_ip = soc_ip(json_extract(doc, '$."destination.ip"'));
    DROP INDEX alerts_rule;
    CREATE INDEX alerts_rule_src ON alerts (rule_id, src_ip);
    CREATE INDEX alerts_rule_dst ON alerts (rule_id, dst_ip);
    CREATE INDEX alerts_queue_severity ON alerts (workflow_status, severity, risk_score DESC, ts DESC, uuid);
    """,
    # 6: withheld counts per status (a reader below the top level: `status = ? AND rank > ?` read from the index)
    """
    CREATE INDEX alerts_status_rank ON alerts (workflow_status, rank);
    """,
    # 7: backbone scale (issue 16): an event's label rank as a column at the end of every index, so a count under
    # the reader's clearance (and the withheld count) reads index entries only, never a JSON document
    """
    ALTER TABLE events ADD COLUMN rank INTEGER NOT NULL DEFAULT 0;
    UPDATE events SET rank = json_extract(doc, '$."gov.label.rank"') WHERE json_extract(doc, '$."gov.label.rank"') <> 0;
    DROP INDEX events_ts;
    DROP INDEX events_kind;
    DROP INDEX events_dataset;
    DROP INDEX events_src_ip;
    DROP INDEX events_dst_ip;
    DROP INDEX events_src_port;
    DROP INDEX events_dst_port;
    DROP INDEX events_host;
    DROP INDEX events_observer;
    CREATE INDEX events_ts ON events (ts, rank);
    CREATE INDEX events_kind ON events (kind, ts, rank);
    CREATE INDEX events_dataset ON events (dataset, ts, rank);
    CREATE INDEX events_src_ip ON events (src_ip, rank);
    CREATE INDEX events_dst_ip ON events (dst_ip, rank);
    CREATE INDEX events_src_port ON events (src_port, rank);
    CREATE INDEX events_dst_port ON events (dst_port, rank);
    CREATE INDEX events_host ON events (host, rank);
    CREATE INDEX events_observer ON events (observer, rank);
    """,
    # 8: addresses indexed with the destination port (the analyst's `source.ip:NET destination.port:N` from index
    # entries too); the few labelled events by rank (free-text counts: the FTS index's count less those above)
    """
    DROP INDEX events_src_ip;
    DROP INDEX events_dst_ip;
    CREATE INDEX events_src_ip ON events (src_ip, dst_port, rank);
    CREATE INDEX events_dst_ip ON events (dst_ip, dst_port, rank);
    CREATE INDEX events_ranked ON events (rank) WHERE rank > 0;
    """,
]

# Query fields served by hot columns; the rest go through json_each over `doc`.
HOT_COLUMNS = {
    "event.id": "id",
    "event.kind": "kind",
    "event.dataset": "dataset",
    "source.ip": "src_ip",
    "source.port": "src_port",
    "destination.ip": "dst_ip",
    "destination.port": "dst_port",
    "host.name": "host",
    "observer.name": "observer",
    "gov.label.rank": "rank",
}
ALERT_COLUMNS = {"soc.alert.workflow_status": "workflow_status", "soc.alert.severity": "severity",
                 "soc.alert.rule.uuid": "rule_id", "gov.label.rank": "rank", "source.ip": "src_ip",
                 "destination.ip": "dst_ip"}
INCIDENT_COLUMNS = {"soc.incident.id": "id", "soc.incident.status": "status", "soc.incident.severity": "severity",
                    "soc.incident.assignee": "assignee"}
IP_COLUMNS = {"src_ip", "dst_ip"}
SEEKS_PER_ROW = 40  # one FTS seek by rowid costs about 40 rows read by rowid (80 µs vs 2 µs at 1-10 M events)
WALK_SECONDS = 0.05  # what a page may spend walking the time index before it reads and sorts the matches instead
_V4_PREFIX = b"\x00" * 10 + b"\xff\xff"
_MAX_CHAR = "\U0010ffff"


def ip_bytes(value: Any) -> bytes | None:
    """16-byte form of an IP address (IPv4 mapped into IPv6); None when `value` is not an address."""
    if not isinstance(value, str):
        return None
    try:
        if ":" in value:
            return socket.inet_pton(socket.AF_INET6, value.split("%", 1)[0])
        return _V4_PREFIX + socket.inet_pton(socket.AF_INET, value)
    except OSError:
        return None


def _net_bounds(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[bytes, bytes]:
    lo, hi = net.network_address.packed, net.broadcast_address.packed
    if net.version == 4:
        return _V4_PREFIX + lo, _V4_PREFIX + hi
    return lo, hi


def _category(value: Any) -> str | None:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return None if value is None else str(value)


def _column(value: Any) -> str | int | float | None:
    """A hot column's value: a string or a number SQLite holds (64-bit integers); anything else stays in `doc` only."""
    if isinstance(value, str | float) or (isinstance(value, int) and -(2**63) <= value < 2**63):
        return value
    return None


def _rank(value: Any) -> Any:
    """The rank column's value, as `coalesce(json_extract(doc, '$."gov.label.rank"'), 0)` compares: unlabelled 0, a
    label SQLite cannot hold as a number above every clearance."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    column = _column(value)
    return 2**62 if column is None else column


_ORJSON_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def _encode_event(ev: dict[str, Any]) -> str:
    """`dumps_event(ev)`'s document, encoded by orjson (about 6x faster); the same keys in the same order and values
    that parse back equal. orjson writes NaN/Infinity as null and refuses what `json` treats its own way (big
    integers, non-string keys, subclasses, deep nesting, lone surrogates), so a document with a null or one orjson
    refuses goes through `dumps_event`, which encodes it or raises its located ValueError."""
    try:
        text = orjson.dumps(ev, option=_ORJSON_STRICT)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return dumps_event(ev)
    if b"null" in text:
        return dumps_event(ev)
    return text.decode()


def _has_tokens(doc: str, words_json: str) -> bool:
    """True when every word is a token of some string value of the JSON document."""
    have = set(tokens(searchable_text(json.loads(doc))))
    return all(w in have for w in json.loads(words_json))


def _text_of(doc: str) -> str:
    """The free-text index's text of a stored event, exactly as `write_events` indexed it (to delete it)."""
    return searchable_text(json.loads(doc))


def _path(field: str) -> str:
    return '$."' + field.replace('"', '""') + '"'


class SQLiteStore(Store):
    """A soc store in one SQLite file."""

    hunt_language = "sqlite"

    def __init__(self, path: str | Path, uri: str | None = None, busy_timeout_ms: int = 10_000,
                 create: bool = True, retention: str | None = None) -> None:
        """Open (with `create`, creating the file when missing) the database at `path`; `create=False` is a read:
        a missing file, or one with no tables, raises StoreMissing and nothing is created. `retention` (`90d`) is
        what `soc store prune` keeps when given no age."""
        self.path = Path(path)
        self.retention = retention
        self._labelled_text: tuple[tuple, int | None] = ((), 0)  # _count_text's last count of labelled events
        self.uri = uri or f"sqlite:///{self.path}"
        missing = StoreMissing.at(self.path)
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a directory, not a database file")
        if not self.path.parent.is_dir():  # only open_store creates soc's own data directory
            raise StoreError(f"{self.path}: folder {self.path.parent} does not exist; create it first")
        if not create and not self.path.exists():
            raise missing
        if create and not self.path.exists():  # a new store is the soc account's alone: its file is the boundary
            with contextlib.suppress(FileExistsError):  # (SQLite gives -wal/-shm the database file's mode)
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        try:
            target = self.path if create else f"{self.path.resolve().as_uri()}?mode=rw"  # rw: never creates
            self.db = sqlite3.connect(target, isolation_level=None, check_same_thread=False, uri=not create)
            self.db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.OperationalError as exc:
            if not create and not self.path.exists():  # removed since the check above
                raise missing from None
            raise StoreError(f"{self.path}: not a usable SQLite database ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable SQLite database ({exc})") from None
        if not create and not tables:
            self.db.close()
            raise missing
        self._check_identity(tables)
        self.db.create_function("soc_ip", 1, ip_bytes, deterministic=True)
        self.db.create_function("soc_has_tokens", 2, _has_tokens, deterministic=True)
        self.db.create_function("soc_text", 1, _text_of, deterministic=True)

    def _check_identity(self, tables: set[str]) -> None:
        if not tables:
            return
        if "meta" not in tables:
            raise StoreError(f"{self.path}: not a soc database (tables: {', '.join(sorted(tables))}); nothing written")
        meta = dict(self.db.execute("SELECT key, value FROM meta"))
        if meta.get("application") != APPLICATION:
            raise StoreError(f"{self.path}: not a soc database (application={meta.get('application')!r})")
        version = int(meta.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this soc supports ({SCHEMA_VERSION}); "
                "upgrade soc. Nothing written."
            )

    def _schema_version(self) -> int:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.OperationalError:
            return 0
        return int(row[0]) if row else 0

    def init(self) -> None:
        """Enable WAL and apply pending migrations, each in its own transaction."""
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        version = self._schema_version()
        for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(script):
                    self.db.execute(statement)
                self.db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('application', ?), ('schema_version', ?)",
                    (APPLICATION, str(target)),
                )
                self.db.execute("COMMIT")
            except Exception:
                self.db.execute("ROLLBACK")
                raise

    # -- writing -------------------------------------------------------------------------------------------------

    def write_events(self, events: Sequence[dict[str, Any]]) -> int:
        """Store events (strict JSON); one that cannot be encoded is refused alone (StoreRejected names it)."""
        rows = []
        texts = []
        refused = []
        add_row, add_text, encode, column = rows.append, texts.append, _encode_event, _column
        for ev in events:
            try:
                doc = encode(ev)
            except ValueError as exc:
                refused.append(f"event {ev.get('event.id')}: {exc}")
                continue
            get = ev.get
            add_row((
                ev["event.id"], ev["@timestamp"], column(get("event.kind")), _category(get("event.category")),
                column(get("event.dataset")), ip_bytes(get("source.ip")), column(get("source.port")),
                ip_bytes(get("destination.ip")), column(get("destination.port")), column(get("host.name")),
                column(get("observer.name")), doc, _rank(get("gov.label.rank")),
            ))
            add_text(searchable_text(ev))
        new = self._insert(rows, texts) if rows else 0
        if refused:
            raise StoreRejected(f"{self.path}: {len(refused)} of {len(events)} events refused ({new} stored): "
                                + "; ".join(refused[:20]), new, refused)
        return new

    def _insert(self, rows: list[tuple], texts: list[str]) -> int:
        """Insert prepared rows in one transaction; FTS rows only for events that were new."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # locked by another writer past the busy timeout
            raise StoreUnavailable(f"{self.path}: {exc}") from None
        try:
            top = db.execute("SELECT coalesce(max(rowid), 0) FROM events").fetchone()[0]
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO events (id, ts, kind, category, dataset, src_ip, src_port, dst_ip, dst_port,"
                " host, observer, doc, rank) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            new = db.total_changes - before
            if new == len(rows) and top + new < 2**63 - 1:
                # every row was new: under the write lock each took max(rowid) + 1, in order
                db.executemany("INSERT INTO events_fts (rowid, text) VALUES (?, ?)",
                               zip(range(top + 1, top + new + 1), texts, strict=True))
            elif new:  # some were already stored: the new rows took rowids after `top`; index their text
                text_of = {r[0]: t for r, t in zip(rows, texts, strict=True)}
                db.executemany(
                    "INSERT INTO events_fts (rowid, text) VALUES (?, ?)",
                    [(rowid, text_of[eid])
                     for rowid, eid in db.execute("SELECT rowid, id FROM events WHERE rowid > ?", (top,))],
                )
            db.execute("COMMIT")
        except Exception:
            db.execute("ROLLBACK")
            raise
        return new

    def write_alerts(self, alerts: Sequence[dict[str, Any]]) -> None:
        """Insert or replace alerts by uuid; a stored alert's workflow fields (status, assignees, history, timers)
        are kept (correlator.alerts.keep_workflow)."""
        docs, refused = {}, []
        for a in alerts:
            try:
                dumps_event(a)
            except ValueError as exc:
                refused.append(f"alert {a.get('soc.alert.uuid')}: {exc}")
                continue
            docs[a["soc.alert.uuid"]] = a
        now = to_utc_iso(datetime.now(UTC))
        with self._tx():
            stored = {}
            uuids = list(docs)
            for i in range(0, len(uuids), 500):
                chunk = uuids[i:i + 500]
                stored |= dict(self.db.execute(
                    f"SELECT uuid, doc FROM alerts WHERE uuid IN ({','.join('?' * len(chunk))})", chunk))
            rows = [self._alert_row(keep_workflow(dict(a), json.loads(stored[u]) if u in stored else None, now))
                    for u, a in docs.items()]
            self.db.executemany("INSERT OR REPLACE INTO alerts VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
        if refused:
            raise StoreRejected(f"{self.path}: {len(refused)} alerts refused: " + "; ".join(refused[:20]),
                                len(rows), refused)

    @staticmethod
    def _alert_row(a: dict[str, Any]) -> tuple:
        return (a["soc.alert.uuid"], a["@timestamp"], _column(a.get("soc.alert.severity")),
                _column(a.get("soc.alert.risk_score")), _column(a.get("soc.alert.rule.uuid")),
                _column(a.get("soc.alert.workflow_status", "open")), dumps_event(a),
                int(a.get("gov.label.rank") or 0), ip_bytes(a.get("source.ip")), ip_bytes(a.get("destination.ip")))

    def update_alert(self, uuid: str, fields: dict[str, Any]) -> None:
        if self.modify_alert(uuid, lambda doc: doc | fields) is None:
            raise StoreError(f"no alert with id {uuid}")

    def modify_alert(self, uuid: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any] | None:
        """Read, change and write one alert in one `BEGIN IMMEDIATE` transaction (writers queue on the lock)."""
        with self._tx():
            row = self.db.execute("SELECT doc FROM alerts WHERE uuid = ?", (uuid,)).fetchone()
            if row is None:
                return None
            doc = change(json.loads(row[0]))
            self.db.execute("INSERT OR REPLACE INTO alerts VALUES (?,?,?,?,?,?,?,?,?,?)", self._alert_row(doc))
        return doc

    def put_record(self, kind: str, record_id: str, doc: dict[str, Any]) -> None:
        with self._tx():
            self.db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", (kind, record_id, json.dumps(doc)))

    def records(self, kind: str, limit: int | None = None, descending: bool = False) -> list[dict[str, Any]]:
        """The primary key (kind, id) serves the order and the limit: only the page is read."""
        rows = self.db.execute(f"SELECT doc FROM records WHERE kind = ? ORDER BY id {'DESC' if descending else 'ASC'}"
                               " LIMIT ?", (kind, -1 if limit is None else limit))
        return [json.loads(r[0]) for r in rows]

    def get_record(self, kind: str, record_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT doc FROM records WHERE kind = ? AND id = ?", (kind, record_id)).fetchone()
        return None if row is None else json.loads(row[0])

    def modify_record(self, kind: str, record_id: str,
                      change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any] | None:
        """Read, change and write one record in one `BEGIN IMMEDIATE` transaction (writers queue on the lock)."""
        with self._tx():
            row = self.db.execute("SELECT doc FROM records WHERE kind = ? AND id = ?", (kind, record_id)).fetchone()
            if row is None:
                return None
            doc = change(json.loads(row[0]))
            self.db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", (kind, record_id, json.dumps(doc)))
        return doc

    def _tx(self) -> _Transaction:
        return _Transaction(self.db)

    # -- reading -------------------------------------------------------------------------------------------------

    def search_events(self, q: Query, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first, by one of two plans: walk the time index newest first testing each event (a page of a query
        most events match reads about `limit` rows), or read the matches through their own index and sort them
        (few matches). The walk is tried first for WALK_SECONDS; past them the second plan runs."""
        where, params = self._where(q, HOT_COLUMNS, walk=True)
        walk = f"SELECT doc FROM events INDEXED BY events_ts WHERE {where} ORDER BY ts DESC, id ASC LIMIT ?"
        rows = self._within(walk, [*params, limit], WALK_SECONDS)
        if rows is None:
            where, params = self._where(q, HOT_COLUMNS)
            rows = self.db.execute(f"SELECT doc FROM events WHERE {where} ORDER BY ts DESC, id ASC LIMIT ?",
                                   [*params, limit]).fetchall()
        return [json.loads(r[0]) for r in rows]

    def _within(self, sql: str, params: list[Any], seconds: float) -> list[tuple] | None:
        """The rows of `sql`, or None when it runs longer than `seconds` (then abandoned)."""
        deadline = time.monotonic() + seconds
        self.db.set_progress_handler(lambda: time.monotonic() > deadline, 1000)  # true: interrupt
        try:
            return self.db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                return None
            raise
        finally:
            self.db.set_progress_handler(None, 0)

    def count_events(self, q: Query) -> int:
        if (fast := self._count_text(q)) is not None:
            return fast
        where, params = self._where(q, HOT_COLUMNS)
        return self.db.execute(f"SELECT count(*) FROM events WHERE {where}", params).fetchone()[0]

    def _count_text(self, q: Query) -> int | None:
        """Free text alone under a clearance (or the gate's withheld count): the FTS index's own count (it holds
        exactly one entry per event), less (or only) the labelled events above the rank, read through the partial
        index `events_ranked` with one FTS seek each. None (the general plan) when `q` is not of that shape or the
        labelled events are too many for a seek each (SEEKS_PER_ROW)."""
        text = [c for c in q.clauses if isinstance(c, Text)]
        rest = [c for c in q.clauses if not isinstance(c, Text)]
        if not text or q.since or q.until or len(rest) != 1:
            return None
        (c,) = rest
        if isinstance(c, Clearance) and c.max_rank >= 0:
            above, cleared = c.max_rank, True
        elif (isinstance(c, Range) and c.field == "gov.label.rank" and c.gt is not None and c.gt >= 0
              and c.gte is None and c.lte is None and c.lt is None):
            above, cleared = c.gt, False
        else:
            return None
        match = " ".join('"' + w.replace('"', '""') + '"' for t in text for w in t.words)
        # the gate asks for the withheld count and then the readable one: the labelled events are counted once while
        # nothing changed (data_version: another connection's commit; total_changes: this one's)
        key = (match, above, self.db.execute("PRAGMA data_version").fetchone()[0], self.db.total_changes)
        if self._labelled_text[0] == key:
            withheld = self._labelled_text[1]
            if withheld is None:
                return None
            return self._fts_count(match) - withheld if cleared else withheld
        try:
            labelled = self.db.execute("SELECT count(*) FROM events INDEXED BY events_ranked WHERE rank > 0 "
                                       "AND rank > ?", (above,)).fetchone()[0]
        except sqlite3.OperationalError as exc:  # a store not yet migrated to 8 (opened without init)
            if "no such index" in str(exc):
                return None
            raise
        matches = self._fts_count(match)
        if labelled * SEEKS_PER_ROW > matches:  # many labelled events: testing each match's row costs less
            self._labelled_text = (key, None)
            return None
        withheld = self.db.execute(
            "SELECT count(*) FROM events INDEXED BY events_ranked WHERE rank > 0 AND rank > ? AND EXISTS "
            "(SELECT 1 FROM events_fts WHERE events_fts MATCH ? AND rowid = events.rowid)", (above, match),
        ).fetchone()[0]
        self._labelled_text = (key, withheld)
        return matches - withheld if cleared else withheld

    def _fts_count(self, match: str) -> int:
        return self.db.execute("SELECT count(*) FROM events_fts WHERE events_fts MATCH ?", (match,)).fetchone()[0]

    def search_alerts(self, q: Query, limit: int = 100) -> list[dict[str, Any]]:
        where, params = self._where(q, ALERT_COLUMNS)
        sql = f"SELECT doc FROM alerts WHERE {where} ORDER BY risk_score DESC, ts DESC, uuid ASC LIMIT ?"
        return [json.loads(r[0]) for r in self.db.execute(sql, [*params, limit])]

    def count_alerts(self, q: Query) -> int:
        where, params = self._where(q, ALERT_COLUMNS)
        return self.db.execute(f"SELECT count(*) FROM alerts WHERE {where}", params).fetchone()[0]

    def alert_fields(self, queries: Sequence[Query], fields: Sequence[str]) -> list[dict[str, Any]]:
        """One SQL pass: the OR of the queries, each row projected to a JSON array of the fields."""
        if not queries or not fields:
            return []
        wheres, params = self._where_any(queries)
        if list(fields) == ["soc.alert.uuid"]:  # ids only (counting): the column, no document parsed
            return [{"soc.alert.uuid": r[0]} for r in
                    self.db.execute(f"SELECT uuid FROM alerts WHERE {wheres}", params)]
        # one json_extract with every path: one parse of the document per row, the values as a JSON array
        paths = [_path(f) for f in fields] * (2 if len(fields) == 1 else 1)  # an array needs two paths or more
        sql = f"SELECT json_extract(doc, {', '.join('?' * len(paths))}) FROM alerts WHERE {wheres}"
        out = []
        for (row,) in self.db.execute(sql, [*paths, *params]):
            out.append({f: v for f, v in zip(fields, json.loads(row), strict=False) if v is not None})
        return out

    def count_alerts_any(self, queries: Sequence[Query]) -> int:
        if not queries:
            return 0
        wheres, params = self._where_any(queries)
        return self.db.execute(f"SELECT count(*) FROM alerts WHERE {wheres}", params).fetchone()[0]

    def _where_any(self, queries: Sequence[Query]) -> tuple[str, list[Any]]:
        wheres, params = [], []
        for q in queries:
            where, args = self._where(q, ALERT_COLUMNS)
            wheres.append(f"({where})")
            params.extend(args)
        return " OR ".join(wheres), params

    def get_alert(self, uuid: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT doc FROM alerts WHERE uuid = ?", (uuid,)).fetchone()
        return json.loads(row[0]) if row else None

    # -- incidents ----------------------------------------------------------------------------------------------

    def create_incident(self, doc: dict[str, Any]) -> dict[str, Any]:
        with self._tx():
            number = self.db.execute("SELECT coalesce(max(id), 0) + 1 FROM incidents").fetchone()[0]
            doc = doc | {"soc.incident.id": number}
            self.db.execute("INSERT INTO incidents VALUES (?,?,?,?,?,?)", (number, *self._incident_row(doc)))
        return doc

    @staticmethod
    def _incident_row(doc: dict[str, Any]) -> tuple:
        return (doc["@timestamp"], doc.get("soc.incident.status"), doc.get("soc.incident.severity"),
                doc.get("soc.incident.assignee"), dumps_event(doc))

    def get_incident(self, number: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT doc FROM incidents WHERE id = ?", (number,)).fetchone()
        return json.loads(row[0]) if row else None

    def update_incident(self, number: int, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        with self._tx():  # BEGIN IMMEDIATE: writers queue, so the read-modify-write sees every earlier change
            row = self.db.execute("SELECT doc FROM incidents WHERE id = ?", (number,)).fetchone()
            if row is None:
                raise StoreError(f"no incident {number}")
            doc = change(json.loads(row[0])) | {"soc.incident.id": number}
            self.db.execute("UPDATE incidents SET ts = ?, status = ?, severity = ?, assignee = ?, doc = ? WHERE id = ?",
                            (*self._incident_row(doc), number))
        return doc

    def search_incidents(self, q: Query, limit: int = 100) -> list[dict[str, Any]]:
        where, params = self._where(q, INCIDENT_COLUMNS)
        sql = f"SELECT doc FROM incidents WHERE {where} ORDER BY id DESC LIMIT ?"
        return [json.loads(r[0]) for r in self.db.execute(sql, [*params, limit])]

    def hunt(self, query: str, since: datetime | None, until: datetime | None, limit: int = 1000,
             clauses: tuple[Clause, ...] = ()) -> list[dict]:
        where, params = self._where(Query(tuple(clauses), since, until), {"gov.label.rank": "rank"})
        sql = f"SELECT doc FROM events WHERE {where} AND ({query}) ORDER BY ts DESC, id ASC LIMIT ?"
        try:
            return [json.loads(r[0]) for r in self.db.execute(sql, [*params, limit])]
        except sqlite3.Error as exc:
            raise StoreError(f"hunt query failed: {exc}: {query}") from None

    def _where(self, q: Query, hot: dict[str, str], walk: bool = False) -> tuple[str, list[Any]]:
        """SQL for `q` over the `hot` columns; `walk`: free text tested per row (one FTS seek), not as a list."""
        parts, params = ["1=1"], []
        if q.since:
            parts.append("ts >= ?")
            params.append(to_utc_iso(q.since))
        if q.until:
            parts.append("ts < ?")
            params.append(to_utc_iso(q.until))
        for clause in q.clauses:
            sql, args = _walk_text_sql(clause) if walk and isinstance(clause, Text) else _clause_sql(clause, hot)
            parts.append(sql)
            params.extend(args)
        return " AND ".join(parts), params

    # -- audit and status ----------------------------------------------------------------------------------------

    @property
    def audit_name(self) -> str:
        return f"sqlite:///{self.path.resolve()}"

    def audit(self, action: str, details: dict[str, Any], actor: str | None = None) -> None:
        actor = actor or current_actor()
        ts = to_utc_iso(datetime.now(UTC))
        with self._tx():
            last = self.db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
            digest = self.audit_chain.seal(last and last[1], prev, seq, ts, actor, action, details)
            self.db.execute(
                "INSERT INTO audit VALUES (?,?,?,?,?,?,?)",
                (seq, ts, actor, action, json.dumps(details, sort_keys=True), prev, digest),
            )
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('audit_head', ?)", (f"{seq}:{digest}",))
        self.audit_chain.anchored(seq, digest)

    def audit_verify(self, anchors: Iterable[Anchors] = ()) -> list[str]:
        head = self.db.execute("SELECT value FROM meta WHERE key='audit_head'").fetchone()
        return self.audit_chain.verify(self.audit_entries(), head and head[0], anchors)

    def audit_entries(self) -> list[dict[str, Any]]:
        """All audit entries in seq order (with their hashes)."""
        rows = self.db.execute("SELECT seq, ts, actor, action, details, prev_hash, hash FROM audit ORDER BY seq")
        return [
            dict(seq=r[0], ts=r[1], actor=r[2], action=r[3], details=json.loads(r[4]), prev_hash=r[5], hash=r[6])
            for r in rows
        ]

    def prune(self, before: datetime, batch: int = 50_000) -> int:
        """Delete the events whose @timestamp is before `before`, oldest first, about `batch` per transaction
        (one range of the `ts` index; each event's free-text entry goes with it): a kill -9 leaves every batch whole
        and a re-run finishes the rest. Freed pages are reused by later writes. Audited; returns how many."""
        cutoff = to_utc_iso(before)
        deleted = 0
        while True:
            with self._tx():
                row = self.db.execute("SELECT ts FROM events WHERE ts < ? ORDER BY ts LIMIT 1 OFFSET ?",
                                      (cutoff, batch - 1)).fetchone()
                where, bound = ("ts <= ?", row[0]) if row else ("ts < ?", cutoff)  # ties at the bound go together
                self.db.execute("INSERT INTO events_fts (events_fts, rowid, text) "
                                f"SELECT 'delete', rowid, soc_text(doc) FROM events WHERE {where}", (bound,))
                deleted += self.db.execute(f"DELETE FROM events WHERE {where}", (bound,)).rowcount
            if row is None:
                break
        self.audit("store-prune", {"before": cutoff, "events": deleted})
        return deleted

    def status(self) -> dict[str, Any]:
        one = self.db.execute
        span = one("SELECT min(ts), max(ts) FROM events").fetchone()
        return {
            "backend": "sqlite",
            "uri": self.uri,
            "healthy": one("PRAGMA quick_check").fetchone()[0] == "ok",
            "schema_version": self._schema_version(),
            "sqlite_version": sqlite3.sqlite_version,
            "journal_mode": one("PRAGMA journal_mode").fetchone()[0],
            "events": one("SELECT count(*) FROM events").fetchone()[0],
            "alerts": one("SELECT count(*) FROM alerts").fetchone()[0],
            "audit_entries": one("SELECT count(*) FROM audit").fetchone()[0],
            "first_event": span[0],
            "last_event": span[1],
            "size_bytes": self.path.stat().st_size if self.path.exists() else 0,
            "retention": self.retention,
        }

    def purpose(self) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key='purpose'").fetchone()
        return row[0] if row else None

    def set_purpose(self, purpose: str) -> None:
        with self._tx():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('purpose', ?)", (purpose,))

    def close(self) -> None:
        self.db.close()


class _Transaction:
    """`BEGIN IMMEDIATE` … `COMMIT`, rolled back on error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # locked by another writer past the busy timeout
            raise StoreUnavailable(str(exc)) from None

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _statements(script: str) -> list[str]:
    """Split a migration script into statements, keeping trigger bodies whole."""
    out, buf = [], ""
    for line in script.strip().splitlines():
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out


def _any_value(field: str, condition: str) -> str:
    """SQL true when any value of `field` (scalar or list element) satisfies `condition` on `value`."""
    return f"EXISTS (SELECT 1 FROM json_each(doc, '{_path(field)}') WHERE {condition})"


def _clause_sql(clause: Clause, hot: dict[str, str]) -> tuple[str, list[Any]]:
    handler: Callable[[Any, dict[str, str]], tuple[str, list[Any]]] = _HANDLERS[type(clause)]
    return handler(clause, hot)


def _term_sql(c: Term, hot: dict[str, str]) -> tuple[str, list[Any]]:
    col = hot.get(c.field)
    if col in IP_COLUMNS:
        packed = ip_bytes(str(c.value))
        return (f"{col} = ?", [packed]) if packed else ("0", [])
    values: list[Any] = [c.value]
    if isinstance(c.value, (int, float)) and not isinstance(c.value, bool):
        values.append(str(c.value))
    elif isinstance(c.value, str) and ip_bytes(c.value) and str(ipaddress.ip_address(c.value)) != c.value:
        values.append(str(ipaddress.ip_address(c.value)))
    marks = ",".join("?" * len(values))
    if col:
        return f"{col} IN ({marks})", values
    if c.field == "event.category":
        return f"(category IN ({marks}) OR {_any_value(c.field, f'value IN ({marks})')})", values + values
    return _any_value(c.field, f"value IN ({marks})"), values


def _prefix_sql(c: Prefix, hot: dict[str, str]) -> tuple[str, list[Any]]:
    col = hot.get(c.field)
    if col in IP_COLUMNS:
        raise StoreError(f"{c.field}: prefix queries do not apply to IP fields; use a CIDR such as 10.0.0.0/8")
    if col:
        return f"(typeof({col}) = 'text' AND {col} >= ? AND {col} < ?)", [c.prefix, c.prefix + _MAX_CHAR]
    return _any_value(c.field, "typeof(value) = 'text' AND substr(value, 1, ?) = ?"), [len(c.prefix), c.prefix]


def _wildcard_sql(c: Wildcard, hot: dict[str, str]) -> tuple[str, list[Any]]:
    """GLOB (case-sensitive, as Prefix); `[` and `?` are escaped as one-character classes, `*` stays the wildcard."""
    col = hot.get(c.field)
    if col in IP_COLUMNS:
        raise StoreError(f"{c.field}: wildcard queries do not apply to IP fields; use a CIDR such as 10.0.0.0/8")
    glob = "".join(f"[{ch}]" if ch in "[?" else ch for ch in c.pattern)
    if col:
        lead = c.pattern.split("*", 1)[0]  # a literal start lets the index narrow the scan
        return (f"(typeof({col}) = 'text' AND {col} >= ? AND {col} < ? AND {col} GLOB ?)",
                [lead, lead + _MAX_CHAR, glob])
    return _any_value(c.field, "typeof(value) = 'text' AND value GLOB ?"), [glob]


def _cidr_sql(c: Cidr, hot: dict[str, str]) -> tuple[str, list[Any]]:
    lo, hi = _net_bounds(c.network)
    col = hot.get(c.field)
    if col in IP_COLUMNS:
        return f"{col} BETWEEN ? AND ?", [lo, hi]
    return _any_value(c.field, "soc_ip(value) BETWEEN ? AND ?"), [lo, hi]


def _range_sql(c: Range, hot: dict[str, str]) -> tuple[str, list[Any]]:
    bounds = [(op, v) for op, v in ((">=", c.gte), ("<=", c.lte), (">", c.gt), ("<", c.lt)) if v is not None]
    col = hot.get(c.field)
    if col and col not in IP_COLUMNS:
        return " AND ".join(f"{col} {op} ?" for op, _ in bounds) or "1=1", [v for _, v in bounds]
    cond = " AND ".join(["typeof(value) IN ('integer', 'real')", *(f"value {op} ?" for op, _ in bounds)])
    return _any_value(c.field, cond), [v for _, v in bounds]


def _text_sql(c: Text, hot: dict[str, str]) -> tuple[str, list[Any]]:
    if "event.id" not in hot:  # alerts and incidents have no FTS index: test the tokens of the string values
        return "soc_has_tokens(doc, ?)", [json.dumps(c.words)]
    match = " ".join('"' + w.replace('"', '""') + '"' for w in c.words)
    return "rowid IN (SELECT rowid FROM events_fts WHERE events_fts MATCH ?)", [match]


def _walk_text_sql(c: Text) -> tuple[str, list[Any]]:
    match = " ".join('"' + w.replace('"', '""') + '"' for w in c.words)
    return "EXISTS (SELECT 1 FROM events_fts WHERE events_fts MATCH ? AND rowid = events.rowid)", [match]


def _clearance_sql(c: Clearance, hot: dict[str, str]) -> tuple[str, list[Any]]:
    if "gov.label.rank" in hot:
        # unary +: a filter on the rows read, never the index to read (the list's order index serves the page)
        return f"+{hot['gov.label.rank']} <= ?", [c.max_rank]
    return "coalesce(json_extract(doc, '$.\"gov.label.rank\"'), 0) <= ?", [c.max_rank]


_HANDLERS: dict[type, Callable[[Any, dict[str, str]], tuple[str, list[Any]]]] = {
    Term: _term_sql,
    Prefix: _prefix_sql,
    Wildcard: _wildcard_sql,
    Cidr: _cidr_sql,
    Range: _range_sql,
    Text: _text_sql,
    Clearance: _clearance_sql,
}

__all__ = ["SQLiteStore", "ip_bytes", "tokens"]
