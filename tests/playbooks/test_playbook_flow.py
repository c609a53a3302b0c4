"""Sub-playbooks, parallel branches and timeouts, through the CLI on the demo capture's port-scan alert.

- A playbook-action step runs the called playbook inside the parent's run: the library's `scanning` (dry run and
  execute up to its block's approval), and a called playbook next to the caller's file whose approval, interrupted
  step, out_args and undo go through the parent run; cycles and unknown playbooks are refused with their JSON path.
- A parallel step's branches run at once: two webhooks against a local HTTP server that answers only when both
  requests are open (a barrier, not a clock); a failing branch fails the parallel step and the run.
- A CACAO timeout is real: a webhook to a server that never answers is recorded timed out only once its connection
  is closed (the action got the step's deadline as its socket timeout), not left waiting.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from playbooks import cacao
from tests.playbooks import test_playbook_core as core
from tests.playbooks.actions_world import SCAN
from tests.playbooks.engine_world import Killed, _blocked
from tests.playbooks.test_playbook_core import SCANNER, as_user, lines, respond, run_state, soc

world = core.world  # the fixture: a copy of the demo capture's store, $SOC_HOME in tmp

SCANNING = cacao.read(cacao.find("scanning"))
AGENT = next(iter(SCANNING["agent_definitions"]))


def sid(kind: str) -> str:
    return f"{kind}--{uuid.uuid4()}"


def action(name: str, act: str, args: dict[str, Any], **more: Any) -> dict[str, Any]:
    ext = {"action": act, "args": args, **more.pop("ext", {})}
    return {"type": "action", "name": name, "commands": [{"type": cacao.COMMAND_TYPE}], "agent": AGENT,
            "step_extensions": {cacao.EXT: ext}, **more}


def playbook(name: str, steps: list[tuple[str, dict[str, Any]]], variables: dict[str, Any] | None = None,
             pid: str | None = None) -> dict[str, Any]:
    """A playbook of `steps` ((id, step) in order; each leads to the next unless it says where), after a start step
    and before an end step, with the scanning playbook's agent, extension, marking and alert bindings."""
    doc = {k: v for k, v in json.loads(json.dumps(SCANNING)).items()
           if k not in ("workflow", "workflow_start", "playbook_variables")}
    doc |= {"id": pid or f"playbook--{uuid.uuid4()}", "name": name,
            "playbook_variables": {**{k: v for k, v in SCANNING["playbook_variables"].items() if v.get("external")},
                                   **(variables or {})}}
    start, end = sid("start"), sid("end")
    ids = [start, *(s for s, _ in steps), end]
    wf: dict[str, Any] = {start: {"type": "start", "name": "start", "on_completion": ids[1]}}
    for i, (s, step) in enumerate(steps):
        wf[s] = step if any(k in step for k in cacao.NEXT_KEYS) or step["type"] == "parallel" else \
            step | {"on_success" if step["type"] == "action" else "on_completion": ids[i + 2]}
    wf[end] = {"type": "end", "name": "end"}
    doc |= {"workflow_start": start, "workflow": wf}
    return doc


def write(folder: Path, name: str, doc: dict[str, Any]) -> Path:
    path = folder / f"{name}.yml"
    path.write_text(cacao.to_yaml(doc))
    return path


# -- sub-playbooks -----------------------------------------------------------------------------------------------

def test_a_parent_runs_the_library_scanning_playbook_inside_its_run(world):
    """The parent notes the alert, then calls `scanning` (playbook-action, __source_ip__ passed in): the dry run plans
    the called playbook's steps under the parent's run with the alert's values; executed, the called playbook's
    steps run and its block waits for approval in the parent run, which a deny fails. The parent round-trips
    YAML → CACAO JSON → YAML unchanged and validates."""
    call = sid("playbook-action")
    parent = playbook("parent", [
        (sid("action"), action("mark", "alert.update", {"note": "parent run on __source_ip__"})),
        (call, {"type": "playbook-action", "name": "scan response", "playbook_id": SCANNING["id"],
                "in_args": ["__source_ip__"]}),
    ])
    path = write(world["tmp"], "parent", parent)
    res = soc(world, "playbook", "validate", str(path))
    assert res.exit_code == 0, res.stderr
    out = world["tmp"] / "parent.json"
    assert soc(world, "playbook", "export", str(path), "--cacao", "-o", str(out)).exit_code == 0
    assert json.loads(out.read_text()) == parent
    back = soc(world, "playbook", "import", str(out))
    assert back.exit_code == 0 and back.stdout == path.read_text(), back.stderr

    res = soc(world, "playbook", "run", str(path), "--alert", SCAN, "--json")
    assert res.exit_code == 0, res.stderr
    run, *steps = lines(res.stdout)
    by = {s["step"]: s for s in steps}
    assert run["status"] == "dry-run" and by[call]["status"] == "planned"
    inner = [s for s in steps if s["step"].startswith(call + "/")]
    assert [s["name"] for s in inner] == ["start", "enrich", "search", "note", "high?", "block", "end"]
    block = next(s for s in inner if s["name"] == "block")
    assert block["status"] == "would-wait-approval" and block["args"]["ip"] == SCANNER
    assert f"add element inet soc blocked {{ {SCANNER} timeout 86400s }}" in block["plan"]["commands"][-1]
    text = soc(world, "playbook", "run", str(path), "--alert", SCAN).stdout  # its steps shown under the call
    assert "\n  planned              scan response\n    planned              enrich" in text, text
    assert "\n    would-wait-approval  block  [contain.block_ip] nft -f -; nft add element" in text, text

    res = soc(world, "playbook", "run", str(path), "--alert", SCAN, "--execute", "--json")
    assert res.exit_code == 3, res.stderr
    run, *steps = lines(res.stdout)
    assert run["pending"]["step"] == block["step"]
    assert {s["name"]: s["status"] for s in steps if s["step"].startswith(call + "/") and s["type"] == "action"} \
        == {"enrich": "succeeded", "search": "succeeded", "note": "succeeded", "block": "waiting-approval"}
    res = soc(world, "playbook", "deny", run["id"], "block", "--json")
    assert res.exit_code == 1, res.stderr
    run, *steps = lines(res.stdout)
    assert run["status"] == "failed" and {s["step"]: s["status"] for s in steps}[call] == "failed"
    notes = json.dumps(run_state(world, run["id"])["steps"])
    assert "parent run on 203.0.113.66" in notes


def test_a_called_playbook_waits_resumes_returns_out_args_and_undoes_through_the_parent(world, monkeypatch):
    """A called playbook next to the caller's file: its block waits for an approval given on the parent run by
    another analyst, its next step dies (kill -9) and `resume` continues inside it without repeating a done step;
    its out_arg reaches the parent's next step; `undo` reverts the block it made."""
    respond(world, "two_person_rule: true\napproval_ttl: 600")
    child = playbook("child", [
        (sid("action"), action("count", "test.count", {"key": "c1", "out": "n"}, out_args=["__n__"])),
        (sid("action"), action("block", "test.block", {"ip": "__target__"}, ext={"approval": True})),
        (sid("action"), action("after block", "test.count", {"key": "c2", "die": True})),
    ], {"__target__": {"type": "ipv4-addr"}, "__n__": {"type": "integer", "value": "0"}})
    write(world["tmp"], "child", child)
    call = sid("playbook-action")
    parent = playbook("parent", [
        (call, {"type": "playbook-action", "name": "contain", "playbook_id": child["id"],
                "in_args": ["__target__"], "out_args": ["__n__"]}),
        (sid("action"), action("tally", "test.count", {"key": "parent-__n__"})),
    ], {"__n__": {"type": "integer", "value": "0"}, "__target__": {"type": "ipv4-addr", "external": True}})
    parent["playbook_extensions"][cacao.EXT]["bind"]["__target__"] = "source.ip"  # the child's only from in_args
    path = write(world["tmp"], "parent", parent)
    assert soc(world, "playbook", "validate", str(path)).exit_code == 0

    res = soc(world, "playbook", "run", str(path), "--alert", SCAN, "--execute", "--json")
    assert res.exit_code == 3, res.stderr
    run = lines(res.stdout)[0]
    assert run["pending"]["step"].startswith(call + "/") and _blocked(world["home"]) == []
    assert soc(world, "playbook", "approve", run["id"], "block").exit_code == 2  # two-person rule, in a child too
    as_user(monkeypatch, "soc-lead")
    with pytest.raises(Killed):  # the approved block runs, then the run dies in "after block" (kill -9)
        soc(world, "playbook", "approve", run["id"], "block")
    assert _blocked(world["home"]) == [SCANNER]
    res = soc(world, "playbook", "resume", run["id"], "--json")
    assert res.exit_code == 0, res.stderr
    counts = {p.name: p.read_text() for p in world["home"].glob("count-*")}
    assert counts == {"count-c1": "1", "count-c2": "2", "count-parent-1": "1"}  # __n__ = 1 came back out
    state = run_state(world, run["id"])
    assert state["status"] == "succeeded" and state["steps"][call]["status"] == "succeeded"
    approval = next(r["approval"] for k, r in state["steps"].items() if r.get("name") == "block")
    assert approval["by"] == "soc-lead" and approval["decision"] == "approved"
    assert soc(world, "playbook", "undo", run["id"]).exit_code == 0 and _blocked(world["home"]) == []


def test_cycles_and_unknown_playbooks_are_refused_with_their_path(world):
    """a calls b, b calls a: both reported at the calling step's playbook_id; an unknown id too; nothing runs."""
    a_id, b_id = f"playbook--{uuid.uuid4()}", f"playbook--{uuid.uuid4()}"
    a_call, b_call, lost = sid("playbook-action"), sid("playbook-action"), sid("playbook-action")
    write(world["tmp"], "b", playbook("b", [(b_call, {"type": "playbook-action", "playbook_id": a_id})], pid=b_id))
    a = write(world["tmp"], "a", playbook("a", [
        (a_call, {"type": "playbook-action", "playbook_id": b_id}),
        (lost, {"type": "playbook-action", "playbook_id": f"playbook--{uuid.uuid4()}"})], pid=a_id))
    res = soc(world, "playbook", "validate", str(a), "--json")
    assert res.exit_code == 1
    problems = lines(res.stdout)[0]["problems"]
    assert f"$.workflow['{a_call}'].playbook_id: b: $.workflow['{b_call}'].playbook_id: a cycle between " \
           "playbooks: a → b → a" in problems
    assert any(p.startswith(f"$.workflow['{lost}'].playbook_id: no playbook with id") for p in problems), problems
    res = soc(world, "playbook", "run", str(a), "--alert", SCAN, "--execute")
    assert res.exit_code == 2 and "a cycle between playbooks" in res.stderr
    assert run_state_count(world) == 0


def run_state_count(w: dict) -> int:
    from correlator.store import open_store
    store = open_store(w["uri"])
    try:
        return len(store.records("playbook-run"))
    finally:
        store.close()


# -- parallel branches ---------------------------------------------------------------------------------------------

@pytest.fixture
def barrier_web():
    """A local HTTP server that answers a POST only once two are open at the same time (else, after 20 s, 500)."""
    got: list[str] = []
    both = threading.Barrier(2, timeout=20)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            try:
                both.wait()
                got.append(self.path)
                self.send_response(204)
            except threading.BrokenBarrierError:
                self.send_response(500)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield got, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("failing", [False, True])
def test_parallel_branches_run_at_once_and_join(world, barrier_web, failing):
    """Two webhook branches both get their answer only because both requests were open at once; the step after
    the parallel step starts after both ended. With a third branch that fails, the failure is recorded in its
    branch, the parallel step fails, nothing after it runs and the run is failed (exit 1)."""
    got, base = barrier_web
    par, after = sid("parallel"), sid("action")
    ends = [sid("end") for _ in range(3)]
    branches = [(sid("action"), action(f"hook {n}", "notify.webhook", {"url": f"{base}/{n}"}, on_success=ends[i]))
                for i, n in enumerate("ab")]
    if failing:
        branches.append((sid("action"), action("broken", "test.count", {"key": "x", "fail": True},
                                               on_success=ends[2])))
    doc = playbook("par", [(par, {"type": "parallel", "name": "fan out", "next_steps": [s for s, _ in branches]}),
                           (after, action("after", "test.count", {"key": "after"}))])
    doc["workflow"][par]["on_completion"] = after
    doc["workflow"] |= dict(branches) | {e: {"type": "end"} for e in ends[:len(branches)]}
    path = write(world["tmp"], "par", doc)
    assert soc(world, "playbook", "validate", str(path)).exit_code == 0
    res = soc(world, "playbook", "run", str(path), "--alert", SCAN, "--execute", "--json")
    run, *steps = lines(res.stdout)
    st = {s["name"]: s for s in steps if s.get("name")}
    assert sorted(got) == ["/a", "/b"]
    assert st["hook a"]["status"] == st["hook b"]["status"] == "succeeded", st
    if failing:
        assert res.exit_code == 1 and run["status"] == "failed"
        assert st["broken"]["status"] == "failed" and "failed on purpose" in st["broken"]["error"]
        assert st["fan out"]["status"] == "failed" and sorted(st["fan out"]["branches"].values()) == \
            ["done", "done", "failed"]
        assert "after" not in st and not (world["home"] / "count-after").exists()
    else:
        assert res.exit_code == 0 and run["status"] == "succeeded", res.stderr
        assert st["fan out"]["status"] == "done"
        assert st["after"]["started"] >= max(st["hook a"]["ended"], st["hook b"]["ended"])


def fan_out(world: dict, name: str, branches: list[dict[str, Any]]) -> tuple[Path, dict[str, str]]:
    """A playbook: a parallel step over `branches` (one action each), then the action `after` (test.count)."""
    par, after = sid("parallel"), sid("action")
    ids = {b["name"]: sid("action") for b in branches}
    ends = [sid("end") for _ in branches]
    doc = playbook(name, [(par, {"type": "parallel", "name": "fan out", "next_steps": list(ids.values())}),
                          (after, action("after", "test.count", {"key": "after"}))])
    doc["workflow"][par]["on_completion"] = after
    doc["workflow"] |= {ids[b["name"]]: b | {"on_success": e} for b, e in zip(branches, ends, strict=True)}
    doc["workflow"] |= {e: {"type": "end"} for e in ends}
    return write(world["tmp"], name, doc), ids


def test_an_approval_in_one_branch_waits_while_the_other_finishes(world, monkeypatch):
    """One branch blocks (approval), the other counts: the run waits with the count done and nothing after the
    join; approved from a second shell, the block runs, the join passes, the step after it runs once; undo."""
    path, ids = fan_out(world, "fan-block", [action("block", "test.block", {"ip": "__source_ip__"},
                                                    ext={"approval": True}),
                                             action("count", "test.count", {"key": "c"})])
    res = soc(world, "playbook", "run", str(path), "--alert", SCAN, "--execute", "--json")
    assert res.exit_code == 3, res.stderr
    run = lines(res.stdout)[0]
    assert run["pending"]["step"] == ids["block"] and _blocked(world["home"]) == []
    assert (world["home"] / "count-c").read_text() == "1" and not (world["home"] / "count-after").exists()
    as_user(monkeypatch, "soc-lead")
    res = soc(world, "playbook", "approve", run["id"], "block", "--json")
    assert res.exit_code == 0, res.stderr
    assert lines(res.stdout)[0]["status"] == "succeeded" and _blocked(world["home"]) == [SCANNER]
    assert {p.name: p.read_text() for p in world["home"].glob("count-*")} == {"count-c": "1", "count-after": "1"}
    assert soc(world, "playbook", "undo", run["id"]).exit_code == 0 and _blocked(world["home"]) == []


def test_resume_retries_the_failed_branch_only(world):
    """A branch fails (once): the run fails before the join; resume retries that branch's step, does not repeat
    the other branch, passes the join and runs the step after it."""
    path, _ = fan_out(world, "fan-flaky", [action("flaky", "test.count", {"key": "x", "fail_until": 1}),
                                           action("steady", "test.count", {"key": "y"})])
    res = soc(world, "playbook", "run", str(path), "--alert", SCAN, "--execute", "--json")
    run = lines(res.stdout)[0]
    assert res.exit_code == 1 and run["status"] == "failed"
    res = soc(world, "playbook", "resume", run["id"], "--json")
    assert res.exit_code == 0 and lines(res.stdout)[0]["status"] == "succeeded", res.stderr
    assert {p.name: p.read_text() for p in world["home"].glob("count-*")} == \
        {"count-x": "2", "count-y": "1", "count-after": "1"}


# -- timeouts ------------------------------------------------------------------------------------------------------

def test_a_timed_out_webhook_is_not_left_running(world):
    """A webhook to a server that accepts and never answers, in a step with a 500 ms CACAO timeout: the step is
    recorded timed out, the run failed, and by then the action has closed its connection (its socket timeout was
    the step's remaining time, not its own 30 s)."""
    srv = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []
    threading.Thread(target=lambda: conns.append(srv.accept()[0]), daemon=True).start()
    hook = sid("action")
    doc = playbook("slow", [(hook, action("hook", "notify.webhook",
                                          {"url": f"http://127.0.0.1:{srv.getsockname()[1]}/x"}, timeout=500))])
    path = write(world["tmp"], "slow", doc)
    try:
        res = soc(world, "playbook", "run", str(path), "--alert", SCAN, "--execute", "--json")
        run, *steps = lines(res.stdout)
        [step] = [s for s in steps if s["step"] == hook]
        assert res.exit_code == 1 and run["status"] == "failed"
        assert step["status"] == "failed" and step["error"] == "timed out after 0.5 s", step
        [conn] = conns
        conn.settimeout(10)
        data = b""
        while chunk := conn.recv(65536):  # the request, then end of stream: the client has gone
            data += chunk
        assert data.startswith(b"POST /x ")
        conn.close()
    finally:
        srv.close()


# -- listing runs ----------------------------------------------------------------------------------------------------

def test_runs_lists_the_newest_page(world):
    """`playbook runs` shows the newest --limit runs (100 by default) and says older ones exist; --all shows all."""
    started = [lines(soc(world, "playbook", "run", "scanning", "--alert", SCAN, "--json").stdout)[0]["id"]
               for _ in range(3)]
    res = soc(world, "playbook", "runs", "--limit", "2", "--json")
    assert res.exit_code == 0, res.stderr
    assert [r["id"] for r in lines(res.stdout)] == started[:0:-1]
    assert "older runs not shown: --limit 20 or --all" in res.stderr
    res = soc(world, "playbook", "runs", "--all", "--json")
    assert [r["id"] for r in lines(res.stdout)] == started[::-1] and "older" not in res.stderr
    assert soc(world, "playbook", "runs", "--limit", "0").exit_code == 2


def test_an_action_that_ignores_its_deadline_is_reported_left_running(world):
    """The engine does not wait for an action past its deadline and 1 s of grace: the step fails saying so."""
    slow = sid("action")
    path = write(world["tmp"], "stubborn", playbook("stubborn", [
        (slow, action("stubborn", "test.count", {"key": "s", "stubborn": 10}, timeout=200))]))
    res = soc(world, "playbook", "run", str(path), "--alert", SCAN, "--execute", "--json")
    [step] = [s for s in lines(res.stdout) if s.get("step") == slow]
    assert res.exit_code == 1 and step["error"] == "timed out after 0.2 s; the action ignored its deadline and was " \
        "left running", step
