"""Shared CLI plumbing: options, exit codes, output, store opening, progress."""

from __future__ import annotations

import json
import sys
from enum import IntEnum
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from correlator.events import nest
from correlator.query import Clearance, Query
from correlator.store import Store, StoreError, StoreUnavailable, open_store


class ExitCode(IntEnum):
    """Exit codes every soc command uses (documented in README)."""

    OK = 0  # the job fully succeeded
    FAILURE = 1  # the job ran and found failures (failed checks, failed tests, errors on some input)
    USAGE = 2  # bad usage or bad input (unparsable file, store URI, policy), nothing done
    PARTIAL = 3  # accepted but not all stored: the store was unavailable and batches were spooled


StoreOpt = Annotated[
    str | None,
    typer.Option("--store", envvar="SOC_STORE", help="Store URI: sqlite:///path.db or http(s)://host:9200.",
                 show_envvar=True),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print NDJSON: one JSON object per line.")]

console = Console()
err_console = Console(stderr=True)
state: dict[str, Any] = {"store": None, "config": None, "verbose": 0}


def die(message: str, code: int = ExitCode.USAGE) -> NoReturn:
    """Print an error to stderr and exit with `code`."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(int(code))


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False)


def print_ndjson(obj: Any) -> None:
    """Write one JSON object as a line on stdout."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str) + "\n")


def print_event(event: dict[str, Any]) -> None:
    """Write a flat event as one nested ECS document line."""
    print_ndjson(nest(event))


def get_store(uri: str | None = None, init: bool = True) -> Store:
    """Open the store (flag > `soc --store` > SOC_STORE > default); exit 2 with the reason if it cannot be used."""
    try:
        store = open_store(uri or state["store"])
        if init:
            store.init()
        return store
    except StoreUnavailable as exc:  # unreachable now: writers spool, readers fail with their own message
        warn(str(exc))
        return store
    except StoreError as exc:
        die(str(exc))


class ProgressBar:
    """A progress bar on stderr (`with make_progress(total, "Reading") as bar: bar.advance(n)`)."""

    def __init__(self, total: int | None, description: str, enabled: bool = True) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=err_console,
            disable=not enabled or not err_console.is_terminal,
        )
        self.task = self.progress.add_task(description, total=total, info="")

    def advance(self, n: float = 1) -> None:
        self.progress.advance(self.task, n)

    def update(self, completed: float | None = None, info: str | None = None, total: float | None = None) -> None:
        fields = {"info": info} if info is not None else {}
        self.progress.update(self.task, completed=completed, total=total, **fields)

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.progress.stop()


def make_progress(total: int | None, description: str, enabled: bool = True) -> ProgressBar:
    """A progress bar on stderr; silent when disabled or when stderr is not a terminal."""
    return ProgressBar(total, description, enabled)


# --- reader clearance (classification policy) ----------------------------------------------------------------------

ClearanceOpt = Annotated[
    str | None,
    typer.Option("--clearance", envvar="SOC_CLEARANCE", show_envvar=True,
                 help="Reader clearance: a level name or rank (default: config `clearance:`, else the policy's "
                      "mapping of the OS user, else its lowest level)."),
]


def reader_clearance(flag: str | None = None) -> Clearance:
    """The reader's clearance: --clearance / SOC_CLEARANCE > config `clearance:` > policy user mapping > lowest."""
    from soc_cli.policy import resolve_clearance

    return resolve_clearance(flag).clause


def cleared_read(store: Store, kind: str, q: Query, limit: int, clearance: Clearance | None = None,
                 what: str = "") -> list[dict[str, Any]]:
    """Search `kind` ('events' or 'alerts') under the reader's clearance.

    Items above it are not returned; how many were withheld is printed on stderr; every read that returns
    classified items (rank > 0) is appended to the audit log.
    """
    from dataclasses import replace

    from correlator.query import Range

    clearance = clearance or reader_clearance()
    search = store.search_events if kind == "events" else store.search_alerts
    items = search(replace(q, clauses=(*q.clauses, clearance)), limit)
    above = replace(q, clauses=(*q.clauses, Range("gov.label.rank", gt=clearance.max_rank)))
    withheld = store.count_events(above) if kind == "events" else len(store.search_alerts(above, 10**9))
    account_read(store, kind, items, withheld, clearance, what or _describe(q))
    return items


def cleared_count(store: Store, q: Query, clearance: Clearance | None = None, what: str = "") -> int:
    """Count events under the reader's clearance (reporting the withheld count like `cleared_read`)."""
    from dataclasses import replace

    from correlator.query import Range

    clearance = clearance or reader_clearance()
    n = store.count_events(replace(q, clauses=(*q.clauses, clearance)))
    withheld = store.count_events(replace(q, clauses=(*q.clauses, Range("gov.label.rank", gt=clearance.max_rank))))
    account_read(store, "events", [], withheld, clearance, what or _describe(q))
    return n


def withhold(store: Store, kind: str, items: list[dict[str, Any]], clearance: Clearance | None = None,
             what: str = "") -> list[dict[str, Any]]:
    """Filter items already read (hunt results, one alert by id) by clearance; report and audit like `cleared_read`."""
    clearance = clearance or reader_clearance()
    kept = [it for it in items if int(it.get("gov.label.rank") or 0) <= clearance.max_rank]
    account_read(store, kind, kept, len(items) - len(kept), clearance, what)
    return kept


def account_read(store: Store, kind: str, items: list[dict[str, Any]], withheld: int, clearance: Clearance,
                 what: str) -> None:
    """Tell the reader how many items were withheld; audit the read when it returned classified items."""
    err_console.print(f"{withheld} {kind} above your clearance (rank {clearance.max_rank}) withheld",
                      highlight=False, soft_wrap=True, style="dim" if not withheld else "yellow")
    classified = [it for it in items if int(it.get("gov.label.rank") or 0) > 0]
    if classified:
        ids = [it.get("event.id") or it.get("soc.alert.uuid") for it in classified]
        store.audit("read-classified", {"what": kind, "query": what, "clearance": clearance.max_rank,
                                        "items": len(classified), "max_rank": max(int(it["gov.label.rank"])
                                                                                  for it in classified),
                                        "ids": ids[:100], "withheld": withheld})


def _describe(q: Query) -> str:
    return " ".join(repr(c) for c in q.clauses) + (f" since={q.since}" if q.since else "") + \
        (f" until={q.until}" if q.until else "")
