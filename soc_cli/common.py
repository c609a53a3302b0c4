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
from correlator.store import Store, StoreError, open_store


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
