"""soc playbook: CACAO 2.0 incident-response playbooks (playbooks/), dry run unless --execute, through the gate."""

from __future__ import annotations

from json import dumps
from pathlib import Path
from typing import Annotated, Any

import typer

from correlator.store import StoreError
from playbooks import cacao
from playbooks.cacao import PlaybookError
from playbooks.engine import Engine
from soc_cli.common import (
    ClearanceOpt,
    ExitCode,
    JsonOpt,
    StoreOpt,
    console,
    die,
    get_store,
    open_reader,
    print_ndjson,
    say_withheld,
)

app = typer.Typer(help="Incident-response playbooks (OASIS CACAO 2.0): validate, dry-run, execute with approvals, "
                       "resume and undo.\n\nExample: soc playbook run scanning --alert 5f1c…",
                  no_args_is_help=True)

RunArg = Annotated[str, typer.Argument(help="A run id (run-…), as `soc playbook runs` lists.")]
StepArg = Annotated[str, typer.Argument(help="The step the run waits on: its id (action--…) or its name.")]


def _engine(store: str | None, clearance: str | None) -> Engine:
    try:
        return Engine(open_reader(get_store(store), clearance))
    except PlaybookError as exc:
        die(str(exc))


def _fail(exc: Exception, code: int = ExitCode.USAGE) -> None:
    problems = getattr(exc, "problems", [])
    for p in problems if len(problems) > 1 or (problems and problems[0] != str(exc)) else []:
        console.file.flush()
        typer.echo(f"  {p}", err=True)
    die(str(exc), code)


INTERNAL = ("steps", "doc", "docs", "initial", "order", "branches", "scopes", "failed_at")  # the engine's state


def _report(run: dict[str, Any], json: bool) -> None:
    """Print a run (NDJSON: the run, then one line per step) and exit by its status."""
    steps = [{"step": sid, **run["steps"][sid]} for sid in run["order"]]
    if json:
        print_ndjson({k: v for k, v in run.items() if k not in INTERNAL})
        for s in steps:
            print_ndjson({"run": run["id"], **s})
    else:
        console.print(f"run {run['id']}: {run['playbook']} on {run.get('source')} — {run['status']}"
                      f"{'' if run['execute'] else ' (dry run: nothing changed)'}", highlight=False, soft_wrap=True)
        for s in steps:
            if s["type"] in ("start", "end"):
                continue
            depth = "  " * s["step"].count("/")  # a called playbook's steps under its playbook-action step
            line = f"  {depth}{'undone' if s.get('undone') else s['status']:<20} {s.get('name') or s['step']}"
            if s.get("action"):
                plan = s.get("plan") or {}
                shown = "; ".join(plan.get("commands") or []) if isinstance(plan, dict) else ""
                line += f"  [{s['action']}] {shown or dumps(s.get('args'), default=str)[:160]}"
            if s.get("approval"):
                line += f"  {s['approval']['decision']} by {s['approval']['by']} at {s['approval']['at']}"
            if s.get("error"):
                line += f"  error: {s['error']}"
            console.print(line, highlight=False, soft_wrap=True, markup=False)  # [action] is not markup
        if run["status"] == "waiting":
            sid = run["pending"]["step"]
            typer.echo(f"waiting for approval until {run['pending']['expires']}: soc playbook approve {run['id']} "
                       f"{sid}  (or deny)", err=True)
    if run["status"] in ("failed", "undo-failed"):
        raise typer.Exit(int(ExitCode.FAILURE))
    if run["status"] == "waiting":
        raise typer.Exit(int(ExitCode.PARTIAL))


def _call(fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except PlaybookError as exc:
        _fail(exc, ExitCode.USAGE)
    except StoreError as exc:
        die(str(exc), ExitCode.FAILURE)


@app.command("list")
def list_playbooks(json: JsonOpt = False) -> None:
    """The library's playbooks.

    Example: soc playbook list --json
    """
    for name, path in cacao.library().items():
        doc = cacao.read(path)
        row = {"name": name, "id": doc.get("id"), "title": doc.get("name"), "types": doc.get("playbook_types"),
               "steps": len(doc.get("workflow") or {}), "labels": doc.get("labels")}
        if json:
            print_ndjson(row)
        else:
            console.print(f"{name:<24} {row['title']}", highlight=False)


@app.command()
def show(name: Annotated[str, typer.Argument(help="A library playbook, a file, or a run id (run-…).")],
         store: StoreOpt = None, clearance: ClearanceOpt = None, json: JsonOpt = False) -> None:
    """A playbook (YAML; --json: CACAO JSON on one line) or a run with every step (read through the gate).

    Example: soc playbook show run-019adfe2a10c4e7f --json
    """
    if name.startswith("run-"):
        engine = _engine(store, clearance)
        read = _call(engine.get, name)
        say_withheld(read, "playbook runs", engine.gate)
        if not read.items:
            die(f"no playbook run {name} in {engine.store.uri}", ExitCode.FAILURE)
        _report(read.items[0], json)
        return
    doc = _call(lambda: cacao.read(cacao.find(name)))
    if json:
        print_ndjson(doc)
    else:
        typer.echo(cacao.to_yaml(doc), nl=False)


@app.command()
def validate(files: Annotated[list[str], typer.Argument(help="Playbook files (YAML or CACAO JSON) or library names.")],
             json: JsonOpt = False) -> None:
    """Check playbooks against the OASIS CACAO 2.0 schemas and soc's rules; every problem with its JSON path.

    Example: soc playbook validate playbooks/library/scanning.yml
    """
    bad = 0
    for f in files:
        try:
            path = cacao.find(f)
            problems = [str(p) for p in cacao.validate(cacao.read(path), near=path)]
        except PlaybookError as exc:
            path, problems = Path(f), [str(exc)]
        bad += bool(problems)
        if json:
            print_ndjson({"file": str(path), "valid": not problems, "problems": problems})
        else:
            for p in problems:
                typer.echo(f"{path}: {p}", err=True)
            if not problems:
                console.print(f"{path}: valid", highlight=False)
    if bad:
        raise typer.Exit(int(ExitCode.FAILURE))


@app.command("import")
def import_(file: Annotated[Path, typer.Argument(help="A CACAO 2.0 JSON playbook.")],
            output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the YAML here "
                                                                               "(default: stdout).")] = None,
            json: JsonOpt = False) -> None:
    """Read a CACAO 2.0 JSON playbook, validate it and write its YAML form (--json: the document on one line).

    Example: soc playbook import /tmp/scanning.json -o my-scanning.yml
    """
    doc = _call(cacao.read, file)
    problems = [str(p) for p in cacao.validate(doc, near=file)]
    if problems:
        for p in problems:
            typer.echo(f"{file}: {p}", err=True)
        die(f"{file}: {len(problems)} problem(s); nothing written", ExitCode.USAGE)
    text = cacao.to_yaml(doc)
    if json:
        print_ndjson(doc)
        return
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        typer.echo(text, nl=False)


@app.command()
def export(name: Annotated[str, typer.Argument(help="A library playbook or a file.")],
           cacao_json: Annotated[bool, typer.Option("--cacao", help="CACAO 2.0 JSON (the only format).")] = True,
           output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")]
           = None, json: JsonOpt = False) -> None:
    """Write a playbook as CACAO 2.0 JSON (--json: on one line, NDJSON).

    Example: soc playbook export scanning --cacao -o scanning.json
    """
    doc = _call(lambda: cacao.read(cacao.find(name)))
    if json and not output:
        print_ndjson(doc)
        return
    text = cacao.to_json(doc)
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        typer.echo(text, nl=False)


@app.command()
def run(name: Annotated[str, typer.Argument(help="A library playbook or a file.")],
        alert: Annotated[str | None, typer.Option("--alert", help="Bind variables from this alert (uuid).")] = None,
        incident: Annotated[int | None, typer.Option("--incident", help="Bind variables from this incident.")]
        = None,
        execute: Annotated[bool, typer.Option("--execute", help="Change things (default: a dry run that renders "
                                                                "every command and changes nothing).")] = False,
        var: Annotated[list[str] | None, typer.Option("--var", help="NAME=VALUE for a variable the playbook "
                                                                    "declares as settable (e.g. __netns__=lab).")]
        = None,
        store: StoreOpt = None, clearance: ClearanceOpt = None, json: JsonOpt = False) -> None:
    """Run a playbook on an alert or incident: a dry run unless --execute; destructive steps wait for approval.

    Example: soc playbook run scanning --alert 5f1c… --execute
    """
    values = {}
    for item in var or []:
        key, eq, value = item.partition("=")
        if not eq:
            die(f"--var {item!r}: expected NAME=VALUE")
        values[key.strip()] = value
    engine = _engine(store, clearance)
    _report(_call(engine.start, name, alert, incident, execute, values), json)


@app.command()
def approve(run_id: RunArg, step: StepArg, store: StoreOpt = None, clearance: ClearanceOpt = None,
            json: JsonOpt = False) -> None:
    """Approve the step a run waits on and continue the run here.

    Example: soc playbook approve run-019adfe2a10c4e7f action--…
    """
    engine = _engine(store, clearance)
    _report(_call(engine.decide, run_id, step, True), json)


@app.command()
def deny(run_id: RunArg, step: StepArg, store: StoreOpt = None, clearance: ClearanceOpt = None,
         json: JsonOpt = False) -> None:
    """Deny the step a run waits on: the run follows the step's on_failure (it is never a success).

    Example: soc playbook deny run-019adfe2a10c4e7f action--…
    """
    engine = _engine(store, clearance)
    _report(_call(engine.decide, run_id, step, False), json)


@app.command()
def runs(limit: Annotated[int, typer.Option("--limit", min=1, help="The newest N runs.")] = 100,
         every: Annotated[bool, typer.Option("--all", help="Every run (overrides --limit).")] = False,
         store: StoreOpt = None, clearance: ClearanceOpt = None, json: JsonOpt = False) -> None:
    """Playbook runs you may read, newest first (the newest 100 unless --limit or --all).

    Example: soc playbook runs --limit 20 --json
    """
    engine = _engine(store, clearance)
    read, more = _call(engine.runs, None if every else limit)
    say_withheld(read, "playbook runs", engine.gate)
    if more:
        typer.echo(f"older runs not shown: --limit {limit * 10} or --all", err=True)
    for r in read.items:
        if json:
            print_ndjson(r)
        else:
            console.print(f"{r['id']}  {r['status']:<10} {r['playbook']:<20} {r.get('source')}  {r['actor']}  "
                          f"{r['created']}" + (f"  waiting on {r['waiting_on']}" if r.get("waiting_on") else ""),
                          highlight=False)


@app.command()
def resume(run_id: RunArg, store: StoreOpt = None, clearance: ClearanceOpt = None, json: JsonOpt = False) -> None:
    """Continue an interrupted or failed run; completed steps are not repeated.

    Example: soc playbook resume run-019adfe2a10c4e7f
    """
    engine = _engine(store, clearance)
    _report(_call(engine.resume, run_id), json)


@app.command()
def undo(run_id: RunArg, store: StoreOpt = None, clearance: ClearanceOpt = None, json: JsonOpt = False) -> None:
    """Revert a run: its recorded inverses (e.g. unblock what it blocked), last step first.

    Example: soc playbook undo run-019adfe2a10c4e7f
    """
    engine = _engine(store, clearance)
    try:
        done = engine.undo(run_id)
    except PlaybookError as exc:
        _fail(exc, ExitCode.FAILURE)
    _report(done, json)
