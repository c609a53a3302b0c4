"""soc hunt: run Sigma rules retroactively over stored events (SQLite or Elasticsearch queries by pySigma)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

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
    print_event,
    print_ndjson,
    say_withheld,
)

app = typer.Typer(no_args_is_help=True,  # help: the callback's docstring
                  context_settings={"allow_interspersed_args": True})


@app.callback(invoke_without_command=True)
def hunt(
    rules: Annotated[list[Path], typer.Argument(help="Rule files or directories.")],
    since: Annotated[str | None, typer.Option(help="From: ISO-8601, epoch, or a duration back (24h, 7d).")] = None,
    until: Annotated[str | None, typer.Option(help="Up to (exclusive).")] = None,
    limit: Annotated[int, typer.Option(help="Most events per rule.")] = 1000,
    clearance: ClearanceOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Retro-hunt: run Sigma rules over stored events.

    RULES are converted with pySigma for the store (SQLite SQL / Lucene) and matching events printed; correlation
    rules are replayed over their base rules' matches in event-time order, as the streaming engine runs them.

    With --json: one line per matching event, the nested event plus `soc.hunt.rule_id` / `soc.hunt.title`, and one
    line per correlation firing: `soc.hunt.{rule_id,title,correlation,group,count,value,first,last,event_ids}`.
    Exit 1 when some rule could not be hunted (reasons on stderr), else 0.

    Example: soc hunt rules/sigma/ --since 7d
    """
    for p in rules:
        if not p.exists():
            die(f"{p}: no such rule file or directory")
    try:
        start, end = parse_time(since), parse_time(until)
    except QueryError as e:
        die(str(e))
    gate = open_reader(get_store(store), clearance)
    try:
        res = gate.hunt(rules, start, end, limit)
    except (StoreError, ValueError, FileNotFoundError) as e:
        die(str(e), ExitCode.FAILURE)
    finally:
        gate.store.close()
    say_withheld(res, "events", gate)
    results = res.matches
    for f in res.failures:
        err_console.print(f"{f.path}:{f.line}: [yellow]{f.reason}[/]: {f.message}", highlight=False, soft_wrap=True)
    if as_json:
        for info, events in results:
            for e in events:
                print_event(e | {"soc.hunt.rule_id": info.id, "soc.hunt.title": info.title})
        for c in res.correlations:
            print_ndjson({"soc": {"hunt": {
                "rule_id": c.rule.id, "title": c.rule.title, "correlation": c.type, "group": c.group,
                "count": c.count, "value": c.value, "first": c.first, "last": c.last, "event_ids": c.event_ids}}})
    else:
        t = Table(title="Hunt results")
        for col in ("rule", "matches", "newest"):
            t.add_column(col, overflow="fold")
        for info, events in results:
            t.add_row(info.title, str(len(events)), events[0].get("@timestamp", "") if events else "")
        console.print(t)
        if res.correlations:
            t = Table(title="Correlations", caption="the contributing event ids: --json")
            for col in ("rule", "group", "count", "first", "last"):
                t.add_column(col, overflow="fold")
            for c in res.correlations:
                t.add_row(c.rule.title, ", ".join(f"{k}={v}" for k, v in c.group.items()), str(c.count), c.first,
                          c.last)
            console.print(t)
    raise typer.Exit(ExitCode.FAILURE if res.failures else ExitCode.OK)
