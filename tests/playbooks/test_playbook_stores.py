"""The same playbook run through the CLI on SQLite and on the ES emulator (noida, or SOC_TEST_ES_URL): a run
recorded (`playbook-run` records), waiting, approved from a second shell, listed, shown and undone, with the same
steps and audit entries on every store."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from es_server import EsServer, server_names, start_server
from typer.testing import CliRunner

from correlator.gate import open_gate
from correlator.policy.loader import load_policy
from correlator.query import Query
from correlator.store import open_store
from playbooks.cacao import PlaybookError
from playbooks.engine import Engine, run_id
from soc_cli.common import SHIPPED_POLICY
from soc_cli.main import app
from tests.playbooks.engine_world import Killed, _blocked
from tests.playbooks.test_playbook_core import BLOCK, SCANNER, as_user, lines, scanning
from tests.triage.world import DEMO_PCAP, ingest

runner = CliRunner()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, EsServer]]:
    started: dict[str, EsServer] = {}
    yield started
    for s in started.values():
        s.close()


# osmem answers only plain JSON (its client options, tests/es_server.py), which the CLI cannot be given
@pytest.fixture(params=["sqlite", *[n for n in server_names() if n != "osmem"]])
def uri(request, tmp_path, tmp_path_factory, servers) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'soc.db'}"
    if request.param not in servers:
        servers[request.param] = start_server(request.param, tmp_path_factory.mktemp(request.param))
    return servers[request.param].uri()


def soc(uri: str, *args: str):
    return runner.invoke(app, ["--store", uri, *args], env={"SOC_CLEARANCE": None, "SOC_CONFIG": None,
                                                            "SOC_POLICY": None})


def test_a_run_on_every_store(uri, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("SOC_HOME", str(home))
    monkeypatch.setenv("SOC_AUDIT_ANCHOR_FILE", "")
    as_user(monkeypatch, "soc-admin")
    ingest(uri, DEMO_PCAP)
    alerts = lines(soc(uri, "alerts", "list", "--where", f"source.ip:{SCANNER}", "--json").stdout)
    [scan] = [a for a in alerts if a["title"].startswith("Port Scan")]
    as_user(monkeypatch, "soc-analyst")
    pb = scanning(tmp_path, block=BLOCK)
    res = soc(uri, "playbook", "run", str(pb), "--alert", scan["id"], "--execute", "--json")
    assert res.exit_code == 3, res.stderr
    run = lines(res.stdout)[0]
    as_user(monkeypatch, "soc-lead")
    [listed] = lines(soc(uri, "playbook", "runs", "--json").stdout)
    assert listed["id"] == run["id"] and listed["status"] == "waiting" and listed["gov.label.rank"] == 1
    res = soc(uri, "playbook", "approve", run["id"], "block", "--json")
    assert res.exit_code == 0, res.stderr
    assert _blocked(home) == [SCANNER]
    shown = lines(soc(uri, "playbook", "show", run["id"], "--json").stdout)
    assert shown[0]["status"] == "succeeded"
    assert [s["name"] for s in shown[1:]] == ["start", "enrich", "search", "note", "high?", "block", "end"]
    assert soc(uri, "playbook", "undo", run["id"]).exit_code == 0 and _blocked(home) == []
    store = open_store(uri)
    actions = [e["action"] for e in store.audit_entries() if e["action"].startswith("playbook")]
    store.close()
    assert actions == ["playbook-run", "playbook-step", "playbook-step", "playbook-step",
                       "playbook-approval-requested", "playbook-approval", "playbook-step", "playbook-run-end",
                       "playbook-undo"]


@pytest.fixture(params=["sqlite", *server_names()])
def connect(request, tmp_path, tmp_path_factory, servers):
    """A factory of connections to one fresh store: SQLite, then each ES emulator (with its client options)."""
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'soc.db'}"
        open_store(uri, create=True).close()
        return lambda: open_store(uri)
    if request.param not in servers:
        servers[request.param] = start_server(request.param, tmp_path_factory.mktemp(request.param))
    server = servers[request.param]
    namespace = server.store().namespace
    return lambda: server.store(namespace)


def test_modify_record_is_atomic_and_aborts_cleanly(connect):
    """Store.modify_record on each backend: None for a missing record, an exception in the change writes nothing,
    and 8 threads incrementing one record (each on its own connection) lose no update."""
    store = connect()
    store.init()
    assert store.modify_record("t", "x", lambda d: d) is None
    store.put_record("t", "x", {"n": 0})

    def boom(d: dict) -> dict:
        raise ValueError("no")

    with pytest.raises(ValueError):
        store.modify_record("t", "x", boom)
    assert store.records("t") == [{"n": 0}]

    def bump() -> None:
        s = connect()
        for _ in range(5):
            s.modify_record("t", "x", lambda d: {"n": d["n"] + 1})
        s.close()

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.records("t") == [{"n": 40}]
    store.close()


def test_two_approvers_at_once_run_the_step_once(uri, tmp_path, monkeypatch):
    """Two analysts approve the same waiting step at the same moment: one continues the run, the other is told it
    was decided meanwhile; the approved action ran exactly once."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("SOC_HOME", str(home))
    monkeypatch.setenv("SOC_AUDIT_ANCHOR_FILE", "")
    ingest(uri, DEMO_PCAP)
    policy = load_policy(SHIPPED_POLICY)
    store = open_store(uri)
    [scan] = [a for a in store.search_alerts(Query(), 100) if a.get("source.ip") == SCANNER
              and "Port Scan" in json.dumps(a)]
    pb = scanning(tmp_path, block={"action": "test.count", "args": {"key": "block"}, "approval": True})
    run = Engine(open_gate(store, policy, "soc-analyst"), home=home).start(str(pb), scan["soc.alert.uuid"], None,
                                                                          execute=True)
    assert run["status"] == "waiting"
    barrier = threading.Barrier(2)
    claim = Engine._claim

    def racing_claim(self, *args):  # both have read the waiting run before either stores its decision
        barrier.wait(timeout=30)
        return claim(self, *args)

    monkeypatch.setattr(Engine, "_claim", racing_claim)
    outcomes: list[str] = []

    def approve(user: str) -> None:
        s = open_store(uri)
        try:
            outcomes.append(Engine(open_gate(s, policy, user), home=home).decide(run["id"], "block", True)["status"])
        except PlaybookError as exc:
            outcomes.append(str(exc))
        finally:
            s.close()

    threads = [threading.Thread(target=approve, args=(u,)) for u in ("soc-lead", "soc-admin")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes)[-1] == "succeeded" and "was decided meanwhile" in sorted(outcomes)[0], outcomes
    assert (home / "count-block").read_text() == "1"


def test_two_resumes_at_once_run_the_interrupted_step_once(uri, tmp_path, monkeypatch):
    """A run killed in its search step, resumed from two shells at the same moment: one resumes, the other is told
    the run was resumed meanwhile; search ran twice in all (the killed attempt and one resume), enrich once."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("SOC_HOME", str(home))
    monkeypatch.setenv("SOC_AUDIT_ANCHOR_FILE", "")
    ingest(uri, DEMO_PCAP)
    policy = load_policy(SHIPPED_POLICY)
    store = open_store(uri)
    [scan] = [a for a in store.search_alerts(Query(), 100) if a.get("source.ip") == SCANNER
              and "Port Scan" in json.dumps(a)]
    pb = scanning(tmp_path, enrich={"action": "test.count", "args": {"key": "enrich"}},
                  search={"action": "test.count", "args": {"key": "search", "die": True}},
                  block={"action": "test.count", "args": {"key": "block"}})
    with pytest.raises(Killed):
        Engine(open_gate(store, policy, "soc-analyst"), home=home).start(str(pb), scan["soc.alert.uuid"], None,
                                                                        execute=True)
    [run_id] = [r["id"] for r in store.records("playbook-run")]
    barrier = threading.Barrier(2)
    claim = Engine._claim

    def racing_claim(self, *args):
        barrier.wait(timeout=30)
        return claim(self, *args)

    monkeypatch.setattr(Engine, "_claim", racing_claim)
    outcomes: list[str] = []

    def resume() -> None:
        s = open_store(uri)
        try:
            outcomes.append(Engine(open_gate(s, policy, "soc-analyst"), home=home).resume(run_id)["status"])
        except PlaybookError as exc:
            outcomes.append(str(exc))
        finally:
            s.close()

    threads = [threading.Thread(target=resume) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes)[-1] == "succeeded" and "resumed or changed meanwhile" in sorted(outcomes)[0], outcomes
    counts = {k: (home / f"count-{k}").read_text() for k in ("enrich", "search", "block")}
    assert counts == {"enrich": "1", "search": "2", "block": "1"}


def test_records_page_newest_first_on_every_store(connect, monkeypatch):
    """Store.records(kind, limit, descending) reads one page in id order (playbook run ids sort by start time) and
    get_record one record; with pages of 4 (ES: search_after), every record is still read once, in order."""
    monkeypatch.setattr("correlator.store.elastic.RECORD_PAGE", 4)
    store = connect()
    store.init()
    ids = [run_id() for _ in range(11)]
    assert ids == sorted(ids) and len(set(ids)) == 11
    for i, rid in enumerate(reversed(ids)):  # written out of order
        store.put_record("playbook-run", rid, {"id": rid, "n": i})
    store.put_record("other", "zzz", {"id": "zzz"})
    assert [d["id"] for d in store.records("playbook-run")] == ids
    assert [d["id"] for d in store.records("playbook-run", descending=True)] == ids[::-1]
    assert [d["id"] for d in store.records("playbook-run", 5, descending=True)] == ids[:-6:-1]
    assert [d["id"] for d in store.records("playbook-run", 9)] == ids[:9]
    assert store.get_record("playbook-run", ids[3]) == {"id": ids[3], "n": 7}
    assert store.get_record("playbook-run", "run-none") is None and store.get_record("other", ids[0]) is None
    store.close()


@pytest.mark.parametrize("name", server_names())
def test_an_elasticsearch_meta_index_from_schema_2_is_indexed_on_init(name, servers, tmp_path_factory):
    """A namespace whose meta index predates schema 3 (kind and id not mapped): init maps them and re-indexes its
    records, which the paged reads then find."""
    if name not in servers:
        servers[name] = start_server(name, tmp_path_factory.mktemp(name))
    store = servers[name].store()
    store.es.indices.create(index=store.meta_index, mappings={"dynamic": False, "properties": {}})
    for rid in ("run-a", "run-b"):
        store.es.index(index=store.meta_index, id=f"playbook-run:{rid}",
                       document={"kind": "playbook-run", "id": rid, "doc": {"id": rid}}, refresh=True)
    store.init()
    assert [d["id"] for d in store.records("playbook-run", 1, descending=True)] == ["run-b"]
    assert [d["id"] for d in store.records("playbook-run")] == ["run-a", "run-b"]
    store.close()
