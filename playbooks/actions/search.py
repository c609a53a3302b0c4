"""search: the events around an alert (its group key's addresses, within a window), read through the runner's gate."""

from __future__ import annotations

from typing import Any

from correlator.pivots import PivotError, around
from correlator.triage import parse_duration
from playbooks.actions import _common
from playbooks.actions.base import Action, ActionError, Context, Result, register


@register
class Search(Action):
    name = "search"

    def _args(self, ctx: Context, args: dict[str, Any]) -> tuple[str, str, int]:
        alert, _ = _common.subject(ctx, args)
        if alert is None:
            raise ActionError("search: needs an alert (args.alert)")
        return alert, str(args.get("window", "15m")), int(args.get("limit", 100))

    def plan(self, ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
        alert, window, limit = self._args(ctx, args)
        return {"action": self.name, "alert": alert, "window": window, "limit": limit}

    def run(self, ctx: Context, args: dict[str, Any]) -> Result:
        alert, window, limit = self._args(ctx, args)
        ctx.check("before the search")
        try:
            _, read = around(ctx.gate, alert, parse_duration(window), limit)
        except (PivotError, ValueError) as exc:
            raise ActionError(f"search: {exc}") from None
        ctx.check("events read, not reported")
        return Result({"alert": alert, "events": len(read.items), "withheld": read.withheld,
                       "event_ids": [e.get("event.id") for e in read.items],
                       **_common.label(ctx, *read.items)})
