"""The CLI as a user runs it: ingest, search, store commands, exit codes, and the demo's triage result."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from soc_cli.main import app

runner = CliRunner()


def soc(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture
def ndjson(tmp_path):
    path = tmp_path / "events.ndjson"
    path.write_text(
        '{"@timestamp":"2024-05-01T10:00:00Z","event":{"kind":"event","dataset":"soc.flow"},'
        '"source":{"ip":"10.1.2.3","port":51000},"destination":{"ip":"192.0.2.10","port":443},"message":"beacon out"}\n'
        "this is not json\n"
        '["a list"]\n'
        '{"event":{"kind":"event"}}\n'
        '{"@timestamp":"2024-05-01T10:05:00Z","event.kind":"event","event.dataset":"soc.dns",'
        '"source.ip":"2001:db8::5","destination.ip":"2001:db8::53","dns.question.name":"x.exfil.example"}\n'
    )
    return path


def test_ingest_reports_bad_lines_and_keeps_the_rest(soc_env, ndjson):
    r = soc("events", "ingest", str(ndjson), "--json")
    assert r.exit_code == 1
    summary = _lines(r.stdout)[-1]
    assert (summary["events_in"], summary["written"], summary["bad_lines"]) == (2, 2, 3)
    for line in (2, 3, 4):
        assert f"{ndjson}:{line}:" in r.stderr
    again = soc("events", "ingest", str(ndjson), "--json")
    assert _lines(again.stdout)[-1]["duplicates"] == 2  # a retry never duplicates


def test_search_json_is_nested_ndjson(soc_env, ndjson):
    soc("events", "ingest", str(ndjson))
    r = soc("events", "search", "source.ip:2001:db8::/64", "--json")
    assert r.exit_code == 0
    (doc,) = _lines(r.stdout)
    assert doc["dns"]["question"]["name"] == "x.exfil.example" and doc["event"]["id"]
    assert _lines(soc("events", "search", "beacon", "--count", "--json").stdout) == [{"count": 1}]
    r = soc("events", "search", "--since", "2024-05-01T10:01:00Z", "--json")
    assert [d["event"]["dataset"] for d in _lines(r.stdout)] == ["soc.dns"]


def test_bad_inputs_exit_2_with_a_reason(soc_env, tmp_path):
    r = soc("--store", "ftp://nowhere", "events", "search")
    assert r.exit_code == 2 and "unknown scheme 'ftp'" in r.stderr
    r = soc("events", "search", "destination.port:>=ten")
    assert r.exit_code == 2 and "not a number" in r.stderr
    other = tmp_path / "other.db"
    import sqlite3

    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    r = soc("store", "status", "--store", f"sqlite:///{other}")
    assert r.exit_code == 2 and "not a soc database" in r.stderr


def test_store_init_status_replay(soc_env):
    assert soc("store", "init").exit_code == 0
    r = soc("store", "status", "--json")
    info = _lines(r.stdout)[0]
    assert r.exit_code == 0 and info["healthy"] and info["events"] == 0 and info["spool"]["batches"] == 0
    assert _lines(soc("store", "replay", "--json").stdout)[0]["events"] == 0


# The attacks crafted into rules/samples/demo-ministry.pcap (see make_demo_pcap.py): (source, destination, words).
ATTACKS = [
    ("203.0.113.66", "172.16.10.10", "port scan"),
    ("203.0.113.77", "10.1.0.22", "ssh brute force"),
    ("10.10.5.23", "10.1.0.53", "dns tunnelling"),
    ("10.10.7.7", "8.8.8.8", "unsanctioned resolver"),
    ("10.20.9.9", "198.51.100.99", "icmp tunnelling"),
    ("10.1.0.80", "198.51.100.23", "accredited below"),  # write-down of secret HR data to the internet
    ("10.20.3.4", "10.1.0.80", "protection profile"),  # cleartext HTTP to the secret HR system
    ("10.20.3.4", "10.1.0.80", "basic credentials"),  # ... carrying HTTP Basic credentials
]
NORMAL_HOSTS = [f"10.10.1.{i}" for i in range(10, 30)] + [f"10.20.2.{i}" for i in range(20, 40)] + ["172.16.10.10"]


def test_demo_finds_every_crafted_attack_and_nothing_on_normal_traffic(soc_env):
    r = soc("demo", "--json")
    assert r.exit_code == 0, r.stderr
    alerts = [a for a in _lines(r.stdout) if "rule_id" in a or "title" in a]
    assert alerts, r.stdout
    for src, dst, words in ATTACKS:
        hits = [a for a in alerts if {a.get("source.ip"), a.get("destination.ip")} == {src, dst}
                and words in a["title"].lower().replace("-", " ")]
        assert hits, f"no '{words}' alert between {src} and {dst}: {[a['title'] for a in alerts]}"
    for a in alerts:
        if "scan" in a["title"].lower() or "bad ip" in a["title"].lower():
            continue  # the scanner's target is a normal host
        assert a.get("source.ip") not in NORMAL_HOSTS and a.get("destination.ip") not in NORMAL_HOSTS, a
    assert len(alerts) <= 20  # grouped: a handful of alerts, not one per packet
    rerun = soc("demo", "--json")
    assert len([a for a in _lines(rerun.stdout) if "title" in a]) == len(alerts)  # idempotent
