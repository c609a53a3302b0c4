"""soc audit: list, verify and anchor the keyed, hash-chained, append-only audit log (docs/audit.md)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from correlator.audit import ANCHOR_ENV, Anchors, AuditKeyError, FileAnchors, anchor_record, key_id_of, open_anchors
from correlator.store import Store, StoreError
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

app = typer.Typer(help="The audit log: list entries, verify the keyed chain, export its head (anchor).\n\n"
                       "Example: soc audit verify",
                  no_args_is_help=True)

AnchorOpt = Annotated[
    str | None,
    typer.Option("--anchor", help="Also check the heads anchored in this file or Elasticsearch index URL "
                                  "(http(s)://[user:pass@]host:port/index); the anchor file is always checked."),
]


def _verified(s: Store, anchors: list[Anchors]) -> tuple[list[str], list[dict[str, Any]]]:
    """Problems of the chain (with `anchors`) and its entries; exit 2 when the key is missing or unusable."""
    try:
        return s.audit_verify(anchors), s.audit_entries()
    except AuditKeyError as exc:
        die(str(exc), ExitCode.USAGE)
    except StoreError as exc:
        die(str(exc), ExitCode.FAILURE)


def _report(problems: list[str]) -> None:
    for p in problems:
        err_console.print(f"[red]TAMPERED[/] {escape(p)}", highlight=False, soft_wrap=True)


def _anchor_log(target: str) -> Anchors:
    try:
        return open_anchors(target)
    except StoreError as exc:
        die(str(exc))


@app.command()
def verify(anchor: AnchorOpt = None, store: StoreOpt = None, json_out: JsonOpt = False) -> None:
    """Verify the audit chain (HMAC under the key file, plain SHA-256 before keying), its head and every anchored
    head; exit 1 naming each edited, deleted, reordered or truncated entry, 2 when the chain's key is missing.

    Example: soc audit verify --json
    """
    s = get_store(store)
    logs = [_anchor_log(anchor)] if anchor else []
    if anchor and isinstance(logs[0], FileAnchors) and not logs[0].path.exists():
        die(f"{anchor}: no such anchor file")
    problems, entries = _verified(s, logs)
    if json_out:
        print_ndjson({"intact": not problems, "problems": problems, "store": s.uri, "entries": len(entries)})
    _report(problems)
    if problems:
        raise typer.Exit(ExitCode.FAILURE)
    if not json_out:
        keyed = next((e["seq"] for e in entries if key_id_of(e["hash"])), None)
        how = f"keyed from seq={keyed}" if keyed else "unkeyed"
        console.print(f"audit log of {s.uri} intact: {len(entries)} entries, {how}", highlight=False)


@app.command()
def anchor(
    to: Annotated[str | None, typer.Option(
        "--to", help="Anchor file (appended with O_APPEND) or Elasticsearch index URL "
                     "(http(s)://[user:pass@]host:port/index); default: the anchor file ($SOC_AUDIT_ANCHOR_FILE).",
    )] = None,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Export the current head (seq, hash, time, store) outside the store, after verifying the chain (against the
    anchor file): a tampered chain is not anchored (exit 1).

    Example: soc audit anchor --to ~/audit-heads.ndjson
    """
    s = get_store(store)
    log = _anchor_log(to) if to else s.audit_chain.anchors
    if log is None:
        die(f"no anchor target: give --to, or set {ANCHOR_ENV}")
    problems, entries = _verified(s, [])
    if problems:
        _report(problems)
        raise typer.Exit(ExitCode.FAILURE)
    if not entries:
        die(f"the audit log of {s.uri} is empty: nothing to anchor", ExitCode.FAILURE)
    record = anchor_record(s.audit_name, entries[-1]["seq"], entries[-1]["hash"])
    try:
        log.append(record)
    except StoreError as exc:
        die(str(exc), ExitCode.FAILURE)
    if json_out:
        print_ndjson(record | {"to": log.where})
    else:
        console.print(f"anchored seq={record['seq']} of {s.uri} in {log.where}", highlight=False)


@app.command("list")
def list_entries(
    action: Annotated[str | None, typer.Option(help="Only entries with this action (e.g. read-classified).")] = None,
    actor: Annotated[str | None, typer.Option(help="Only entries by this OS user.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="The last N entries.")] = 100,
    clearance: ClearanceOpt = None,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List audit entries, oldest first (the last --limit); entries about reads above your clearance are withheld.

    Example: soc audit list --action read-classified --limit 20
    """
    gate = open_reader(get_store(store), clearance)
    try:
        read = gate.audit_entries()
    except StoreError as exc:
        die(str(exc), ExitCode.FAILURE)
    say_withheld(read, "audit entries", gate)
    entries = [e for e in read.items if (action is None or e["action"] == action)
               and (actor is None or e["actor"] == actor)][-limit:]
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
