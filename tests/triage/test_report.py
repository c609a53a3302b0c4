"""soc report: numbers against the stored alerts and events counted directly, clearance, and the HTML drawn by a
real headless Chromium (Debian's `chromium`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter

import pytest

from correlator.query import Clearance, Query
from correlator.store import open_store
from tests.debian import require
from tests.triage.world import DEMO_PCAP, ingest, lines, soc

PERIOD = ["--since", "2000-01-01T00:00:00Z", "--until", "2100-01-01T00:00:00Z"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> str:
    """The bundled demo capture through the real sensor, shipped rules and policy; one alert acknowledged and
    closed, one incident."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('report') / 'soc.db'}"
    mp = pytest.MonkeyPatch()
    mp.setattr("correlator.audit.current_actor", lambda: "soc-admin")
    ingest(uri, DEMO_PCAP)
    alerts = lines(soc(uri, "alerts", "list", "--json").stdout)
    first = alerts[0]["id"]
    assert soc(uri, "alerts", "close", first, "--reason", "true-positive").exit_code == 0
    assert soc(uri, "incident", "create", "--title", "scan", "--where", "event.kind:signal").exit_code == 0
    yield uri
    mp.undo()


@pytest.fixture(autouse=True)
def _reader(monkeypatch):
    monkeypatch.setattr("correlator.audit.current_actor", lambda: "soc-admin")


def _truth(uri: str, rank: int) -> tuple[list[dict], list[dict]]:
    store = open_store(uri)
    try:
        return store.search_alerts(Query((Clearance(rank),)), 10**6), store.search_events(Query((Clearance(rank),)),
                                                                                          10**6)
    finally:
        store.close()


@pytest.mark.parametrize("clearance", [0, 1, 3])
def test_json_numbers_equal_the_store_counted_directly(demo, clearance):
    res = soc(demo, "report", "weekly", *PERIOD, "--json", clearance=clearance)
    assert res.exit_code == 0, res.stderr
    (data,) = lines(res.stdout)
    alerts, events = _truth(demo, clearance)
    assert data["alerts"]["total"] == len(alerts) and data["alerts"]["closed"] == sum(
        a.get("soc.alert.workflow_status") == "closed" for a in alerts)
    assert {r["severity"]: r["alerts"] for r in data["by_severity"]} == Counter(a["soc.alert.severity"] for a in alerts)
    assert {r["rule"]: r["alerts"] for r in data["by_rule"]} == Counter(a["soc.alert.rule.name"] for a in alerts)
    policy = Counter(a["soc.alert.rule.name"] for a in alerts if "soc.policy" in a.get("soc.alert.rule.tags", []))
    assert {r["rule"]: r["alerts"] for r in data["policy_violations"]} == policy
    sent: Counter = Counter()
    for e in events:
        if "network.bytes" in e and e.get("source.ip"):
            sent[e["source.ip"]] += e["network.bytes"]
    assert [(r["ip"], r["bytes"]) for r in data["top_talkers"]] == sorted(sent.items(), key=lambda kv: (-kv[1], kv[0]))[
        :10] or [r["bytes"] for r in data["top_talkers"]] == sorted(sent.values(), reverse=True)[:10]
    rank = max(int(x.get("gov.label.rank") or 0) for x in alerts + events)
    assert data["label"]["rank"] == rank and rank <= clearance
    assert data["mttr_s"] is not None or clearance == 0 or data["alerts"]["closed"] == 0


def test_markdown_carries_the_numbers_and_the_label_in_both_languages(demo, tmp_path):
    out = tmp_path / "r.md"
    res = soc(demo, "report", "daily", *PERIOD, "--format", "md", "-o", str(out), clearance=3)
    assert res.exit_code == 0, res.stderr
    text = out.read_text()
    alerts, _ = _truth(demo, 3)
    assert f"- Alerts: {len(alerts)}" in text
    assert "Classification / التصنيف: " in text.splitlines()[2]
    for sev, n in Counter(a["soc.alert.severity"] for a in alerts).items():
        assert f"| {sev} | {n} |" in text
    ar = soc(demo, "report", "daily", *PERIOD, "--format", "md", "--lang", "ar")
    assert ar.exit_code == 0 and "التنبيهات" in ar.stdout and "الحوادث المفتوحة" in ar.stdout


def test_incident_report_reads_only_its_alerts_and_refuses_what_the_reader_cannot_see(demo):
    res = soc(demo, "report", "incident", "1", "--json", clearance=3)
    assert res.exit_code == 0, res.stderr
    (data,) = lines(res.stdout)
    alerts, _ = _truth(demo, 3)
    assert data["incident"] == 1 and data["alerts"]["total"] == len(alerts)
    assert [i["id"] for i in data["open_incidents"]] == [1]
    low = soc(demo, "report", "incident", "1", clearance=0)
    assert low.exit_code == 1 and "no incident 1" in low.stderr and not low.stdout
    assert soc(demo, "report", "incident", "99").exit_code == 1


def _chromium() -> str | None:
    return shutil.which("chromium-browser") or require("chromium", why="the HTML report is not checked")


@pytest.mark.parametrize("lang", ["en", "ar"])
def test_html_is_self_contained_and_chromium_draws_its_charts(demo, tmp_path, lang):
    chromium = _chromium()
    out = tmp_path / "r.html"
    res = soc(demo, "report", "weekly", *PERIOD, "--format", "html", "--lang", lang, "-o", str(out), clearance=3)
    assert res.exit_code == 0, res.stderr
    page = out.read_text()
    assert "<script" not in page and not re.findall(r'(?:src|href)="(?!#)', page)  # nothing fetched: local refs
    assert ('dir="rtl"' in page) == (lang == "ar")
    probe = tmp_path / "probe.html"  # the report plus a script writing each chart's drawn size into the DOM
    probe.write_text(page.replace("</body>", """<script>
for (const f of document.querySelectorAll('figure')) {
  const r = f.querySelector('svg').getBoundingClientRect(), bars = f.querySelectorAll('svg path, svg rect').length;
  document.body.insertAdjacentHTML('beforeend', `<pre class="probe">${f.id} ${r.width} ${r.height} ${bars}</pre>`);
}</script></body>"""))
    argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1000,3000"]
    dom = subprocess.run([*argv, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    probes = {m[0]: [float(x) for x in m[1:]] for m in
              re.findall(r'<pre class="probe">(chart-\S+) ([\d.]+) ([\d.]+) (\d+)</pre>', dom)}
    assert set(probes) == {"chart-over_time", "chart-by_severity"}, dom[-2000:]
    for name, (w, h, shapes) in probes.items():
        assert w > 100 and h > 50 and shapes > 4, (name, w, h, shapes)
    png = tmp_path / "r.png"
    subprocess.run([*argv, f"--screenshot={png}", out.as_uri()], capture_output=True, timeout=120)
    assert png.exists() and png.stat().st_size > 10_000
    svg = page[page.index('id="chart-by_severity"'):]
    assert svg.count("#d9603b") >= 1  # the high-severity bar is drawn (the demo has high alerts)
    data = json.loads(soc(demo, "report", "weekly", *PERIOD, "--json", clearance=3).stdout)
    assert f">{data['label']['level']} / {data['label']['ar']}" in page.replace(": ", ">")
