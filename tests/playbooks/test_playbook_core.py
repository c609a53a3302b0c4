"""The playbook core: CACAO validation (every problem located, nothing run), the library's round trip, and the
engine through the CLI on the alert the sensor raises from the demo capture's port scan (203.0.113.66 →
172.16.10.10, labelled restricted): dry run, approval from a second shell, two-person rule, expiry, deny, protected
assets, resume after an interrupted run without repeating a done step, undo, failures never reported as success."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from correlator.store import open_store
from playbooks import cacao
from playbooks.actions import load_all
from soc_cli.main import app
from tests.playbooks.actions_world import SCAN, seeded
from tests.playbooks.engine_world import Killed, _blocked

SCANNER = "203.0.113.66"  # the demo capture's port scanner (rules/samples/make_demo_pcap.py)
runner = CliRunner()


# -- fixtures ------------------------------------------------------------------------------------------------------

@pytest.fixture
def world(tmp_path, tmp_path_factory, monkeypatch):
    """A copy of the demo capture's store, SOC_HOME in tmp, the runner soc-analyst (restricted)."""
    seed = seeded(tmp_path_factory.getbasetemp())
    db = tmp_path / "soc.db"
    shutil.copy(seed, db)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("SOC_HOME", str(home))
    monkeypatch.setenv("SOC_AUDIT_ANCHOR_FILE", "")
    as_user(monkeypatch, "soc-analyst")
    return {"uri": f"sqlite:///{db}", "home": home, "tmp": tmp_path}


def as_user(monkeypatch: pytest.MonkeyPatch, user: str) -> None:
    monkeypatch.setattr("correlator.audit.current_actor", lambda: user)


def soc(w: dict, *args: str):
    return runner.invoke(app, ["--store", w["uri"], *args], env={"SOC_CLEARANCE": None, "SOC_CONFIG": None,
                                                                 "SOC_POLICY": w.get("policy")})


def respond(w: dict, rules: str) -> None:
    """The shipped policy with its `response:` section replaced by `rules` (YAML lines), in force for `soc`."""
    from soc_cli.common import SHIPPED_POLICY

    text = SHIPPED_POLICY.read_text(encoding="utf-8")
    start, end = text.index("\nresponse:"), text.index("\nclearance:")
    body = "".join(f"  {line}\n" for line in rules.splitlines())
    path = w["tmp"] / f"policy-{uuid.uuid4().hex[:8]}.yml"  # a new name: the CLI caches policies by path
    path.write_text(text[:start] + "\nresponse:\n" + body + text[end:], encoding="utf-8")
    w["policy"] = str(path)


def lines(stdout: str) -> list[dict]:
    return [json.loads(x) for x in stdout.splitlines() if x.startswith("{")]


def scanning(tmp: Path, **steps: dict[str, Any]) -> Path:
    """The library's scanning playbook with some steps' soc action replaced (by step name), as a file."""
    doc = cacao.read(cacao.find("scanning"))
    for step in doc["workflow"].values():
        if step.get("name") in steps:
            step["step_extensions"][cacao.EXT] = steps[step["name"]]
    path = tmp / "scanning-test.yml"
    path.write_text(cacao.to_yaml(doc))
    return path


BLOCK = {"action": "test.block", "args": {"ip": "__source_ip__"}, "approval": True}


def run_state(w: dict, run_id: str) -> dict:
    store = open_store(w["uri"])
    [rec] = [r for r in store.records("playbook-run") if r["id"] == run_id]
    audit = store.audit_entries()
    store.close()
    return json.loads(rec["state"]) | {"audit": audit}


# -- validation and round trip ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(cacao.library()))
def test_library_playbook_valid_and_round_trips(name, tmp_path):
    """Valid against the OASIS schemas and soc's checks; YAML → CACAO JSON (export) → YAML (import) unchanged; it
    carries ATT&CK and NIST SP 800-61 references."""
    path = cacao.library()[name]
    doc = cacao.read(path)
    assert cacao.validate(doc, load_all()) == []
    refs = " ".join(r["name"] for r in doc["external_references"])
    assert "MITRE ATT&CK T" in refs and "NIST SP 800-61" in refs
    out = tmp_path / f"{name}.json"
    assert runner.invoke(app, ["playbook", "export", name, "--cacao", "-o", str(out)]).exit_code == 0
    assert json.loads(out.read_text()) == doc
    back = runner.invoke(app, ["playbook", "import", str(out)])
    assert back.exit_code == 0, back.stderr
    assert back.stdout == path.read_text()


def test_validation_reports_every_problem_at_its_path_and_runs_nothing(world):
    """Six planted defects, one run of `validate`: each is named at its JSON path; `run` refuses, writes no run."""
    doc = cacao.read(cacao.find("scanning"))
    wf = doc["workflow"]
    by = {s.get("name"): sid for sid, s in wf.items()}
    wf[by["enrich"]]["step_extensions"][cacao.EXT]["action"] = "no.such.action"
    del wf[by["block"]]["step_extensions"][cacao.EXT]["approval"]
    wf[by["note"]]["step_extensions"][cacao.EXT]["args"]["note"] = "scan by __attacker__"
    wf[by["search"]]["on_success"] = by["enrich"]  # enrich → search → enrich: a cycle, no while-condition
    orphan = "action--0d2b7a8e-1111-4a2b-9c3d-4e5f6a7b8c9d"
    wf[orphan] = {"type": "action", "name": "orphan", "commands": [{"type": "soc-action"}],
                  "agent": doc["workflow"][by["enrich"]]["agent"], "on_success": by["end"],
                  "step_extensions": {cacao.EXT: {"action": "search"}}}
    doc["spec_version"] = "cacao-1.1"
    bad = world["tmp"] / "bad.json"
    bad.write_text(json.dumps(doc))
    res = soc(world, "playbook", "validate", str(bad), "--json")
    assert res.exit_code == 1
    [report] = lines(res.stdout)
    text = "\n".join(report["problems"])
    assert f"$.workflow['{by['enrich']}'].step_extensions['{cacao.EXT}'].action: unknown action 'no.such.action'" \
        in text
    assert f"$.workflow['{by['block']}'].step_extensions['{cacao.EXT}'].approval: contain.block_ip is destructive" \
        in text
    assert f"$.workflow['{by['note']}'].step_extensions['{cacao.EXT}'].args.note: uses __attacker__" in text
    assert f"$.workflow['{by['search']}']: cycle back to {by['enrich']} outside a while-condition" in text
    assert f"$.workflow['{orphan}']: unreachable from workflow_start" in text
    assert "$.spec_version: 'cacao-1.1' is not one of ['cacao-2.0']" in text  # the OASIS schema's word
    res = soc(world, "playbook", "run", str(bad), "--alert", SCAN, "--execute")
    assert res.exit_code == 2 and "unknown action" in res.stderr
    store = open_store(world["uri"])
    assert store.records("playbook-run") == []
    assert not [e for e in store.audit_entries() if e["action"].startswith("playbook")]


def test_parallel_branches_must_end_at_their_own_end_steps(world):
    """CACAO 2.0: a parallel step's branches each end at an end step of their own. A branch that re-joins the main
    flow, one that runs into a sibling's step, one that leads back to the parallel step and one that stops at an
    action are each named at the JSON path of the offending link or step; the well-formed branch is not."""
    doc = cacao.read(cacao.find("scanning"))
    agent = next(iter(doc["agent_definitions"]))
    ids = {n: _sid(k) for n, k in [("start", "start"), ("par", "parallel"), ("a", "action"), ("b", "action"),
                                   ("c", "action"), ("d", "action"), ("e", "action"), ("end_a", "end"),
                                   ("after", "action"), ("end", "end")]}

    def act(name: str, nxt: str | None) -> dict:
        return {"type": "action", "name": name, "commands": [{"type": cacao.COMMAND_TYPE}], "agent": agent,
                "step_extensions": {cacao.EXT: {"action": "test.count", "args": {"key": name}}},
                **({"on_success": ids[nxt]} if nxt else {})}

    doc["workflow_start"] = ids["start"]
    doc["workflow"] = {
        ids["start"]: {"type": "start", "on_completion": ids["par"]},
        ids["par"]: {"type": "parallel", "next_steps": [ids[k] for k in "abcde"], "on_completion": ids["after"]},
        ids["a"]: act("a", "end_a"), ids["end_a"]: {"type": "end"},  # well-formed
        ids["b"]: act("b", "after"),  # re-joins the main flow
        ids["c"]: act("c", "end_a"),  # ends at branch a's end step
        ids["d"]: act("d", "par"),  # back to the parallel step
        ids["e"]: act("e", None),  # stops at an action
        ids["after"]: act("after", "end"), ids["end"]: {"type": "end"},
    }
    problems = [str(p) for p in cacao.validate(doc, load_all())]
    own = "each branch must end at its own end step"
    assert sorted(problems) == sorted([
        f"$.workflow['{ids['b']}'].on_success: branch 1 of {ids['par']} leads to {ids['after']}, a step of the flow "
        f"outside the parallel step: {own}",
        f"$.workflow['{ids['c']}'].on_success: branch 2 of {ids['par']} leads to {ids['end_a']}, a step of branch 0: "
        f"{own}",
        f"$.workflow['{ids['d']}'].on_success: branch 3 of {ids['par']} leads to {ids['par']}, a step of the flow "
        f"outside the parallel step: {own}",
        f"$.workflow['{ids['e']}']: branch 4 of {ids['par']} stops at this action step: {own}",
        f"$.workflow['{ids['d']}']: cycle back to {ids['par']} outside a while-condition",  # the older check's
    ]), problems
    path = world["tmp"] / "branches.json"
    path.write_text(json.dumps(doc))
    res = soc(world, "playbook", "validate", str(path))
    assert res.exit_code == 1 and f"$.workflow['{ids['b']}'].on_success" in res.stdout + res.stderr
    for k in "bcde":  # each branch led to an end step of its own: valid
        end = _sid("end")
        doc["workflow"][ids[k]]["on_success"] = end
        doc["workflow"][end] = {"type": "end"}
    assert cacao.validate(doc, load_all()) == []


# -- the engine ------------------------------------------------------------------------------------------------------

def test_dry_run_renders_real_values_and_changes_nothing(world):
    """The sensor's port-scan alert: every command rendered with the scanner's address, the condition evaluated on
    the alert's severity, nothing changed (alert notes untouched), the run recorded with the alert's label."""
    before = open_store(world["uri"]).get_alert(SCAN)
    res = soc(world, "playbook", "run", "scanning", "--alert", SCAN, "--json")
    assert res.exit_code == 0, res.stderr
    run, *steps = lines(res.stdout)
    assert run["status"] == "dry-run" and run["gov.label.rank"] == before["gov.label.rank"] == 1
    by = {s["name"]: s for s in steps}
    assert by["enrich"]["args"]["ip"] == [SCANNER, "172.16.10.10"]
    assert by["high?"]["evaluations"] == [before["soc.alert.severity"] in ("medium", "high", "critical")]
    assert by["block"]["status"] == "would-wait-approval"
    assert f"add element inet soc blocked {{ {SCANNER} timeout 86400s }}" in by["block"]["plan"]["commands"][-1]
    after = open_store(world["uri"]).get_alert(SCAN)
    assert after == before
    # above the reader: soc-admin at public clearance does not see the run
    res = soc(world, "playbook", "show", run["id"], "--clearance", "public")
    assert res.exit_code == 1 and SCANNER not in res.stdout and "withheld" in res.stderr


def test_approval_from_a_second_shell_two_person_rule_and_undo(world, monkeypatch):
    respond(world, "two_person_rule: true\napproval_ttl: 600")
    pb = scanning(world["tmp"], block=BLOCK)
    res = soc(world, "playbook", "run", str(pb), "--alert", SCAN, "--execute", "--json")
    assert res.exit_code == 3, res.stderr  # waiting: not a full success
    run = lines(res.stdout)[0]
    assert run["status"] == "waiting" and _blocked(world["home"]) == []
    step = run["pending"]["step"]
    res = soc(world, "playbook", "approve", run["id"], "block")  # the runner cannot approve their own run
    assert res.exit_code == 2 and "two-person rule" in res.stderr and _blocked(world["home"]) == []
    as_user(monkeypatch, "soc-lead")  # the second shell: another analyst
    assert "waiting on" in soc(world, "playbook", "runs").stdout
    res = soc(world, "playbook", "approve", run["id"], step, "--json")
    assert res.exit_code == 0, res.stderr
    assert lines(res.stdout)[0]["status"] == "succeeded" and _blocked(world["home"]) == [SCANNER]
    state = run_state(world, run["id"])
    assert state["steps"][step]["approval"]["by"] == "soc-lead"
    actions = [(e["action"], e["actor"]) for e in state["audit"] if e["action"].startswith("playbook")]
    assert ("playbook-approval", "soc-lead") in actions and ("playbook-run", "soc-analyst") in actions
    res = soc(world, "playbook", "undo", run["id"])
    assert res.exit_code == 0, res.stderr
    assert _blocked(world["home"]) == [] and run_state(world, run["id"])["status"] == "undone"


def test_deny_expiry_and_protected_assets_never_succeed(world, monkeypatch):
    pb = scanning(world["tmp"], block=BLOCK)
    run = lines(soc(world, "playbook", "run", str(pb), "--alert", SCAN, "--execute", "--json").stdout)[0]
    res = soc(world, "playbook", "deny", run["id"], "block")
    assert res.exit_code == 1 and run_state(world, run["id"])["status"] == "failed"
    respond(world, "approval_ttl: 0")
    run = lines(soc(world, "playbook", "run", str(pb), "--alert", SCAN, "--execute", "--json").stdout)[0]
    res = soc(world, "playbook", "approve", run["id"], "block")
    state = run_state(world, run["id"])
    assert res.exit_code == 1 and state["status"] == "failed" and state["steps"][run["pending"]["step"]]["status"] \
        == "expired"
    respond(world, "protected_assets: [203.0.113.0/24]")
    res = soc(world, "playbook", "run", str(pb), "--alert", SCAN, "--json")
    assert [s["status"] for s in lines(res.stdout) if s.get("name") == "block"] == ["refused"]
    res = soc(world, "playbook", "run", str(pb), "--alert", SCAN, "--execute", "--json")  # refused, no approval asked
    assert res.exit_code == 1 and lines(res.stdout)[0]["status"] == "failed"
    block = [s for s in lines(res.stdout)[1:] if s["name"] == "block"][0]
    assert block["status"] == "failed" and "protected asset" in block["error"] and _blocked(world["home"]) == []


def test_resume_after_an_interrupted_run_repeats_no_done_step(world):
    """The search step dies mid-run (kill -9); resume re-runs it and goes on; enrich ran once, search twice."""
    pb = scanning(world["tmp"], enrich={"action": "test.count", "args": {"key": "enrich"}},
                  search={"action": "test.count", "args": {"key": "search", "die": True}}, block=BLOCK)
    with pytest.raises(Killed):
        from correlator.gate import open_gate
        from correlator.policy.loader import load_policy
        from playbooks.engine import Engine
        from soc_cli.common import SHIPPED_POLICY
        store = open_store(world["uri"])
        Engine(open_gate(store, load_policy(SHIPPED_POLICY), "soc-analyst"), home=world["home"]).start(
            str(pb), alert=SCAN, execute=True)
    [rec] = open_store(world["uri"]).records("playbook-run")
    assert rec["status"] == "running"
    res = soc(world, "playbook", "resume", rec["id"], "--json")
    assert res.exit_code == 3, res.stderr  # now waits on the block's approval
    assert (world["home"] / "count-enrich").read_text() == "1"
    assert (world["home"] / "count-search").read_text() == "2"


def test_failed_action_follows_on_failure_and_the_run_fails(world):
    """enrich fails: the run follows its on_failure (the note step, skipping search), goes on to the end, and is
    reported as failed (exit 1) although every later step succeeded."""
    doc = cacao.read(pb := scanning(world["tmp"], enrich={"action": "test.count", "args": {"key": "e", "fail": True}},
                                    search={"action": "test.count", "args": {"key": "s"}},
                                    block={"action": "test.count", "args": {"key": "b"}}))
    by = {s.get("name"): sid for sid, s in doc["workflow"].items()}
    doc["workflow"][by["enrich"]]["on_failure"] = by["note"]
    pb.write_text(cacao.to_yaml(doc))
    res = soc(world, "playbook", "run", str(pb), "--alert", SCAN, "--execute", "--json")
    assert res.exit_code == 1, res.stderr
    run, *steps = lines(res.stdout)
    assert run["status"] == "failed"
    st = {s["name"]: s for s in steps}
    assert st["enrich"]["status"] == "failed" and "failed on purpose" in st["enrich"]["error"]
    assert "search" not in st and st["note"]["status"] == st["block"]["status"] == "succeeded"
    notes = json.dumps(open_store(world["uri"]).get_alert(SCAN))
    assert f"scan from {SCANNER} against 172.16.10.10: playbook scanning" in notes


def test_incident_binds_from_its_alerts(world):
    """--incident N: the variables come from the incident's riskiest alert the reader sees; the run takes the
    incident's label."""
    res = soc(world, "incident", "create", "--title", "scan", "--where", f"source.ip:{SCANNER}", "--json")
    assert res.exit_code == 0, res.stderr
    res = soc(world, "playbook", "run", "scanning", "--incident", "1", "--json")
    assert res.exit_code == 0, res.stderr
    run, *steps = lines(res.stdout)
    assert run["source"] == "incident 1" and run["gov.label.rank"] == 1
    assert [s["args"]["ip"] for s in steps if s["name"] == "block"] == [SCANNER]


def _sid(kind: str) -> str:
    return f"{kind}--{uuid.uuid4()}"


def test_parallel_while_switch_retries_and_timeout(world):
    """A playbook of every control step: both parallel branches run once, the while loop runs its body until its
    condition (on the body's out_arg) is false, the switch takes the case of the loop's count, a flaky step
    succeeds on its third attempt (retries: 2), a step past its CACAO timeout fails the run."""
    doc = cacao.read(cacao.find("scanning"))
    agent = next(iter(doc["agent_definitions"]))
    ids = {n: _sid(k) for n, k in [("start", "start"), ("par", "parallel"), ("a", "action"), ("b", "action"),
                                   ("end_a", "end"), ("end_b", "end"), ("loop", "while-condition"),
                                   ("inc", "action"), ("sw", "switch-condition"), ("flaky", "action"),
                                   ("slow", "action"), ("end", "end")]}

    def act(name: str, args: dict, nxt: str, **more: Any) -> dict:
        return {"type": "action", "name": name, "commands": [{"type": cacao.COMMAND_TYPE}], "agent": agent,
                "on_success": ids[nxt], "step_extensions": {cacao.EXT: {"action": "test.count", "args": args,
                                                                          **more.pop("ext", {})}}, **more}

    doc["playbook_variables"]["__n__"] = {"type": "integer", "value": "0"}
    doc["workflow_start"] = ids["start"]
    doc["workflow"] = {
        ids["start"]: {"type": "start", "on_completion": ids["par"]},
        ids["par"]: {"type": "parallel", "next_steps": [ids["a"], ids["b"]], "on_completion": ids["loop"]},
        ids["a"]: act("a", {"key": "a"}, "end_a"), ids["b"]: act("b", {"key": "b"}, "end_b"),
        ids["end_a"]: {"type": "end"}, ids["end_b"]: {"type": "end"},
        ids["loop"]: {"type": "while-condition", "name": "loop", "condition": "__n__ < 3", "on_true": ids["inc"],
                      "on_completion": ids["sw"]},
        ids["inc"]: act("inc", {"key": "n", "out": "n"}, "loop", out_args=["__n__"]),
        ids["sw"]: {"type": "switch-condition", "name": "sw", "switch": "__n__",
                    "cases": {"3": ids["flaky"], "default": ids["end"]}, "on_completion": ids["end"]},
        ids["flaky"]: act("flaky", {"key": "f", "fail_until": 2}, "slow", ext={"retries": 2, "backoff": 0.01}),
        ids["slow"]: act("slow", {"key": "s", "sleep": 2}, "end", timeout=200),
        ids["end"]: {"type": "end"},
    }
    pb = world["tmp"] / "control.json"
    pb.write_text(json.dumps(doc))
    assert cacao.validate(doc, load_all()) == []
    res = soc(world, "playbook", "run", str(pb), "--alert", SCAN, "--execute", "--json")
    run, *steps = lines(res.stdout)
    st = {s.get("name"): s for s in steps}
    assert res.exit_code == 1, str([(s.get("name"), s.get("status"), s.get("error")) for s in steps])
    counts = {k: (world["home"] / f"count-{k}").read_text() for k in "abnf"}
    assert counts == {"a": "1", "b": "1", "n": "3", "f": "3"}
    assert st["loop"]["evaluations"] == [True, True, True, False] and st["sw"]["value"] == "3"
    assert st["flaky"]["status"] == "succeeded" and st["flaky"]["attempts"] == 3
    assert st["slow"]["status"] == "failed" and st["slow"]["error"] == "timed out after 0.2 s"
    assert run["status"] == "failed"


@pytest.mark.parametrize("name", sorted(cacao.library()))
def test_library_playbook_dry_run_and_execute_on_the_scan_alert(world, name):
    """Each library playbook on the sensor's port-scan alert: the dry run plans every action with the alert's
    values (no variable left unrendered, no plan error) and changes nothing; executed, every non-destructive action
    succeeds for real (store, evidence, packages under $SOC_HOME) and a destructive one waits for approval, which a
    deny turns into a failed run. (No protected assets here: the shipped policy's are tested below.)"""
    respond(world, "approval_ttl: 3600")
    before = open_store(world["uri"]).get_alert(SCAN)
    res = soc(world, "playbook", "run", name, "--alert", SCAN, "--json")
    assert res.exit_code == 0, res.stderr
    run, *steps = lines(res.stdout)
    actions = [s for s in steps if s["type"] == "action"]
    assert run["status"] == "dry-run" and actions
    for s in actions:
        assert "plan_error" not in s, s
        assert "__" not in json.dumps(s["args"]), s["args"]
        assert s["status"] == ("would-wait-approval" if s["action"] == "contain.block_ip" else "planned"), s
    assert open_store(world["uri"]).get_alert(SCAN) == before
    assert list(world["home"].rglob("*")) == []  # $SOC_HOME untouched: no file, not even an empty output folder
    res = soc(world, "playbook", "run", name, "--alert", SCAN, "--execute", "--json")
    run, *steps = lines(res.stdout)
    done = {s["name"]: s["status"] for s in steps if s["type"] == "action"}
    destructive = [s["name"] for s in steps if s.get("action") == "contain.block_ip"]
    assert done == {n: "waiting-approval" if n in destructive else "succeeded" for n in done}, steps
    assert res.exit_code == (3 if destructive else 0), res.stderr
    if destructive:
        res = soc(world, "playbook", "deny", run["id"], "block", "--json")
        assert res.exit_code == 1 and lines(res.stdout)[0]["status"] == "failed", res.stderr


def test_the_shipped_policy_protects_the_citizen_portal_from_a_block(world):
    """On the scan alert the exfiltration playbook would block its receiver — the scanned citizen portal, which the
    shipped policy's `response.protected_assets` lists: refused in the dry run, and executed the run fails without
    asking for an approval."""
    res = soc(world, "playbook", "run", "classified-exfiltration", "--alert", SCAN, "--json")
    block = [s for s in lines(res.stdout)[1:] if s.get("action") == "contain.block_ip"]
    assert res.exit_code == 0 and block and all(s["status"] == "refused" for s in block), res.stdout
    res = soc(world, "playbook", "run", "classified-exfiltration", "--alert", SCAN, "--execute", "--json")
    assert res.exit_code == 1 and lines(res.stdout)[0]["status"] == "failed"
    assert _blocked(world["home"]) == []


def test_impact_threshold_makes_every_action_wait_and_settings_are_strict(world):
    """approval_impact: a playbook of that CACAO impact (scanning: 50) stops before its first action."""
    respond(world, "approval_impact: 50")
    res = soc(world, "playbook", "run", "scanning", "--alert", SCAN, "--execute", "--json")
    assert res.exit_code == 3
    run, *steps = lines(res.stdout)
    assert [s["status"] for s in steps if s["type"] == "action"] == ["waiting-approval"]
    assert run["pending"]["step"] == steps[-1]["step"] and steps[-1]["name"] == "enrich"
    respond(world, "protected: [10.0.0.0/8]")  # a typo is a located policy error, not ignored
    res = soc(world, "playbook", "run", "scanning", "--alert", SCAN)
    assert res.exit_code == 2 and ": response.protected: unknown field" in res.stderr, res.stderr
