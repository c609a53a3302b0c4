"""Red team: over every read path, nothing above the reader's clearance leaks (counts included); classified reads
are audited; the audit chain detects and locates tampering; clearance comes from flag > env > config > policy."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from correlator.alerts import build_alert
from correlator.pipeline import Pipeline
from correlator.policy import PolicyDetector, PolicyEngine
from correlator.policy.detect import PolicyRule
from correlator.query import Clearance, Query
from correlator.store import open_store
from soc_cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def reader_is_soc_admin(monkeypatch):
    """The red team reads as the policy's `soc-admin` (top-secret), lowering its clearance per test."""
    monkeypatch.setattr("correlator.audit.current_actor", lambda: "soc-admin")
INTERNET = "185.220.101.7"
# (source, destination, port, tls version) -> flows at every level, some of them violations
FLOWS = [
    (INTERNET, "172.16.10.10", 443, "1.3"),       # public, allowed
    ("10.10.3.3", "10.10.5.10", 443, "1.2"),      # restricted, allowed
    ("10.20.3.3", "10.10.5.10", 443, "1.2"),      # restricted, cross-organization
    ("10.20.3.3", "10.1.0.10", 443, "1.3"),     # secret, allowed
    ("10.10.3.3", "10.1.0.10", 443, "1.3"),     # secret, write-down + cross-org + caveat
    ("10.20.3.3", "10.20.200.5", 443, "1.3"),     # top-secret (enclave), allowed
    ("10.40.3.3", "10.20.200.5", 443, "1.3"),     # top-secret, write-down + cross-org
    (INTERNET, "10.20.200.5", 443, "1.3"),        # top-secret to the internet
]
HUNT_RULE = """\
title: Any TCP flow
id: 5b0f4a8e-1c7e-4f0e-9f5e-3d1b2a7c9e01
status: test
logsource:
    category: firewall
detection:
    sel:
        network.transport: tcp
    condition: sel
level: low
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory, policy):
    """A store holding labelled events at every level, policy alerts, a Sigma-style alert and unlabelled items."""
    tmp = tmp_path_factory.mktemp("redteam")
    uri = f"sqlite:///{tmp / 'soc.db'}"
    store = open_store(uri)
    store.init()
    now = datetime.now(UTC) - timedelta(minutes=30)
    events = []
    for i, (src, dst, port, ver) in enumerate(FLOWS):
        for k, ds in enumerate(("soc.flow", "soc.tls")):
            ev = {"@timestamp": (now + timedelta(seconds=10 * i + k)).isoformat().replace("+00:00", "Z"),
                  "event.kind": "event", "event.dataset": ds, "event.sequence": 2 * i + k, "observer.name": "t",
                  "source.ip": src, "destination.ip": dst, "source.port": 40000 + i, "destination.port": port,
                  "network.transport": "tcp"}
            if ds == "soc.tls":
                ev |= {"tls.version": ver, "network.protocol": "tls"}
            else:
                ev |= {"network.protocol": "tls", "soc.flow.state": "established"}
            events.append(ev)
    engine = PolicyEngine(policy)
    Pipeline(store, enrichers=[engine.enrich], detectors=[PolicyDetector(engine)]).run(events)
    # an unlabelled event (no policy ran on it: rank 0 by contract) and a Sigma-style alert over classified events
    Pipeline(store).run([{"@timestamp": now.isoformat().replace("+00:00", "Z"), "event.dataset": "compliance.check",
                          "message": "unlabelled", "network.transport": "tcp"}])
    top = store.search_events(Query((Clearance(3),)), 1000)
    secret_inputs = [e for e in top if e.get("gov.label.rank") == 3][:2]
    rule = PolicyRule("sigma-test", "Sigma-style alert on top-secret traffic", level="high")
    store.write_alerts([build_alert(rule, secret_inputs[-1], {"destination.ip": "10.20.200.5"},
                                    secret_inputs[0]["@timestamp"], "test", secret_inputs)])
    # incidents: 1 groups every alert (top-secret), 2 the restricted ones (correlator.incidents, as soc-admin)
    from correlator import incidents
    from correlator.gate import open_gate

    gate = open_gate(store, policy, "soc-admin")
    everything = gate.search_alerts(Query(), 1000).items
    incidents.create(gate, "every alert", everything)
    incidents.create(gate, "restricted alerts", [a for a in everything if a.get("gov.label.rank") == 1])
    truth_events = [int(e.get("gov.label.rank") or 0) for e in store.search_events(Query(), 10_000)]
    truth_alerts = {a["soc.alert.uuid"]: int(a.get("gov.label.rank") or 0)
                    for a in store.search_alerts(Query(), 10_000)}
    assert sorted(set(truth_events)) == [0, 1, 2, 3] and sorted(set(truth_alerts.values())) == [1, 2, 3]
    rule_file = tmp / "any_tcp.yml"
    rule_file.write_text(HUNT_RULE)
    store.close()
    return {"uri": uri, "events": truth_events, "alerts": truth_alerts, "rule": rule_file, "tmp": tmp}


def soc(world, *args, clearance: int | None = None, env: dict | None = None):
    argv = list(args) + (["--clearance", str(clearance)] if clearance is not None else [])
    res = runner.invoke(app, ["--store", world["uri"], *argv], env={"SOC_CLEARANCE": None, "SOC_POLICY": None,
                                                                   "SOC_CONFIG": None, **(env or {})})
    return res


def withheld(stderr: str, kind: str) -> int:
    return sum(int(n) for n in re.findall(rf"(\d+) {kind} above your clearance", stderr))


def lines(stdout: str) -> list[dict]:
    return [json.loads(x) for x in stdout.splitlines() if x.strip()]


@pytest.mark.parametrize("clearance", [0, 1, 2, 3])
def test_events_search_and_count(world, clearance):
    above = sum(r > clearance for r in world["events"])
    res = soc(world, "events", "search", "--json", "--limit", "10000", clearance=clearance)
    assert res.exit_code == 0, res.stderr
    got = lines(res.stdout)
    assert len(got) == len(world["events"]) - above
    assert all(int((e.get("gov") or {}).get("label", {}).get("rank") or 0) <= clearance for e in got)
    assert withheld(res.stderr, "events") == above
    res = soc(world, "events", "search", "--count", "--json", clearance=clearance)
    assert json.loads(res.stdout)["count"] == len(world["events"]) - above
    assert withheld(res.stderr, "events") == above
    # a targeted query for the top-secret host only finds what the reader may see
    res = soc(world, "events", "search", "destination.ip:10.20.200.5", "--json", clearance=clearance)
    assert len(lines(res.stdout)) == (6 if clearance >= 3 else 0)
    assert withheld(res.stderr, "events") == (0 if clearance >= 3 else 6)


@pytest.mark.parametrize("clearance", [0, 1, 2, 3])
def test_alerts_list_and_show(world, clearance):
    res = soc(world, "alerts", "list", "--json", "--limit", "1000", clearance=clearance)
    assert res.exit_code == 0, res.stderr
    shown = {a["id"] for a in lines(res.stdout)}
    visible = {u for u, r in world["alerts"].items() if r <= clearance}
    assert shown == visible
    assert withheld(res.stderr, "alerts") == len(world["alerts"]) - len(visible)
    for uuid, rank in world["alerts"].items():
        res = soc(world, "alerts", "show", uuid, "--json", clearance=clearance)
        if rank <= clearance:
            assert res.exit_code == 0 and json.loads(res.stdout)["soc.alert.uuid"] == uuid
        else:
            assert res.exit_code == 1 and uuid not in res.stdout and withheld(res.stderr, "alerts") == 1


@pytest.mark.parametrize("clearance", [0, 1, 2])
def test_hunt(world, clearance):
    full = soc(world, "hunt", str(world["rule"]), "--json", clearance=3)  # top clearance: nothing withheld
    assert full.exit_code == 0, full.stderr + full.stdout
    everything = lines(full.stdout)
    ranks = [int((e.get("gov") or {}).get("label", {}).get("rank") or 0) for e in everything]
    assert set(ranks) == {0, 1, 2, 3}
    res = soc(world, "hunt", str(world["rule"]), "--json", clearance=clearance)
    assert res.exit_code == 0, res.stderr
    got = lines(res.stdout)
    assert sorted(e["event"]["id"] for e in got) == sorted(
        e["event"]["id"] for e, r in zip(everything, ranks, strict=True) if r <= clearance)
    assert withheld(res.stderr, "events") == sum(r > clearance for r in ranks)


@pytest.mark.parametrize("clearance", [0, 1, 3])
def test_share_export_never_exceeds_clearance_or_cap(world, clearance, tmp_path):
    out = tmp_path / "bundle.json"
    res = soc(world, "share", "export", "--tlp", "amber+strict", "--since", "24h", "-o", str(out), "--json",
              clearance=clearance)
    assert res.exit_code == 0, res.stderr
    bundle = json.loads(out.read_text())
    cap = min(clearance, 1)  # the policy shares up to restricted
    national = {o["id"]: o for o in bundle["objects"] if o.get("definition_type") == "statement"}
    for o in bundle["objects"]:
        if o["type"] == "indicator":
            uuid = o["external_references"][0]["external_id"]
            assert world["alerts"][uuid] <= cap
    levels = {o["name"].split(": ")[1] for o in national.values()}
    assert levels <= {"public", "restricted"}
    summary = json.loads(res.stdout)
    assert summary["alerts"] == sum(r <= clearance for r in world["alerts"].values())
    assert withheld(res.stderr, "alerts") == sum(r > clearance for r in world["alerts"].values())
    left = [x for x in res.stderr.splitlines() if x.startswith("left out:")]
    assert sum("above the shareable maximum" in x for x in left) == sum(
        cap < r <= clearance for r in world["alerts"].values())


def test_classified_reads_are_audited_and_chain_verifies(world):
    res = soc(world, "events", "search", "--json", "--limit", "10000", clearance=2)
    assert res.exit_code == 0
    res = soc(world, "audit", "list", "--json", "--action", "read-classified")
    entries = lines(res.stdout)
    assert entries and entries[-1]["details"]["clearance"] == 2 and entries[-1]["details"]["max_rank"] == 2
    assert entries[-1]["details"]["items"] == sum(0 < r <= 2 for r in world["events"])
    before = len(entries)
    soc(world, "events", "search", "source.ip:185.220.101.7", "destination.ip:172.16.10.10", "--json", clearance=2)
    assert len(lines(soc(world, "audit", "list", "--json", "--action", "read-classified").stdout)) == before
    res = soc(world, "audit", "verify")
    assert res.exit_code == 0, res.stderr


def _tampered_copy(world, tmp_path, sql: list[str]) -> str:
    src = world["uri"].removeprefix("sqlite:///")
    dst = tmp_path / "copy.db"
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    with sqlite3.connect(dst) as db:
        db.execute("DROP TRIGGER IF EXISTS audit_no_update")
        db.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        for s in sql:
            db.execute(s)
    return f"sqlite:///{dst}"


@pytest.mark.parametrize("name, sql, needle", [
    ("edit", ["UPDATE audit SET actor = 'someone-else' WHERE seq = 2"],
     "seq=2: content does not match"),
    ("delete", ["DELETE FROM audit WHERE seq = 2"], "seq=3"),
    ("reorder", ["UPDATE audit SET seq = -1 WHERE seq = 2", "UPDATE audit SET seq = 2 WHERE seq = 3",
                 "UPDATE audit SET seq = 3 WHERE seq = -1"], "seq=2"),
])
def test_audit_verify_locates_tampering(world, tmp_path, name, sql, needle):
    for c in (2, 3, 2):  # at least three classified reads in the log
        soc(world, "events", "search", "--json", clearance=c)
    uri = _tampered_copy(world, tmp_path, sql)
    res = runner.invoke(app, ["--store", uri, "audit", "verify"])
    assert res.exit_code == 1, (name, res.stdout)
    assert needle in res.stderr, (name, res.stderr)


def test_clearance_precedence_and_ceiling(world, tmp_path, monkeypatch):
    """Requested clearance (--clearance > SOC_CLEARANCE > config) lowers the policy's mapping of the OS account,
    never raises it: a request above is refused (exit 2) and audited."""

    def who(*args, env=None):
        return runner.invoke(app, [*args, "policy", "whoami", "--json"],
                             env={"SOC_CLEARANCE": None, "SOC_CONFIG": None, **(env or {})})

    def level(*args, env=None):
        res = who(*args, env=env)
        assert res.exit_code == 0, res.stderr
        return json.loads(res.stdout)["clearance"]

    config = tmp_path / "config.yaml"
    config.write_text("clearance: secret\n")
    monkeypatch.setattr("correlator.audit.current_actor", lambda: "soc-analyst")
    assert level() == "restricted"  # the policy maps the OS account
    assert level(env={"SOC_CLEARANCE": "عام"}) == "public"  # lowering is always allowed
    for args, env in (((), {"SOC_CLEARANCE": "secret"}), (("--config", str(config)), None)):
        res = who(*args, env=env)
        assert res.exit_code == 2 and "refused" in res.stderr and "'soc-analyst' is cleared up to 'restricted'" \
            in res.stderr, res.stderr
    monkeypatch.setattr("correlator.audit.current_actor", lambda: "soc-lead")
    assert level("--config", str(config)) == "secret"
    assert level("--config", str(config), env={"SOC_CLEARANCE": "محدود"}) == "restricted"
    monkeypatch.setattr("correlator.audit.current_actor", lambda: "nobody-listed")
    assert level() == "public"  # the policy default
    res = runner.invoke(app, ["policy", "whoami", "--clearance", "cosmic"], env={"SOC_CLEARANCE": None})
    assert res.exit_code == 2 and "unknown clearance 'cosmic'" in res.stderr
    # a refused read on a store: exit 2, nothing printed, and the refusal is in the audit log
    res = soc(world, "events", "search", "--json", clearance=3)
    assert res.exit_code == 2 and res.stdout == "" and "refused" in res.stderr
    monkeypatch.setattr("correlator.audit.current_actor", lambda: "soc-admin")
    refusals = lines(soc(world, "audit", "list", "--json", "--action", "clearance-refused").stdout)
    assert refusals and refusals[-1]["actor"] == "nobody-listed" and refusals[-1]["details"]["requested"] == "3"


def test_actor_is_the_effective_uid_not_the_environment(monkeypatch):
    import os
    import pwd

    from correlator import audit

    monkeypatch.undo()  # the real identity, not the red team's
    monkeypatch.setenv("USER", "soc-admin")
    monkeypatch.setenv("LOGNAME", "soc-admin")
    assert audit.current_actor() == pwd.getpwuid(os.geteuid()).pw_name


def test_withheld_counts_are_exact_beyond_the_page(world):
    """A page of one item still reports every withheld item, not only those of the page."""
    res = soc(world, "events", "search", "--json", "--limit", "1", clearance=0)
    assert len(lines(res.stdout)) == 1
    assert withheld(res.stderr, "events") == sum(r > 0 for r in world["events"])
    res = soc(world, "alerts", "list", "--json", "--limit", "1", clearance=1)
    assert withheld(res.stderr, "alerts") == sum(r > 1 for r in world["alerts"].values())


# --- the red team over every command that reads the store, generated from the Typer app -----------------------------

CORRELATION_RULES = """\
title: Any TCP flow (base)
id: 5b0f4a8e-1c7e-4f0e-9f5e-3d1b2a7c9e02
name: redteam_any_tcp
status: test
logsource:
    category: firewall
detection:
    sel:
        network.transport: tcp
    condition: sel
level: low
---
title: Flows to one destination
id: 5b0f4a8e-1c7e-4f0e-9f5e-3d1b2a7c9e03
status: test
correlation:
    type: event_count
    rules:
        - redteam_any_tcp
    group-by:
        - destination.ip
    timespan: 1h
    condition:
        gte: 1
level: medium
"""
# Commands with --store that print nothing read from it (the reason is the contract a change must keep).
NOT_READING = {
    "store init": "creates the schema; prints the URI",
    "store replay": "writes spooled batches; prints counts of what it wrote",
    "store prune": "deletes events older than an age; prints how many, no content",
    "events ingest": "writes the given file's events; prints counts",
    "sensor pcap": "writes the given capture's events; prints counts",
    "sensor live": "writes captured events; prints counts",
    "logs ingest": "writes the given log's events; prints counts",
    "compliance scan": "writes this host's scan; compares with the previous scan internally, prints this scan only",
    "integrity baseline": "writes this host's baseline of the watched files; prints its entry count",
    "integrity scan": "compares the watched files with the stored baseline internally; prints this scan's changes",
    "integrity web": "fetches the pages now, compares with their stored fingerprints internally; prints this check",
    "audit verify": "prints whether the chain is intact and the seq numbers of problems, no content",
    "audit anchor": "exports the chain's head (seq and hash), no content",
    "triage": "interactive; its reads go through the gate and are tested in tests/triage/test_console.py",
}
# Every other command with --store is a read: how the red team calls it (ALERT is each alert id in turn).
READS = {
    "store status": [["store", "status"]],
    "events search": [["events", "search", "--limit", "10000"], ["events", "search", "--count"],
                      ["events", "search", "network.transport:tcp"], ["events", "search", "--around", "ALERT"]],
    "alerts list": [["alerts", "list", "--limit", "1000"]],
    "alerts show": [["alerts", "show", "ALERT"]],
    # the workflow changes a copy of the world (COPY): an alert above the reader is refused as unknown, a bulk
    # change touches (and names) only what the reader may see
    "alerts ack": [["alerts", "ack", "ALERT", "--store", "COPY"], ["alerts", "ack", "--status", "open", "--store",
                                                                   "COPY"]],
    "alerts start": [["alerts", "start", "ALERT", "--store", "COPY"]],
    "alerts close": [["alerts", "close", "ALERT", "--reason", "other", "--store", "COPY"],
                     ["alerts", "close", "--where", "destination.ip:10.20.200.5", "--reason", "duplicate", "--store",
                      "COPY"]],
    "alerts reopen": [["alerts", "reopen", "ALERT", "--store", "COPY"]],
    "alerts assign": [["alerts", "assign", "ALERT", "soc-analyst", "--store", "COPY"]],
    "alerts note": [["alerts", "note", "ALERT", "a note", "--store", "COPY"]],
    "alerts stats": [["alerts", "stats", "--by", "rule"], ["alerts", "stats", "--by", "organization"]],
    "alerts suppress": [["alerts", "suppress", "--rule", "soc-policy-write-down", "--where",
                         "destination.ip=10.20.200.5", "--reason", "red team", "--store", "COPY"]],
    "alerts suppressions": [["alerts", "suppressions", "--all"]],
    "alerts unsuppress": [["alerts", "unsuppress", "no-such-suppression", "--store", "COPY"]],
    "incident list": [["incident", "list", "--status", "all"]],
    "incident show": [["incident", "show", "1"], ["incident", "show", "2"]],
    # incident changes on a copy of the world: only alerts and incidents the reader may see are grouped or changed
    "incident create": [["incident", "create", "--title", "red", "--where", "event.kind:signal", "--store", "COPY"]],
    "incident add": [["incident", "add", "2", "--where", "event.kind:signal", "--store", "COPY"],
                     ["incident", "add", "1", "--where", "event.kind:signal", "--store", "COPY"]],
    "incident assign": [["incident", "assign", "2", "red", "--store", "COPY"]],
    "incident task": [["incident", "task", "2", "add", "red", "--store", "COPY"]],
    "incident close": [["incident", "close", "2", "--reason", "other", "--store", "COPY"]],
    "pcap extract": [["pcap", "extract", "--incident", "1", "-o", "OUT"], ["pcap", "extract", "--incident", "2", "-o",
                     "OUT"], ["pcap", "extract", "--alert", "ALERT", "-o", "OUT"]],
    "timeline": [["timeline", "--ip", "10.20.200.5"], ["timeline", "--ip", "10.20.3.3", "--ip", "185.220.101.7"],
                 ["timeline", "--incident", "1"], ["timeline", "--incident", "2"]],
    "report daily": [["report", "daily", "--format", "html", "-o", "OUT"], ["report", "daily", "--lang", "ar"]],
    "report weekly": [["report", "weekly", "--format", "md", "-o", "OUT"]],
    "report incident": [["report", "incident", "1", "--format", "json", "-o", "OUT"], ["report", "incident", "2"]],
    "hunt": [["hunt", "RULES"]],
    "compliance report": [["compliance", "report"]],
    "audit list": [["audit", "list", "--limit", "100000"]],
    "share export": [["share", "export", "--tlp", "amber", "--since", "24h", "-o", "OUT"]],
    "demo": [["demo", "--store", "COPY"]],
    # playbooks: a dry run on each alert (an alert above the reader is unknown to it); runs are read through the gate
    "playbook run": [["playbook", "run", "scanning", "--alert", "ALERT", "--store", "COPY"]],
    "playbook runs": [["playbook", "runs"]],
    "playbook show": [["playbook", "show", "run-000000000000"]],
    "playbook approve": [["playbook", "approve", "run-000000000000", "block", "--store", "COPY"]],
    "playbook deny": [["playbook", "deny", "run-000000000000", "block", "--store", "COPY"]],
    "playbook resume": [["playbook", "resume", "run-000000000000", "--store", "COPY"]],
    "playbook undo": [["playbook", "undo", "run-000000000000", "--store", "COPY"]],
}


def _store_commands() -> dict[str, object]:
    import typer.main

    found: dict[str, object] = {}

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, [*path, name])
        elif any(p.name == "store" for p in cmd.params):
            found[" ".join(path)] = cmd

    walk(typer.main.get_command(app), [])
    return found


def test_every_store_command_is_classified():
    """A new command with --store fails here until the red team calls it (READS) or says why it reads nothing."""
    commands = _store_commands()
    unknown = set(commands) - set(READS) - set(NOT_READING)
    assert not unknown, f"classify these commands for the red team: {sorted(unknown)}"
    assert set(READS) | set(NOT_READING) <= set(commands), "the red team names commands that no longer exist"
    for name in READS:  # a read takes the reader's clearance, so the gate can lower it
        assert any(p.name == "clearance" for p in commands[name].params), f"{name}: no --clearance"


def _markers(world, uri: str, clearance: int) -> dict[str, int]:
    """Strings that identify an item above `clearance`: event and alert ids, timestamps, IPs found only there."""
    store = open_store(uri)
    events = store.search_events(Query(), 100_000)
    alerts = store.search_alerts(Query(), 100_000)
    store.close()
    out: dict[str, int] = {}
    below: set[str] = set()
    for item in events + alerts:
        rank = int(item.get("gov.label.rank") or 0)
        values = {str(item.get(k)) for k in ("event.id", "soc.alert.uuid", "@timestamp", "source.ip",
                                             "destination.ip") if item.get(k)}
        if rank > clearance:
            out |= {v: rank for v in values}
        else:
            below |= values
    return {k: v for k, v in out.items() if k not in below}


@pytest.mark.parametrize("clearance", [0, 1, 2])
def test_red_team_every_read_command(world, tmp_path, clearance):
    """At each clearance, in table and --json form, no output of any read command names an item above it, and every
    read that shows classified items leaves a read-classified audit entry."""
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "redteam.yml").write_text(CORRELATION_RULES)
    markers = _markers(world, world["uri"], clearance)
    assert any(r == 3 for r in markers.values()) and (clearance == 2 or any(r == 2 for r in markers.values()))

    def audited() -> int:
        s = open_store(world["uri"])
        n = sum(e["action"] == "read-classified" for e in s.audit_entries())
        s.close()
        return n

    for name, calls in READS.items():
        for call in calls:
            argvs = [[world_alert if a == "ALERT" else a for a in call] for world_alert in world["alerts"]] \
                if "ALERT" in call else [call]
            for argv in argvs:
                for fmt in ([], ["--json"]):
                    out = tmp_path / "out.json"
                    out.unlink(missing_ok=True)
                    store_uri = world["uri"]
                    if "COPY" in argv:  # the demo writes: give it a copy of the world
                        copy = tmp_path / f"copy-{len(fmt)}.db"
                        copy.unlink(missing_ok=True)
                        with sqlite3.connect(world["uri"].removeprefix("sqlite:///")) as a, sqlite3.connect(copy) as b:
                            a.backup(b)
                        store_uri = f"sqlite:///{copy}"
                    args = [{"RULES": str(rules_dir), "OUT": str(out), "COPY": store_uri}.get(a, a) for a in argv]
                    before = audited()
                    res = runner.invoke(app, ["--store", store_uri, *args, *fmt, "--clearance", str(clearance)],
                                        env={"SOC_CLEARANCE": None, "SOC_POLICY": None, "SOC_CONFIG": None})
                    text = res.stdout + res.stderr + (out.read_text() if out.exists() else "")
                    leaked = sorted({m for m in markers if m in text and not any(m in a for a in args)})  # input echoed
                    assert not leaked, f"{name} {args} {fmt} at clearance {clearance} shows items above it: {leaked}"
                    assert "Traceback" not in text, text
                    shown_classified = any(f'"rank":{r}' in res.stdout.replace(" ", "") for r in range(1, 4)) or \
                        any(w in res.stdout for w in ("restricted", "secret")) and "--json" in fmt
                    if shown_classified and clearance > 0 and "COPY" not in argv and name != "audit list" \
                            and "--count" not in argv:
                        assert audited() > before, f"{name} {args} {fmt}: classified items shown, no audit entry"


def test_demo_reads_its_own_store_at_the_top_and_others_at_the_callers(soc_env, monkeypatch, world, tmp_path):
    """`soc demo` writes into $SOC_HOME/demo.db and shows the whole story there; on another store it reads at the
    caller's clearance, like every command."""
    monkeypatch.setattr("correlator.audit.current_actor", lambda: "nobody-listed")  # the policy default: public
    env = {"SOC_CLEARANCE": None, "SOC_POLICY": None, "SOC_CONFIG": None, "SOC_STORE": None}
    res = runner.invoke(app, ["demo", "--json"], env=env)
    assert res.exit_code == 0, res.stderr
    demo_alerts = [x for x in lines(res.stdout) if "id" in x and "severity" in x]
    assert (soc_env / "home" / "demo.db").exists() and not (soc_env / "home" / "soc.db").exists()
    ranks = {int(a.get("gov.label.rank") or 0) for a in open_store(f"sqlite:///{soc_env / 'home' / 'demo.db'}")
             .search_alerts(Query(), 1000)}
    assert max(ranks) >= 2 and len(demo_alerts) == sum(1 for _ in range(len(demo_alerts)))
    own = sqlite3.connect(soc_env / "home" / "demo.db").execute("SELECT count(*) FROM alerts").fetchone()[0]
    assert len(demo_alerts) == min(own, 50)
    # the same demo into another store (a copy of the red team's world) is read at the caller's clearance: public
    copy = tmp_path / "other.db"
    with sqlite3.connect(world["uri"].removeprefix("sqlite:///")) as a, sqlite3.connect(copy) as b:
        a.backup(b)
    res = runner.invoke(app, ["demo", "--json", "--store", f"sqlite:///{copy}"], env=env)
    assert res.exit_code == 0, res.stderr
    shown = {x["id"] for x in lines(res.stdout) if "severity" in x}
    store = open_store(f"sqlite:///{copy}")
    public = {a["soc.alert.uuid"] for a in store.search_alerts(Query((Clearance(0),)), 1000)}
    assert shown and shown <= public
    assert withheld(res.stderr, "alerts") == len(store.search_alerts(Query(), 1000)) - len(public)


def test_withheld_counts_follow_the_policy(world, tmp_path):
    """`clearance.disclose_withheld: false` keeps the count of withheld items to the policy's owners."""
    from tests.policy.conftest import BACKBONE

    quiet = tmp_path / "quiet.yml"
    quiet.write_text(BACKBONE.read_text().replace("clearance:\n", "clearance:\n  disclose_withheld: false\n", 1))
    res = soc(world, "events", "search", "--json", clearance=0, env={"SOC_POLICY": str(quiet)})
    assert res.exit_code == 0 and "withheld" not in res.stderr
    res = soc(world, "events", "search", "--json", clearance=0)
    assert withheld(res.stderr, "events") > 0
    # nothing withheld: no "0 … withheld" line
    res = soc(world, "events", "search", "--json", clearance=3)
    assert res.exit_code == 0 and "withheld" not in res.stderr
