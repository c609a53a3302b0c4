"""notify.email: a message over SMTP (smtplib). Server from args.host/args.port or $SOC_SMTP_HOST/$SOC_SMTP_PORT;
login from $SOC_SMTP_USER and the password from $SOC_SMTP_PASSWORD or $SOC_HOME/secrets/smtp (mode 0600), never
from the playbook and never in outputs. The subject and an `X-Soc-Classification` header carry the label; the
Message-ID is the run's and step's, and a sent message is recorded so a resumed run does not send it twice."""

from __future__ import annotations

import os
import smtplib
from email.message import EmailMessage
from typing import Any

from playbooks.actions import _common
from playbooks.actions.base import Action, ActionError, Context, Result, register


@register
class NotifyEmail(Action):
    name = "notify.email"

    def message(self, ctx: Context, args: dict[str, Any]) -> EmailMessage:
        to = args.get("to")
        if not to:
            raise ActionError("notify.email: args.to (one address or a list) is required")
        lab = _common.label(ctx)
        msg = EmailMessage()
        msg["From"] = args.get("from") or os.environ.get("SOC_SMTP_FROM") or "soc@localhost"
        msg["To"] = ", ".join(to) if isinstance(to, list) else str(to)
        msg["Subject"] = f"[{lab['gov.label.level'].upper()}] {args.get('subject') or 'soc playbook ' + ctx.run_id}"
        msg["X-Soc-Classification"] = lab["gov.label.level"]
        msg["X-Soc-Run"] = f"{ctx.run_id}/{ctx.step_id}"
        msg["Message-ID"] = f"<{ctx.run_id}.{ctx.step_id}@soc>"
        msg.set_content(str(args.get("body") or ""))
        return msg

    def server(self, args: dict[str, Any]) -> tuple[str, int]:
        host = args.get("host") or os.environ.get("SOC_SMTP_HOST") or "localhost"
        return str(host), int(args.get("port") or os.environ.get("SOC_SMTP_PORT") or 25)

    def plan(self, ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
        msg, (host, port) = self.message(ctx, args), self.server(args)
        return {"action": self.name, "server": f"{host}:{port}", "to": msg["To"], "subject": msg["Subject"],
                "starttls": bool(args.get("starttls"))}

    def run(self, ctx: Context, args: dict[str, Any]) -> Result:
        msg, (host, port) = self.message(ctx, args), self.server(args)
        marker = _common.done_marker(ctx, "email")
        if marker.exists():
            return Result({"sent": False, "already_sent": True, "message_id": msg["Message-ID"]})
        user = os.environ.get("SOC_SMTP_USER")
        password = _common.secret(ctx, "SOC_SMTP_PASSWORD", "smtp") if user else None
        try:
            with smtplib.SMTP(host, port, timeout=ctx.remaining(float(args.get("timeout", 30)))) as smtp:
                if args.get("starttls"):
                    smtp.starttls()
                if user:
                    smtp.login(user, password or "")
                refused = smtp.send_message(msg)
        except (OSError, smtplib.SMTPException) as exc:
            raise ActionError(f"notify.email: SMTP {host}:{port}: {exc}") from None
        marker.write_text(msg["Message-ID"] + "\n")
        return Result({"sent": True, "to": msg["To"], "refused": sorted(refused), "message_id": msg["Message-ID"],
                       "server": f"{host}:{port}"})
