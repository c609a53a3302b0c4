"""Test actions for the engine tests (one module, so every test module sees the same registered classes): a
destructive "block" kept in $SOC_HOME/blocked.txt with its inverse, and a counter that can die, fail or sleep."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from playbooks.actions import Action, ActionError, Context, Result, register


def _blocked(home: Path) -> list[str]:
    f = home / "blocked.txt"
    return f.read_text().split() if f.exists() else []


@register
class FileBlock(Action):
    name = "test.block"
    destructive = True

    def plan(self, ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
        return {"commands": [f"echo {args['ip']} >> blocked.txt"]}

    def run(self, ctx: Context, args: dict[str, Any]) -> Result:
        ips = _blocked(ctx.home)
        if args["ip"] not in ips:
            (ctx.home / "blocked.txt").write_text(" ".join([*ips, args["ip"]]))
        return Result({"blocked": args["ip"]}, {"action": "test.unblock", "args": {"ip": args["ip"]}})


@register
class FileUnblock(Action):
    name = "test.unblock"

    def run(self, ctx: Context, args: dict[str, Any]) -> Result:
        (ctx.home / "blocked.txt").write_text(" ".join(i for i in _blocked(ctx.home) if i != args["ip"]))
        return Result({"unblocked": args["ip"]})


class Killed(BaseException):
    """Stands for kill -9 in the middle of a step: nothing after it runs, nothing is cleaned up."""


@register
class Counted(Action):
    """Counts its runs in $SOC_HOME/count-<key>; dies (Killed) on the first run when args.die; fails when args.fail
    or for the first args.fail_until runs; sleeps args.sleep s (within the step's timeout) or args.stubborn s (past
    it); returns the count (also as __<args.out>__)."""

    name = "test.count"

    def run(self, ctx: Context, args: dict[str, Any]) -> Result:
        f = ctx.home / f"count-{args['key']}"
        n = int(f.read_text()) + 1 if f.exists() else 1
        f.write_text(str(n))
        if args.get("die") and n == 1:
            raise Killed
        if args.get("fail") or n <= int(args.get("fail_until", 0)):
            raise ActionError(f"{args['key']} failed on purpose")
        if args.get("stubborn"):  # an action that ignores its deadline
            time.sleep(float(args["stubborn"]))
        if args.get("sleep"):  # as a well-behaved action does: its wait ends with the step's deadline
            time.sleep(ctx.remaining(float(args["sleep"])))
            if ctx.deadline is not None and time.monotonic() >= ctx.deadline:
                raise ActionError(f"{args['key']} ran out of time")
        return Result({"count": n, **({f"__{args['out']}__": n} if args.get("out") else {})})
