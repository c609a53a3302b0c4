"""Elasticsearch-compatible servers for the store's integration tests, started on 127.0.0.1 and stopped.

Elasticsearch itself cannot be installed here, so the suite runs on two ES-API emulators from PyPI, each with
its known gaps listed (a check that depends on a gap is marked xfail(strict) with that reason):

- `noida-db` (speaks the ES 8 REST API to the stock client; keeps data in a directory across restarts);
- `osmem-server` (bleve-based, OpenSearch flavoured, in memory; strict; wants plain `application/json`).

With SOC_TEST_ES_URL set, the suite runs against that real cluster instead (no gaps).
"""

from __future__ import annotations

import importlib.resources
import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elastic_transport import Urllib3HttpNode

from correlator.store.elastic import ElasticStore

NOIDA_GAPS = {
    "ilm": "noida-db implements no ILM API (_ilm: no handler found)",
    "data_stream": "noida-db implements no data stream API (_data_stream: no handler found)",
    "cidr": "noida-db: a CIDR term query on an ip field silently returns 0 hits",
    "ip_spelling": "noida-db: a term query on an ip field matches only the canonical spelling (not 2001:0db8::…)",
    "lucene_numeric_term": "noida-db: a query_string term on a numeric field (destination.port:22) returns 0 hits",
}
OSMEM_GAPS = {
    "ilm": "osmem-server implements no ILM API (_ilm: no handler found)",
    "data_stream": "osmem-server: 'data streams are not supported by osmem'",
    "text": "osmem-server does not apply custom (pattern) analyzers when indexing: soc.search_text gets no tokens",
}


# The server binary itself (the `noida-db` console script is a wrapper process; signals must reach the server).
NOIDA = str(importlib.resources.files("noida_db").joinpath("noida-db"))


class PlainJsonNode(Urllib3HttpNode):
    """Test-only transport for osmem-server: send plain application/json instead of the client's
    `application/vnd.elasticsearch+json; compatible-with=8`, which osmem answers with 406."""

    def perform_request(self, method: str, target: str, body: bytes | None = None, headers: Any = None,
                        request_timeout: Any = None) -> Any:  # noqa: ANN401 - transport signature
        if headers is not None:
            headers = headers.copy()
            for name in ("accept", "content-type"):
                if name in headers:
                    headers[name] = headers[name].replace("vnd.elasticsearch+", "").split(";")[0]
        return super().perform_request(method, target, body=body, headers=headers, request_timeout=request_timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode} during start-up")
        try:
            with urllib.request.urlopen(url + "/", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"no answer from {url} within {timeout} s")


@dataclass
class EsServer:
    """One running ES-compatible server: its URL, known gaps, and client options the tests must use."""

    name: str
    url: str
    gaps: dict[str, str] = field(default_factory=dict)
    client_options: dict[str, Any] = field(default_factory=dict)
    can_restart: bool = False

    def store(self, namespace: str | None = None, **params: str) -> ElasticStore:
        """A store in a fresh namespace of its own (not yet initialized)."""
        query = {"namespace": namespace or "t" + uuid.uuid4().hex[:12], **params}
        uri = self.url + "/?" + "&".join(f"{k}={v}" for k, v in query.items())
        return ElasticStore(uri, **self.client_options)

    def stop(self) -> None:
        """Shut the server down, keeping its data (only where `can_restart`)."""
        raise NotImplementedError(f"{self.name}: cannot be stopped and restarted by the tests")

    def start(self) -> None:
        """Start it again on the same address with the same data."""
        raise NotImplementedError(f"{self.name}: cannot be stopped and restarted by the tests")

    def freeze(self) -> None:
        """Make the server hang (SIGSTOP): connections are accepted by the kernel but never answered."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    @property
    def pid(self) -> int:
        raise NotImplementedError(f"{self.name}: no local process to freeze")

    def close(self) -> None:
        """Shut it down for good."""


class NoidaServer(EsServer):
    """`noida-db start --only elasticsearch` in a temporary data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.proc: subprocess.Popen | None = None
        super().__init__("noida", f"http://127.0.0.1:{self.port}", dict(NOIDA_GAPS), {}, can_restart=True)
        self.start()

    def start(self) -> None:
        log = (self.data_dir.parent / "noida.log").open("ab")
        self.proc = subprocess.Popen(
            [NOIDA, "start", "--data-dir", str(self.data_dir), "--only", "elasticsearch",
             "--elasticsearch-port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        wait_http(self.url, proc=self.proc)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.thaw()
            self.proc.send_signal(signal.SIGINT)  # noida-db saves its data on Ctrl-C
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    close = stop


class OsmemServer(EsServer):
    """osmem-server's bundled binary via its Python launcher (exits with this process)."""

    def __init__(self) -> None:
        from osmem_server import OsmemServer as Launcher

        self.server = Launcher.start(japanese=False, addr=f"127.0.0.1:{free_port()}")
        super().__init__("osmem", self.server.url, dict(OSMEM_GAPS), {"node_class": PlainJsonNode})

    @property
    def pid(self) -> int:
        return self.server.pid

    def close(self) -> None:
        self.thaw()
        self.server.close()


def start_server(name: str, tmp: Path) -> EsServer:
    if name == "external":
        return EsServer("external", os.environ["SOC_TEST_ES_URL"].rstrip("/"))
    if name == "noida":
        return NoidaServer(tmp / "noida-data")
    return OsmemServer()


def server_names() -> list[str]:
    return ["external"] if os.environ.get("SOC_TEST_ES_URL") else ["noida", "osmem"]
