"""The same scan -> change-alert -> roll-up cycle on both stores: SQLite and an Elasticsearch-compatible server."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from correlator.query import Query
from correlator.store import open_store
from soc_cli.main import app
from tests.compliance.test_baseline import GOOD, MUTATIONS

runner = CliRunner()


@pytest.fixture(scope="module", params=["sqlite", "es"])
def store_uri(request, tmp_path_factory):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'soc.db'}"
        return
    from es_server import server_names, start_server  # tests/es_server.py: emulators or SOC_TEST_ES_URL

    name = server_names()[0]  # noida-db (speaks the stock client's ES 8 API) or the external cluster
    server = start_server(name, tmp_path_factory.mktemp(name))
    try:
        yield f"{server.url}/?namespace=compliance{int(time.time() * 1000)}"
    finally:
        server.close()


@pytest.mark.es
def test_change_alerts_and_rollup_on_each_store(store_uri, make_tree, soc_env):
    root = make_tree(GOOD)
    base = ["compliance", "scan", "--root", str(root), "--host", "h1", "--org", "MinX", "--no-probe-tls",
            "--store", store_uri]
    assert runner.invoke(app, base).exit_code == 0
    assert runner.invoke(app, base).exit_code == 0
    mutated = make_tree(GOOD, MUTATIONS[10802][0][0])
    res = runner.invoke(app, [*base[:3], str(mutated), *base[4:]])
    assert res.exit_code == 1 and "1 state-change alerts" in res.output
    store = open_store(store_uri)
    try:
        (alert,) = store.search_alerts(Query(), limit=10)
    finally:
        store.close()
    assert alert["soc.alert.rule.uuid"] == "soc-compliance-state-change" and alert["rule.id"] == "10802"
    assert alert["soc.compliance.check.evidence"] == [
        "kernel.randomize_va_space = 0 (/proc/sys/kernel/randomize_va_space)"]
    assert alert["soc.compliance.check.evidence_more"] == 0
    report = runner.invoke(app, ["compliance", "report", "--by", "host", "--json", "--store", store_uri])
    (row,) = [json.loads(line) for line in report.stdout.splitlines()]
    assert (row["host"], row["failed"], row["not_applicable"]) == ("h1", 1, 2)
