"""notify.webhook: an HTTP POST of a JSON body to args.url. A bearer token from $SOC_WEBHOOK_TOKEN or
$SOC_HOME/secrets/webhook (mode 0600), never from the playbook and never in outputs. The body carries the label;
`Idempotency-Key` is the run's and step's, and a delivered post is recorded so a resumed run does not repeat it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from playbooks.actions import _common
from playbooks.actions.base import Action, ActionError, Context, Result, register


@register
class NotifyWebhook(Action):
    name = "notify.webhook"

    def body(self, ctx: Context, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        url = str(args.get("url") or "")
        if not url.startswith(("http://", "https://")):
            raise ActionError(f"notify.webhook: args.url {url!r} is not an http(s) URL")
        payload = {"run": ctx.run_id, "step": ctx.step_id, **_common.label(ctx),
                   **({"message": args["message"]} if args.get("message") else {}),
                   **(args.get("data") or {})}
        return url, payload

    def plan(self, ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
        url, payload = self.body(ctx, args)
        return {"action": self.name, "POST": url, "body": payload}

    def run(self, ctx: Context, args: dict[str, Any]) -> Result:
        url, payload = self.body(ctx, args)
        marker = _common.done_marker(ctx, "webhook")
        if marker.exists():
            return Result({"posted": False, "already_posted": True, "url": url})
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"{ctx.run_id}/{ctx.step_id}"}
        token = _common.secret(ctx, "SOC_WEBHOOK_TOKEN", "webhook")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(url, json.dumps(payload).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=ctx.remaining(float(args.get("timeout", 30)))) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            raise ActionError(f"notify.webhook: POST {url}: HTTP {exc.code} {exc.reason}") from None
        except OSError as exc:
            raise ActionError(f"notify.webhook: POST {url}: {exc}") from None
        marker.write_text(f"{status}\n")
        return Result({"posted": True, "url": url, "status": status})
