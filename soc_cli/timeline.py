"""soc timeline: what an address (or an incident's addresses) did, in time order, through the read gate."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from correlator.pivots import PivotError, summary, timeline
from correlator.query import QueryError, parse_time
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
    print_event,
    say_withheld,
)

app = typer.Typer(no_args_is_help=False)  # help: the callback's docstring


def _endpoint(item: dict, side: str) -> str:
    ip, port = item.get(f"{side}.ip"), item.get(f"{side}.port")
    return f"{ip}:{port}" if ip and port is not None else str(ip or "")


@app.callback(invoke_without_command=True)
def show_timeline(
    ip: Annotated[list[str] | None, typer.Option("--ip", help="An address (repeat for several).")] = None,
    incident: Annotated[int | None, typer.Option(
        "--incident", help="An incident: its alerts' addresses, from 15 minutes before its first alert to after its "
                           "last.")] = None,
    since: Annotated[str | None, typer.Option(help="From: ISO-8601, epoch, or a duration back (24h, 7d).")] = None,
    until: Annotated[str | None, typer.Option(help="Up to (exclusive).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most rows (events and alerts), oldest first.")] = 1000,
    clearance: ClearanceOpt = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Flows, DNS, HTTP, TLS, SSH (with the policy's decision on each) and alerts of an address or an incident,
    oldest first.

    Example: soc timeline --ip 10.10.5.23 --since 24h

    Example: soc timeline --incident 1 --json
    """
    if not ip and incident is None:
        die("give --ip ADDRESS or --incident N")
    try:
        start, end = parse_time(since), parse_time(until)
    except QueryError as exc:
        die(str(exc))
    gate = open_reader(get_store(store), clearance)
    try:
        tl = timeline(gate, ip or [], incident, start, end, limit)
    except PivotError as exc:
        if exc.read is not None:
            say_withheld(exc.read, exc.kind, gate)
        die(str(exc), ExitCode.FAILURE)
    except StoreError as exc:
        die(str(exc), ExitCode.FAILURE)
    say_withheld(tl.events, "events", gate)
    say_withheld(tl.alerts, "alerts", gate)
    if json:
        for item in tl.items:
            print_event(item)
        return
    table = Table(title=f"timeline of {', '.join(tl.ips)}: {len(tl.items)} rows", title_justify="left")
    for col in ("@timestamp", "what", "source", "destination", "label", "summary"):
        table.add_column(col, overflow="fold")
    for it in tl.items:
        what = "alert" if "soc.alert.uuid" in it else str(it.get("event.dataset", "")).removeprefix("soc.")
        table.add_row(it["@timestamp"], what, _endpoint(it, "source"), _endpoint(it, "destination"),
                      it.get("gov.label.level") or "", summary(it), style="bold red" if what == "alert" else None)
    console.print(table)
