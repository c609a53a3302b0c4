"""The playbook engine: dry run by default, approvals that persist the run, resume, undo, protected assets.

A run is one record of kind `playbook-run` in the store (scalar summary fields for listing, the full state as one
JSON text so arbitrary action outputs never meet an index mapping) and audit entries `playbook-run`,
`playbook-step`, `playbook-approval`, `playbook-undo`. The run carries the label rank of the alert or incident it
was started on; every read of a run goes through the gate (`Gate.filter`).

The engine, not the actions, enforces: approval for destructive steps (and the two-person rule), approval expiry,
protected assets (never contained), timeouts and retries, on_failure, and "a failed step never makes a success".
"""

from __future__ import annotations

import ast
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from correlator.gate import Gate, Read
from correlator.store import data_dir
from playbooks import cacao
from playbooks.actions import Action, ActionError, Context, Result, load_all
from playbooks.cacao import PlaybookError

KIND = "playbook-run"
MAX_LOOPS = 100  # iterations of one while-condition per run
MAX_STEPS = 10_000


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- variables and conditions ----------------------------------------------------------------------------------------

def render(value: Any, variables: dict[str, Any]) -> Any:
    """`value` with every __var__ replaced by its value (a string that is just one variable keeps the value's type)."""
    if isinstance(value, str):
        if cacao.VAR.fullmatch(value) and value in variables:
            return variables[value]
        return cacao.VAR.sub(lambda m: str(variables.get(m.group(0), m.group(0))), value)
    if isinstance(value, dict):
        return {k: render(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, variables) for v in value]
    return value


_NODES = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.Compare, ast.Eq, ast.NotEq,
          ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Constant, ast.Name, ast.Load, ast.List, ast.Tuple)


def condition(text: str, variables: dict[str, Any]) -> bool:
    """Evaluate a condition: comparisons of __variables__ and literals with and/or/not/in (nothing else)."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise PlaybookError(f"condition {text!r}: {exc.msg}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _NODES):
            raise PlaybookError(f"condition {text!r}: {type(node).__name__} is not allowed")
        if isinstance(node, ast.Name) and node.id not in variables:
            raise PlaybookError(f"condition {text!r}: unknown variable {node.id}")
    try:
        return bool(eval(compile(tree, "<condition>", "eval"), {"__builtins__": {}}, dict(variables)))  # noqa: S307
    except (TypeError, ValueError) as exc:
        raise PlaybookError(f"condition {text!r}: {exc}") from None


# -- runs ------------------------------------------------------------------------------------------------------------

class Engine:
    """Runs playbooks for the reader of `gate` (the actor is `gate.reader.user`)."""

    def __init__(self, gate: Gate, home: Path | None = None,
                 registry: dict[str, type[Action]] | None = None) -> None:
        self.gate, self.store, self.policy = gate, gate.store, gate.policy
        self.home = home or data_dir()
        self.rules = self.policy.response  # the policy owners' rules: approvals, protected assets
        self.registry = registry if registry is not None else load_all()
        self.actor = gate.reader.user

    # -- reading runs ------------------------------------------------------------------------------------------------

    def runs(self) -> Read:
        """Every run the reader may see, newest first."""
        docs = sorted(self.store.records(KIND), key=lambda d: d.get("created") or "", reverse=True)
        return self.gate.filter("playbook-runs", [_summary(d) for d in docs], "playbook runs")

    def get(self, run_id: str) -> Read:
        """One run (full state) when it exists and the reader may see it."""
        docs = [d for d in self.store.records(KIND) if d.get("id") == run_id]
        return self.gate.filter("playbook-runs", [_full(d) for d in docs], f"playbook run {run_id}")

    def _load(self, run_id: str) -> dict[str, Any]:
        read = self.get(run_id)
        if not read.items:
            raise PlaybookError(f"no playbook run {run_id} in {self.store.uri}"
                                + (" you may read" if read.withheld else ""))
        return read.items[0]

    # -- starting ----------------------------------------------------------------------------------------------------

    def start(self, name: str, alert: str | None = None, incident: int | None = None, execute: bool = False,
              values: dict[str, str] | None = None) -> dict[str, Any]:
        """Validate the playbook, bind its variables from the alert/incident (then `values`, for variables that
        are not external) and walk it: a dry run unless `execute`."""
        path = cacao.find(name)
        doc = cacao.read(path)
        problems = cacao.validate(doc, self.registry)
        if problems:
            raise PlaybookError(f"{path}: {len(problems)} problem(s)", [str(p) for p in problems])
        source, rank, ref = self._source(alert, incident)
        variables = self._bind(doc, source)
        for var, value in (values or {}).items():
            spec = (doc.get("playbook_variables") or {}).get(var)
            if spec is None or spec.get("external") or spec.get("constant"):
                raise PlaybookError(f"--var {var}: not a settable variable of {path.stem} (declared, not external "
                                    "nor constant)")
            variables[var] = _typed(value, spec.get("type"), var)
        run = {"id": f"run-{uuid.uuid4().hex[:12]}", "playbook": path.stem, "playbook_id": doc["id"],
               "path": str(path), "execute": execute, "actor": self.actor, "alert": alert, "incident": incident,
               "gov.label.rank": rank, "source": ref, "status": "running" if execute else "dry-run",
               "created": _now(), "updated": _now(), "variables": variables, "steps": {}, "order": [],
               "cursor": doc["workflow_start"], "stack": [], "pending": None, "doc": doc}
        self.store.audit("playbook-run", {"run": run["id"], "playbook": run["playbook"], "execute": execute,
                                          "source": ref, "max_rank": rank}, actor=self.actor)
        return self._advance(run)

    def _source(self, alert: str | None, incident: int | None) -> tuple[dict[str, Any], int, str]:
        if (alert is None) == (incident is None):
            raise PlaybookError("give --alert ID or --incident N (one of them)")
        read = self.gate.get_alert(alert) if alert is not None else self.gate.get_incident(int(incident or 0))
        what = f"alert {alert}" if alert is not None else f"incident {incident}"
        if not read.items:
            raise PlaybookError(f"no {what} in {self.store.uri}" + (" you may read" if read.withheld else ""))
        doc = read.items[0]
        if incident is not None:  # variables bind from the incident, else from its riskiest alert the reader sees
            from correlator.incidents import alerts_of
            alerts = alerts_of(self.gate, doc).items
            riskiest = max(alerts, key=lambda a: a.get("soc.alert.risk_score") or 0, default={})
            doc = {k: v for k, v in riskiest.items() if k != "soc.alert.uuid"} | doc
        return doc, int(doc.get("gov.label.rank") or 0), what

    @staticmethod
    def _bind(doc: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
        variables: dict[str, Any] = {"alert": source.get("soc.alert.uuid"), "incident": source.get("soc.incident.id")}
        for var, spec in (doc.get("playbook_variables") or {}).items():
            variables[var] = _typed(spec.get("value"), spec.get("type"), var)
        for var, fieldname in cacao.bindings(doc).items():
            value = source.get(fieldname)
            if value is None:
                raise PlaybookError(f"variable {var} is bound to {fieldname}, which the "
                                    f"{'alert' if 'soc.alert.uuid' in source else 'incident'} does not carry")
            variables[var] = value
        return variables

    # -- approvals, resume, undo --------------------------------------------------------------------------------------

    def decide(self, run_id: str, step: str, approve: bool) -> dict[str, Any]:
        """Approve or deny the step a run waits on, then continue the run in this process."""
        run = self._load(run_id)
        seen, pending = run["updated"], run.get("pending")
        wf = run["doc"]["workflow"]
        if run["status"] != "waiting" or not pending:
            raise PlaybookError(f"run {run_id} is {run['status']}, not waiting for an approval")
        sid = pending["step"]
        if step not in (sid, wf[sid].get("name")):
            raise PlaybookError(f"run {run_id} waits on step {sid} ({wf[sid].get('name')}), not {step}")
        if approve and self.rules.two_person_rule and self.actor == run["actor"]:
            raise PlaybookError(f"two-person rule: {self.actor} started run {run_id} and cannot approve it")
        rec = run["steps"][sid]
        if datetime.now(UTC) > datetime.fromisoformat(pending["expires"]):
            rec.update(status="expired", error=f"approval expired at {pending['expires']}", ended=_now())
            decision = "expired"
        else:
            decision = "approved" if approve else "denied"
            rec["approval"] = {"decision": decision, "by": self.actor, "at": _now()}
            if not approve:
                rec.update(status="denied", ended=_now())
        run["pending"] = None
        run["status"] = "running"
        self._claim(run, seen, "decided")
        self.store.audit("playbook-approval", {"run": run_id, "step": sid, "decision": decision,
                                               "max_rank": run["gov.label.rank"]}, actor=self.actor)
        if decision != "approved":
            run["failed"] = True
            run["cursor"] = wf[sid].get("on_failure")
            if run["cursor"] is None:
                return self._finish(run)
        return self._advance(run)

    def _claim(self, run: dict[str, Any], seen: str, what: str) -> None:
        """Store `run` only if the stored run is still the version this process read (its `updated`): of two
        deciders or resumers at once, one goes on and the other is told."""
        def change(doc: dict[str, Any]) -> dict[str, Any]:
            if doc.get("updated") != seen:
                raise PlaybookError(f"run {run['id']} was {what} meanwhile (now {doc.get('status')})")
            return _summary(run) | {"state": json.dumps(run, default=str)}

        run["updated"] = _now()
        if self.store.modify_record(KIND, run["id"], change) is None:
            raise PlaybookError(f"no playbook run {run['id']} in {self.store.uri}")

    def resume(self, run_id: str) -> dict[str, Any]:
        """Continue an interrupted or failed run from where it stopped; done steps are not repeated."""
        run = self._load(run_id)
        seen = run["updated"]
        if run["status"] in ("succeeded", "dry-run", "undone", "waiting"):
            raise PlaybookError(f"run {run_id} is {run['status']}: nothing to resume")
        if run["status"] == "failed":
            sid = run.get("failed_step")
            if not sid:
                raise PlaybookError(f"run {run_id} failed with no step to retry")
            run["cursor"], run["failed"], run["status"] = sid, False, "running"
            run["steps"][sid]["status"] = "retrying"
        self._claim(run, seen, "resumed or changed")
        self.store.audit("playbook-resume", {"run": run_id, "at": run["cursor"],
                                             "max_rank": run["gov.label.rank"]}, actor=self.actor)
        return self._advance(run)

    def undo(self, run_id: str) -> dict[str, Any]:
        """Run the recorded inverses of the run's done steps, last first."""
        run = self._load(run_id)
        if not run["execute"]:
            raise PlaybookError(f"run {run_id} was a dry run: nothing to undo")
        problems = []
        for sid in reversed(run["order"]):
            rec = run["steps"].get(sid) or {}
            inv = rec.get("inverse")
            if not inv or rec.get("undone"):
                continue
            cls = self.registry.get(inv.get("action"))
            try:
                if cls is None:
                    raise ActionError(f"unknown inverse action {inv.get('action')!r}")
                res = cls().run(self._ctx(run, sid, True), dict(inv.get("args") or {}))
                rec["undone"] = {"at": _now(), "by": self.actor, "outputs": res.outputs}
            except Exception as exc:  # noqa: BLE001 - any action failure is recorded, the others still undone
                problems.append(f"{sid}: {exc}")
                rec["undo_error"] = str(exc)
            self.store.audit("playbook-undo", {"run": run_id, "step": sid, "inverse": inv,
                                               "error": rec.get("undo_error"),
                                               "max_rank": run["gov.label.rank"]}, actor=self.actor)
        run["status"] = "undo-failed" if problems else "undone"
        self._save(run)
        if problems:
            raise PlaybookError(f"run {run_id}: undo failed for {len(problems)} step(s)", problems)
        return run

    # -- walking ------------------------------------------------------------------------------------------------------

    def _ctx(self, run: dict[str, Any], sid: str, execute: bool) -> Context:
        return Context(self.store, self.gate, self.policy, run["id"], sid, execute, run["variables"],
                       int(run["gov.label.rank"]), self.actor, self.home)

    def _advance(self, run: dict[str, Any]) -> dict[str, Any]:
        wf = run["doc"]["workflow"]
        for _ in range(MAX_STEPS):
            sid = run["cursor"]
            if sid is None:
                if run["stack"]:
                    run["cursor"] = run["stack"].pop()
                    continue
                return self._finish(run)
            step = wf[sid]
            kind = step["type"]
            rec = run["steps"].setdefault(sid, {"name": step.get("name"), "type": kind})
            if sid not in run["order"]:
                run["order"].append(sid)
            nxt = step.get("on_success") or step.get("on_completion")
            if kind == "end":
                rec["status"] = "done"
                nxt = None
            elif kind == "start":
                rec["status"] = "done"
            elif kind == "parallel":
                if step.get("on_completion"):
                    run["stack"].append(step["on_completion"])
                run["stack"] += list(reversed(step.get("next_steps") or []))
                rec["status"], nxt = "done", None
            elif kind in ("if-condition", "while-condition"):
                try:
                    value = condition(step["condition"], run["variables"])
                except PlaybookError as exc:
                    run["cursor"] = self._fail(run, sid, step, rec, str(exc))
                    continue
                rec.setdefault("evaluations", []).append(value)
                if kind == "while-condition" and value and len(rec["evaluations"]) > MAX_LOOPS:
                    value = False
                    rec["error"] = f"stopped after {MAX_LOOPS} iterations"
                rec["status"] = "done"
                nxt = step["on_true"] if value else (step.get("on_false") or nxt)
            elif kind == "switch-condition":
                value = str(render(step["switch"], run["variables"]))
                rec.update(status="done", value=value)
                cases = step.get("cases") or {}
                nxt = cases.get(value, cases.get("default", nxt))
            elif kind == "action":
                nxt = self._action(run, sid, step, rec)
                if run["status"] == "waiting":
                    return self._save(run)
            run["cursor"] = nxt
            run["updated"] = _now()
            if run["execute"]:
                self._save(run)  # after each step: a killed run resumes here
        raise PlaybookError(f"run {run['id']}: more than {MAX_STEPS} steps")

    def _action(self, run: dict[str, Any], sid: str, step: dict[str, Any], rec: dict[str, Any]) -> str | None:
        """Plan or run one action step; return the next step (on_failure after a failure)."""
        soc = cacao.soc_step(step) or {}
        cls = self.registry[soc["action"]]
        action = cls()
        args = render(dict(soc.get("args") or {}), run["variables"])
        ok_next = step.get("on_success") or step.get("on_completion")
        ctx = self._ctx(run, sid, run["execute"])
        rec.update(action=cls.name, args=args)
        protected = [v for v in _values(args) if self.rules.protects(v)] if cls.destructive else []
        threshold = self.rules.approval_impact
        needs_approval = bool(soc.get("approval")) or cls.destructive or (
            threshold is not None and int(run["doc"].get("impact") or 0) >= threshold)
        if not run["execute"]:
            try:
                rec["plan"] = action.plan(ctx, args)
            except ActionError as exc:
                rec["plan_error"] = str(exc)
            rec["status"] = "refused" if protected else ("would-wait-approval" if needs_approval else "planned")
            if protected:
                rec["error"] = f"protected asset(s) {', '.join(map(str, protected))}: never contained"
            return ok_next if not protected else (step.get("on_failure") or step.get("on_completion") or ok_next)
        if protected:
            return self._fail(run, sid, step, rec, f"protected asset(s) {', '.join(map(str, protected))}: "
                                                   "never contained")
        approval = rec.get("approval") or {}
        if needs_approval and (approval.get("decision") != "approved" or approval.get("used")):
            expires = datetime.now(UTC) + timedelta(seconds=self.rules.approval_ttl)
            run["pending"] = {"step": sid, "requested": _now(), "expires": expires.isoformat()}
            run["status"] = "waiting"
            rec["status"] = "waiting-approval"
            rec["plan"] = action.plan(ctx, args)
            self.store.audit("playbook-approval-requested", {"run": run["id"], "step": sid, "action": cls.name,
                                                             "args": args, "expires": expires.isoformat(),
                                                             "max_rank": run["gov.label.rank"]}, actor=self.actor)
            return sid
        retries, backoff = int(soc.get("retries") or 0), float(soc.get("backoff") or 1.0)
        timeout = (step.get("timeout") or 0) / 1000 or None  # CACAO: milliseconds
        if needs_approval:
            approval["used"] = True  # one approval, one execution (a loop asks again)
        rec.update(status="running", started=_now())
        self._save(run)
        error = ""
        for attempt in range(retries + 1):
            rec["attempts"] = attempt + 1
            try:
                res = _call(action, ctx, args, timeout)
                break
            except FutureTimeout:
                error = f"timed out after {timeout:g} s"
            except ActionError as exc:
                error = str(exc)
            except Exception as exc:  # noqa: BLE001 - an action bug is a failed step, recorded
                error = f"{type(exc).__name__}: {exc}"
            if attempt < retries:
                time.sleep(backoff * 2 ** attempt)
        else:
            return self._fail(run, sid, step, rec, error)
        outputs = dict(res.outputs) | {"gov.label.rank": run["gov.label.rank"]}
        rec.update(status="succeeded", outputs=outputs, inverse=res.inverse, ended=_now())
        for name in step.get("out_args") or []:
            if name in res.outputs:
                run["variables"][name] = res.outputs[name]
        self.store.audit("playbook-step", {"run": run["id"], "step": sid, "action": cls.name, "args": args,
                                           "status": "succeeded", "inverse": res.inverse,
                                           "max_rank": run["gov.label.rank"]}, actor=self.actor)
        return ok_next

    def _fail(self, run: dict[str, Any], sid: str, step: dict[str, Any], rec: dict[str, Any], error: str) -> str | None:
        rec.update(status="failed", error=error, ended=_now())
        run["failed"], run["failed_step"] = True, sid
        self.store.audit("playbook-step", {"run": run["id"], "step": sid, "action": rec.get("action"),
                                           "status": "failed", "error": error,
                                           "max_rank": run["gov.label.rank"]}, actor=self.actor)
        nxt = step.get("on_failure")
        if nxt is None:
            run["stack"] = []
        return nxt

    def _finish(self, run: dict[str, Any]) -> dict[str, Any]:
        if run["execute"]:
            run["status"] = "failed" if run.get("failed") else "succeeded"
        run["updated"] = _now()
        self.store.audit("playbook-run-end", {"run": run["id"], "status": run["status"],
                                              "max_rank": run["gov.label.rank"]}, actor=self.actor)
        return self._save(run)

    def _save(self, run: dict[str, Any]) -> dict[str, Any]:
        summary = _summary(run)
        self.store.put_record(KIND, run["id"], summary | {"state": json.dumps(run, default=str)})
        return run


_TYPES: dict[str, Any] = {"integer": int, "long": int, "float": float,
                          "bool": lambda v: str(v).lower() in ("true", "1", "yes")}


def _typed(value: Any, kind: Any, var: str) -> Any:
    """A CACAO variable's value (a string in the document) as its declared type."""
    if value is None or str(kind) not in _TYPES or not isinstance(value, str):
        return value
    try:
        return _TYPES[str(kind)](value)
    except ValueError:
        raise PlaybookError(f"variable {var}: {value!r} is not a {kind}") from None


def _call(action: Action, ctx: Context, args: dict[str, Any], timeout: float | None) -> Result:
    if timeout is None:
        return action.run(ctx, args)
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(action.run, ctx, args).result(timeout)
    finally:
        pool.shutdown(wait=False)


def _values(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [x for v in node.values() for x in _values(v)]
    if isinstance(node, list):
        return [x for v in node for x in _values(v)]
    return [node]


SUMMARY = ("id", "playbook", "status", "execute", "actor", "source", "gov.label.rank", "created", "updated")


def _summary(doc: dict[str, Any]) -> dict[str, Any]:
    """The listing fields of a run (a live run or a stored record, which already carries them)."""
    out = {k: doc.get(k) for k in SUMMARY}
    out["waiting_on"] = doc["waiting_on"] if "waiting_on" in doc else (doc.get("pending") or {}).get("step")
    return out


def _full(doc: dict[str, Any]) -> dict[str, Any]:
    return json.loads(doc["state"]) if "state" in doc else doc
