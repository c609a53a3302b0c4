"""soc alerts: read the alerts the detectors raised (newest and riskiest first) and why one fired."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from correlator.gate import Read
from correlator.query import Query, QueryError, Term, parse_time
from correlator.store import StoreError
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

app = typer.Typer(help="Read alerts: list them, show why one fired.\n\nExample: soc alerts list --since 24h",
                  no_args_is_help=True)

SEVERITIES = ["low", "medium", "high", "critical"]
GROUP_FIELDS = ("source.ip", "destination.ip", "destination.port", "host.name", "user.name")


def summary(a: dict[str, Any]) -> dict[str, Any]:
    """The list view of an alert: id, rule, severity, risk, count, group-key fields."""
    out = {
        "id": a.get("soc.alert.uuid"),
        "@timestamp": a.get("@timestamp"),
        "rule_id": a.get("soc.alert.rule.uuid"),
        "title": a.get("soc.alert.rule.name"),
        "severity": a.get("soc.alert.severity"),
        "risk_score": a.get("soc.alert.risk_score"),
        "count": a.get("soc.alert.suppression.docs_count", 1),
        "workflow_status": a.get("soc.alert.workflow_status"),
    }
    for t in a.get("soc.alert.suppression.terms") or []:
        out[t["field"]] = t["value"]
    for f in GROUP_FIELDS:
        if f in a and f not in out:
            out[f] = a[f]
    return out


@app.command("list")
def list_alerts(
    since: Annotated[str | None, typer.Option(help="From this time: ISO-8601, epoch, or a duration (24h, 7d).")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this time (exclusive).")] = None,
    severity: Annotated[str | None, typer.Option(help="Minimum severity: low, medium, high, critical.")] = None,
    limit: Annotated[int, typer.Option(help="Most alerts shown.")] = 100,
    clearance: ClearanceOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List alerts, riskiest and newest first (NDJSON with --json: id, rule, severity, risk, count, group key).

    Example: soc alerts list --since 24h --severity high
    """
    if severity is not None and severity not in SEVERITIES:
        die(f"--severity {severity}: expected one of {', '.join(SEVERITIES)}")
    try:
        start, end = parse_time(since), parse_time(until)
    except QueryError as e:
        die(str(e))
    wanted = SEVERITIES[SEVERITIES.index(severity):] if severity else [None]
    gate = open_reader(get_store(store), clearance)
    try:
        found: list[dict[str, Any]] = []
        withheld = 0
        for sev in wanted:
            clauses = (Term("soc.alert.severity", sev),) if sev else ()
            read = gate.search_alerts(Query(clauses, start, end), limit, f"alerts list severity={sev}")
            found.extend(read.items)
            withheld += read.withheld or 0
    except StoreError as e:
        die(str(e), ExitCode.FAILURE)
    finally:
        gate.store.close()
    say_withheld(Read([], withheld), "alerts", gate)
    found.sort(key=lambda a: (a.get("soc.alert.risk_score") or 0, a.get("@timestamp") or ""), reverse=True)
    rows = [summary(a) for a in found[:limit]]
    if as_json:
        for r in rows:
            print_ndjson(r)
        return
    t = Table(title=f"Alerts ({len(rows)})")
    for col in ("time", "severity", "risk", "count", "rule", "group", "id"):
        t.add_column(col, overflow="fold")
    for r in rows:
        group = " ".join(f"{k}={r[k]}" for k in r if k in GROUP_FIELDS or "." in k and k != "@timestamp")
        t.add_row(str(r["@timestamp"]), str(r["severity"]), str(r["risk_score"]), str(r["count"]), str(r["title"]),
                  group, str(r["id"]))
    console.print(t)


@app.command()
def show(
    alert_id: Annotated[str, typer.Argument(help="Alert id (soc.alert.uuid).")],
    clearance: ClearanceOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one alert (an id from `soc alerts list --json`): the rule, why it fired, the group key, the window and
    the events behind it.

    Example: soc alerts show "$ALERT_ID" --json
    """
    gate = open_reader(get_store(store), clearance)
    try:
        read = gate.get_alert(alert_id)
    except StoreError as e:
        die(str(e), ExitCode.FAILURE)
    finally:
        gate.store.close()
    say_withheld(read, "alerts", gate)
    a = read.items[0] if read.items else None
    if a is None:
        die(f"no alert with id {alert_id}", ExitCode.FAILURE)
    if as_json:
        print_ndjson(a)
        return
    console.print(f"[bold]{a.get('soc.alert.rule.name')}[/] ({a.get('soc.alert.rule.uuid')})")
    console.print(f"severity {a.get('soc.alert.severity')} · risk {a.get('soc.alert.risk_score')} · "
                  f"status {a.get('soc.alert.workflow_status')}")
    console.print(f"reason: {a.get('soc.alert.reason')}", highlight=False)
    console.print(f"window: {a.get('soc.alert.suppression.start')} → {a.get('soc.alert.suppression.end')} "
                  f"({a.get('soc.alert.suppression.docs_count')} events)")
    for t in a.get("soc.alert.suppression.terms") or []:
        console.print(f"  {t['field']} = {t['value']}", highlight=False)
    if a.get("soc.alert.rule.description"):
        console.print(f"rule: {a['soc.alert.rule.description']}", highlight=False)
    for th in a.get("soc.alert.rule.threat") or []:
        techs = ", ".join(x["id"] for x in th.get("technique", []))
        tactics = ", ".join(x["name"] for x in th.get("tactic", []))
        console.print(f"ATT&CK: {tactics} {techs}".strip())
    orig = {k.removeprefix("soc.alert.original_event."): v for k, v in a.items()
            if k.startswith("soc.alert.original_event.")}
    if orig:
        console.print("original event: " + ", ".join(f"{k}={v}" for k, v in orig.items()), highlight=False)
    anc = a.get("soc.alert.ancestors") or []
    if anc:
        console.print(f"events ({len(anc)}): " + " ".join(anc[:20]) + (" …" if len(anc) > 20 else ""))
        console.print("see them with: soc events search 'event.id:<id>'")
