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
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from correlator.gate import Gate, Read
from correlator.store import data_dir
from correlator.store.base import Store
from playbooks import cacao
from playbooks.actions import Action, ActionError, Context, Result, load_all
from playbooks.cacao import PlaybookError

KIND = "playbook-run"
MAX_LOOPS = 100  # iterations of one while-condition per run
MAX_STEPS = 10_000
GRACE = 1.0  # seconds an action may run past its step's deadline before it is reported left running
MAIN = "main"  # the run's first branch (a parallel step's branches are `<step key>#<n>`)


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

class _Serialized:
    """The store as a run's parallel branches share it: one call at a time (a SQLite connection must not carry two
    threads' transactions at once; an Elasticsearch client does not mind)."""

    def __init__(self, store: Store, lock: threading.RLock) -> None:
        self._store, self._lock = store, lock

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kw: Any) -> Any:
            with self._lock:
                return attr(*args, **kw)
        return call


@dataclass
class _Call:
    """An action step ready to run outside the run's lock."""

    key: str
    action: Action
    ctx: Context
    args: dict[str, Any]
    timeout: float | None
    retries: int
    backoff: float


def _key(scope: str, sid: str | None) -> str | None:
    """A step's key in the run: its id, under the keys of the playbook-action steps that led into it."""
    return None if sid is None else (f"{scope}/{sid}" if scope else sid)


def _scope(key: str) -> str:
    return key.rpartition("/")[0]


def _branch(cursor: str | None, parent: str | None = None) -> dict[str, Any]:
    return {"cursor": cursor, "stack": [], "status": "running", "join": None, "kids": [], "parent": parent,
            "pending": None}


class Engine:
    """Runs playbooks for the reader of `gate` (the actor is `gate.reader.user`).

    A run walks branches: `main`, and one per `next_steps` entry of a parallel step, run on threads of their own
    and joined before the parallel step's on_completion. Every change to the run's state and every store call
    happens under one lock; actions run outside it. A playbook-action step runs the referenced playbook inside the
    same run: its steps are recorded under keys `<playbook-action step>/<step id>`, with variables of its own."""

    def __init__(self, gate: Gate, home: Path | None = None,
                 registry: dict[str, type[Action]] | None = None) -> None:
        self._lock = threading.RLock()
        self.store = cast(Store, _Serialized(gate.store, self._lock))
        self.gate, self.policy = Gate(self.store, gate.reader, gate.policy), gate.policy
        self.home = home or data_dir()
        self.rules = self.policy.response  # the policy owners' rules: approvals, protected assets
        self.registry = registry if registry is not None else load_all()
        self.actor = gate.reader.user

    # -- reading runs ------------------------------------------------------------------------------------------------

    def runs(self, limit: int | None = 100) -> tuple[Read, bool]:
        """The newest `limit` runs (None: all), those above the reader withheld; and whether older ones exist. The
        store reads only that page: run ids sort by their start time."""
        docs = self.store.records(KIND, None if limit is None else limit + 1, descending=True)
        more = limit is not None and len(docs) > limit
        return self.gate.filter("playbook-runs", [_summary(d) for d in docs[:limit]], "playbook runs"), more

    def get(self, run_id: str) -> Read:
        """One run (full state) when it exists and the reader may see it."""
        doc = self.store.get_record(KIND, run_id)
        return self.gate.filter("playbook-runs", [_full(doc)] if doc else [], f"playbook run {run_id}")

    def _load(self, run_id: str) -> dict[str, Any]:
        read = self.get(run_id)
        if not read.items:
            raise PlaybookError(f"no playbook run {run_id} in {self.store.uri}"
                                + (" you may read" if read.withheld else ""))
        return _upgrade(read.items[0])

    # -- starting ----------------------------------------------------------------------------------------------------

    def start(self, name: str, alert: str | None = None, incident: int | None = None, execute: bool = False,
              values: dict[str, str] | None = None) -> dict[str, Any]:
        """Validate the playbook (and the playbooks it calls), bind its variables from the alert/incident (then
        `values`, for variables that are not external) and walk it: a dry run unless `execute`."""
        path = cacao.find(name)
        doc = cacao.read(path)
        problems = cacao.validate(doc, self.registry, near=path)
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
        docs: dict[str, Any] = {}
        initial: dict[str, Any] = {}
        self._children(doc, "", path, source, docs, initial)
        run = {"id": run_id(), "playbook": path.stem, "playbook_id": doc["id"],
               "path": str(path), "execute": execute, "actor": self.actor, "alert": alert, "incident": incident,
               "gov.label.rank": rank, "source": ref, "status": "running" if execute else "dry-run",
               "created": _now(), "updated": _now(), "variables": variables, "steps": {}, "order": [],
               "branches": {MAIN: _branch(doc["workflow_start"])}, "pending": None, "doc": doc, "docs": docs,
               "initial": initial, "scopes": {}}
        self.store.audit("playbook-run", {"run": run["id"], "playbook": run["playbook"], "execute": execute,
                                          "source": ref, "max_rank": rank}, actor=self.actor)
        return self._go(run)

    def _children(self, doc: dict[str, Any], scope: str, path: Path, source: dict[str, Any],
                  docs: dict[str, Any], initial: dict[str, Any]) -> None:
        """The playbooks `doc` calls (validated: found, no cycle), by the key of their playbook-action step, with
        their variables bound from the same alert or incident."""
        for sid, step in doc["workflow"].items():
            if step.get("type") != "playbook-action":
                continue
            key = cast(str, _key(scope, sid))
            child_path = cacao.resolve(step["playbook_id"], path)
            docs[key] = child = cacao.read(child_path)
            initial[key] = self._bind(child, source)
            self._children(child, key, child_path, source, docs, initial)

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
        """Approve or deny a step the run waits on, then continue the run in this process."""
        run = self._load(run_id)
        seen = run["updated"]
        waiting = [(bid, b) for bid, b in run["branches"].items() if b.get("pending")]
        if run["status"] != "waiting" or not waiting:
            raise PlaybookError(f"run {run_id} is {run['status']}, not waiting for an approval")
        match = [(bid, b) for bid, b in waiting
                 if step in (b["pending"]["step"], _step(run, b["pending"]["step"]).get("name"))]
        if not match:
            on = ", ".join(f"{b['pending']['step']} ({_step(run, b['pending']['step']).get('name')})"
                           for _, b in waiting)
            raise PlaybookError(f"run {run_id} waits on step {on}, not {step}")
        bid, branch = match[0]
        pending = branch["pending"]
        sid = pending["step"]
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
        branch["pending"] = None
        up: str | None = bid
        while up is not None:  # the branch and the parallel steps waiting on it walk again
            run["branches"][up]["status"] = "running"
            up = run["branches"][up]["parent"]
        run["pending"], run["status"] = None, "running"
        self._claim(run, seen, "decided")
        self.store.audit("playbook-approval", {"run": run_id, "step": sid, "decision": decision,
                                               "max_rank": run["gov.label.rank"]}, actor=self.actor)
        if decision != "approved":
            run["failed"] = True
            nxt = _step(run, sid).get("on_failure")
            if nxt is None:
                self._unwind(run, branch)
            else:
                branch["cursor"] = _key(_scope(sid), nxt)
        return self._go(run)

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
            sid, at = run.get("failed_step"), run.get("failed_at")
            if not sid or not at:
                raise PlaybookError(f"run {run_id} failed with no step to retry")
            for bid, state in at.items():  # the failed step's branch and the parallel steps above it, as they were
                run["branches"][bid] = state | {"status": "running"}
            run["failed"], run["status"] = False, "running"
            run["steps"][sid]["status"] = "retrying"
        self._claim(run, seen, "resumed or changed")
        self.store.audit("playbook-resume", {"run": run_id, "at": _cursors(run),
                                             "max_rank": run["gov.label.rank"]}, actor=self.actor)
        return self._go(run)

    def undo(self, run_id: str) -> dict[str, Any]:
        """Run the recorded inverses of the run's done steps (sub-playbooks' too), last first."""
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

    def _ctx(self, run: dict[str, Any], sid: str, execute: bool, deadline: float | None = None) -> Context:
        return Context(self.store, self.gate, self.policy, run["id"], sid, execute, _vars(run, sid),
                       int(run["gov.label.rank"]), self.actor, self.home, deadline)

    def _go(self, run: dict[str, Any]) -> dict[str, Any]:
        """Walk the main branch as far as it goes, then store the run: waiting, or finished."""
        self._walk(run, MAIN)
        with self._lock:
            waiting = [b["pending"] for b in run["branches"].values() if b.get("pending")]
            if run["branches"][MAIN]["status"] == "waiting" and waiting:
                run["status"], run["pending"] = "waiting", waiting[0]
                run["updated"] = _now()
                return self._save(run)
            return self._finish(run)

    def _walk(self, run: dict[str, Any], bid: str) -> None:
        """Walk branch `bid` until it ends, fails or waits for an approval."""
        b = run["branches"][bid]
        for _ in range(MAX_STEPS):
            if b["status"] != "running":
                return
            if b.get("join"):
                self._join(run, bid)
                continue
            with self._lock:
                call = self._next(run, bid, b)
            if call is not None:
                outcome = self._execute(call)
                with self._lock:
                    self._record(run, b, call, outcome)
        raise PlaybookError(f"run {run['id']}: more than {MAX_STEPS} steps in branch {bid}")

    def _join(self, run: dict[str, Any], bid: str) -> None:
        """Run the parallel step's unfinished branches at once (a thread each), wait for all, then go on."""
        b = run["branches"][bid]
        todo = [k for k in b["kids"] if run["branches"][k]["status"] == "running"]
        errors: list[BaseException] = []

        def walk(kid: str) -> None:
            try:
                self._walk(run, kid)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the joining thread
                errors.append(exc)

        threads = [threading.Thread(target=walk, args=(k,), name=f"soc-{run['id']}-{k}") for k in todo[1:]]
        for t in threads:
            t.start()
        if todo:
            walk(todo[0])
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        with self._lock:
            par = b["join"]
            statuses = {k: run["branches"][k]["status"] for k in b["kids"]}
            if "waiting" in statuses.values():
                b["status"] = "waiting"
                return
            step, rec = _step(run, par), run["steps"][par]
            failed = "failed" in statuses.values()
            rec.update(status="failed" if failed else "done", branches=statuses, ended=_now())
            b["join"] = None
            if not failed:
                b["cursor"] = _key(_scope(par), step.get("on_success") or step.get("on_completion"))
            elif step.get("on_failure"):
                b["cursor"] = _key(_scope(par), step["on_failure"])
            else:
                self._unwind(run, b)
            self._checkpoint(run)

    def _next(self, run: dict[str, Any], bid: str, b: dict[str, Any]) -> _Call | None:
        """Take branch `b` one step on (under the lock); an action to run is returned, not run."""
        key = b["cursor"]
        if key is None:
            if b["stack"]:
                self._return(run, b, b["stack"].pop()["return"])
            else:
                b["status"] = "done"
            return None
        scope, step = _scope(key), _step(run, key)
        kind = step["type"]
        rec = run["steps"].setdefault(key, {"name": step.get("name"), "type": kind})
        if key not in run["order"]:
            run["order"].append(key)
        nxt = step.get("on_success") or step.get("on_completion")
        variables = _vars(run, key)
        if kind == "end":
            rec["status"], nxt = "done", None
        elif kind == "start":
            rec["status"] = "done"
        elif kind == "parallel":
            b["kids"] = [f"{key}#{i}" for i in range(len(step.get("next_steps") or []))]
            for kid, first in zip(b["kids"], step.get("next_steps") or [], strict=True):
                run["branches"][kid] = _branch(_key(scope, first), parent=bid)
            b["join"] = key
            rec.update(status="running", started=_now())
            self._checkpoint(run)
            return None
        elif kind in ("if-condition", "while-condition"):
            try:
                value = condition(step["condition"], variables)
            except PlaybookError as exc:
                self._fail(run, b, key, rec, str(exc))
                self._checkpoint(run)
                return None
            rec.setdefault("evaluations", []).append(value)
            if kind == "while-condition" and value and len(rec["evaluations"]) > MAX_LOOPS:
                value = False
                rec["error"] = f"stopped after {MAX_LOOPS} iterations"
            rec["status"] = "done"
            nxt = step["on_true"] if value else (step.get("on_false") or nxt)
        elif kind == "switch-condition":
            value = str(render(step["switch"], variables))
            rec.update(status="done", value=value)
            cases = step.get("cases") or {}
            nxt = cases.get(value, cases.get("default", nxt))
        elif kind == "playbook-action":
            self._enter(run, b, key, step, rec)
            return None
        elif kind == "action":
            return self._prepare(run, b, key, step, rec)
        b["cursor"] = _key(scope, nxt)
        self._checkpoint(run)
        return None

    def _enter(self, run: dict[str, Any], b: dict[str, Any], key: str, step: dict[str, Any],
               rec: dict[str, Any]) -> None:
        """A playbook-action step: the referenced playbook's variables (its own bindings, then in_args from the
        caller), its steps under `key/`; the branch returns here when it ends."""
        child = run["docs"][key]
        outer = _vars(run, key)
        inner = json.loads(json.dumps(run["initial"][key]))
        for name in step.get("in_args") or []:
            inner[name] = outer.get(name)
        run["scopes"][key] = inner
        rec.update(status="running", playbook=child["id"], playbook_name=child.get("name"), started=_now(),
                   in_args={n: inner.get(n) for n in step.get("in_args") or []})
        b["stack"].append({"return": key})
        b["cursor"] = _key(key, child["workflow_start"])
        self._checkpoint(run)

    def _return(self, run: dict[str, Any], b: dict[str, Any], key: str) -> None:
        """The called playbook ended: out_args back to the caller; the step failed if one of its steps did."""
        step, rec = _step(run, key), run["steps"][key]
        inner, outer = run["scopes"][key], _vars(run, key)
        for name in step.get("out_args") or []:
            if name in inner:
                outer[name] = inner[name]
        bad = [k for k, r in run["steps"].items() if k.startswith(key + "/") and r.get("status") in FAILED]
        rec["out_args"] = {n: inner.get(n) for n in step.get("out_args") or []}
        if bad:  # resume retries the failed step inside, not the whole called playbook
            self._fail(run, b, key, rec, f"step(s) of the called playbook failed: {', '.join(bad)}", retry=False)
        else:
            rec.update(status="succeeded" if run["execute"] else "planned", ended=_now())
            if run["execute"]:
                self.store.audit("playbook-step", {"run": run["id"], "step": key, "playbook": rec.get("playbook"),
                                                   "status": "succeeded", "max_rank": run["gov.label.rank"]},
                                 actor=self.actor)
            b["cursor"] = _key(_scope(key), step.get("on_success") or step.get("on_completion"))
        self._checkpoint(run)

    def _prepare(self, run: dict[str, Any], b: dict[str, Any], sid: str, step: dict[str, Any],
                 rec: dict[str, Any]) -> _Call | None:
        """Plan an action step, or make it wait for approval, or refuse it; else return it to be run."""
        soc = cacao.soc_step(step) or {}
        cls = self.registry[soc["action"]]
        action = cls()
        args = render(dict(soc.get("args") or {}), _vars(run, sid))
        scope = _scope(sid)
        ok_next = _key(scope, step.get("on_success") or step.get("on_completion"))
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
                ok_next = _key(scope, step.get("on_failure") or step.get("on_completion")) or ok_next
            b["cursor"] = ok_next
            return None
        if protected:
            self._fail(run, b, sid, rec, f"protected asset(s) {', '.join(map(str, protected))}: never contained")
            self._checkpoint(run)
            return None
        approval = rec.get("approval") or {}
        if needs_approval and (approval.get("decision") != "approved" or approval.get("used")):
            expires = datetime.now(UTC) + timedelta(seconds=self.rules.approval_ttl)
            b["pending"] = {"step": sid, "requested": _now(), "expires": expires.isoformat()}
            b["status"] = "waiting"
            rec["status"] = "waiting-approval"
            rec["plan"] = action.plan(ctx, args)
            self.store.audit("playbook-approval-requested", {"run": run["id"], "step": sid, "action": cls.name,
                                                             "args": args, "expires": expires.isoformat(),
                                                             "max_rank": run["gov.label.rank"]}, actor=self.actor)
            return None
        if needs_approval:
            approval["used"] = True  # one approval, one execution (a loop asks again)
        rec.update(status="running", started=_now())
        self._save(run)
        timeout = (step.get("timeout") or 0) / 1000 or None  # CACAO: milliseconds
        return _Call(sid, action, ctx, args, timeout, int(soc.get("retries") or 0), float(soc.get("backoff") or 1.0))

    def _execute(self, call: _Call) -> tuple[int, Result | None, str]:
        """Run an action (outside the lock) with its retries; (attempts, result, error)."""
        error = ""
        for attempt in range(call.retries + 1):
            try:
                return attempt + 1, _call(call.action, call.ctx, call.args, call.timeout), ""
            except ActionError as exc:
                error = str(exc)
            except Exception as exc:  # noqa: BLE001 - an action bug is a failed step, recorded
                error = f"{type(exc).__name__}: {exc}"
            if attempt < call.retries:
                time.sleep(call.backoff * 2 ** attempt)
        return call.retries + 1, None, error

    def _record(self, run: dict[str, Any], b: dict[str, Any], call: _Call,
                outcome: tuple[int, Result | None, str]) -> None:
        attempts, res, error = outcome
        sid, step, rec = call.key, _step(run, call.key), run["steps"][call.key]
        rec["attempts"] = attempts
        if res is None:
            self._fail(run, b, sid, rec, error)
        else:
            outputs = dict(res.outputs) | {"gov.label.rank": run["gov.label.rank"]}
            rec.update(status="succeeded", outputs=outputs, inverse=res.inverse, ended=_now())
            variables = _vars(run, sid)
            for name in step.get("out_args") or []:
                if name in res.outputs:
                    variables[name] = res.outputs[name]
            self.store.audit("playbook-step", {"run": run["id"], "step": sid, "action": call.action.name,
                                               "args": call.args, "status": "succeeded", "inverse": res.inverse,
                                               "max_rank": run["gov.label.rank"]}, actor=self.actor)
            b["cursor"] = _key(_scope(sid), step.get("on_success") or step.get("on_completion"))
        self._checkpoint(run)

    def _fail(self, run: dict[str, Any], b: dict[str, Any], sid: str, rec: dict[str, Any], error: str,
              retry: bool = True) -> None:
        """Record a failed step; the branch follows its on_failure, else unwinds (see `_unwind`). Where the run
        stood (this branch and the parallel steps above it) is kept for `resume` to retry the step."""
        rec.update(status="failed", error=error, ended=_now())
        run["failed"] = True
        if retry:
            at: dict[str, Any] = {}
            bid: str | None = next(k for k, v in run["branches"].items() if v is b)
            while bid is not None:
                at[bid] = json.loads(json.dumps(run["branches"][bid] | ({"cursor": sid} if not at else {})))
                bid = run["branches"][bid]["parent"]
            run["failed_step"], run["failed_at"] = sid, at
        self.store.audit("playbook-step", {"run": run["id"], "step": sid, "action": rec.get("action"),
                                           "status": "failed", "error": error,
                                           "max_rank": run["gov.label.rank"]}, actor=self.actor)
        nxt = _step(run, sid).get("on_failure")
        if nxt is None:
            self._unwind(run, b)
        else:
            b["cursor"] = _key(_scope(sid), nxt)

    def _unwind(self, run: dict[str, Any], b: dict[str, Any]) -> None:
        """A failure with no on_failure ends the called playbook it is in, which fails its playbook-action step
        (whose on_failure is followed, if any, and so on up); at the top the branch stops, failed."""
        while b["stack"]:
            key = b["stack"].pop()["return"]
            rec = run["steps"][key]
            rec.update(status="failed", error="the called playbook failed", ended=_now())
            nxt = _step(run, key).get("on_failure")
            if nxt is not None:
                b["cursor"] = _key(_scope(key), nxt)
                return
        b["cursor"], b["status"] = None, "failed"

    def _checkpoint(self, run: dict[str, Any]) -> None:
        run["updated"] = _now()
        if run["execute"]:
            self._save(run)  # after each step: a killed run resumes here

    def _finish(self, run: dict[str, Any]) -> dict[str, Any]:
        if run["execute"]:
            failed = run.get("failed") or run["branches"][MAIN]["status"] == "failed"
            run["status"] = "failed" if failed else "succeeded"
        run["updated"] = _now()
        self.store.audit("playbook-run-end", {"run": run["id"], "status": run["status"],
                                              "max_rank": run["gov.label.rank"]}, actor=self.actor)
        return self._save(run)

    def _save(self, run: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            summary = _summary(run)
            self.store.put_record(KIND, run["id"], summary | {"state": json.dumps(run, default=str)})
        return run


FAILED = ("failed", "denied", "expired", "refused")


_LAST_MS = [0]
_ID_LOCK = threading.Lock()


def run_id() -> str:
    """`run-` and 16 hex digits: the start in milliseconds (11; one process never repeats one), then 5 random;
    ids sort by start time."""
    with _ID_LOCK:
        ms = _LAST_MS[0] = max(time.time_ns() // 1_000_000, _LAST_MS[0] + 1)
    return f"run-{ms:011x}{uuid.uuid4().hex[:5]}"


def _step(run: dict[str, Any], key: str) -> dict[str, Any]:
    """The workflow step a key names (in the playbook, or in the called playbook its scope names)."""
    scope, _, sid = key.rpartition("/")
    return (run["docs"][scope] if scope else run["doc"])["workflow"][sid]


def _vars(run: dict[str, Any], key: str) -> dict[str, Any]:
    """The variables a step sees: the playbook's, or those of the called playbook it belongs to."""
    scope = _scope(key)
    return run["scopes"][scope] if scope else run["variables"]


def _cursors(run: dict[str, Any]) -> list[str]:
    return [b["cursor"] for b in run["branches"].values() if b["status"] == "running" and b["cursor"]]


def _upgrade(run: dict[str, Any]) -> dict[str, Any]:
    """A run stored before branches and called playbooks (one cursor, one pending) in today's shape."""
    if "branches" not in run:
        main = _branch(run.pop("cursor", None))
        run.pop("stack", None)
        if run.get("pending"):
            main.update(status="waiting", pending=run["pending"])
        if run.get("failed_step"):
            run["failed_at"] = {MAIN: main | {"cursor": run["failed_step"]}}
        run.update(branches={MAIN: main}, docs={}, initial={}, scopes={})
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
    """Run the action; with a CACAO timeout it gets `ctx.deadline` for its own I/O (socket, SMTP, HTTP, subprocess
    timeouts), so it ends by itself and the step is recorded after it has. An action that finished after its
    deadline with an error timed out; one still running GRACE s past it is reported left running."""
    if timeout is None:
        return action.run(ctx, args)
    ctx.deadline, ctx.timeout = time.monotonic() + timeout, timeout
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = action.run(ctx, args)
        except BaseException as exc:  # noqa: BLE001 - handed to the engine's thread
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True, name=f"soc-action-{ctx.run_id}-{ctx.step_id}")
    worker.start()
    worker.join(timeout + GRACE)
    if worker.is_alive():
        raise ActionError(f"timed out after {timeout:g} s; the action ignored its deadline and was left running")
    if "result" in box:
        return box["result"]
    if time.monotonic() >= ctx.deadline:
        raise ActionError(f"timed out after {timeout:g} s") from box["error"]
    raise box["error"]


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
