"""Incidents: grouping, severity and label from the alerts (truth: the stored alerts themselves), the gate on every
read and change, the timeline and the audit log; the store methods on SQLite and on the ES emulators."""

from __future__ import annotations

import ipaddress
import sqlite3
import threading

import pytest

from correlator.incidents import SEVERITIES
from correlator.query import Clearance, Query, Term
from correlator.store import StoreError, open_store
from tests.store.conftest import es_server, es_store  # noqa: F401 - the ES fixtures
from tests.triage.world import DEMO_PCAP, ingest, lines, soc, withheld


@pytest.fixture(autouse=True)
def reader(monkeypatch):
    """The reader is the policy's `soc-admin` (top-secret), lowering its clearance per call."""
    monkeypatch.setattr("correlator.audit.current_actor", lambda: "soc-admin")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    path = tmp_path_factory.mktemp("incidents") / "demo.db"
    ingest(f"sqlite:///{path}", DEMO_PCAP)
    return path


@pytest.fixture
def world(demo, tmp_path):
    """A copy of the demo store per test, and its alerts read raw (the truth)."""
    copy = tmp_path / "soc.db"
    with sqlite3.connect(demo) as a, sqlite3.connect(copy) as b:
        a.backup(b)
    uri = f"sqlite:///{copy}"
    store = open_store(uri)
    alerts = store.search_alerts(Query(), 10_000)
    store.close()
    return uri, alerts


def rank(item: dict) -> int:
    return int(item.get("gov.label.rank") or 0)


def incident_of(stdout: str) -> dict:
    doc = lines(stdout)[0]
    return doc["soc"]["incident"] | {"rank": int((doc.get("gov") or {}).get("label", {}).get("rank") or 0)}


def test_an_incident_takes_the_highest_severity_and_label_of_its_alerts(world):
    uri, alerts = world
    assert len({rank(a) for a in alerts}) >= 3, "the demo's alerts carry several labels"
    res = soc(uri, "incident", "create", "--title", "all of it", "--where", "event.kind:signal", "--json")
    assert res.exit_code == 0, res.stderr
    inc = incident_of(res.stdout)
    assert inc["id"] == 1 and inc["status"] == "open"
    assert set(inc["alerts"]) == {a["soc.alert.uuid"] for a in alerts}
    assert inc["severity"] == max((a["soc.alert.severity"] for a in alerts), key=SEVERITIES.index)
    assert inc["rank"] == max(map(rank, alerts))
    store = open_store(uri)  # one read of the alerts, one of their events: one audit entry each, not one per event
    assert sum(e["action"] == "read-classified" for e in store.audit_entries()) == 2
    store.close()
    # by id: the two lowest-ranked alerts, numbered next
    low = sorted(alerts, key=rank)[:2]
    res = soc(uri, "incident", "create", "--title", "low", "--alerts", ",".join(a["soc.alert.uuid"] for a in low),
              "--json")
    inc2 = incident_of(res.stdout)
    assert inc2["id"] == 2 and inc2["rank"] == max(map(rank, low))
    assert inc2["severity"] == max((a["soc.alert.severity"] for a in low), key=SEVERITIES.index)


@pytest.mark.parametrize("clearance", [0, 1])
def test_the_gate_withholds_incidents_and_their_alerts_above_the_reader(world, clearance):
    uri, alerts = world
    top = max(map(rank, alerts))
    assert top > clearance
    soc(uri, "incident", "create", "--title", "everything", "--where", "event.kind:signal")
    # created below the top: only the alerts the reader may see are grouped, the rest counted as withheld
    res = soc(uri, "incident", "create", "--title", "mine", "--where", "event.kind:signal", "--json",
              clearance=clearance)
    visible = {a["soc.alert.uuid"] for a in alerts if rank(a) <= clearance}
    if not visible:
        assert res.exit_code == 1 and "no alerts" in res.stderr
        return
    assert res.exit_code == 0, res.stderr
    mine = incident_of(res.stdout)
    assert set(mine["alerts"]) == visible and mine["rank"] <= clearance
    assert withheld(res.stderr, "alerts") == len(alerts) - len(visible)
    # the top-level incident is withheld from this reader everywhere, and cannot be changed by them
    res = soc(uri, "incident", "list", "--status", "all", "--json", clearance=clearance)
    assert [d["soc"]["incident"]["id"] for d in lines(res.stdout)] == [2]
    assert withheld(res.stderr, "incidents") == 1
    for argv in (["show", "1"], ["assign", "1", "x"], ["task", "1", "add", "t"], ["close", "1", "--reason", "other"],
                 ["add", "1", "--where", "event.kind:signal"]):
        res = soc(uri, "incident", *argv, clearance=clearance)
        assert res.exit_code == 1 and "no incident 1" in res.stderr, (argv, res.stderr)
    # adding a classified alert raises the incident's label: the lower reader loses sight of it
    res = soc(uri, "incident", "add", "2", "--where", "event.kind:signal", "--json")
    assert incident_of(res.stdout)["rank"] == top
    res = soc(uri, "incident", "show", "2", clearance=clearance)
    assert res.exit_code == 1 and withheld(res.stderr, "incidents") == 1


def test_workflow_timeline_tasks_and_audit(world):
    uri, alerts = world
    first, second = alerts[0]["soc.alert.uuid"], alerts[1]["soc.alert.uuid"]
    steps = [["create", "--title", "case", "--alerts", first], ["add", "1", second], ["assign", "1", "alice"],
             ["task", "1", "add", "isolate the host"], ["task", "1", "add", "reset passwords"],
             ["task", "1", "done", "2"],
             ["close", "1", "--reason", "true-positive", "--comment", "contained", "--close-alerts"]]
    for argv in steps:
        res = soc(uri, "incident", *argv)
        assert res.exit_code == 0, (argv, res.stderr)
    res = soc(uri, "incident", "show", "1", "--json")
    rows = lines(res.stdout)
    inc = rows[0]["soc"]["incident"]
    assert [e["action"] for e in inc["timeline"]] == ["created", "alerts-added", "alerts-added", "assigned",
                                                      "task-added", "task-added", "task-done", "closed"]
    assert {e["actor"] for e in inc["timeline"]} == {"soc-admin"}
    assert [(t["id"], t["done"]) for t in inc["tasks"]] == [(1, False), (2, True)]
    assert (inc["status"], inc["assignee"], inc["close_reason"]) == ("closed", "alice", "true-positive")
    assert {r["soc"]["alert"]["uuid"] for r in rows[1:]} == {first, second}
    store = open_store(uri)
    for uuid in (first, second):  # --close-alerts: each alert closed by its own workflow, with the reason
        alert = store.get_alert(uuid)
        assert alert["soc.alert.workflow_status"] == "closed"
        assert alert["soc.alert.history"][-1]["reason"] == "true-positive"
    assert store.get_alert(alerts[2]["soc.alert.uuid"])["soc.alert.workflow_status"] != "closed"
    audit = [(e["action"], e["actor"], e["details"].get("incident")) for e in store.audit_entries()
             if e["action"].startswith("incident-")]
    closed = sorted(e["details"]["alert"] for e in store.audit_entries() if e["action"] == "alert-close")
    assert closed == sorted([first, second])
    store.close()
    assert audit == [(a, "soc-admin", 1) for a in ("incident-create", "incident-alerts-added", "incident-assigned",
                                                   "incident-task-added", "incident-task-added", "incident-task-done",
                                                   "incident-closed")]
    for argv, why in ((["close", "1", "--reason", "other"], "is closed"), (["task", "1", "add", "x"], "is closed"),
                      (["add", "9", first], "no incident 9"), (["show", "7"], "no incident 7")):
        res = soc(uri, "incident", *argv)
        assert res.exit_code == 1 and why in res.stderr, (argv, res.stderr)
    res = soc(uri, "incident", "create", "--title", "t", "--alerts", "no-such-alert")
    assert res.exit_code == 1 and "no-such-alert" in res.stderr
    res = soc(uri, "incident", "list", "--json")  # default: open only
    assert lines(res.stdout) == []


def test_observables_are_the_alerts_addresses_and_names_and_internal_ones_are_never_shareable(world):
    uri, alerts = world
    res = soc(uri, "incident", "create", "--title", "all", "--where", "event.kind:signal")
    res = soc(uri, "incident", "show", "1", "--json")
    obs = lines(res.stdout)[0]["soc"]["incident"]["observables"]
    ips = {o["value"]: o["shareable"] for o in obs if o["type"] == "ip"}
    truth = {a[f] for a in alerts for f in ("source.ip", "destination.ip") if a.get(f)}
    assert truth <= set(ips)
    for ip, shareable in ips.items():
        if ipaddress.ip_address(ip) in ipaddress.ip_network("10.0.0.0/8"):
            assert not shareable, ip
    assert any(ips.values()), "the demo's attackers are on the internet"
    assert any(o["type"] == "domain" for o in obs)


# -- the store methods, on SQLite and on each ES emulator -------------------------------------------------------------


def test_incident_store_methods_sqlite(tmp_path):
    uri = f"sqlite:///{tmp_path / 'soc.db'}"
    store = open_store(uri)
    store.init()
    check_incident_store(store, lambda: open_store(uri))
    store.close()


def test_incident_store_methods_elasticsearch(es_server, es_store):  # noqa: F811 - the fixtures
    check_incident_store(es_store, lambda: es_server.store(es_store.namespace))


def check_incident_store(store, another) -> None:
    """Numbering, reading, changing and searching incidents; two concurrent writers lose nothing."""
    docs = [{"@timestamp": f"2024-05-01T10:00:0{i}.000000Z", "soc.incident.title": f"i{i}",
             "soc.incident.status": "open", "soc.incident.tasks": [], "gov.label.rank": r}
            for i, r in enumerate((0, 2, 3))]
    assert [store.create_incident(d)["soc.incident.id"] for d in docs] == [1, 2, 3]
    assert store.get_incident(2)["soc.incident.title"] == "i1" and store.get_incident(9) is None
    store.update_incident(1, lambda d: d | {"soc.incident.status": "closed"})
    assert [d["soc.incident.id"] for d in store.search_incidents(Query())] == [3, 2, 1]
    assert [d["soc.incident.id"] for d in store.search_incidents(Query((Clearance(2),)))] == [2, 1]
    is_open = Query((Term("soc.incident.status", "open"),))
    assert [d["soc.incident.id"] for d in store.search_incidents(is_open)] == [3, 2]
    with pytest.raises(StoreError):
        store.update_incident(9, lambda d: d)
    # two writers adding tasks to one incident at once: none is lost
    others = [another() for _ in range(2)]

    def add_tasks(s, who):
        for k in range(8):
            s.update_incident(2, lambda d, k=k: d | {"soc.incident.tasks": [*d["soc.incident.tasks"], f"{who}{k}"]})

    threads = [threading.Thread(target=add_tasks, args=(s, w)) for s, w in zip(others, "ab", strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in others:
        s.close()
    assert sorted(store.get_incident(2)["soc.incident.tasks"]) == sorted(f"{w}{k}" for w in "ab" for k in range(8))


def test_incident_pivot_and_evidence_agree_on_sqlite_and_elasticsearch(es_server, tmp_path):  # noqa: F811
    """The same capture into both stores: the same incident, timeline and extract."""
    if es_server.client_options:
        pytest.skip(f"{es_server.name}: the stock client cannot talk to it (needs the test-only transport)")
    uris = {"sqlite": f"sqlite:///{tmp_path / 'soc.db'}", "es": es_server.uri()}
    got = {}
    for name, uri in uris.items():
        ingest(uri, DEMO_PCAP)
        res = soc(uri, "incident", "create", "--title", "t", "--where", 'rule.name:"Classified data*"', "--json")
        assert res.exit_code == 0, res.stderr
        inc = incident_of(res.stdout)
        tl = soc(uri, "timeline", "--incident", "1", "--json")
        assert tl.exit_code == 0, tl.stderr
        out = tmp_path / f"{name}.pcap"
        ex = soc(uri, "pcap", "extract", "--incident", "1", "-o", str(out), "--json")
        assert ex.exit_code == 0, ex.stderr
        got[name] = (sorted(inc["alerts"]), inc["severity"], inc["rank"], len(lines(tl.stdout)),
                     lines(ex.stdout)[0]["packets"], out.read_bytes())
    assert got["sqlite"] == got["es"]
    assert got["sqlite"][0] and got["sqlite"][3] > 0 and got["sqlite"][4] > 0
