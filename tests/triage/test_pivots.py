"""Pivots: `events search --around` and `timeline --ip | --incident` against the stored events filtered in plain
Python (truth computed apart from the store's queries), at every clearance: nothing above it, withheld counted."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta

import pytest

from correlator.query import Query
from correlator.store import open_store
from tests.triage.world import DEMO_PCAP, ingest, lines, soc, withheld


@pytest.fixture(autouse=True)
def reader(monkeypatch):
    monkeypatch.setattr("correlator.audit.current_actor", lambda: "soc-admin")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    path = tmp_path_factory.mktemp("pivots") / "demo.db"
    ingest(f"sqlite:///{path}", DEMO_PCAP)
    store = open_store(f"sqlite:///{path}")
    events, alerts = store.search_events(Query(), 100_000), store.search_alerts(Query(), 1000)
    store.close()
    return path, events, alerts


@pytest.fixture
def world(demo, tmp_path):
    path, events, alerts = demo
    copy = tmp_path / "soc.db"
    with sqlite3.connect(path) as a, sqlite3.connect(copy) as b:
        a.backup(b)
    return f"sqlite:///{copy}", events, alerts


def t(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def rank(item: dict) -> int:
    return int(item.get("gov.label.rank") or 0)


def flat_id(doc: dict) -> str:
    return doc["event"]["id"] if "event" in doc and "id" in doc["event"] else doc["soc"]["alert"]["uuid"]


def around_truth(events, alert, window: timedelta) -> list[dict]:
    lo = t(alert["soc.alert.suppression.start"]) - window
    hi = t(alert["soc.alert.suppression.end"]) + window
    keys = [(k["field"], k["value"]) for k in alert["soc.alert.suppression.terms"]]

    def related(e):
        return any(v in (e.get("related.ip") or []) if f.endswith(".ip") else e.get(f) == v for f, v in keys)

    return [e for e in events if lo <= t(e["@timestamp"]) <= hi and related(e)]


@pytest.mark.parametrize("clearance", [0, 1, 2])
def test_events_around_an_alert(world, clearance):
    uri, events, alerts = world
    # a top-secret event beside the first public alert's host: withheld below the top, shown at it
    public = next(a for a in alerts if rank(a) == 0)
    host = next(k["value"] for k in public["soc.alert.suppression.terms"] if k["field"].endswith(".ip"))
    secret = {"@timestamp": public["soc.alert.suppression.end"], "event.id": "secret-neighbour", "event.kind": "event",
              "event.dataset": "soc.flow", "source.ip": host, "destination.ip": "10.20.200.5",
              "related.ip": [host, "10.20.200.5"], "gov.label.rank": 3, "gov.label.level": "top-secret"}
    store = open_store(uri)
    store.write_events([secret])
    store.close()
    events = [*events, secret]
    checked = hidden = 0
    for alert in alerts:
        for window in ("30s", "15m"):
            res = soc(uri, "events", "search", "--around", alert["soc.alert.uuid"], "--window", window, "--limit",
                      "100000", "--json", clearance=clearance)
            if rank(alert) > clearance:
                assert res.exit_code == 1 and "above your clearance" in res.stderr
                assert withheld(res.stderr, "alerts") == 1
                continue
            assert res.exit_code == 0, res.stderr
            truth = around_truth(events, alert, timedelta(seconds=30) if window == "30s" else timedelta(minutes=15))
            got = [flat_id(d) for d in lines(res.stdout)]
            assert sorted(got) == sorted(e["event.id"] for e in truth if rank(e) <= clearance)
            assert len(got) == len(set(got))
            assert withheld(res.stderr, "events") == sum(rank(e) > clearance for e in truth)
            checked += 1
            hidden += withheld(res.stderr, "events")
    assert checked and hidden > 0
    res = soc(uri, "events", "search", "--around", "no-such-alert")
    assert res.exit_code == 1 and "no alert no-such-alert" in res.stderr
    res = soc(uri, "events", "search", "--around", alerts[0]["soc.alert.uuid"], "--window", "soon")
    assert res.exit_code == 2 and "--window" in res.stderr


def timeline_truth(events, alerts, ips, lo=None, hi=None) -> list[str]:
    def inside(item):
        ts = t(item["@timestamp"])
        return (lo is None or ts >= lo) and (hi is None or ts < hi)

    rows = [e for e in events if set(e.get("related.ip") or []) & set(ips) and inside(e)]
    rows += [a for a in alerts if (a.get("source.ip") in ips or a.get("destination.ip") in ips) and inside(a)]
    rows.sort(key=lambda it: (it["@timestamp"], it.get("event.id") or it.get("soc.alert.uuid")))
    return rows


@pytest.mark.parametrize("clearance", [0, 1, 2])
def test_timeline_of_an_address_is_every_event_and_alert_of_it_in_time_order(world, clearance):
    uri, events, alerts = world
    busiest = max({ip for e in events for ip in e.get("related.ip") or []},
                  key=lambda ip: sum(ip in (e.get("related.ip") or []) for e in events))
    for argv, lo, hi in ((["--ip", busiest], None, None),
                         (["--ip", busiest, "--since", "2024-11-21T09:05:00Z", "--until", "2024-11-21T09:07:00Z"],
                          t("2024-11-21T09:05:00Z"), t("2024-11-21T09:07:00Z"))):
        res = soc(uri, "timeline", *argv, "--json", clearance=clearance)
        assert res.exit_code == 0, res.stderr
        truth = timeline_truth(events, alerts, [busiest], lo, hi)
        assert truth
        visible = [it for it in truth if rank(it) <= clearance]
        assert [flat_id(d) for d in lines(res.stdout)] == \
            [it.get("event.id") or it["soc.alert.uuid"] for it in visible]
        assert withheld(res.stderr, "events") + withheld(res.stderr, "alerts") == len(truth) - len(visible)
    table = soc(uri, "timeline", "--ip", busiest)
    assert table.exit_code == 0 and "timeline of" in table.stdout


def test_timeline_of_an_incident(world):
    uri, events, alerts = world
    chosen = alerts[:2]
    soc(uri, "incident", "create", "--title", "t", "--alerts", ",".join(a["soc.alert.uuid"] for a in chosen))
    res = soc(uri, "timeline", "--incident", "1", "--json")
    assert res.exit_code == 0, res.stderr
    ips = list({a[f] for a in chosen for f in ("source.ip", "destination.ip") if a.get(f)})
    lo = min(t(a["soc.alert.suppression.start"]) for a in chosen) - timedelta(minutes=15)
    hi = max(t(a["soc.alert.suppression.end"]) for a in chosen) + timedelta(minutes=15, microseconds=1)
    truth = timeline_truth(events, alerts, ips, lo, hi)
    assert [flat_id(d) for d in lines(res.stdout)] == [it.get("event.id") or it["soc.alert.uuid"] for it in truth]
    top = max(map(rank, chosen))
    if top:
        res = soc(uri, "timeline", "--incident", "1", clearance=top - 1)
        assert res.exit_code == 1 and withheld(res.stderr, "incidents") == 1
    res = soc(uri, "timeline")
    assert res.exit_code == 2
