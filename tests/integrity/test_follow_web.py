"""scan --follow (inotify in a subprocess: edit, see the event and alert, stop) and the defacement check against a
local HTTP server on 127.0.0.1 (a page, the page with only its dynamic region changed, the page defaced)."""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from correlator.store import open_store
from tests.integrity.conftest import SOC, Host


def test_follow_sees_an_edit_then_stops_cleanly(host: Host) -> None:
    host.baseline()
    proc = subprocess.Popen([SOC, "integrity", "scan", "--policy", str(host.policy), "--root", str(host.root),
                             "--host", "web01", "--follow", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=host.env)
    try:
        time.sleep(3)  # the first full scan and the inotify watches
        assert proc.poll() is None, proc.stderr.read()
        (host.root / "var/www/html/index.html").write_text("<html><title>Hacked</title></html>\n")
        line = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the first event line (the page, or its folder just before it)
            line = proc.stdout.readline()
            if '"/var/www/html/index.html"' in line:
                break
        event = json.loads(line)
        assert event["event"]["type"] == ["change"] and "sha256" in event["soc"]["integrity"]["changed"]
        deadline = time.monotonic() + 30
        while not host.alerts() and time.monotonic() < deadline:
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert [a["title"] for a in host.alerts()] == ["Web Root Content Changed"]
    res = host.scan("--json")  # the follower stored what it saw as the baseline: nothing is reported twice
    assert res.returncode == 0 and res.stdout == "", res.stdout
    store = open_store(host.store)
    try:
        updates = [e["details"] for e in store.audit_entries() if e["action"] == "integrity-baseline-update"]
    finally:
        store.close()
    assert updates[-1]["by"] == "follow" and updates[-1]["differences"] >= 1  # the stored state is audited


PAGE = """<html><head><title>Ministry of Finance</title>
<script>window.nonce = "{nonce}"; var visitors = {n};</script>
<script src="/static/site.js"></script>
<script src="https://cdn.gov.example/lib.js"></script></head>
<body><h1>Ministry of Finance</h1><p>The 2027 budget is published.</p>
<div id="news-ticker">{ticker}</div><span class="visitor-count">{n} visitors</span>
<a href="https://www.gov.example/services">Services</a> <a href="/contact">Contact</a></body></html>
"""
WEB_POLICY = """\
policy: {id: web, name: web}
watch: [{path: /var/www/html}]
web:
  dynamic: ["#news-ticker", ".visitor-count"]
  known_domains: [gov.example]
"""


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    docroot = tmp_path / "site"
    docroot.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(docroot))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield docroot, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_defacement_alerts_on_the_defaced_page_only(host: Host, site: tuple[Path, str]) -> None:
    docroot, base = site
    policy = host.policy.parent / "web.yml"
    policy.write_text(WEB_POLICY)
    (docroot / "index.html").write_text(PAGE.format(nonce="a1", n=100, ticker="Markets open at 10:00"))
    (docroot / "about.html").write_text(PAGE.format(nonce="b1", n=5, ticker="Office hours 8-15"))
    urls = [f"{base}/index.html", f"{base}/about.html"]

    def web(*args: str) -> subprocess.CompletedProcess[str]:
        return host.soc("integrity", "web", *[a for u in urls for a in ("--url", u)], "--policy", str(policy),
                        *args)

    res = web("--baseline")
    assert res.returncode == 0, res.stderr
    # only the dynamic parts move: the script's tokens, the ticker, the counter
    (docroot / "index.html").write_text(PAGE.format(nonce="zz9", n=4321, ticker="Markets closed at 15:00"))
    (docroot / "about.html").write_text(PAGE.format(nonce="q7", n=6, ticker="Closed on Friday"))
    res = web("--check", "--json")
    assert res.returncode == 0 and res.stdout == "", (res.stdout, res.stderr)
    assert host.alerts() == []
    # index.html defaced: new title and text, a skimmer from an unknown host; about.html: its dynamic region again
    (docroot / "index.html").write_text(
        PAGE.format(nonce="x", n=1, ticker="t").replace("<title>Ministry of Finance", "<title>Hacked by X")
        .replace("The 2027 budget is published.", "Your data is ours.")
        .replace("</body>", '<script src="https://skim.evil.example/s.js"></script></body>'))
    (docroot / "about.html").write_text(PAGE.format(nonce="q8", n=7, ticker="Open on Saturday"))
    res = web("--check", "--json")
    assert res.returncode == 1
    events = [json.loads(x) for x in res.stdout.splitlines()]
    assert [e["url"]["full"] for e in events] == [urls[0]]
    web_fields = events[0]["soc"]["web"]
    assert web_fields["findings"] == ["title", "text", "script"]
    assert (web_fields["old"]["title"], web_fields["new"]["title"]) == ("Ministry of Finance", "Hacked by X")
    assert web_fields["new_scripts"] == ["https://skim.evil.example/s.js"]
    assert web_fields["text"]["added"] == ["Your data is ours."]
    alerts = host.alerts()
    assert sorted(a["title"] for a in alerts) == ["Website Loads A New External Script Or Links To An Unknown Domain",
                                                  "Website Text Or Title Changed"]


def test_link_to_unknown_domain_and_unreachable_page(host: Host, site: tuple[Path, str]) -> None:
    docroot, base = site
    policy = host.policy.parent / "web.yml"
    policy.write_text(WEB_POLICY)
    (docroot / "index.html").write_text(PAGE.format(nonce="a", n=1, ticker="t"))
    url = f"{base}/index.html"
    assert host.soc("integrity", "web", "--url", url, "--baseline", "--policy", str(policy)).returncode == 0
    (docroot / "index.html").write_text(PAGE.format(nonce="a", n=1, ticker="t").replace(
        '<a href="/contact">', '<a href="https://casino.example/">win</a> <a href="https://data.gov.example/">'
        '<iframe src="https://ads.example/frame"></iframe><a href="/contact">'))
    res = host.soc("integrity", "web", "--url", url, "--check", "--policy", str(policy), "--json")
    ev = json.loads(res.stdout)
    assert res.returncode == 1 and ev["soc"]["web"]["new_domains"] == ["ads.example", "casino.example"]
    res = host.soc("integrity", "web", "--url", f"{base}/gone.html", "--check", "--policy", str(policy))
    assert res.returncode == 1 and f"{base}/gone.html: HTTP 404" in res.stderr
