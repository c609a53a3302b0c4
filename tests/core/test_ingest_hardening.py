"""Bad input gets one located error per line and loses nothing (issue 10, section 3): NDJSON (`soc events ingest`,
`soc logs ingest`), Suricata EVE and Zeek readers, the store writers, explicit store paths, invalid policies.

Truth is the input itself: the good lines are real events from the corpus (SigmaHQ regression ECS renderings, a Zeek
conn.log) or records whose values the test states; every one of them must be stored and searchable, every bad line
must be reported once with its place, and the store must stay readable (search, count, hunt).
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest
from es_server import server_names, start_server
from typer.testing import CliRunner

from correlator.query import Query
from correlator.store import StoreRejected, open_store
from soc_cli.main import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
TS = '"@timestamp":"2026-11-02T09:00:01Z"'

# Each is one bad line: what a JSON parser may accept but a store cannot hold, or no usable @timestamp.
BAD_LINES: list[bytes] = [
    b'{' + TS.encode() + b',"source.bytes":NaN}',
    b'{' + TS.encode() + b',"source.bytes":Infinity}',
    b'{' + TS.encode() + b',"x":-Infinity}',
    b'{' + TS.encode() + b',"source.bytes":1e400}',
    b'{"@timestamp":1e400}',
    b'{"@timestamp":-1e18}',
    b'{"@timestamp":true}',
    b'{"@timestamp":"0001-01-01T00:00:00+01:00"}',
    b'{"@timestamp":"not a time"}',
    b'{' + TS.encode() + b',"deep":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    b'{' + TS.encode() + b',"s":"\\ud800"}',
    b'{' + TS.encode() + b',"s":"\xff\xfe"}',
    b'{' + TS.encode() + b',"s":"\xed\xa0\x80"}',  # a surrogate encoded in UTF-8 bytes (json.loads passes it)
    b'{' + TS.encode() + b',"destination.port":123456789012345678901234567}',
    b'{' + TS.encode() + b',"event.id":["a"]}',
    b"[1, 2]",
    b"NaN",
]
# Valid lines that once broke a whole batch: lists where SQLite keeps a hot column, an escaped surrogate pair.
ODD_GOOD = [
    b'{' + TS.encode() + b',"source.port":[1,2],"host.name":["a","b"],"message":"odd good 1"}',
    b'{' + TS.encode() + b',"message":"odd good 2 \\ud83d\\ude00"}',
]


def _corpus_events(corpus: Path) -> list[bytes]:
    """The first event of each SigmaHQ regression case, as ECS NDJSON (40 real Windows events)."""
    files = sorted((corpus / "sigma" / "regression").rglob("*.ecs.ndjson"))
    assert len(files) >= 40
    return [f.read_bytes().splitlines()[0] for f in files]


def _mixed(corpus: Path, path: Path) -> tuple[list[bytes], list[int], list[int]]:
    """Write good and bad lines interleaved; return the lines, the 1-based numbers and byte offsets of bad ones."""
    good = _corpus_events(corpus) + ODD_GOOD
    lines: list[bytes] = []
    for i, g in enumerate(good):
        lines.append(g)
        if i < len(BAD_LINES):
            lines.append(BAD_LINES[i])
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    bad_numbers = [n for n, line in enumerate(lines, 1) if line in BAD_LINES]
    offsets, at = [], 0
    for line in lines:
        if line in BAD_LINES:
            offsets.append(at)
        at += len(line) + 1
    assert len(bad_numbers) == len(BAD_LINES)
    return good, bad_numbers, offsets


def _stored(db: Path) -> list[dict]:
    store = open_store(f"sqlite:///{db}")
    try:
        return store.search_events(Query(()), 10_000)
    finally:
        store.close()


def _assert_readable(db: Path, n_events: int) -> None:
    """search, count and hunt work on the store (a malformed document would fail them all)."""
    uri = f"sqlite:///{db}"
    res = runner.invoke(app, ["events", "search", "--json", "--limit", "1000", "--store", uri])
    assert res.exit_code == 0, res.output
    assert all(json.loads(line) for line in res.stdout.splitlines())
    res = runner.invoke(app, ["events", "search", "--count", "--json", "--store", uri])
    assert res.exit_code == 0, res.output
    rule = ROOT / "rules" / "sigma" / "network" / "net_flow_port_scan.yml"
    res = runner.invoke(app, ["hunt", str(rule), "--json", "--store", uri])
    assert res.exit_code == 0, res.output
    assert len(_stored(db)) == n_events


@pytest.mark.corpus
def test_events_ingest_reports_each_bad_line_and_stores_every_good_one(corpus: Path, soc_env: Path) -> None:
    src, db = soc_env / "mixed.ndjson", soc_env / "soc.db"
    good, bad_numbers, _ = _mixed(corpus, src)
    res = runner.invoke(app, ["events", "ingest", str(src), "--no-rules", "--json", "--store", f"sqlite:///{db}"])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    summary = json.loads(res.stdout.splitlines()[-1])
    assert summary["bad_lines"] == len(BAD_LINES) and summary["written"] == len(good)
    errors = [line for line in res.stderr.splitlines() if line.startswith(str(src))]
    assert sorted(int(e.split(":")[1]) for e in errors) == bad_numbers  # one located error per bad line
    stored = _stored(db)
    want = sorted(json.loads(g).get("@timestamp") for g in good)
    assert sorted(e["@timestamp"][:19] for e in stored) == sorted(w[:19] for w in want)
    assert {e["message"] for e in stored if str(e.get("message", "")).startswith("odd good")} == {
        "odd good 1", "odd good 2 \U0001f600"}
    _assert_readable(db, len(good))


@pytest.mark.corpus
def test_logs_ingest_ndjson_reports_each_bad_line_by_byte_offset(corpus: Path, soc_env: Path) -> None:
    src, db = soc_env / "mixed.ndjson", soc_env / "soc.db"
    good, _, offsets = _mixed(corpus, src)
    res = runner.invoke(app, ["logs", "ingest", str(src), "--format", "ndjson", "--no-checkpoint", "--json",
                              "--store", f"sqlite:///{db}"])
    assert res.exit_code == 1, res.output
    summary = json.loads(res.stdout.splitlines()[-1])
    assert summary["errors"] == len(BAD_LINES) and summary["events"] == len(good)
    stderr = " ".join(res.stderr.split())
    for off in offsets:
        assert stderr.count(f"{src}: byte offset {off}: ") == 1, off
    _assert_readable(db, len(good))


@pytest.mark.corpus
def test_zeek_reader_bad_rows_are_located_and_good_rows_stored(corpus: Path, soc_env: Path) -> None:
    text = (corpus / "pcaps/expected/zk_ssh-bulk/zeek_scripts.base.protocols.ssh.basic_conn.log").read_text()
    text = text.replace("XXXXXXXXXX.XXXXXX", "1700000000.250000")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    uids = {r[1] for r in rows}
    template = rows[0]
    bad = [
        "\t".join(["inf", "Cbad1", *template[2:]]),  # ts overflows
        "\t".join(["1700000000.5", "Cbad2", *template[2:16], "99999999999999999999999", *template[17:]]),
        "\t".join(["1700000000.5", "Cbad3", *template[2:8]]),  # too few columns
        '{"ts": 1e400, "uid": "Cbad4"}',
        '{"ts": true, "uid": "Cbad5"}',
        '{"ts": 1700000000, "uid": "Cbad6", "duration": NaN}',
    ]
    data = text.encode() + "\n".join(bad).encode() + b"\n" + b"1700000000.5\tCbad7\xff\n"
    log, db = soc_env / "conn.log", soc_env / "soc.db"
    log.write_bytes(data)
    res = runner.invoke(app, ["logs", "ingest", str(log), "--format", "zeek", "--no-checkpoint", "--json",
                              "--store", f"sqlite:///{db}"])
    assert res.exit_code == 1, res.output
    assert json.loads(res.stdout.splitlines()[-1])["errors"] == len(bad) + 1
    assert " ".join(res.stderr.split()).count(f"{log}: byte offset ") == len(bad) + 1
    assert {e["zeek.session_id"] for e in _stored(db)} == uids
    _assert_readable(db, len(uids))


def test_suricata_reader_bad_records_are_located_and_good_ones_stored(soc_env: Path) -> None:
    good = [
        {"timestamp": "2026-11-02T09:00:01.000001+0100", "event_type": "flow", "src_ip": "10.0.0.1",
         "src_port": 40000, "dest_ip": "10.0.0.2", "dest_port": 22, "proto": "TCP",
         "flow": {"pkts_toserver": 3, "pkts_toclient": 2, "bytes_toserver": 300, "bytes_toclient": 200}},
        {"timestamp": "2026-11-02T09:00:02.000000+0000", "event_type": "dns", "src_ip": "10.0.0.1",
         "dest_ip": "10.0.0.53", "dns": {"type": "query", "id": 7, "rrname": "example.org", "rrtype": "A"}},
        {"timestamp": "2026-11-02T09:00:03.000000+0000", "event_type": "http", "src_ip": "10.0.0.1",
         "dest_ip": "10.0.0.80", "http": {"hostname": "example.org", "url": "/a?b=1", "http_method": "GET"}},
    ]
    bad = [
        '{"timestamp": 1e400, "event_type": "flow"}',
        '{"timestamp": true, "event_type": "flow"}',
        '{"timestamp": -1e18, "event_type": "flow"}',
        '{"timestamp": "2026-11-02T09:00:01Z", "event_type": "http", "http": {"url": 5}}',
        '{"timestamp": "2026-11-02T09:00:01Z", "event_type": "tls", "tls": {"ja3": "abc"}}',
        '{"timestamp": "2026-11-02T09:00:01Z", "event_type": "flow", "flow": {"bytes_toserver": NaN}}',
        '{"timestamp": "2026-11-02T09:00:01Z", "event_type": "x", "x": ' + "[" * 10_000 + "]" * 10_000 + "}",
        '{"event_type": "flow"}',
    ]
    lines = [json.dumps(g) for g in good]
    log, db = soc_env / "eve.json", soc_env / "soc.db"
    log.write_text("\n".join(lines[:1] + bad[:4] + lines[1:] + bad[4:]) + "\n")
    res = runner.invoke(app, ["logs", "ingest", str(log), "--format", "suricata-eve", "--no-checkpoint", "--json",
                              "--store", f"sqlite:///{db}"])
    assert res.exit_code == 1, res.output
    assert json.loads(res.stdout.splitlines()[-1])["errors"] == len(bad)
    assert " ".join(res.stderr.split()).count(f"{log}: byte offset ") == len(bad)
    stored = {e["suricata.eve.event_type"]: e for e in _stored(db)}
    assert stored["flow"]["@timestamp"] == "2026-11-02T08:00:01.000001Z" and stored["flow"]["network.bytes"] == 500
    assert stored["dns"]["dns.question.name"] == "example.org"
    assert stored["http"]["url.path"] == "/a"
    _assert_readable(db, len(good))


def test_sqlite_writer_refuses_a_document_that_is_not_strict_json(sqlite_store) -> None:
    good = {"@timestamp": "2026-11-02T09:00:01.000000Z", "event.id": "good", "message": "kept"}
    for bad_value in (math.nan, math.inf, "\ud800"):
        bad = {"@timestamp": "2026-11-02T09:00:01.000000Z", "event.id": f"bad-{bad_value!r}", "x": bad_value}
        with pytest.raises(StoreRejected) as caught:
            sqlite_store.write_events([good, bad])
        assert caught.value.problems and f"bad-{bad_value!r}" in caught.value.problems[0]
    hits = sqlite_store.search_events(Query(()), 10)
    assert [h["event.id"] for h in hits] == ["good"]
    assert sqlite_store.count_events(Query(())) == 1


def test_explicit_store_folder_must_exist_default_home_is_created(soc_env: Path) -> None:
    missing = soc_env / "no" / "such" / "dir"
    src = soc_env / "one.ndjson"
    src.write_text('{"@timestamp":"2026-11-02T09:00:01Z","message":"m"}\n')
    for args in (["events", "ingest", str(src)], ["events", "search"], ["logs", "ingest", str(src), "-f", "ndjson"]):
        res = runner.invoke(app, [*args, "--store", f"sqlite:///{missing / 'x.db'}"])
        assert res.exit_code == 2, res.output
        assert str(missing) in " ".join(res.stderr.split())
        assert not (soc_env / "no").exists()
    res = runner.invoke(app, ["events", "ingest", str(src), "--no-rules"])  # the default store in $SOC_HOME
    assert res.exit_code == 0, res.output
    assert (soc_env / "home" / "soc.db").is_file()


def test_a_run_refused_for_an_invalid_policy_creates_no_store(soc_env: Path, monkeypatch) -> None:
    policy = soc_env / "broken.yml"
    policy.write_text("levels: [\n")
    monkeypatch.setenv("SOC_POLICY", str(policy))
    src = soc_env / "one.ndjson"
    src.write_text('{"@timestamp":"2026-11-02T09:00:01Z","message":"m"}\n')
    pcap = ROOT / "rules" / "samples" / "demo-ministry.pcap"
    for i, args in enumerate((["sensor", "pcap", str(pcap)], ["events", "ingest", str(src)],
                              ["logs", "ingest", str(src), "-f", "ndjson", "--no-checkpoint"])):
        db = soc_env / f"new{i}.db"
        res = runner.invoke(app, [*args, "--store", f"sqlite:///{db}"])
        assert res.exit_code == 2, res.output
        assert "broken.yml" in res.stderr
        assert not db.exists() and not Path(f"{db}-wal").exists(), args


def test_store_stays_readable_by_sqlite_json_after_ingest(soc_env: Path) -> None:
    """The stored documents are valid JSON to SQLite itself (json_valid), not only to Python."""
    src, db = soc_env / "x.ndjson", soc_env / "soc.db"
    src.write_bytes(b"\n".join([*BAD_LINES, *ODD_GOOD]) + b"\n")
    res = runner.invoke(app, ["events", "ingest", str(src), "--no-rules", "--store", f"sqlite:///{db}"])
    assert res.exit_code == 1, res.output
    rows = sqlite3.connect(db).execute("SELECT json_valid(doc) FROM events").fetchall()
    assert rows == [(1,)] * len(ODD_GOOD)


@pytest.mark.es
@pytest.mark.parametrize("server_name", server_names())
def test_elastic_writer_refuses_a_document_that_is_not_strict_json(server_name: str, tmp_path: Path) -> None:
    server = start_server(server_name, tmp_path)
    try:
        store = server.store()
        store.init()
        good = {"@timestamp": "2026-11-02T09:00:01.000000Z", "event.id": "good", "message": "kept"}
        bad = [{"@timestamp": "2026-11-02T09:00:01.000000Z", "event.id": f"bad{i}", "x": v}
               for i, v in enumerate((math.nan, -math.inf, "\ud800"))]
        with pytest.raises(StoreRejected) as caught:
            store.write_events([good, *bad])
        assert caught.value.new == 1
        assert sorted(p.split(":")[0] for p in caught.value.problems) == ["_id bad0", "_id bad1", "_id bad2"]
        store.refresh()
        assert [h["event.id"] for h in store.search_events(Query(()), 10)] == ["good"]
        store.close()
    finally:
        server.close()
