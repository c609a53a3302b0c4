"""soc rules list|validate|convert|coverage, and how bad rule files are reported (file, line, reason)."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from correlator.sigma import SHIPPED_RULES
from soc_cli.main import app

GOOD = """title: Good
id: 5d6c3d2e-1111-4c3b-9a8e-0a1b2c3d4e5f
status: test
description: ok
author: t
date: 2026-01-01
logsource:
    category: proxy
detection:
    sel:
        c-useragent|contains: 'evilbot'
    condition: sel
level: high
tags:
    - attack.command_and_control
    - attack.t1071.001
"""


@pytest.fixture
def runner(soc_env: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("XDG_CACHE_HOME", str(soc_env / "cache"))
    return CliRunner()


def rows(out: str) -> list[dict]:
    return [json.loads(x) for x in out.splitlines() if x.startswith("{")]


def test_list_shipped_rules(runner: CliRunner) -> None:
    res = runner.invoke(app, ["rules", "list", "--json"])
    assert res.exit_code == 0, res.output
    out = rows(res.stdout)
    summary = out[-1]
    assert summary["kind"] == "summary" and summary["unsupported"] == 0 and summary["correlations"] == 6
    titles = {r["title"] for r in out if r["kind"] == "rule"}
    assert "Port Scan - Many Destination Ports From One Source" in titles
    assert "Connection Attempt (flow)" not in titles  # feeds correlations only (generate: false)


def shipped_rule_documents() -> tuple[int, int, int]:
    """Read the shipped rule files with PyYAML alone: (files with rules, rule documents, base rules that only feed
    a correlation: named in a correlation's `rules` without `generate: true`)."""
    import yaml

    files = docs = 0
    feeding: set[str] = set()
    bases: set[str] = set()
    for f in sorted(SHIPPED_RULES.rglob("*.yml")):
        if f.name.startswith("_") or "tests" in f.relative_to(SHIPPED_RULES).parts:
            continue
        found = [d for d in yaml.safe_load_all(f.read_text(encoding="utf-8"))
                 if isinstance(d, dict) and "title" in d and ("detection" in d or "correlation" in d)]
        files += bool(found)
        docs += len(found)
        for d in found:
            if "correlation" in d and not d["correlation"].get("generate"):
                feeding.update(d["correlation"]["rules"])
            elif "detection" in d:
                bases.update(x for x in (d.get("name"), d.get("id")) if x)
    return files, docs, len(feeding & bases)


def test_list_counts_agree_with_the_rule_files(runner: CliRunner) -> None:
    """The table's title, its footer and --json give one count of loaded rules: every rule document."""
    files, docs, feeding = shipped_rule_documents()
    res = runner.invoke(app, ["rules", "list", "--limit", "0"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert f"Sigma rules ({docs} loaded)" in res.stdout
    assert f"{docs - feeding} raise alerts; {feeding} only feed correlations" in res.stdout
    assert f"files {files}: loaded {docs} (correlations " in res.stdout
    out = rows(runner.invoke(app, ["rules", "list", "--json"]).stdout)
    assert (out[-1]["files"], out[-1]["loaded"], out[-1]["alerting"]) == (files, docs, docs - feeding)
    assert len([r for r in out if r["kind"] == "rule"]) == docs - feeding


def test_bad_rules_reported_with_file_line_reason(runner: CliRunner, tmp_path: Path) -> None:
    d = tmp_path / "rules"
    d.mkdir()
    (d / "good.yml").write_text(GOOD)
    (d / "broken_yaml.yml").write_text("title: x\ndetection:\n  sel: [unclosed\n")
    (d / "bad_modifier.yml").write_text(GOOD.replace("c-useragent|contains", "c-useragent|nosuchmod")
                                        .replace("5d6c3d2e-1111", "5d6c3d2e-2222"))
    (d / "no_condition.yml").write_text(GOOD.replace("    condition: sel\n", "").replace("5d6c3d2e-1111",
                                                                                            "5d6c3d2e-3333"))
    res = runner.invoke(app, ["rules", "list", str(d), "--json"])
    assert res.exit_code == 1
    out = rows(res.stdout)
    fails = {Path(r["path"]).name: r for r in out if r["kind"] == "failure"}
    assert set(fails) == {"broken_yaml.yml", "bad_modifier.yml", "no_condition.yml"}
    assert fails["broken_yaml.yml"]["reason"] == "YAML syntax" and fails["broken_yaml.yml"]["line"] >= 3
    assert "nosuchmod" in fails["bad_modifier.yml"]["message"]
    assert fails["bad_modifier.yml"]["line"] == 11  # the detection item's line
    assert out[-1]["loaded"] == 1 and out[-1]["unsupported"] == 3
    res = runner.invoke(app, ["rules", "list", str(d)])
    assert "broken_yaml.yml:" in res.stderr


def test_validate(runner: CliRunner, tmp_path: Path) -> None:
    good = tmp_path / "good.yml"
    good.write_text(GOOD)
    res = runner.invoke(app, ["rules", "validate", str(good), "--json"])
    assert rows(res.stdout)[-1]["load_errors"] == 0
    dup = tmp_path / "dups"
    dup.mkdir()
    (dup / "a.yml").write_text(GOOD)
    (dup / "b.yml").write_text(GOOD.replace("title: Good", "title: Other"))
    res = runner.invoke(app, ["rules", "validate", str(dup), "--json"])
    issues = [r for r in rows(res.stdout) if r.get("kind") == "issue"]
    assert any(i["issue"] == "IdentifierCollisionIssue" for i in issues)
    assert res.exit_code == 1  # an identifier collision is a high-severity issue


@pytest.mark.parametrize("target", ["lucene", "esql", "eql", "sqlite"])
def test_convert(runner: CliRunner, tmp_path: Path, target: str) -> None:
    good = tmp_path / "good.yml"
    good.write_text(GOOD)
    res = runner.invoke(app, ["rules", "convert", str(good), "--target", target, "--json"])
    assert res.exit_code == 0, res.output
    (q,) = rows(res.stdout)
    assert q["target"] == target and "evilbot" in q["query"]
    assert "user_agent.original" in q["query"]  # c-useragent mapped to ECS through the pipeline
    assert "soc.http" in q["query"]  # logsource routed to soc's dataset


def test_convert_unknown_target(runner: CliRunner) -> None:
    res = runner.invoke(app, ["rules", "convert", str(SHIPPED_RULES), "--target", "splunk"])
    assert res.exit_code == 2


def test_coverage(runner: CliRunner) -> None:
    res = runner.invoke(app, ["rules", "coverage", "--json"])
    assert res.exit_code == 0
    techs = {r["technique"]: r for r in rows(res.stdout)}
    assert {"T1046", "T1110.001", "T1071.004", "T1040", "T1095"} <= set(techs)
    assert techs["T1110.001"]["rules"] == 3
    res = runner.invoke(app, ["rules", "convert", "--target", "coverage"])
    assert res.exit_code == 0 and "T1046" in res.stdout


def test_convert_correlation_rule(runner: CliRunner) -> None:
    rule = SHIPPED_RULES / "network" / "net_flow_ssh_brute_force.yml"
    res = runner.invoke(app, ["rules", "convert", str(rule), "--target", "esql", "--json"])
    assert res.exit_code == 0, res.output
    queries = {q["title"]: q["query"] for q in rows(res.stdout)}
    corr = queries["SSH Brute Force - Many Short Or Rejected Sessions"]
    assert "stats event_count=count() by" in corr and "source.ip, destination.ip" in corr and ">= 10" in corr
    res = runner.invoke(app, ["rules", "convert", str(rule), "--target", "lucene"])
    assert res.exit_code == 1  # Lucene has no correlations: said with file and line, the base rule still converts
    assert "net_flow_ssh_brute_force.yml:" in res.stderr and "destination.port:22" in res.stdout


def _logs_table(events: list[dict]) -> sqlite3.Connection:
    """Zircolite's layout: a `logs` table with one column per field, Python's re as REGEXP."""
    fields = sorted({k for e in events for k in e})
    db = sqlite3.connect(":memory:")
    db.create_function("REGEXP", 2, lambda p, v: v is not None and re.search(p, str(v)) is not None)
    db.execute(f"CREATE TABLE logs ({', '.join(json.dumps(f) for f in fields)})")
    db.executemany(f"INSERT INTO logs VALUES ({', '.join('?' * len(fields))})",
                   [[json.dumps(e[f]) if isinstance(e.get(f), (list, dict)) else e.get(f) for f in fields]
                    for e in events])
    return db


@pytest.mark.parametrize("rule", sorted(p.stem for p in (SHIPPED_RULES / "network").glob("*.yml")
                                        if "correlation:" in p.read_text(encoding="utf-8")))
def test_correlation_sql_agrees_with_streaming(runner: CliRunner, rule: str) -> None:
    """`--target sqlite` turns a correlation rule into pySigma's SQL; run over the rule's sample events in a
    `logs` table it fires for exactly the groups the streaming engine fires for."""
    import yaml

    from correlator.events import normalize
    from correlator.sigma.detector import SigmaDetector, SigmaEngine
    from correlator.sigma.loader import load_placeholders
    from correlator.sigma.testing import read_events

    network = SHIPPED_RULES / "network"
    docs = list(yaml.safe_load_all((network / f"{rule}.yml").read_text(encoding="utf-8")))
    rule_id = next(d["id"] for d in docs if "correlation" in d)
    res = runner.invoke(app, ["rules", "convert", str(network), "--target", "sqlite", "--json"])
    assert res.exit_code == 0, res.output
    (sql,) = [q["query"] for q in rows(res.stdout) if q["rule_id"] == rule_id]
    assert sql.startswith("WITH ")
    events = [normalize(e) for f in sorted((SHIPPED_RULES / "tests" / rule).glob("*.ndjson")) for e in read_events(f)]
    events.sort(key=lambda e: e["@timestamp"])
    db = _logs_table(events)
    sql_groups = {json.dumps(json.loads(r[0]), sort_keys=True) for r in db.execute(f"SELECT group_keys FROM ({sql})")}
    det = SigmaDetector(SigmaEngine.load([network], "ecs", load_placeholders([SHIPPED_RULES])))
    streamed = {json.dumps({t["field"]: t["value"] for t in a["soc.alert.suppression.terms"]}, sort_keys=True)
                for a in det.detect(events) if a["soc.alert.rule.uuid"] == rule_id}
    assert streamed and sql_groups == streamed, (sql_groups, streamed)
