"""Suricata EVE alerts and Zeek notices, as the tools wrote them, reach `soc alerts list` through the correlator:
rule = signature / notice type, severity mapped from theirs, folded per key, labelled by the policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from soc_cli.main import app

ROOT = Path(__file__).resolve().parents[2]
EVE = Path(__file__).parent / "data" / "suricata-eve-alert.json"
MASKED_TS = "XXXXXXXXXX.XXXXXX"  # btest masks Zeek's timestamps
runner = CliRunner()


def _soc(store: str, *args: str):
    res = runner.invoke(app, ["--store", store, *args], env={"SOC_CLEARANCE": None, "SOC_CONFIG": None})
    return res


@pytest.fixture(autouse=True)
def top_reader(monkeypatch, soc_env):
    """The policy's top reader, in a home of its own (log checkpoints)."""
    monkeypatch.setattr("correlator.audit.current_actor", lambda: "soc-admin")


def test_suricata_alerts_join_the_queue_folded_per_key(tmp_path):
    """The real record twice more (another flow of the same pair, then another client), plus the project's demo EVE:
    one alert per (signature, source, destination), its count the records folded in, severity 2 → medium."""
    record = json.loads(EVE.read_text())
    again = record | {"timestamp": "2022-01-11T18:58:00.000000+0000", "src_port": 59011, "flow_id": 2}
    other = record | {"timestamp": "2022-01-11T18:58:30.000000+0000", "src_ip": "10.0.2.16", "flow_id": 3}
    log = tmp_path / "eve.json"
    log.write_text("".join(json.dumps(r) + "\n" for r in (record, again, other)))
    store = f"sqlite:///{tmp_path / 'soc.db'}"
    for path in (log, ROOT / "rules" / "samples" / "demo-eve.json"):
        res = _soc(store, "logs", "ingest", str(path), "--format", "suricata-eve")
        assert res.exit_code == 0, res.stderr
    res = _soc(store, "alerts", "list", "--json")
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    suricata = sorted((r["rule_id"], r["title"], r["severity"], r["count"], r.get("source.ip")) for r in rows
                      if r["rule_id"].startswith("suricata:"))
    assert suricata == [
        ("suricata:1:2001219", "ET SCAN Potential SSH Scan", "medium", 1, "203.0.113.66"),
        ("suricata:1:2013028", "ET POLICY curl User-Agent Outbound", "medium", 1, "10.0.2.16"),
        ("suricata:1:2013028", "ET POLICY curl User-Agent Outbound", "medium", 2, "10.0.2.15"),
    ]
    # the alert names its category and keeps the events it came from
    uuid = next(r["id"] for r in rows if r["count"] == 2 and r["rule_id"].startswith("suricata:"))
    shown = json.loads(_soc(store, "alerts", "show", uuid, "--json").stdout)
    assert shown["soc.alert.rule.description"] == \
        "suricata: ET POLICY curl User-Agent Outbound (Attempted Information Leak)"
    assert len(shown["soc.alert.ancestors"]) == 2 and shown["related.ip"] == ["10.0.2.15", "31.3.245.133"]


@pytest.mark.corpus
@pytest.mark.parametrize("case, notices", [
    ("zk_ssh-bruteforce/zeek_scripts.policy.protocols.ssh.detect-bruteforcing_notice.log",
     [("zeek:SSH::Password_Guessing", "medium", "192.168.56.1", None)]),
    ("zk_ftp-bruteforce/zeek_scripts.policy.protocols.ftp.bruteforce_notice.log",
     [("zeek:FTP::Bruteforcing", "medium", "192.168.56.1", None)]),
    ("zk_http-dvwa-login/zeek_scripts.policy.protocols.http.sql-injection-plus-dvwa2_notice.log",
     [("zeek:HTTP::SQL_Injection_Attacker", "high", "192.168.111.148", "192.168.111.154"),
      ("zeek:HTTP::SQL_Injection_Victim", "high", "192.168.111.148", "192.168.111.154")]),
])
def test_zeek_notices_join_the_queue(corpus, tmp_path, case, notices):
    """Zeek's own notice.log baselines (timestamps masked by btest: a fixed time put back)."""
    log = tmp_path / "notice.log"
    log.write_text((corpus / "pcaps" / "expected" / case).read_text().replace(MASKED_TS, "1700000000.000000"))
    store = f"sqlite:///{tmp_path / 'soc.db'}"
    res = _soc(store, "logs", "ingest", str(log), "--format", "zeek")
    assert res.exit_code == 0, res.stderr
    rows = [json.loads(x) for x in _soc(store, "alerts", "list", "--json").stdout.splitlines()]
    got = sorted((r["rule_id"], r["severity"], r.get("source.ip"), r.get("destination.ip")) for r in rows
                 if r["rule_id"].startswith("zeek:"))
    assert got == notices
    text = [line for line in log.read_text().splitlines() if not line.startswith("#")]
    for r in rows:
        if r["rule_id"].startswith("zeek:"):
            reason = json.loads(_soc(store, "alerts", "show", r["id"], "--json").stdout)["soc.alert.reason"]
            assert any(reason in line.split("\t") for line in text), reason  # Zeek's msg, verbatim
