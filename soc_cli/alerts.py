"""soc alerts: the analysts' queue: list, show, work (ack, start, close, reopen, assign, note), suppress, stats.

Thin: each command parses, calls one correlator.triage function through the read gate, and prints."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from correlator import triage
from correlator.gate import Gate, Read
from correlator.query import QueryError, parse_time
from correlator.store import StoreError
from soc_cli.common import (
    ClearanceOpt,
    ExitCode,
    JsonOpt,
    StoreOpt,
    console,
    die,
    err_console,
    get_store,
    open_reader,
    print_ndjson,
    say_withheld,
)

app = typer.Typer(help="The alert queue: list, show why one fired, acknowledge, assign, note, close, suppress, "
                       "statistics.\n\nExample: soc alerts list --since 24h", no_args_is_help=True)

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
        "workflow_status": triage.status_of(a),
        "assignees": a.get("soc.alert.assignees") or [],
    }
    if "soc.alert.storm.keys" in a:  # a storm alert (correlator.storm): keys folded, per-key alerts not written
        out["storm_keys"], out["suppressed"] = a["soc.alert.storm.keys"], a["soc.alert.storm.suppressed"]
    for t in a.get("soc.alert.suppression.terms") or []:
        out[t["field"]] = t["value"]
    for f in GROUP_FIELDS:
        if f in a and f not in out:
            out[f] = a[f]
    return out


StatusOpt = Annotated[list[str] | None, typer.Option(
    "--status", help="Workflow status (repeat or comma-separate): open, acknowledged, in-progress, closed, all. "
                     "Default: every status but closed.")]
SinceOpt = Annotated[str | None, typer.Option(help="From this time: ISO-8601, epoch, or a duration (24h, 7d).")]
UntilOpt = Annotated[str | None, typer.Option(help="Up to this time (exclusive).")]
SeverityOpt = Annotated[str | None, typer.Option(help="Minimum severity: low, medium, high, critical.")]
AssigneeOpt = Annotated[str | None, typer.Option(help="Assigned to this user.")]
RuleOpt = Annotated[str | None, typer.Option(help="Rule uuid or name (a name may use *: 'Port Scan*').")]
IpOpt = Annotated[str | None, typer.Option(help="An address or CIDR the alert involves (related.ip).")]
OrgOpt = Annotated[str | None, typer.Option(help="Organization (source or destination) in the policy.")]
ZoneOpt = Annotated[str | None, typer.Option(help="Zone (source or destination) in the policy.")]
WhereOpt = Annotated[str | None, typer.Option(
    "--where", help="A soc query over the alerts: 'rule.name:\"Port Scan*\" source.ip:203.0.113.0/24'.")]


def _statuses(values: list[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    wanted = [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]
    if not wanted:
        return default
    if "all" in wanted:
        return triage.STATUSES
    for v in wanted:
        if v not in triage.STATUSES:
            die(f"--status {v}: expected one of {', '.join(triage.STATUSES)} or all")
    return tuple(dict.fromkeys(wanted))


def _filters(status: list[str] | None, severity: str | None, assignee: str | None, rule: str | None, ip: str | None,
             org: str | None, zone: str | None, where: str | None, since: str | None,
             until: str | None) -> triage.Filters:
    if severity is not None and severity not in SEVERITIES:
        die(f"--severity {severity}: expected one of {', '.join(SEVERITIES)}")
    try:
        f = triage.Filters(_statuses(status, triage.OPEN), severity, assignee, rule, ip, org, zone, where,
                           parse_time(since), parse_time(until))
        f.query()  # a bad --where or --ip is a usage error before the store is opened
    except QueryError as e:
        die(str(e))
    return f


def _say_suppressed(sup: triage.Suppressed) -> None:
    """The suppressed counts, identical in every listing (one line per active suppression)."""
    for c in sup.counts:
        s = c.suppression
        err_console.print(f"suppressed {s.id}: {c.alerts} alerts ({c.events} events) of {s.rule_name!r} where "
                          f"{s.where} until {s.until}", highlight=False, soft_wrap=True, style="yellow")
    if sup.hidden_by_withheld:
        err_console.print(f"suppressed: {sup.hidden_by_withheld} alerts by suppressions above your clearance",
                          highlight=False, soft_wrap=True, style="yellow")


@app.command("list")
def list_alerts(
    since: SinceOpt = None,
    until: UntilOpt = None,
    severity: SeverityOpt = None,
    status: StatusOpt = None,
    assignee: AssigneeOpt = None,
    rule: RuleOpt = None,
    ip: IpOpt = None,
    org: OrgOpt = None,
    zone: ZoneOpt = None,
    where: WhereOpt = None,
    group_by: Annotated[str | None, typer.Option(
        "--group-by", help="Count alerts per value of a field: rule, severity, status, assignee, organization, "
                           "day, or any alert field (source.ip).")] = None,
    limit: Annotated[int, typer.Option(help="Most alerts shown.")] = 100,
    clearance: ClearanceOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the queue, riskiest and newest first (NDJSON with --json: id, rule, severity, risk, count, status,
    assignees, group key). Alerts an active suppression matches are not listed; each suppression's count is
    printed (stderr), the same in every listing.

    Example: soc alerts list --since 24h --severity high --status open --group-by source.ip
    """
    filters = _filters(status, severity, assignee, rule, ip, org, zone, where, since, until)
    gate = open_reader(get_store(store), clearance)
    try:
        rows, q = triage.grouped(gate, filters, group_by) if group_by else ([], triage.queue(gate, filters, limit))
    except (StoreError, QueryError) as e:
        die(str(e), ExitCode.FAILURE)
    finally:
        gate.store.close()
    say_withheld(Read([], q.withheld), "alerts", gate)
    _say_suppressed(q.suppressed)
    if group_by:
        if as_json:
            for r in rows:
                print_ndjson(r)
            return
        t = Table(title=f"Alerts by {group_by} ({len(q.items)} alerts, {len(rows)} groups)")
        for col in (group_by, "alerts", "events", "max risk"):
            t.add_column(col, overflow="fold")
        for r in rows:
            t.add_row(str(r[group_by]), str(r["alerts"]), str(r["events"]), str(r["max_risk"]))
        console.print(t)
        return
    rows = [summary(a) for a in q.items]
    if as_json:
        for r in rows:
            print_ndjson(r)
        return
    t = Table(title=f"Alerts ({len(rows)})")
    for col in ("time", "severity", "risk", "count", "status", "assignee", "rule", "group", "id"):
        t.add_column(col, overflow="fold")
    for r in rows:
        group = " ".join(f"{k}={r[k]}" for k in r if k in GROUP_FIELDS or "." in k and k != "@timestamp")
        count = str(r["count"]) + (f" (storm: {r['storm_keys']} keys, {r['suppressed']} alerts folded)"
                                   if "storm_keys" in r else "")
        t.add_row(str(r["@timestamp"]), str(r["severity"]), str(r["risk_score"]), count,
                  r["workflow_status"], ",".join(r["assignees"]) or "-", str(r["title"]), group, str(r["id"]))
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
    if "soc.alert.storm.keys" in a:
        console.print(f"storm: {a['soc.alert.storm.keys']} keys, {a['soc.alert.storm.matches']} matches, "
                      f"{a['soc.alert.storm.suppressed']} per-key alerts folded (more than "
                      f"{a.get('soc.alert.storm.threshold')} keys in {a.get('soc.alert.storm.window')} s); sample: "
                      + "; ".join(a.get("soc.alert.storm.sample") or []), highlight=False, soft_wrap=True)
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
    if a.get("soc.alert.assignees"):
        console.print(f"assigned to: {', '.join(a['soc.alert.assignees'])}", highlight=False)
    timers = [f"created {triage.created_at(a)}"]
    if a.get("soc.alert.time_to_ack") is not None:
        timers.append(f"acknowledged after {triage.human(a['soc.alert.time_to_ack'])}")
    if a.get("soc.alert.time_to_close") is not None:
        timers.append(f"closed after {triage.human(a['soc.alert.time_to_close'])} "
                      f"({a.get('soc.alert.workflow_reason')})")
    console.print("timers: " + ", ".join(timers), highlight=False)
    history = a.get("soc.alert.history") or []
    if history:
        t = Table(title=f"History ({len(history)})")
        for col in ("at", "by", "action", "from", "to", "reason", "comment"):
            t.add_column(col, overflow="fold")
        for h in history:
            t.add_row(*(str(h.get(k) or "-") for k in ("at", "by", "action", "from", "to", "reason", "comment")))
        console.print(t)


# --- the workflow ------------------------------------------------------------------------------------------------

IdsArg = Annotated[list[str] | None, typer.Argument(help="Alert ids (soc.alert.uuid), or none with --where/--status.")]
CommentOpt = Annotated[str | None, typer.Option(help="A comment kept in the alert's history.")]


def _change(gate: Gate, change: triage.Change, ids: list[str], where: str | None, statuses: tuple[str, ...],
            as_json: bool) -> None:
    """Apply one change to the given alerts or those matching the query; print each result and a count; exit 1
    when any alert was refused."""
    if not ids and where is None and not statuses:
        gate.store.close()
        die(f"{change.action}: give alert ids, or --where QUERY and/or --status")
    try:
        out = triage.change_alerts(gate, change, ids, where, statuses)
    except (StoreError, QueryError, triage.Refused) as e:
        die(str(e), ExitCode.FAILURE)
    finally:
        gate.store.close()
    say_withheld(Read([], out.withheld), "alerts", gate)
    for a in out.changed:
        h = a["soc.alert.history"][-1]
        if as_json:
            print_ndjson({"id": a["soc.alert.uuid"], "action": change.action, "result": "changed", "from": h["from"],
                          "to": h["to"], "by": h["by"], "at": h["at"]})
        else:
            console.print(f"{change.action} {a['soc.alert.uuid']}: {h['from'] or '-'} → {h['to']}", highlight=False)
    for uuid, why in out.refused:
        if as_json:
            print_ndjson({"id": uuid, "action": change.action, "result": "refused", "why": why})
        err_console.print(f"refused {uuid}: {why}", highlight=False, soft_wrap=True, style="red")
    line = f"{change.action}: {len(out.changed)} alert(s) changed, {len(out.refused)} refused"
    if as_json:
        err_console.print(line, highlight=False)
    else:
        console.print(line, highlight=False)
    if out.refused:
        raise typer.Exit(int(ExitCode.FAILURE))


def _transition(action: str, ids: list[str] | None, where: str | None, status: list[str] | None,
                reason: str | None, comment: str | None, clearance: str | None, store: str | None,
                as_json: bool) -> None:
    statuses = _statuses(status, ())
    gate = open_reader(get_store(store), clearance)
    change = triage.Change(action, gate.reader.user, triage.now_iso(), reason, comment)
    try:
        triage.check(change)
    except triage.Refused as e:
        gate.store.close()
        die(str(e))
    _change(gate, change, ids or [], where, statuses, as_json)


@app.command()
def ack(ids: IdsArg = None, where: WhereOpt = None, status: StatusOpt = None, comment: CommentOpt = None,
        clearance: ClearanceOpt = None, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Acknowledge alerts (open → acknowledged): by id, or every alert matching --where/--status.

    Example: soc alerts ack --where 'rule.name:"Port Scan*" source.ip:203.0.113.0/24' --status open
    """
    _transition("ack", ids, where, status, None, comment, clearance, store, as_json)


@app.command()
def start(ids: IdsArg = None, where: WhereOpt = None, status: StatusOpt = None, comment: CommentOpt = None,
          clearance: ClearanceOpt = None, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Start work on alerts (open or acknowledged → in-progress).

    Example: soc alerts start "$ALERT_ID" --comment "pulling the pcap"
    """
    _transition("start", ids, where, status, None, comment, clearance, store, as_json)


@app.command()
def close(ids: IdsArg = None,
          reason: Annotated[str, typer.Option(help=f"Why: {', '.join(triage.CLOSE_REASONS)}.")] = "",
          comment: CommentOpt = None, where: WhereOpt = None, status: StatusOpt = None,
          clearance: ClearanceOpt = None, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Close alerts with a reason (and a comment): one reason and comment for every alert given or matched.

    Example: soc alerts close --where 'rule.name:"Port Scan*"' --status open,acknowledged --reason false-positive
    --comment "authorised scanner"
    """
    _transition("close", ids, where, status, reason or None, comment, clearance, store, as_json)


@app.command()
def reopen(ids: IdsArg = None, where: WhereOpt = None, status: StatusOpt = None, comment: CommentOpt = None,
           clearance: ClearanceOpt = None, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Reopen closed alerts (closed → open; the time to close is measured again at the next close).

    Example: soc alerts reopen "$ALERT_ID" --comment "seen again"
    """
    _transition("reopen", ids, where, status, None, comment, clearance, store, as_json)


@app.command()
def assign(args: Annotated[list[str], typer.Argument(help="Alert ids, then the user (only the user with --where).",
                                                     metavar="[ID]... USER")],
           where: WhereOpt = None, status: StatusOpt = None, comment: CommentOpt = None,
           clearance: ClearanceOpt = None, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Assign alerts to a user (the alert's history keeps who was assigned before).

    Example: soc alerts assign "$ALERT_ID" soc-analyst
    """
    *ids, user = args
    gate = open_reader(get_store(store), clearance)
    _change(gate, triage.Change("assign", gate.reader.user, triage.now_iso(), None, comment, user), ids, where,
            _statuses(status, ()), as_json)


@app.command()
def note(args: Annotated[list[str], typer.Argument(help="Alert ids, then the note's text (only the text with "
                                                        "--where).", metavar="[ID]... TEXT")],
         where: WhereOpt = None, status: StatusOpt = None,
         clearance: ClearanceOpt = None, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Add a note to alerts (kept with who and when, in the notes and the history).

    Example: soc alerts note "$ALERT_ID" "asked the owner of 10.10.5.23"
    """
    *ids, text = args
    gate = open_reader(get_store(store), clearance)
    _change(gate, triage.Change("note", gate.reader.user, triage.now_iso(), None, text), ids, where,
            _statuses(status, ()), as_json)


# --- statistics and suppressions -------------------------------------------------------------------------------


@app.command()
def stats(
    by: Annotated[str, typer.Option(help=f"Group by: {', '.join(triage.STATS_BY)}.")] = "rule",
    since: SinceOpt = None,
    until: UntilOpt = None,
    severity: SeverityOpt = None,
    status: StatusOpt = None,
    assignee: AssigneeOpt = None,
    rule: RuleOpt = None,
    ip: IpOpt = None,
    org: OrgOpt = None,
    zone: ZoneOpt = None,
    where: WhereOpt = None,
    clearance: ClearanceOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Counts per status, suppressed, MTTA (mean time to acknowledge) and MTTR (mean time to close) per day, rule,
    severity, organization, assignee or status; the last row is all alerts. Every status by default.

    Example: soc alerts stats --by assignee --since 7d --json
    """
    filters = _filters(status or ["all"], severity, assignee, rule, ip, org, zone, where, since, until)
    gate = open_reader(get_store(store), clearance)
    try:
        rows, q = triage.stats(gate, by, filters)
    except (StoreError, QueryError) as e:
        die(str(e), ExitCode.FAILURE)
    finally:
        gate.store.close()
    say_withheld(Read([], q.withheld), "alerts", gate)
    _say_suppressed(q.suppressed)
    if as_json:
        for r in rows:
            print_ndjson(r)
        return
    t = Table(title=f"Alerts by {by}")
    for col in (by, "alerts", *triage.STATUSES, "suppressed", "MTTA", "MTTR"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(str(r[by]), *(str(r[k]) for k in ("alerts", *triage.STATUSES, "suppressed")),
                  triage.human(r["mtta_s"]), triage.human(r["mttr_s"]))
    console.print(t)


@app.command()
def suppress(
    rule: Annotated[str, typer.Option(help="The rule: its uuid or name as `soc alerts list` shows it.")],
    where: Annotated[str, typer.Option("--where", help="The key: field:value or field=value (source.ip=X), "
                                                       "a CIDR or a prefix*.")],
    duration: Annotated[str, typer.Option("--for", help="How long: 30m, 24h, 7d.")] = "24h",
    reason: Annotated[str, typer.Option(help="Why (kept with the suppression and in the audit log).")] = "",
    clearance: ClearanceOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop listing a rule's alerts for one key until the suppression expires; they are still counted.

    Example: soc alerts suppress --rule "ET SCAN Potential SSH Scan" --where source.ip=203.0.113.66 --for 24h
    --reason "authorised scan, ticket 4711"
    """
    gate = open_reader(get_store(store), clearance)
    try:
        sup = triage.suppress(gate, rule, where, duration, reason, gate.reader.user)
    except QueryError as e:
        die(str(e))
    except StoreError as e:
        die(str(e), ExitCode.FAILURE)
    finally:
        gate.store.close()
    if as_json:
        print_ndjson(sup.as_dict())
    else:
        console.print(f"suppression {sup.id}: {sup.rule_name!r} where {sup.where} until {sup.until}",
                      highlight=False)


@app.command()
def suppressions(
    show_all: Annotated[bool, typer.Option("--all", help="Also expired and removed suppressions.")] = False,
    clearance: ClearanceOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List suppressions with the alerts and events each hides now (the counts every listing shows).

    Example: soc alerts suppressions --all --json
    """
    gate = open_reader(get_store(store), clearance)
    try:
        read = triage.visible_suppressions(gate, show_all)
        counts = {c.suppression.id: c for c in triage.suppression_counts(gate).counts}
    except StoreError as e:
        die(str(e), ExitCode.FAILURE)
    finally:
        gate.store.close()
    say_withheld(read, "suppressions", gate)
    rows = [s | {"alerts": counts[s["id"]].alerts if s["id"] in counts else 0,
                 "events": counts[s["id"]].events if s["id"] in counts else 0,
                 "active": s["id"] in counts} for s in read.items]
    if as_json:
        for r in rows:
            print_ndjson(r)
        return
    t = Table(title=f"Suppressions ({len(rows)})")
    for col in ("id", "rule", "where", "until", "alerts", "events", "by", "reason", "state"):
        t.add_column(col, overflow="fold")
    for r in rows:
        state = "active" if r["active"] else f"removed by {r['removed_by']}" if r["removed_at"] else "expired"
        t.add_row(r["id"], r["rule_name"], r["where"], r["until"], str(r["alerts"]), str(r["events"]), r["by"],
                  r["reason"], state)
    console.print(t)


@app.command()
def unsuppress(
    suppression_id: Annotated[str, typer.Argument(help="Suppression id (from `soc alerts suppressions`).")],
    clearance: ClearanceOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """End a suppression now: its alerts are listed again (it stays in `suppressions --all`).

    Example: soc alerts unsuppress 3f2a9c1d0b7e
    """
    gate = open_reader(get_store(store), clearance)
    try:
        sup = triage.unsuppress(gate, suppression_id, gate.reader.user)
    except ValueError as e:
        die(str(e), ExitCode.FAILURE)
    except StoreError as e:
        die(str(e), ExitCode.FAILURE)
    finally:
        gate.store.close()
    if as_json:
        print_ndjson(sup.as_dict())
    else:
        console.print(f"suppression {sup.id} removed", highlight=False)
