"""`soc logs ingest`: checkpoints (no loss, no repeat), rotation, truncation, unfinished lines, follow, bad lines."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from sensors.logs import LogReader
from soc_cli.main import app

runner = CliRunner()


def _line(i: int, **extra) -> str:
    return json.dumps({"@timestamp": f"2024-05-01T10:00:{i % 60:02d}Z", "message": f"line {i}",
                       "source": {"ip": "10.0.0.1"}, **extra}) + "\n"


def _ingest(log: Path, db: Path, *more: str) -> dict:
    res = runner.invoke(app, ["logs", "ingest", str(log), "--format", "ndjson", "--store", f"sqlite:///{db}",
                              "--json", *more])
    assert res.exit_code in (0, 1), res.output
    return json.loads(res.stdout.strip().splitlines()[-1]) | {"exit": res.exit_code}


def _messages(db: Path) -> list[str]:
    rows = sqlite3.connect(db).execute("SELECT json_extract(doc, '$.message') FROM events").fetchall()
    return sorted(r[0] for r in rows)


def test_rerun_and_append_neither_lose_nor_repeat(soc_env: Path) -> None:
    log, db = soc_env / "app.ndjson", soc_env / "soc.db"
    log.write_text("".join(_line(i) for i in range(3)))
    assert _ingest(log, db)["events"] == 3
    assert _ingest(log, db)["events"] == 0  # checkpoint: nothing re-read
    with log.open("a") as fh:
        fh.write(_line(3) + _line(4))
    out = _ingest(log, db)
    assert out["events"] == 2 and out["store"]["duplicates"] == 0
    assert _messages(db) == [f"line {i}" for i in range(5)]


def test_rotation_finishes_the_old_file_first(soc_env: Path) -> None:
    log, db = soc_env / "eve.ndjson", soc_env / "soc.db"
    log.write_text(_line(0) + _line(1))
    _ingest(log, db)
    with log.open("a") as fh:  # written before rotation, not yet read
        fh.write(_line(2))
    log.rename(soc_env / "eve.ndjson.1")
    log.write_text(_line(3))
    out = _ingest(log, db)
    assert out["events"] == 2 and out["store"]["duplicates"] == 0
    assert _messages(db) == [f"line {i}" for i in range(4)]


def test_truncation_restarts_at_zero(soc_env: Path) -> None:
    log, db = soc_env / "t.ndjson", soc_env / "soc.db"
    log.write_text(_line(0) + _line(1) + _line(2))
    _ingest(log, db)
    log.write_text(_line(7))  # copytruncate: same inode, smaller
    assert _ingest(log, db)["events"] == 1
    assert _messages(db) == ["line 0", "line 1", "line 2", "line 7"]


def test_unfinished_last_line_waits_for_its_newline(soc_env: Path) -> None:
    log, db = soc_env / "p.ndjson", soc_env / "soc.db"
    full = _line(0) + _line(1)
    log.write_text(full[:-10])
    out = _ingest(log, db)
    assert out["events"] == 1 and out["incomplete_tail_bytes"] > 0
    log.write_text(full)
    assert _ingest(log, db)["events"] == 1
    assert _messages(db) == ["line 0", "line 1"]


def test_bad_lines_are_reported_with_file_and_offset(soc_env: Path) -> None:
    log, db = soc_env / "bad.ndjson", soc_env / "soc.db"
    good0 = _line(0)
    log.write_text(good0 + "{not json\n" + _line(1) + '{"no": "timestamp"}\n')
    res = runner.invoke(app, ["logs", "ingest", str(log), "--format", "ndjson", "--store", f"sqlite:///{db}"])
    assert res.exit_code == 1
    stderr = " ".join(res.stderr.split())  # rich wraps long lines to the terminal width
    assert f"{log}: byte offset {len(good0)}: JSONDecodeError" in stderr
    assert "no @timestamp" in stderr
    assert _messages(db) == ["line 0", "line 1"]


def test_unknown_format_and_missing_file_are_usage_errors(soc_env: Path) -> None:
    assert runner.invoke(app, ["logs", "ingest", str(soc_env / "nope.log"), "--format", "zeek"]).exit_code == 2
    (soc_env / "x.log").write_text("")
    assert runner.invoke(app, ["logs", "ingest", str(soc_env / "x.log"), "--format", "syslog"]).exit_code == 2


def test_event_ids_are_stable_without_checkpoint(soc_env: Path) -> None:
    """log.file.path + log.offset make ids deterministic: a re-read from zero only finds duplicates."""
    log, db = soc_env / "n.ndjson", soc_env / "soc.db"
    log.write_text(_line(0) + _line(0))  # identical lines at different offsets stay distinct events
    _ingest(log, db, "--no-checkpoint")
    out = _ingest(log, db, "--no-checkpoint")
    assert out["store"]["written"] == 0 and out["store"]["duplicates"] == 2
    assert _messages(db) == ["line 0", "line 0"]


def test_zeek_json_and_suricata_mapping(tmp_path: Path) -> None:
    zeek = tmp_path / "http.log"
    zeek.write_text(json.dumps({"_path": "http", "ts": 1700000000.5, "uid": "C1", "id.orig_h": "10.0.0.5",
                                "id.orig_p": 5555, "id.resp_h": "192.0.2.7", "id.resp_p": 80, "method": "GET",
                                "host": "example.gov", "uri": "/a?b=1", "status_code": 200,
                                "user_agent": "curl/8"}) + "\n")
    ev = next(LogReader(str(zeek), "zeek").events())
    assert (ev["event.dataset"], ev["@timestamp"], ev["url.domain"], ev["url.original"], ev["source.port"]) == (
        "zeek.http", "2023-11-14T22:13:20.500000Z", "example.gov", "/a?b=1", 5555)
    eve = tmp_path / "eve.json"
    eve.write_text(json.dumps({"timestamp": "2024-01-01T01:00:00.000001+0100", "event_type": "alert",
                               "src_ip": "10.0.0.5", "dest_ip": "192.0.2.7", "proto": "TCP",
                               "alert": {"signature": "ET SCAN x", "signature_id": 2001, "severity": 2}}) + "\n")
    ev = next(LogReader(str(eve), "suricata-eve").events())
    assert (ev["@timestamp"], ev["event.kind"], ev["rule.id"], ev["network.transport"]) == (
        "2024-01-01T00:00:00.000001Z", "alert", "2001", "tcp")


def test_follow_through_rotation_then_sigterm(soc_env: Path) -> None:
    log, db = soc_env / "f.ndjson", soc_env / "soc.db"
    log.write_text(_line(0))
    soc = str(Path(sys.executable).with_name("soc"))
    env = os.environ | {"SOC_HOME": str(soc_env / "home")}
    proc = subprocess.Popen([soc, "logs", "ingest", str(log), "--format", "ndjson", "--follow", "--json",
                             "--store", f"sqlite:///{db}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        def stored() -> int:
            try:
                return len(_messages(db))
            except sqlite3.OperationalError:
                return 0

        def wait_for(n: int) -> None:
            deadline = time.monotonic() + 30
            while stored() < n:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, f"only {stored()} of {n} events stored"
                time.sleep(0.2)

        wait_for(1)
        with log.open("a") as fh:
            fh.write(_line(1))
        wait_for(2)
        with log.open("a") as fh:
            fh.write(_line(2))
        log.rename(soc_env / "f.ndjson.1")
        log.write_text(_line(3))
        wait_for(4)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert _messages(db) == [f"line {i}" for i in range(4)]
    assert json.loads(out.strip().splitlines()[-1])["events"] == 4
