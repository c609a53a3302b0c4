"""The action interface: what a playbook step calls (one small module per action, registered by name).

The engine (playbooks/engine.py) builds a `Context` per step, calls `plan` on a dry run and `run` with --execute.
Actions never check protected assets, approvals or clearance themselves: the engine and the gate do that, once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from correlator.gate import Gate
from correlator.policy.model import Policy
from correlator.store.base import Store


class ActionError(Exception):
    """An action failed; the message says what and where (the engine follows the step's on_failure)."""


class TimedOut(ActionError):
    """The step's CACAO timeout is spent: the action stopped (an action that collects problems re-raises this)."""


@dataclass
class Context:
    """What an action sees: the store, the caller's read gate, the policy and the run it belongs to."""

    store: Store
    gate: Gate
    policy: Policy
    run_id: str
    step_id: str
    execute: bool
    variables: dict[str, Any]
    label_rank: int
    actor: str
    home: Path  # $SOC_HOME (secrets, state)
    deadline: float | None = None  # time.monotonic() by which the step's CACAO timeout ends (None: no timeout)
    timeout: float | None = None  # that timeout, in seconds (for the message)

    def remaining(self, default: float) -> float:
        """The seconds an action's own I/O may wait (socket, SMTP, HTTP, subprocess timeout): `default`, capped by
        what is left of the step's timeout; ActionError once that is spent."""
        if self.deadline is None:
            return default
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.check()
        return min(default, left)

    def check(self, doing: str = "") -> None:
        """TimedOut once the step's timeout is spent (long loops call it between units of work)."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            spent = f"{self.timeout:g} s" if self.timeout is not None else "the step's CACAO timeout"
            raise TimedOut(f"timed out after {spent}" + (f" ({doing})" if doing else ""))


@dataclass
class Result:
    """An action's outputs and, for a change that can be undone, its inverse {"action": name, "args": {...}}."""

    outputs: dict[str, Any] = field(default_factory=dict)
    inverse: dict[str, Any] | None = None


class Action:
    """One playbook action. `plan` renders what would happen with real values and changes nothing; `run` is
    idempotent and raises ActionError(message) on failure."""

    name: ClassVar[str]
    destructive: ClassVar[bool] = False

    def plan(self, ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
        """The rendered command/targets with real values; no change."""
        return {"action": self.name, "args": args}

    def run(self, ctx: Context, args: dict[str, Any]) -> Result:
        """Do it (idempotent); raise ActionError on failure."""
        raise NotImplementedError


REGISTRY: dict[str, type[Action]] = {}

A = TypeVar("A", bound=type[Action])


def register(cls: A) -> A:
    """Class decorator: make `cls` callable from playbooks as `cls.name`."""
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__qualname__}: an action needs a name")
    REGISTRY[cls.name] = cls
    return cls
