"""The triage console (`soc triage`) driven by Textual's Pilot on a store the real sensor filled from the demo
capture: a full ack → assign → close checked in the store (status, history, audit), an incident and a timeline
from the keyboard, nothing above the reader's clearance on screen, and an SVG snapshot of the console."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from correlator.gate import open_gate
from correlator.policy import load_policy
from correlator.query import Query
from correlator.store import open_store
from soc_cli.console import TriageApp
from soc_cli.console.app import Prompt, TimelineScreen
from tests.triage.world import DEMO_PCAP, ingest

ROOT = Path(__file__).resolve().parents[2]
POLICY = load_policy(ROOT / "rules" / "policy" / "national-backbone.yml")
SNAPSHOT = Path(__file__).parent / "data" / "console.svg"
SIZE = (120, 36)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> str:
    """The demo capture through `soc sensor pcap` (sensor, policy, shipped rules) into a SQLite store."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('console') / 'soc.db'}"
    ingest(uri, DEMO_PCAP)
    return uri


@pytest.fixture
def copy(world, tmp_path) -> str:
    """A copy of the world for a test that changes it."""
    import sqlite3

    target = tmp_path / "soc.db"
    with sqlite3.connect(world.removeprefix("sqlite:///")) as a, sqlite3.connect(target) as b:
        a.backup(b)
    return f"sqlite:///{target}"


def console(uri: str, clearance: str | None = None) -> TriageApp:
    """The console of `soc triage --store URI [--clearance N]` for soc-admin (top-secret in the shipped policy)."""
    return TriageApp(open_gate(open_store(uri), POLICY, "soc-admin", clearance))


def plain(app: TriageApp) -> str:
    """Everything the console shows as text: the bar, every queue cell, the detail pane, the message line."""
    from textual.widgets import DataTable, Static

    table = app.query_one("#queue", DataTable)
    cells = [str(c) for i in range(table.row_count) for c in table.get_row_at(i)]
    statics = [str(app.query_one(f"#{w}", Static).content) for w in ("bar", "detail", "msg")]
    return "\n".join(cells + statics)


async def _type(pilot, text: str) -> None:
    await pilot.press(*[{" ": "space"}.get(ch, ch) for ch in text])


def test_ack_assign_close_from_the_keyboard(copy):
    async def run() -> str:
        app = console(copy)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            uuid = app.current["soc.alert.uuid"]
            await pilot.press("a")
            assert app.current["soc.alert.workflow_status"] == "acknowledged"
            await pilot.press("w")
            assert isinstance(app.screen, Prompt)
            await pilot.press("end", *["backspace"] * len("soc-admin"))
            await _type(pilot, "soc-analyst")
            await pilot.press("enter")
            await pilot.pause()
            assert app.current["soc.alert.assignees"] == ["soc-analyst"]
            await pilot.press("c", "down", "enter")  # the second reason: false-positive
            await _type(pilot, "lab scanner")
            await pilot.press("enter")
            await pilot.pause()
            assert uuid not in app.alerts  # the default queue holds no closed alert
            assert "close" in plain(app) and "→ closed" in plain(app)
        return uuid

    uuid = asyncio.run(run())
    store = open_store(copy)
    alert = store.get_alert(uuid)
    assert alert["soc.alert.workflow_status"] == "closed"
    assert alert["soc.alert.workflow_reason"] == "false-positive"
    assert alert["soc.alert.workflow_comment"] == "lab scanner"
    assert alert["soc.alert.assignees"] == ["soc-analyst"]
    assert [(h["action"], h["by"], h["from"], h["to"]) for h in alert["soc.alert.history"]] == [
        ("ack", "soc-admin", "open", "acknowledged"), ("assign", "soc-admin", None, "soc-analyst"),
        ("close", "soc-admin", "acknowledged", "closed")]
    audit = [(e["action"], e["actor"]) for e in store.audit_entries() if (e.get("details") or {}).get("alert") == uuid]
    assert audit == [("alert-ack", "soc-admin"), ("alert-assign", "soc-admin"), ("alert-close", "soc-admin")]
    store.close()


def test_incident_and_timeline_from_the_keyboard(copy):
    async def run() -> tuple[str, list[str]]:
        app = console(copy)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            uuid = app.current["soc.alert.uuid"]
            await pilot.press("i", "enter", "enter")  # no number: a new incident titled by the rule
            await pilot.pause()
            assert "incident 1" in plain(app)
            await pilot.press("t")
            await pilot.pause()
            assert isinstance(app.screen, TimelineScreen)
            ips = app.screen.tl.ips
            rows = len(app.screen.tl.items)
            await pilot.press("escape")
            assert rows > 0
        return uuid, ips

    uuid, ips = asyncio.run(run())
    store = open_store(copy)
    alert = store.get_alert(uuid)
    incident = store.get_incident(1)
    assert incident["soc.incident.alerts"] == [uuid]
    assert incident["soc.incident.title"] == alert["soc.alert.rule.name"]
    assert incident["gov.label.rank"] == alert.get("gov.label.rank", 0)
    assert ips == [t["value"] for t in alert["soc.alert.suppression.terms"] if t["field"].endswith(".ip")]
    store.close()


@pytest.mark.parametrize("clearance", ["0", "1"])
def test_nothing_above_the_clearance_on_screen(world, clearance):
    store = open_store(world)
    alerts = store.search_alerts(Query(), 10_000)
    events = store.search_events(Query(), 100_000)
    store.close()
    rank = int(clearance)
    above = [a for a in alerts if int(a.get("gov.label.rank") or 0) > rank]
    assert above, "the demo capture has alerts above this clearance"
    shown = {a["soc.alert.uuid"] for a in alerts if int(a.get("gov.label.rank") or 0) <= rank}
    below: set[str] = set()
    markers: set[str] = set()
    for item in alerts + events:
        values = {str(item[k]) for k in ("event.id", "soc.alert.uuid", "source.ip", "destination.ip") if item.get(k)}
        (markers if int(item.get("gov.label.rank") or 0) > rank else below).update(values)
    markers -= below

    async def run() -> None:
        app = console(world, clearance)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            assert set(app.alerts) == shown
            assert f"{len(above)} above your clearance withheld" in plain(app)
            for _ in shown:  # every alert's detail pane, with its related events
                text = plain(app)
                assert not [m for m in markers if m in text]
                await pilot.press("down")
            await pilot.press("t")
            await pilot.pause()
            tl = app.screen.tl
            assert tl.items and all(int(it.get("gov.label.rank") or 0) <= rank for it in tl.items)

    asyncio.run(run())


def test_snapshot(world):
    """The console as it opens (fixed size, no blinking cursor): compared with tests/triage/data/console.svg;
    SOC_UPDATE_SNAPSHOTS=1 rewrites it (look at it before committing)."""
    async def run() -> str:
        app = console(world)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            return app.export_screenshot()

    svg = _stable(asyncio.run(run()))
    if os.environ.get("SOC_UPDATE_SNAPSHOTS") or not SNAPSHOT.exists():
        SNAPSHOT.write_text(svg)
    assert svg == _stable(SNAPSHOT.read_text())


def _stable(svg: str) -> str:
    """The screen without what depends on where the repository lies: event and alert ids (hashes that include the
    capture file's path) and the SVG's own id prefix (a hash of its content)."""
    svg = re.sub(r"\b[0-9a-f]{32}\b", "0" * 32, svg)
    return re.sub(r"terminal-\d+", "terminal-0", svg)


def test_filters_group_by_rule_and_suppress(copy):
    store = open_store(copy)
    alerts = store.search_alerts(Query(), 10_000)
    store.close()
    per_rule: dict[str, int] = {}
    for a in alerts:
        per_rule[a["soc.alert.rule.name"]] = per_rule.get(a["soc.alert.rule.name"], 0) + 1

    async def run() -> tuple[str, str]:
        app = console(copy)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            await pilot.press("v", "v", "v")  # severity ≥ high
            assert {a["soc.alert.severity"] for a in app.alerts.values()} <= {"high", "critical"}
            assert len(app.alerts) == sum(a["soc.alert.severity"] in ("high", "critical") for a in alerts)
            await pilot.press("v", "v")  # back to any
            await pilot.press("g")
            table = app.query_one("#queue")
            assert {str(table.get_row_at(i)[0]): table.get_row_at(i)[1] for i in range(table.row_count)} == per_rule
            await pilot.press("enter")  # the first rule's alerts
            rule = app.filters.rule
            assert len(app.alerts) == per_rule[rule]
            await pilot.press("escape")
            assert len(app.alerts) == len(alerts)
            uuid = app.current["soc.alert.uuid"]
            await pilot.press("x", "enter", "enter")  # the prefilled key, for 24h
            await _type(pilot, "lab test")
            await pilot.press("enter")
            await pilot.pause()
            assert uuid not in app.alerts and "suppressed" in plain(app)
            return uuid, app.current and app.current["soc.alert.uuid"]

    uuid, _ = asyncio.run(run())
    store = open_store(copy)
    [sup] = store.records("suppression")
    alert = store.get_alert(uuid)
    assert sup["rule"] == alert["soc.alert.rule.uuid"] and sup["reason"] == "lab test"
    key = alert["soc.alert.suppression.terms"][0]
    assert sup["where"] == f"{key['field']}:{key['value']}"
    assert [e["actor"] for e in store.audit_entries() if e["action"] == "alert-suppress"] == ["soc-admin"]
    store.close()
