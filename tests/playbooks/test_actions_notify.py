"""notify.email against a real SMTP server (aiosmtpd on 127.0.0.1, with AUTH) and notify.webhook against a real
http.server: what arrives is what was sent, labelled; the secret comes from a 0600 file or the environment and is
in no output or plan; a resumed step does not send twice; failures raise ActionError."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from playbooks.actions import REGISTRY, ActionError
from tests.playbooks.actions_world import context, seeded

SECRET = "s3cret-pw-never-printed"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"

    def auth(self, server, session, envelope, mechanism, auth_data):
        self.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == SECRET.encode())


@pytest.fixture
def smtp():
    inbox = Inbox()
    with socket.socket() as probe:  # aiosmtpd's start-up check connects to the port: it cannot be 0
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ctl = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=inbox.auth, auth_require_tls=False)
    ctl.start()
    try:
        yield inbox, port
    finally:
        ctl.stop()


@pytest.fixture
def ctx(tmp_path_factory, tmp_path, monkeypatch):
    for var in ("SOC_SMTP_HOST", "SOC_SMTP_PORT", "SOC_SMTP_PASSWORD", "SOC_WEBHOOK_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return context(seeded(tmp_path_factory.getbasetemp()), tmp_path, label_rank=2)


def secret_file(ctx, name: str, mode: int) -> None:
    folder = ctx.home / "secrets"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(SECRET + "\n")
    (folder / name).chmod(mode)


def test_email_arrives_labelled_once_with_the_file_secret(ctx, smtp, monkeypatch):
    inbox, port = smtp
    monkeypatch.setenv("SOC_SMTP_USER", "soc")
    secret_file(ctx, "smtp", 0o600)
    action, args = REGISTRY["notify.email"](), {"host": "127.0.0.1", "port": port, "to": ["cert@gov.example"],
                                                "subject": "scan blocked", "body": "203.0.113.66 blocked"}
    plan = action.plan(ctx, args)
    assert plan["subject"] == "[SECRET] scan blocked" and not inbox.messages
    first, second = action.run(ctx, args), action.run(ctx, args)
    assert first.outputs["sent"] and second.outputs["already_sent"]
    assert inbox.logins == [(b"soc", SECRET.encode())]
    [(sender, rcpt, content)] = inbox.messages
    assert rcpt == ["cert@gov.example"]
    assert b"Subject: [SECRET] scan blocked" in content and b"X-Soc-Classification: secret" in content
    assert b"203.0.113.66 blocked" in content
    assert SECRET not in json.dumps([plan, first.outputs, second.outputs])


def test_email_refuses_a_readable_secret_file_and_reports_smtp_errors(ctx, smtp, monkeypatch):
    inbox, port = smtp
    monkeypatch.setenv("SOC_SMTP_USER", "soc")
    secret_file(ctx, "smtp", 0o644)
    args = {"host": "127.0.0.1", "port": port, "to": "cert@gov.example"}
    with pytest.raises(ActionError, match="mode 0600") as exc:
        REGISTRY["notify.email"]().run(ctx, args)
    assert SECRET not in str(exc.value)
    monkeypatch.setenv("SOC_SMTP_PASSWORD", "wrong")
    with pytest.raises(ActionError, match=f"SMTP 127.0.0.1:{port}"):
        REGISTRY["notify.email"]().run(ctx, args)
    assert not inbox.messages


@pytest.fixture
def web():
    got: list[tuple[dict, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            got.append((dict(self.headers), body))
            self.send_response(500 if self.path == "/fail" else 204)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield got, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_webhook_posts_labelled_json_once_with_the_token(ctx, web, monkeypatch):
    got, base = web
    monkeypatch.setenv("SOC_WEBHOOK_TOKEN", SECRET)
    action, args = REGISTRY["notify.webhook"](), {"url": base + "/hook", "message": "scan contained",
                                                  "data": {"ip": "203.0.113.66"}}
    plan = action.plan(ctx, args)
    assert not got
    first, second = action.run(ctx, args), action.run(ctx, args)
    assert first.outputs == {"posted": True, "url": base + "/hook", "status": 204}
    assert second.outputs["already_posted"]
    [(headers, body)] = got
    assert headers["Authorization"] == f"Bearer {SECRET}" and headers["Idempotency-Key"] == "run-1/step-1"
    assert body == {"run": "run-1", "step": "step-1", "gov.label.rank": 2, "gov.label.level": "secret",
                    "message": "scan contained", "ip": "203.0.113.66"}
    assert SECRET not in json.dumps([plan, first.outputs])


def test_webhook_failure_is_an_action_error(ctx, web):
    got, base = web
    with pytest.raises(ActionError, match="HTTP 500"):
        REGISTRY["notify.webhook"]().run(ctx, {"url": base + "/fail"})
    with pytest.raises(ActionError, match="not an http"):
        REGISTRY["notify.webhook"]().plan(ctx, {"url": "file:///etc/passwd"})
    assert len(got) == 1
