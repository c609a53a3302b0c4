"""The same playbook run through the CLI on SQLite and on the ES emulator (noida, or SOC_TEST_ES_URL): a run
recorded (`playbook-run` records), waiting, approved from a second shell, listed, shown and undone, with the same
steps and audit entries on every store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from es_server import EsServer, server_names, start_server
from typer.testing import CliRunner

from correlator.store import open_store
from soc_cli.main import app
from tests.playbooks.engine_world import _blocked
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
