"""soc audit: list and verify the hash-chained, append-only audit log (reads of classified data, changes)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from correlator.store import StoreError
from soc_cli.common import ExitCode, JsonOpt, StoreOpt, console, die, err_console, get_store, print_ndjson

app = typer.Typer(help="The audit log: list entries, verify the hash chain.", no_args_is_help=True)


@app.command()
def verify(store: StoreOpt = None, json_out: JsonOpt = False) -> None:
    """Verify the audit hash chain; exit 1 naming each edited, deleted or reordered entry."""
    s = get_store(store)
    try:
        problems = s.audit_verify()
    except StoreError as exc:
        die(str(exc), ExitCode.FAILURE)
    if json_out:
        print_ndjson({"intact": not problems, "problems": problems, "store": s.uri})
    for p in problems:
        err_console.print(f"[red]TAMPERED[/] {p}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(ExitCode.FAILURE)
    if not json_out:
        console.print(f"audit log of {s.uri} intact")


@app.command("list")
def list_entries(
    action: Annotated[str | None, typer.Option(help="Only entries with this action (e.g. read-classified).")] = None,
    actor: Annotated[str | None, typer.Option(help="Only entries by this OS user.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="The last N entries.")] = 100,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List audit entries, oldest first (the last --limit)."""
    s = get_store(store)
    try:
        entries = [e for e in s.audit_entries() if (action is None or e["action"] == action)
                   and (actor is None or e["actor"] == actor)][-limit:]
    except StoreError as exc:
        die(str(exc), ExitCode.FAILURE)
    if json_out:
        for e in entries:
            print_ndjson(e)
        return
    table = Table(title=f"{len(entries)} audit entries", title_justify="left")
    for col in ("seq", "ts", "actor", "action", "details"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(str(e["seq"]), e["ts"], e["actor"], e["action"],
                      json.dumps(e["details"], ensure_ascii=False)[:300])
    console.print(table)
