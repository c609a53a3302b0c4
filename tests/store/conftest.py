"""Fixtures for the Elasticsearch store: one server per emulator (or SOC_TEST_ES_URL), fresh namespaces per test."""

from __future__ import annotations

import pytest
from es_server import EsServer, server_names, start_server


@pytest.fixture(scope="session", params=server_names())
def es_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A running ES-compatible server (noida-db, osmem-server, or the cluster at SOC_TEST_ES_URL)."""
    server = start_server(request.param, tmp_path_factory.mktemp(request.param))
    yield server
    server.close()


@pytest.fixture
def es_store(es_server: EsServer):
    """An initialized ElasticStore in a namespace of its own."""
    store = es_server.store()
    store.init()
    yield store
    store.close()


def expect_gap(request: pytest.FixtureRequest, server: EsServer, feature: str) -> None:
    """Mark the running test xfail(strict) when `server` is known to lack `feature`."""
    if reason := server.gaps.get(feature):
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"emulator gap: {reason}"))
