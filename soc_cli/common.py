"""Shared CLI plumbing: options, exit codes, output, store opening, progress."""

from __future__ import annotations

import json
import os
import sys
from enum import IntEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

import rules
from correlator import audit
from correlator.events import nest
from correlator.gate import ClearanceError, Gate, HuntRead, Read, Reader, open_gate, resolve_reader
from correlator.policy import Policy, PolicyError, load_policy
from correlator.store import Store, StoreError, StoreMissing, StoreUnavailable, open_store


class ExitCode(IntEnum):
    """Exit codes every soc command uses (documented in README)."""

    OK = 0  # the job fully succeeded
    FAILURE = 1  # the job ran and found failures (failed checks, failed tests, errors on some input)
    USAGE = 2  # bad usage or bad input (unparsable file, store URI, policy), nothing done
    PARTIAL = 3  # partial: batches spooled (store unavailable), or a damaged capture read around its damage


StoreOpt = Annotated[
    str | None,
    typer.Option("--store", envvar="SOC_STORE", help="Store URI: sqlite:///path.db or http(s)://host:9200.",
                 show_envvar=True),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print NDJSON: one JSON object per line.")]

console = Console(soft_wrap=True)  # lines are never hard-wrapped (tables still fit the width)
err_console = Console(stderr=True, soft_wrap=True)  # errors are never hard-wrapped: `file:line: reason` stays one line
state: dict[str, Any] = {"store": None, "config": None, "verbose": 0}


def die(message: str, code: int = ExitCode.USAGE) -> NoReturn:
    """Print an error to stderr and exit with `code`."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(int(code))


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def print_ndjson(obj: Any) -> None:
    """Write one JSON object as a line on stdout."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str) + "\n")


def print_event(event: dict[str, Any]) -> None:
    """Write a flat event as one nested ECS document line."""
    print_ndjson(nest(event))


def get_store(uri: str | None = None, init: bool = True, create: bool = False) -> Store:
    """Open the store (flag > `soc --store` > SOC_STORE > default) and, with `init`, bring its schema up to date.

    Only writers pass `create`: a read never creates a store, and exits 1 with one line naming the missing SQLite
    path. Exit 2 with the reason when the store cannot be used (bad URI, not a soc store)."""
    try:
        store = open_store(uri or state["store"], create=create)
        if init:
            store.init()
        return store
    except StoreUnavailable as exc:  # unreachable now: writers spool, readers fail with their own message
        warn(str(exc))
        return store
    except StoreMissing as exc:
        die(str(exc), ExitCode.FAILURE)
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


# --- the classification policy and the reader's clearance ----------------------------------------------------------

SHIPPED_POLICY = Path(rules.__file__).parent / "policy" / "national-backbone.yml"
PolicyOpt = Annotated[
    Path | None,
    typer.Option("--policy", envvar="SOC_POLICY", show_envvar=True,
                 help="Policy file (default: config `policy:`, else the shipped rules/policy/national-backbone.yml)."),
]
ClearanceOpt = Annotated[
    str | None,
    typer.Option("--clearance", envvar="SOC_CLEARANCE", show_envvar=True,
                 help="Read at this level (name or rank): lower than the policy's mapping of your OS account, never "
                      "higher (default: config `clearance:`, else that mapping)."),
]


def policy_path(flag: Path | str | None = None) -> Path:
    """--policy / SOC_POLICY > config `policy:` > the shipped example policy."""
    chosen = flag or os.environ.get("SOC_POLICY") or (state.get("config") or {}).get("policy")
    return Path(chosen) if chosen else SHIPPED_POLICY


@lru_cache(maxsize=8)
def _load_policy(path: str) -> Policy:
    return load_policy(path)


def active_policy(flag: Path | str | None = None) -> Policy:
    """The policy in force; exits 2 naming every problem if it is invalid."""
    path = policy_path(flag)
    try:
        return _load_policy(str(path))
    except PolicyError as exc:
        for p in exc.problems:
            err_console.print(p, highlight=False, markup=False, soft_wrap=True)
        die(f"policy {path} is invalid ({len(exc.problems)} problem(s))")


def requested_clearance(flag: str | None) -> tuple[str | None, str]:
    """The clearance the user asked for and where: --clearance / SOC_CLEARANCE, else config `clearance:`."""
    if flag is not None and str(flag).strip():
        return flag, "SOC_CLEARANCE" if os.environ.get("SOC_CLEARANCE") == flag else "--clearance"
    conf = (state.get("config") or {}).get("clearance")
    return (str(conf), "config clearance") if conf is not None else (None, "")


def whoami(flag: str | None = None) -> Reader:
    """The reader: the OS account (effective uid) at the requested clearance; exit 2 if unknown or too high."""
    requested, source = requested_clearance(flag)
    try:
        return resolve_reader(active_policy(), audit.current_actor(), requested, source)
    except ClearanceError as exc:
        die(str(exc))


def open_reader(store: Store, flag: str | None = None) -> Gate:
    """The read gate for this user on `store`; a refused clearance is audited and exits 2."""
    requested, source = requested_clearance(flag)
    try:
        return open_gate(store, active_policy(), audit.current_actor(), requested, source)
    except ClearanceError as exc:
        die(str(exc))


def say_withheld(read: Read | HuntRead, kind: str, gate: Gate) -> None:
    """Tell the reader how many items were withheld, when some were and the policy discloses it."""
    if read.withheld:
        err_console.print(f"{read.withheld} {kind} above your clearance ({gate.reader.level.name}, rank "
                          f"{gate.reader.rank}) withheld", highlight=False, soft_wrap=True, style="yellow")
