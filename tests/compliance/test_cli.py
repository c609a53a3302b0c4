"""`soc compliance scan | report | validate` end to end, through the pipeline into a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from correlator.query import Query, Term
from correlator.store import open_store
from soc_cli.main import app
from tests.compliance.test_baseline import BASELINE, GOOD, MUTATIONS

runner = CliRunner()
N_CHECKS = len(MUTATIONS)


@pytest.fixture
def env(tmp_path: Path, soc_env, tls_server):
    store = f"sqlite:///{tmp_path / 'soc.db'}"
    endpoint = tls_server().endpoint
    return {"store": store, "tls": ["--probe-tls", "--var", f"$tls_endpoint={endpoint}"]}


def scan(env, root: Path, *args: str):
    return runner.invoke(app, ["compliance", "scan", "--policy", str(BASELINE), "--root", str(root),
                               "--store", env["store"], *env["tls"], *args])


def stored(env, **terms) -> list[dict]:
    store = open_store(env["store"])
    try:
        return store.search_events(Query(tuple(Term(k.replace("_", "."), v) for k, v in terms.items())), limit=10000)
    finally:
        store.close()


def alerts(env) -> list[dict]:
    store = open_store(env["store"])
    try:
        return store.search_alerts(Query(), limit=1000)
    finally:
        store.close()


def test_scan_stores_state_events_and_alerts_only_on_change(env, make_tree):
    good = make_tree(GOOD)
    res = scan(env, good, "--host", "web01", "--org", "MinFin")
    assert res.exit_code == 0, res.output
    events = stored(env, host_name="web01")
    assert len(events) == N_CHECKS
    assert {(e["event.kind"], tuple(e["event.category"]), e["event.dataset"]) for e in events} == {
        ("state", ("configuration",), "compliance.check")}
    assert alerts(env) == []                                       # the first scan is the baseline

    assert scan(env, good, "--host", "web01", "--org", "MinFin").exit_code == 0
    assert alerts(env) == []                                       # unchanged: no alert

    bad = make_tree(GOOD, MUTATIONS[10001][0][0])
    res = scan(env, bad, "--host", "web01", "--org", "MinFin")
    assert res.exit_code == 1                                      # a failed check at/above low
    (alert,) = alerts(env)
    assert alert["rule.id"] == "10001" and alert["soc.alert.severity"] == "high"
    assert "changed from passed to failed" in alert["soc.alert.reason"]
    assert alert["soc.compliance.check.evidence"] == ["permitrootlogin yes (/etc/ssh/sshd_config.d/00-local.conf:1)"]

    assert scan(env, good, "--host", "web01", "--org", "MinFin").exit_code == 0
    reasons = sorted(a["soc.alert.reason"] for a in alerts(env))
    assert len(reasons) == 2 and "changed from failed to passed" in reasons[0]
    assert len(stored(env, host_name="web01")) == 4 * N_CHECKS


def test_fail_on_threshold(env, make_tree):
    bad = make_tree(GOOD, MUTATIONS[10004][0][0])                  # X11Forwarding: a low-severity check
    assert scan(env, bad, "--no-store").exit_code == 1
    assert scan(env, bad, "--no-store", "--fail-on", "medium").exit_code == 0
    worse = make_tree(GOOD, MUTATIONS[10001][0][0])                # root login: high
    assert scan(env, worse, "--no-store", "--fail-on", "high").exit_code == 1
    assert scan(env, worse, "--no-store", "--fail-on", "critical").exit_code == 0


def test_json_and_reports(env, make_tree, tmp_path: Path):
    root = make_tree(GOOD, MUTATIONS[10103][0][0])
    res = scan(env, root, "--no-store", "--json", "--host", "db01")
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(lines) == N_CHECKS
    failed = [d for d in lines if d["soc"]["compliance"]["check"]["result"] == "failed"]
    assert [d["rule"]["id"] for d in failed] == ["10103"] and failed[0]["event"]["outcome"] == "failure"

    md, html = tmp_path / "r.md", tmp_path / "r.html"
    assert scan(env, root, "--no-store", "--format", "md", "-o", str(md)).exit_code == 1
    text = md.read_text()
    assert "| 10103 | high | failed |" in text and "## Findings" in text
    assert "Remediation: Enable pam_pwquality" in text and "- `minlen 8 (/etc/security/pwquality.conf:1)`" in text
    assert scan(env, root, "--no-store", "--format", "html", "-o", str(html)).exit_code == 1
    assert '<tr class="failed"><td>10103</td>' in html.read_text()


def test_report_rolls_up_latest_scan_per_host(env, make_tree):
    good, bad = make_tree(GOOD), make_tree(GOOD, MUTATIONS[10001][0][0], MUTATIONS[10201][0][0])
    scan(env, bad, "--host", "a1", "--org", "MinA")
    scan(env, good, "--host", "a1", "--org", "MinA")               # a1's latest scan is clean
    scan(env, bad, "--host", "a2", "--org", "MinA")
    scan(env, good, "--host", "b1", "--org", "MinB")
    res = runner.invoke(app, ["compliance", "report", "--by", "org", "--json", "--store", env["store"]])
    assert res.exit_code == 0, res.output
    rows = {r["org"]: r for r in map(json.loads, res.stdout.splitlines())}
    assert rows["MinA"]["hosts"] == 2 and rows["MinA"]["scans"] == 2
    assert (rows["MinA"]["passed"], rows["MinA"]["failed"]) == (2 * N_CHECKS - 2, 2)
    assert rows["MinA"]["score"] == round(100 * (2 * N_CHECKS - 2) / (2 * N_CHECKS), 1)
    assert rows["MinB"]["score"] == 100.0
    res = runner.invoke(app, ["compliance", "report", "--by", "host", "--json", "--store", env["store"]])
    assert {r["host"]: r["failed"] for r in map(json.loads, res.stdout.splitlines())} == {"a1": 0, "a2": 2, "b1": 0}
    later = runner.invoke(app, ["compliance", "report", "--since", "2999-01-01T00:00:00Z", "--json",
                                "--store", env["store"]])
    assert later.exit_code == 0 and later.stdout == ""
    assert runner.invoke(app, ["compliance", "report", "--since", "yesterday", "--store", env["store"]]).exit_code == 2


def test_validate_and_bad_input(env, tmp_path: Path, make_tree):
    bad = tmp_path / "bad.yml"
    bad.write_text("policy: {id: p, name: n, description: d}\nchecks:\n  - id: 1\n    title: t\n"
                   "    condition: all\n    rules: ['q:/etc']\n")
    res = runner.invoke(app, ["compliance", "validate", str(BASELINE), str(bad)])
    assert res.exit_code == 2
    assert f"{bad}:6: checks[0].rules[0]: unknown rule type" in res.output.replace("\n", "")
    assert "ok" in res.output
    assert runner.invoke(app, ["compliance", "validate", str(BASELINE)]).exit_code == 0
    res = runner.invoke(app, ["compliance", "validate", "--json", str(bad), str(tmp_path / "missing.yml")])
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert res.exit_code == 2 and [r["ok"] for r in rows] == [False, False]
    (problem,) = rows[0]["problems"]
    assert problem == {"line": 6, "field": "checks[0].rules[0]", "message": problem["message"]}
    assert "cannot read" in rows[1]["problems"][0]["message"]
    res = runner.invoke(app, ["compliance", "scan", "--policy", str(bad), "--root", str(make_tree(GOOD))])
    assert res.exit_code == 2 and f"{bad}:6:" in res.stderr.replace("\n", "")
    res = runner.invoke(app, ["compliance", "scan", "--policy", str(tmp_path / "none.yml")])
    assert res.exit_code == 2 and "cannot read policy" in res.stderr
    res = runner.invoke(app, ["compliance", "scan", "--var", "x=1", "--no-store"])
    assert res.exit_code == 2


MANY = """\
policy:
  id: p
  name: n
  description: d
  colour: red
checks:
  - id: 1
    title: fine
    condition: all
    rules: ['f:/etc/passwd']
  - id: -4
    title: ''
    condition: most
    rules: ['q:/etc', 'f:$undefined']
  - id: 1
    title: twin
    condition: all
    rules: ['f:/etc/hosts']
"""


def test_validate_reports_every_problem_located(tmp_path: Path):
    """All problems of a file, each `file:line: field: reason` on stderr, in file order; --json lists them too."""
    bad = tmp_path / "many.yml"
    bad.write_text(MANY)
    lines = MANY.splitlines()

    def at(needle: str, fld: str, nth: int = 0) -> str:
        return f"{bad}:{[i for i, x in enumerate(lines, 1) if needle in x][nth]}: {fld}: "

    expected = [at("colour", "policy.colour"), at("id: -4", "checks[1].id"), at("title: ''", "checks[1].title"),
                at("most", "checks[1].condition"), at("q:/etc", "checks[1].rules[0]"),
                at("$undefined", "checks[1].rules[1]"), at("- id: 1", "checks[2].id", nth=1)]
    res = runner.invoke(app, ["compliance", "validate", str(bad), str(BASELINE)])
    assert res.exit_code == 2
    errors = res.stderr.splitlines()
    assert [e[: len(x)] for e, x in zip(errors, expected, strict=True)] == expected, res.stderr
    assert "unknown field" in errors[0] and "'most'" in errors[3] and "undefined variable $undefined" in errors[5]
    assert "duplicate check id 1 (first at line 7)" in errors[6]
    assert res.stdout.startswith(f"ok {BASELINE}")  # the good file is still reported
    rows = [json.loads(line) for line in runner.invoke(app, ["compliance", "validate", "--json", str(bad)]).stdout
            .splitlines()]
    assert [f"{bad}:{p['line']}: {p['field']}: " for p in rows[0]["problems"]] == expected


def test_a_list_as_check_id_is_one_located_problem(tmp_path: Path):
    """`id: []` reached the duplicate-id check as an unhashable key (TypeError, fuzz-found)."""
    bad = tmp_path / "listid.yml"
    bad.write_text(MANY.replace("id: -4", "id: []").replace("- id: 1\n    title: twin", "- id: {}\n    title: twin"))
    res = runner.invoke(app, ["compliance", "validate", str(bad)])
    assert res.exit_code == 2, res.exception
    assert f"{bad}:11: checks[1].id: must be a positive integer" in res.stderr
    assert f"{bad}:15: checks[2].id: must be a positive integer" in res.stderr


def test_world_writable_shadow_is_listed_in_every_output(env, make_tree, tmp_path: Path, monkeypatch):
    """Issue 14's test: a 0666 /etc/shadow fails the shadow check, and the table, --json, md and html name the file
    (so does the world-writable check, whose remediation says "chmod o-w the listed files")."""
    from soc_cli import common

    root = make_tree(GOOD, {"/etc/shadow": ("file", "root:*:19800:0:99999:7:::\n", 0o666)})
    shadow_item = "/etc/shadow: mode 0666, owner root, group root"
    listed = "-rw-rw-rw- /etc/shadow"

    monkeypatch.setattr(common.console, "width", 250)  # a wide terminal: each evidence item on one table line
    res = scan(env, root, "--no-store")
    assert res.exit_code == 1
    rows = {line.split("│")[1].strip(): line for line in res.stdout.splitlines() if line.count("│") > 5}
    assert "failed" in rows["10905"] and shadow_item in rows["10905"]
    assert "failed" in rows["10601"] and listed in rows["10601"]
    assert "passed" in rows["10907"]

    res = scan(env, root, "--no-store", "--json")
    checks = {d["rule"]["id"]: d["soc"]["compliance"]["check"] for d in map(json.loads, res.stdout.splitlines())}
    assert (checks["10905"]["result"], checks["10905"]["evidence"], checks["10905"]["evidence_more"]) == (
        "failed", [shadow_item], 0)
    assert checks["10601"]["evidence"] == [listed]
    assert {cid for cid, c in checks.items() if c["result"] != "passed"} == {"10905", "10601"}
    assert all("evidence" not in c for cid, c in checks.items() if c["result"] == "passed")

    md, html = tmp_path / "shadow.md", tmp_path / "shadow.html"
    assert scan(env, root, "--no-store", "--format", "md", "-o", str(md)).exit_code == 1
    section = md.read_text().split("### 10905 ", 1)[1].split("\n### ", 1)[0]
    assert "(failed, high)" in section and f"- `{shadow_item}`" in section and "chown root:shadow" in section
    assert scan(env, root, "--no-store", "--format", "html", "-o", str(html)).exit_code == 1
    row = next(r for r in html.read_text().splitlines() if r.startswith('<tr class="failed"><td>10905</td>'))
    assert f"<li><code>{shadow_item}</code></li>" in row


def test_evidence_is_capped_with_a_count_and_stored(env, make_tree, tmp_path: Path):
    """25 world-writable files: 20 are listed, "… and 5 more" says the rest, in every output and in the store."""
    from sensors.compliance.scanner import EVIDENCE_CAP

    files = {f"/srv/share/f{i:02}.txt": ("file", "x", 0o666) for i in range(25)}
    root = make_tree(GOOD, files)
    res = scan(env, root, "--json", "--host", "cap01")
    assert res.exit_code == 1
    (check,) = [d["soc"]["compliance"]["check"] for d in map(json.loads, res.stdout.splitlines())
                if d["rule"]["id"] == "10601"]
    assert check["evidence"] == [f"-rw-rw-rw- /srv/share/f{i:02}.txt" for i in range(EVIDENCE_CAP)]
    assert check["evidence_more"] == 25 - EVIDENCE_CAP
    (event,) = stored(env, host_name="cap01", rule_id="10601")
    assert event["soc.compliance.check.evidence"] == check["evidence"]
    assert event["soc.compliance.check.evidence_more"] == 5
    md = tmp_path / "cap.md"
    scan(env, root, "--no-store", "--format", "md", "-o", str(md))
    assert "- … and 5 more" in md.read_text()
    html = tmp_path / "cap.html"
    scan(env, root, "--no-store", "--format", "html", "-o", str(html))
    assert "<li>… and 5 more</li>" in html.read_text()
    table = scan(env, root, "--no-store")
    assert "… and 5 more" in table.stdout


def test_evidence_never_becomes_markup_or_terminal_control(env, make_tree, tmp_path: Path, monkeypatch):
    """A file name is host data: `[bold]`, backticks and an escape character are shown, not interpreted."""
    from soc_cli import common

    name = "/srv/x[bold]`y`\x1b[31m.txt"
    root = make_tree(GOOD, {name: ("file", "x", 0o666)})
    monkeypatch.setattr(common.console, "width", 250)
    res = scan(env, root, "--no-store")
    assert "\x1b" not in res.stdout and "-rw-rw-rw- /srv/x[bold]`y`\\x1b[31m.txt" in res.stdout
    md = tmp_path / "odd.md"
    scan(env, root, "--no-store", "--format", "md", "-o", str(md))
    assert "- ``-rw-rw-rw- /srv/x[bold]`y`\\x1b[31m.txt``" in md.read_text()
