"""alert.update: status (ack, start, close, reopen), assignee and note on an alert, through correlator.triage
(each change checked, in the alert's history and audited as the runner). Idempotent: a change that is already so
(the status reached, the same assignee, the same note by this step) is skipped."""

from __future__ import annotations

from typing import Any

from correlator.triage import TRANSITIONS, Change, Refused, change_alerts, check, now_iso, status_of
from playbooks.actions import _common
from playbooks.actions.base import Action, ActionError, Context, Result, register


@register
class AlertUpdate(Action):
    name = "alert.update"

    def changes(self, ctx: Context, args: dict[str, Any]) -> tuple[str, list[Change]]:
        alert, _ = _common.subject(ctx, args)
        if alert is None:
            raise ActionError("alert.update: needs an alert (args.alert)")
        at, out = now_iso(), []
        if args.get("assignee"):
            out.append(Change("assign", ctx.actor, at, assignee=str(args["assignee"])))
        if args.get("note"):
            out.append(Change("note", ctx.actor, at, comment=f"[{ctx.run_id}/{ctx.step_id}] {args['note']}"))
        if args.get("status"):
            action = str(args["status"])
            out.append(Change(action, ctx.actor, at, reason=args.get("reason") if action == "close" else None,
                              comment=args.get("comment")))
        if not out:
            raise ActionError("alert.update: nothing to change (args.status, args.assignee or args.note)")
        for c in out:
            try:
                check(c)
            except Refused as exc:
                raise ActionError(f"alert.update: {exc}") from None
        return alert, out

    def plan(self, ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
        alert, changes = self.changes(ctx, args)
        _common.alerts_of(ctx, alert, None)  # visible, or ActionError
        return {"action": self.name, "alert": alert,
                "changes": [{k: v for k, v in vars(c).items() if v is not None and k != "at"} for c in changes]}

    def run(self, ctx: Context, args: dict[str, Any]) -> Result:
        alert, changes = self.changes(ctx, args)
        done, skipped = [], []
        for c in changes:
            current, _ = _common.alerts_of(ctx, alert, None)
            if self._already(current, c):
                skipped.append(c.action)
                continue
            out = change_alerts(ctx.gate, c, [alert])
            if out.refused:
                raise ActionError(f"alert.update: {c.action} on {alert}: {out.refused[0][1]}")
            done.append(c.action)
        current, _ = _common.alerts_of(ctx, alert, None)
        return Result({"alert": alert, "changed": done, "skipped": skipped, "status": status_of(current),
                       "assignees": current.get("soc.alert.assignees") or []})

    @staticmethod
    def _already(alert: dict[str, Any], c: Change) -> bool:
        if c.action in TRANSITIONS:
            return status_of(alert) == TRANSITIONS[c.action][1]
        if c.action == "assign":
            return list(alert.get("soc.alert.assignees") or []) == [c.assignee]
        return any(n.get("text") == c.comment for n in alert.get("soc.alert.notes") or [])
