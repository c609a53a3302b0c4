"""Both stores for the triage tests: a fresh SQLite file, and a fresh namespace on each ES emulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from es_server import EsServer, server_names, start_server

from correlator.store import open_store


@pytest.fixture(scope="session")
def es_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], EsServer]]:
    """Starts each emulator the first time a test asks for it; stops them at the end of the session."""
    started: dict[str, EsServer] = {}

    def get(name: str) -> EsServer:
        if name not in started:
            started[name] = start_server(name, tmp_path_factory.mktemp(name))
        return started[name]

    yield get
    for server in started.values():
        server.close()


@pytest.fixture(params=["sqlite", *server_names()])
def any_store(request: pytest.FixtureRequest, tmp_path, es_servers):
    """(store, connect): an initialized store (SQLite, then each ES emulator) and a factory for more connections
    to the same store (other analysts)."""
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'soc.db'}"
        store = open_store(uri)
        store.init()
        yield store, lambda: open_store(uri)
        store.close()
        return
    server = es_servers(request.param)
    store = server.store()
    store.init()
    yield store, lambda: server.store(store.namespace)
    store.close()
