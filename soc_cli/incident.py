"""soc incident: group alerts into incidents, assign, track tasks, close; everything through the read gate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.table import Table

from correlator import incidents
from correlator.events import nest
from correlator.gate import Gate
from correlator.incidents import IncidentError, P
from correlator.query import Query, QueryError, parse_time
from correlator.store import StoreError
from correlator.triage import CLOSE_REASONS, alert_query
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
    warn,
)

app = typer.Typer(help="Incidents: alerts grouped for handling, with tasks, observables and a timeline.\n\n"
                       "Example: soc incident create --title 'Scan of the ministry' --where 'source.ip:203.0.113.0/24'",
                  no_args_is_help=True)

WhereOpt = Annotated[str | None, typer.Option("--where", help="Alerts matching this query (the alert query of "
                                                              "`soc alerts`, e.g. 'rule.name:\"Port Scan*\" "
                                                              "source.ip:203.0.113.0/24').")]
SinceOpt = Annotated[str | None, typer.Option(help="With --where: alerts from this time (ISO-8601, epoch, 24h).")]


def _gate(store: str | None, clearance: str | None) -> Gate:
    return open_reader(get_store(store), clearance)


def _run(gate: Gate, action: Callable[[], Any]) -> Any:
    """Call the library; its refusals exit 1 with the reason on stderr."""
    try:
        return action()
    except IncidentError as exc:
        if exc.read is not None:
            say_withheld(exc.read, exc.kind, gate)
        die(str(exc), ExitCode.FAILURE)
    except StoreError as exc:
        die(str(exc), ExitCode.FAILURE)


def _alerts(gate: Gate, ids: list[str], where: str | None, since: str | None) -> list[dict[str, Any]]:
    """The alerts named (ids, comma-separated or repeated) or matching --where, through the gate."""
    ids = [i.strip() for x in ids for i in x.split(",") if i.strip()]
    if bool(ids) == bool(where):
        die("give alert ids or --where QUERY (one of them)")
    q: Query | None = None
    if where:
        try:
            q = alert_query(where, parse_time(since))
        except QueryError as exc:
            die(f"--where: {exc}")
    read = _run(gate, lambda: incidents.select_alerts(gate, ids, q))
    say_withheld(read, "alerts", gate)
    return read.items


def _said(doc: dict[str, Any], json: bool, what: str) -> None:
    if json:
        print_ndjson(nest(doc))
    else:
        console.print(f"incident {doc[P + 'id']}: {what} ({_line(doc)})", highlight=False)


def _line(doc: dict[str, Any]) -> str:
    tasks = doc.get(P + "tasks", [])
    return (f"{doc.get(P + 'status')}, {doc.get(P + 'severity')}, {len(doc.get(P + 'alerts', []))} alerts, "
            f"label {doc.get('gov.label.level') or 'none'}, assignee {doc.get(P + 'assignee') or '-'}, "
            f"tasks {sum(t['done'] for t in tasks)}/{len(tasks)}")


@app.command()
def create(
    title: Annotated[str, typer.Option("--title", help="What the incident is about.")],
    alerts: Annotated[list[str] | None, typer.Option("--alerts", help="Alert ids (repeat, or comma-separated).")]
    = None,
    where: WhereOpt = None,
    since: SinceOpt = None,
    clearance: ClearanceOpt = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Create an incident from alerts you may read (by id, or every alert matching --where).

    Its severity is the highest of its alerts, its label the highest of theirs.

    Example: soc incident create --title 'Beaconing from 10.1.2.3' --where 'source.ip:10.1.2.3' --since 7d
    """
    gate = _gate(store, clearance)
    chosen = _alerts(gate, alerts or [], where, since)
    doc = _run(gate, lambda: incidents.create(gate, title, chosen))
    _said(doc, json, "created")


@app.command()
def add(
    number: Annotated[int, typer.Argument(help="Incident number.")],
    alert_ids: Annotated[list[str] | None, typer.Argument(help="Alert ids.", show_default=False)] = None,
    where: WhereOpt = None,
    since: SinceOpt = None,
    clearance: ClearanceOpt = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Add alerts to an incident (by id, or every alert matching --where).

    Example: soc incident add 1 --where 'destination.ip:10.1.0.10'
    """
    gate = _gate(store, clearance)
    chosen = _alerts(gate, alert_ids or [], where, since)
    doc = _run(gate, lambda: incidents.add(gate, number, chosen))
    _said(doc, json, f"{len(chosen)} alert(s) added")


@app.command("list")
def list_incidents(
    status: Annotated[str, typer.Option(help="open, closed or all.")] = "open",
    assignee: Annotated[str | None, typer.Option(help="Only those assigned to this user.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most incidents shown (newest first).")] = 100,
    clearance: ClearanceOpt = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """List incidents you may read, newest first.

    Example: soc incident list --status all --json
    """
    if status not in (*incidents.STATUSES, "all"):
        die(f"--status {status!r}: open, closed or all")
    gate = _gate(store, clearance)
    read = _run(gate, lambda: incidents.search(gate, None if status == "all" else status, assignee, limit))
    say_withheld(read, "incidents", gate)
    if json:
        for doc in read.items:
            print_ndjson(nest(doc))
        return
    table = Table(title=f"{len(read.items)} incidents", title_justify="left")
    for col in ("#", "created", "status", "severity", "label", "alerts", "assignee", "title"):
        table.add_column(col, overflow="fold")
    for d in read.items:
        table.add_row(str(d[P + "id"]), d["@timestamp"], d.get(P + "status"), str(d.get(P + "severity")),
                      d.get("gov.label.level") or "", str(len(d.get(P + "alerts", []))), d.get(P + "assignee") or "",
                      d.get(P + "title"))
    console.print(table)


@app.command()
def show(
    number: Annotated[int, typer.Argument(help="Incident number.")],
    clearance: ClearanceOpt = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Show an incident: its alerts, tasks, observables (shareable or not, by the policy's zones) and timeline.

    Example: soc incident show 1
    """
    gate = _gate(store, clearance)
    doc = _run(gate, lambda: incidents.get(gate, number))
    read = _run(gate, lambda: incidents.alerts_of(gate, doc))
    say_withheld(read, "alerts", gate)
    doc = doc | {P + "observables": incidents.shareable_observables(gate, doc)}
    if json:
        print_ndjson({"type": "incident"} | nest(doc))
        for a in read.items:
            print_ndjson({"type": "alert"} | nest(a))
        return
    console.print(f"[bold]incident {number}[/]: {doc.get(P + 'title')}", highlight=False)
    console.print(f"{_line(doc)}; created {doc['@timestamp']}" +
                  (f"; closed: {doc.get(P + 'close_reason')} {doc.get(P + 'close_comment') or ''}"
                   if doc.get(P + "status") == "closed" else ""), highlight=False)
    sections: list[tuple[str, tuple[str, ...], list[tuple[str, ...]]]] = [
        ("alerts", ("id", "time", "severity", "rule"),
         [(a["soc.alert.uuid"], a["@timestamp"], str(a.get("soc.alert.severity")), str(a.get("soc.alert.rule.name")))
          for a in read.items]),
        ("tasks", ("#", "done", "task"),
         [(str(t["id"]), "x" if t["done"] else "", t["text"]) for t in doc.get(P + "tasks", [])]),
        ("observables", ("type", "value", "shareable"),
         [(o["type"], o["value"], "yes" if o["shareable"] else "no") for o in doc[P + "observables"]]),
        ("timeline", ("time", "who", "what", "detail"),
         [(e["@timestamp"], e["actor"], e["action"], e["detail"]) for e in doc.get(P + "timeline", [])]),
    ]
    for title, cols, rows in sections:
        table = Table(title=f"{title} ({len(rows)})", title_justify="left")
        for col in cols:
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)


@app.command()
def assign(
    number: Annotated[int, typer.Argument(help="Incident number.")],
    user: Annotated[str, typer.Argument(help="Who handles it.")],
    clearance: ClearanceOpt = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Assign an incident to a user.

    Example: soc incident assign 1 analyst1
    """
    gate = _gate(store, clearance)
    _said(_run(gate, lambda: incidents.assign(gate, number, user)), json, f"assigned to {user}")


@app.command()
def close(
    number: Annotated[int, typer.Argument(help="Incident number.")],
    reason: Annotated[str, typer.Option("--reason", help=f"One of {', '.join(CLOSE_REASONS)}.")],
    comment: Annotated[str, typer.Option("--comment", help="Why, in words.")] = "",
    close_alerts: Annotated[bool, typer.Option("--close-alerts", help="Also close its alerts that are not closed, "
                                                                      "with the same reason.")] = False,
    clearance: ClearanceOpt = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Close an incident with a reason (its alerts keep their own status unless --close-alerts).

    Example: soc incident close 1 --reason true-positive --comment 'host reimaged' --close-alerts
    """
    gate = _gate(store, clearance)
    doc, outcome = _run(gate, lambda: incidents.close(gate, number, reason, comment, close_alerts))
    _said(doc, json, f"closed ({reason})")
    if outcome is not None:
        for uuid, why in outcome.refused:
            warn(f"alert {uuid}: {why}")
        if not json:
            console.print(f"alerts: {len(outcome.changed)} closed, {len(outcome.refused)} refused", highlight=False)
        if outcome.refused:
            raise typer.Exit(ExitCode.FAILURE)


@app.command()
def task(
    number: Annotated[int, typer.Argument(help="Incident number.")],
    action: Annotated[str, typer.Argument(help="add or done.")],
    value: Annotated[str, typer.Argument(help="add: the task's text; done: the task's number.")],
    clearance: ClearanceOpt = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Add a task to an incident's checklist, or mark one done.

    Example: soc incident task 1 add 'isolate 10.1.2.3'

    Example: soc incident task 1 done 1
    """
    gate = _gate(store, clearance)
    if action == "add":
        _said(_run(gate, lambda: incidents.add_task(gate, number, value)), json, f"task added: {value}")
    elif action == "done":
        if not value.isdigit():
            die(f"task number expected, got {value!r}")
        _said(_run(gate, lambda: incidents.done_task(gate, number, int(value))), json, f"task {value} done")
    else:
        die(f"task action {action!r}: add or done")
