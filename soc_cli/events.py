"""soc events: ingest ECS NDJSON and search stored events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from correlator.events import loads_event, normalize
from correlator.pipeline import Pipeline
from correlator.pivots import PivotError, around
from correlator.query import QueryError, parse_query, parse_time
from correlator.store import StoreError
from correlator.triage import parse_duration
from soc_cli.common import (
    ClearanceOpt,
    ExitCode,
    JsonOpt,
    StoreOpt,
    console,
    die,
    err_console,
    get_store,
    make_progress,
    open_reader,
    print_event,
    print_ndjson,
    say_withheld,
)
from soc_cli.wiring import open_pipeline

app = typer.Typer(help="Ingest and search ECS events.\n\nExample: soc events search 'source.ip:10.0.0.0/8 "
                       "destination.port:>=1024' --since 24h", no_args_is_help=True)


def read_ndjson(path: Path, errors: list[str], on_bytes: Any = None) -> Iterator[dict[str, Any]]:
    """Yield normalized events from an NDJSON file, recording each bad line as `file:line: reason` in `errors`.

    A line is bad when it is not strict JSON (RFC 8259, UTF-8: no NaN/Infinity) holding an object with a usable
    @timestamp that a store can hold (see `loads_event`); the other lines are yielded.
    """
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            if on_bytes:
                on_bytes(len(raw))
            if not raw.strip():
                continue
            try:
                obj = loads_event(raw)
            except ValueError as exc:
                errors.append(f"{path}:{n}: invalid JSON: {exc}")
                continue
            if "@timestamp" not in obj:
                errors.append(f"{path}:{n}: event has no @timestamp")
                continue
            try:
                ev = normalize(obj)
            except (ValueError, TypeError) as exc:
                errors.append(f"{path}:{n}: {exc}")
                continue
            yield ev


@app.command()
def ingest(
    files: Annotated[list[Path], typer.Argument(help="NDJSON files of ECS events (nested or dotted keys).",
                                                exists=True, dir_okay=False, readable=True)],
    store: StoreOpt = None,
    rules: Annotated[bool, typer.Option(help="Run the shipped detection rules and policy on the events.")] = True,
    json: JsonOpt = False,
) -> None:
    """Ingest ECS NDJSON events through the pipeline into the store.

    Bad lines are reported with their line numbers and skipped; the rest is ingested (exit 1).
    If the store is unreachable, batches are spooled and replayed later (exit 3).

    Example: soc events ingest rules/sigma/tests/net_beaconing/positive.ndjson
    """
    pipeline: Pipeline = open_pipeline(store, detect=rules)
    s = pipeline.store
    errors: list[str] = []
    total = sum(f.stat().st_size for f in files)
    with make_progress(total, "ingesting", enabled=not json) as bar:

        def events() -> Iterator[dict[str, Any]]:
            for f in files:
                yield from read_ndjson(f, errors, bar.advance)

        try:
            stats = pipeline.run(events())
        except StoreError as exc:
            die(str(exc), ExitCode.FAILURE)
    errors.extend(stats.errors)
    for e in errors[:50]:
        err_console.print(f"[red]{e}[/]", highlight=False)
    if len(errors) > 50:
        err_console.print(f"… and {len(errors) - 50} more problems")
    summary = stats.as_dict() | {"bad_lines": len(errors) - len(stats.errors), "store": s.uri}
    if json:
        print_ndjson(summary)
    else:
        console.print(
            f"ingested {stats.events_in} events: {stats.written} new, {stats.duplicates} already stored, "
            f"{stats.alerts} alerts, {summary['bad_lines']} bad lines"
            + (f", {stats.spooled_events} spooled (store unavailable)" if stats.spooled else "")
        )
    if stats.spooled:
        raise typer.Exit(ExitCode.PARTIAL)
    if errors:
        raise typer.Exit(ExitCode.FAILURE)


def _summary(ev: dict[str, Any]) -> str:
    for key in ("message", "dns.question.name", "url.original", "tls.client.server_name", "rule.name", "event.action"):
        if ev.get(key):
            return str(ev[key])
    return ""


def _endpoint(ev: dict[str, Any], side: str) -> str:
    ip, port = ev.get(f"{side}.ip"), ev.get(f"{side}.port")
    if ip and port is not None:
        return f"[{ip}]:{port}" if ":" in str(ip) else f"{ip}:{port}"
    return str(ip or "")


@app.command()
def search(
    query: Annotated[str | None, typer.Argument(help="e.g. 'source.ip:10.0.0.0/8 destination.port:>=1024 evil'")]
    = None,
    since: Annotated[str | None, typer.Option(help="Start (inclusive): ISO-8601, epoch, or 15m/24h/7d ago.")] = None,
    until: Annotated[str | None, typer.Option(help="End (exclusive): ISO-8601, epoch, or 15m/24h/7d ago.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many events, newest first.")] = 100,
    count: Annotated[bool, typer.Option("--count", help="Print only how many events match.")] = False,
    around: Annotated[str | None, typer.Option(
        "--around", help="Pivot: the events of this alert's group key (its addresses on either side) within --window "
                         "of its first and last event.")] = None,
    window: Annotated[str, typer.Option(help="With --around: 30s, 15m, 2h, 1d.")] = "15m",
    clearance: ClearanceOpt = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Search stored events (newest first).

    Query terms are AND-ed: field:value (exact), field:pre* (prefix), field:10.0.0.0/8 (CIDR),
    field:>=N or field:[A TO B] (numeric range), and bare words (free text over string values).

    Example: soc events search 'event.dataset:soc.http salaries' --since 30d --json

    Example: soc events search --around 0f3c9a1e2b7d4c6a8e5f1a2b3c4d5e6f --window 15m
    """
    if around is not None:
        if query or since or until or count:
            die("--around takes no query, --since, --until or --count (the alert sets them)")
        _around(around, window, limit, clearance, store, json)
        return
    try:
        q = parse_query(query, parse_time(since), parse_time(until))
    except QueryError as exc:
        die(str(exc))
    gate = open_reader(get_store(store), clearance)
    try:
        read = gate.count_events(q, query or "") if count else gate.search_events(q, limit, query or "")
    except StoreError as exc:
        die(str(exc), ExitCode.FAILURE)
    say_withheld(read, "events", gate)
    if count:
        print_ndjson({"count": read.count}) if json else console.print(read.count)
        return
    hits = read.items
    if json:
        for ev in hits:
            print_event(ev)
        return
    _table(hits, f"{len(hits)} events")


def _table(hits: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for col in ("@timestamp", "dataset", "source", "destination", "summary"):
        table.add_column(col, overflow="fold")
    for ev in hits:
        table.add_row(ev["@timestamp"], str(ev.get("event.dataset", "")), _endpoint(ev, "source"),
                      _endpoint(ev, "destination"), _summary(ev))
    console.print(table)


def _around(alert_id: str, window: str, limit: int, clearance: str | None, store: str | None, json: bool) -> None:
    """`events search --around`: the pivot is correlator.pivots.around, through the gate."""
    try:
        span = parse_duration(window)
    except QueryError:
        die(f"--window {window!r}: expected a duration such as 30s, 15m or 2h")
    gate = open_reader(get_store(store), clearance)
    try:
        alert, read = around(gate, alert_id, span, limit)
    except PivotError as exc:
        if exc.read is not None:
            say_withheld(exc.read, exc.kind, gate)
        die(str(exc), ExitCode.FAILURE)
    except StoreError as exc:
        die(str(exc), ExitCode.FAILURE)
    say_withheld(read, "events", gate)
    if json:
        for ev in read.items:
            print_event(ev)
        return
    keys = ", ".join(f"{t['field']}={t['value']}" for t in alert.get("soc.alert.suppression.terms") or [])
    _table(read.items, f"{len(read.items)} events within {window} of alert {alert_id} ({keys})")
