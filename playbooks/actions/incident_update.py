"""incident.update: assignee, a task, or closing (with a reason) an incident, through correlator.incidents (each
change atomic, on the incident's timeline and audited as the runner); args.create with args.title and an alert
opens one when the run has no incident. Idempotent: the same assignee, a task with the same text, a closed incident
are skipped."""

from __future__ import annotations

from typing import Any

from correlator import incidents
from correlator.incidents import IncidentError, P
from playbooks.actions import _common
from playbooks.actions.base import Action, ActionError, Context, Result, register


@register
class IncidentUpdate(Action):
    name = "incident.update"

    def plan(self, ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
        wanted = {k: args[k] for k in ("title", "assignee", "task", "status", "reason", "comment") if args.get(k)}
        if not wanted:
            raise ActionError("incident.update: nothing to change (args.assignee, args.task, args.status: closed)")
        alert, number = _common.subject(ctx, args)
        if number is None and not args.get("title"):
            raise ActionError("incident.update: needs args.incident, or args.title to open one for the alert")
        return {"action": self.name, "incident": number, "alert": alert, "changes": wanted}

    def run(self, ctx: Context, args: dict[str, Any]) -> Result:
        plan = self.plan(ctx, args)
        number, done, skipped = plan["incident"], [], []
        try:
            if number is None:
                _, alerts = _common.alerts_of(ctx, plan["alert"], None)
                existing = incidents.search(ctx.gate, "open").items
                found = next((d for d in existing if d.get(P + "title") == args["title"]
                              and plan["alert"] in d.get(P + "alerts", [])), None)
                doc = found or incidents.create(ctx.gate, str(args["title"]), alerts)
                (skipped if found else done).append("create")
                number = doc[P + "id"]
            doc = incidents.get(ctx.gate, number)
            if args.get("assignee"):
                if doc.get(P + "assignee") == args["assignee"]:
                    skipped.append("assign")
                else:
                    doc = incidents.assign(ctx.gate, number, str(args["assignee"]))
                    done.append("assign")
            if args.get("task"):
                if any(t["text"] == args["task"] for t in doc.get(P + "tasks", [])):
                    skipped.append("task")
                else:
                    doc = incidents.add_task(ctx.gate, number, str(args["task"]))
                    done.append("task")
            if args.get("status") == "closed":
                if doc.get(P + "status") == "closed":
                    skipped.append("close")
                else:
                    doc, _ = incidents.close(ctx.gate, number, str(args.get("reason") or ""),
                                             str(args.get("comment") or ""))
                    done.append("close")
            elif args.get("status"):
                raise ActionError(f"incident.update: args.status {args['status']!r}: only `closed`")
        except IncidentError as exc:
            raise ActionError(f"incident.update: {exc}") from None
        return Result({"incident": number, "changed": done, "skipped": skipped, "status": doc.get(P + "status"),
                       "assignee": doc.get(P + "assignee")})
