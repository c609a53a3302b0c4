"""`soc policy es-roles`: each role's document-level-security query, run for real on an ES-compatible server,
shows exactly the events the SQLite store's clearance filter shows (unlabelled documents included)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from correlator.policy import PolicyEngine
from correlator.query import Clearance, Query
from soc_cli.policy import es_roles

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from es_server import server_names, start_server  # noqa: E402

EVENTS = [("185.220.101.7", "172.16.10.10", 443), ("10.10.3.3", "10.10.5.10", 443),
          ("10.20.3.3", "10.1.0.10", 443), ("10.20.3.3", "10.20.200.5", 443)]


@pytest.fixture(scope="module")
def es(tmp_path_factory):
    server = start_server(server_names()[0], tmp_path_factory.mktemp("es"))
    yield server
    server.close()


def test_role_queries_match_sqlite_clearance(es, policy, sqlite_store):
    engine = PolicyEngine(policy)
    events = [{"@timestamp": f"2026-01-15T09:00:0{i}.000000Z", "event.id": f"ev{i}", "event.dataset": "soc.flow",
               "source.ip": s, "destination.ip": d, "destination.port": p, "network.transport": "tcp"}
              for i, (s, d, p) in enumerate(EVENTS)]
    engine.enrich(events)
    events.append({"@timestamp": "2026-01-15T09:00:09.000000Z", "event.id": "unlabelled", "message": "no gov"})
    store = es.store()
    store.init()
    try:
        store.write_events(events)
        sqlite_store.write_events(events)
        store.es.indices.refresh(index=store.events_index)
        roles = es_roles(policy, ["logs-soc.events-*", "soc-alerts-*"])
        assert list(roles) == [f"soc_clearance_{lv.name.replace('-', '_')}" for lv in policy.levels]
        for lv in policy.levels:
            dls = json.loads(roles[f"soc_clearance_{lv.name.replace('-', '_')}"]["indices"][0]["query"])
            hits = store.es.search(index=store.events_index, query=dls, size=100)["hits"]["hits"]
            got = sorted(h["_id"] for h in hits)
            want = sorted(e["event.id"] for e in sqlite_store.search_events(Query((Clearance(lv.rank),)), 100))
            assert got == want, lv.name
            assert len(want) == 2 + lv.rank  # the unlabelled event and one event per level up to this one
    finally:
        store.close()
