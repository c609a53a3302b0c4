"""The pipeline: stages run in order, spool on an unavailable store, replay without loss or duplicates."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from correlator.pipeline import Pipeline
from correlator.query import parse_query
from correlator.store import Spool, open_store

from .oracle import sample_events


class CountingDetector:
    """A real detector for the test: one alert per batch naming how many DNS events it saw."""

    def __init__(self) -> None:
        self.batches = 0

    def detect(self, events):
        self.batches += 1
        dns = [e for e in events if e.get("event.dataset") == "soc.dns"]
        if not dns:
            return []
        return [{"@timestamp": dns[0]["@timestamp"], "soc.alert.uuid": f"dns-{self.batches}",
                 "soc.alert.risk_score": len(dns), "soc.alert.ancestors": [e["event.id"] for e in dns],
                 "gov.checked": all(e.get("gov.checked") for e in dns)}]

    def flush(self):
        return [{"@timestamp": "2024-05-02T00:00:00.000000Z", "soc.alert.uuid": "final", "soc.alert.risk_score": 1}]


def _raw(events):
    return [{k: v for k, v in e.items() if k != "event.id"} for e in events]


def test_stages_run_in_order_and_everything_lands(sqlite_store, tmp_path):
    def enrich(batch):
        for e in batch:
            e["gov.checked"] = True

    det = CountingDetector()
    p = Pipeline(sqlite_store, [enrich], [det], batch_size=100, spool=Spool(tmp_path / "spool"))
    stats = p.run(_raw(sample_events(450)) + [{"message": "no timestamp"}])
    assert (stats.events_in, stats.rejected, stats.written, stats.alerts) == (451, 1, 450, 6)
    assert stats.errors == ["event 451: event has no @timestamp"]
    assert sqlite_store.count_events(parse_query("")) == 450
    assert sqlite_store.count_events(parse_query("gov.checked:true")) == 0  # booleans are not strings
    alerts = sqlite_store.search_alerts(parse_query(""), 100)
    assert {a["soc.alert.uuid"] for a in alerts} == {f"dns-{i}" for i in range(1, 6)} | {"final"}
    assert all(a.get("gov.checked", True) for a in alerts)  # detectors saw enriched events
    again = Pipeline(sqlite_store, spool=Spool(tmp_path / "spool")).run(_raw(sample_events(450)))
    assert (again.written, again.duplicates) == (0, 450)


def test_locked_store_spools_then_replays_exactly_once(tmp_path):
    db = tmp_path / "soc.db"
    store = open_store(f"sqlite:///{db}?busy_timeout=100")
    store.init()
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock: the store is unavailable
    spool = Spool(tmp_path / "spool")
    p = Pipeline(store, batch_size=100, spool=spool)
    events = _raw(sample_events(300))
    for i in range(0, 300, 100):
        p.process([dict(e) for e in events[i:i + 100]])
    assert p.stats.spooled_events == 300 and p.stats.written == 0
    assert spool.pending()["events"] == 300
    blocker.execute("COMMIT")
    p.finish()  # the store is back: the spool is replayed
    assert not p.stats.spooled and p.stats.replayed_events == 300
    assert store.count_events(parse_query("")) == 300
    assert spool.pending() == {"batches": 0, "events": 0, "alerts": 0}


def test_spool_survives_a_torn_last_line(tmp_path, sqlite_store):
    spool = Spool(tmp_path / "spool")
    events = [dict(e) for e in sample_events(20)]
    spool.append("events", events[:10])
    spool.append("events", events[10:])
    seg = spool.segments()[0]
    data = seg.read_bytes()
    seg.write_bytes(data[: len(data) - 25])  # a crash cut the second append short: it was never acknowledged
    fresh = Spool(tmp_path / "spool")
    assert fresh.pending()["events"] == 10
    assert fresh.replay(sqlite_store)["events"] == 10
    assert any("incomplete spool record" in s for s in fresh.skipped_lines)


def test_sigkill_mid_ingest_then_rerun_loses_and_duplicates_nothing(tmp_path):
    """Kill `soc events ingest` with SIGKILL part-way, run it again: every event is stored exactly once."""
    events = _raw(sample_events(60_000, seed=3))
    src = tmp_path / "events.ndjson"
    src.write_text("".join(json.dumps(e) + "\n" for e in events))
    db = tmp_path / "soc.db"
    env = os.environ | {"SOC_HOME": str(tmp_path / "home"), "SOC_STORE": f"sqlite:///{db}"}
    cmd = [sys.executable, "-m", "soc_cli.main", "events", "ingest", str(src), "--no-rules", "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stored = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as ro:
                    stored = ro.execute("SELECT count(*) FROM events").fetchone()[0]
            except sqlite3.Error:
                continue
            if stored >= 10_000:
                break
    assert proc.poll() is None, "ingest finished before it could be killed: make the input larger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db) as ro:
        partial = ro.execute("SELECT count(*) FROM events").fetchone()[0]
    assert 10_000 <= partial < len(events)
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["written"] == len(events) - partial and summary["duplicates"] == partial
    store = open_store(f"sqlite:///{db}")
    assert store.count_events(parse_query("")) == len(events)
    ids = {r[0] for r in store.db.execute("SELECT id FROM events")}
    from correlator.events import event_id
    assert ids == {event_id(e) for e in events}
    fts = store.db.execute("SELECT count(*) FROM events_fts").fetchone()[0]
    assert fts == len(events)  # the free-text index has one row per event: nothing indexed twice
