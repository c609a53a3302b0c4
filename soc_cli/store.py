"""soc store: create, inspect and replay the spool of the event store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from correlator.events import to_utc_iso
from correlator.store import StoreError, StoreUnavailable, parse_retention, spool_for
from soc_cli.common import ClearanceOpt, ExitCode, JsonOpt, StoreOpt, console, die, get_store, open_reader, print_ndjson

app = typer.Typer(help="Create and inspect the store (SQLite file or Elasticsearch cluster).\n\n"
                       "Example: soc store status --json", no_args_is_help=True)


@app.command()
def init(store: StoreOpt = None, json: JsonOpt = False) -> None:
    """Create the schema (SQLite) or index templates, data stream, alerts index and ILM policy (Elasticsearch).

    Example: soc store init --store sqlite:///tmp/soc.db
    """
    s = get_store(store, init=False, create=True)
    try:
        s.init()
    except StoreUnavailable as exc:
        die(f"{s.uri}: {exc}", ExitCode.FAILURE)
    if json:
        print_ndjson({"store": s.uri, "initialized": True})
    else:
        console.print(f"initialized {s.uri}")


@app.command()
def status(clearance: ClearanceOpt = None, store: StoreOpt = None, json: JsonOpt = False) -> None:
    """Report health, counts (of what your clearance may read), versions and spooled batches.

    Exit 1 when unhealthy or unreachable.

    Example: soc store status --json
    """
    s = get_store(store, init=False)
    try:
        info = open_reader(s, clearance).status()
    except StoreUnavailable as exc:
        info = {"uri": s.uri, "healthy": False, "error": str(exc)}
    info["spool"] = spool_for(s.uri).pending()
    if json:
        print_ndjson(info)
    else:
        table = Table(title=f"store {s.uri}", show_header=False)
        for key, value in info.items():
            table.add_row(key, str(value))
        console.print(table)
    raise typer.Exit(ExitCode.OK if info.get("healthy") else ExitCode.FAILURE)


@app.command()
def replay(store: StoreOpt = None, json: JsonOpt = False) -> None:
    """Write batches spooled during a store outage; exit 3 if the store is still unavailable.

    Example: soc store replay --store sqlite:///tmp/soc.db
    """
    s = get_store(store, create=True)
    spool = spool_for(s.uri)
    try:
        done = spool.replay(s)
    except StoreUnavailable as exc:
        die(f"{s.uri} still unavailable, spool kept at {spool.directory}: {exc}", ExitCode.PARTIAL)
    done["skipped"] = spool.skipped_lines
    if json:
        print_ndjson(done)
    else:
        console.print(f"replayed {done['events']} events ({done['new_events']} new) and {done['alerts']} alerts")


@app.command()
def prune(
    older_than: Annotated[str | None, typer.Option(
        "--older-than", help="Delete events older than this (90d, 12h, 2w); default: the store URI's retention=.")]
    = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Delete events older than an age (retention), oldest first; audited. Alerts and incidents are kept.

    Exit 2 when no age is given and the store URI sets no retention=.

    Example: soc store prune --older-than 90d --store sqlite:///tmp/soc.db
    """
    s = get_store(store)
    age = older_than or getattr(s, "retention", None)
    if not age:
        die(f"{s.uri}: no --older-than and no retention= in the store URI (e.g. sqlite:///path.db?retention=90d)")
    try:
        before = datetime.now(UTC) - parse_retention(age)
    except ValueError as exc:
        die(f"--older-than {exc}" if older_than else f"{s.uri}: retention {exc}")
    try:
        deleted = s.prune(before)
    except StoreError as exc:
        die(str(exc), ExitCode.FAILURE)
    if json:
        print_ndjson({"store": s.uri, "before": to_utc_iso(before), "deleted_events": deleted})
    else:
        console.print(f"deleted {deleted} events older than {to_utc_iso(before)} from {s.uri}")
