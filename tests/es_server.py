"""Elasticsearch-compatible servers for the store's integration tests, started on 127.0.0.1 and stopped.

Elasticsearch itself cannot be installed here, so the suite runs on two ES-API emulators from PyPI, each with
its known gaps listed (a check that depends on a gap is marked xfail(strict) with that reason):

- `noida-db` (speaks the ES 8 REST API to the stock client; keeps data in a directory across restarts);
- `osmem-server` (bleve-based, OpenSearch flavoured, in memory; strict; wants plain `application/json`).

With SOC_TEST_ES_URL set, the suite runs against that real cluster instead (no gaps).
"""

from __future__ import annotations

import http.client
import http.server
import importlib.resources
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elastic_transport import Urllib3HttpNode
from elasticsearch import Elasticsearch

from correlator.store.elastic import ElasticStore

NOIDA_GAPS = {
    "ilm": "noida-db implements no ILM API (_ilm: no handler found)",
    "data_stream": "noida-db implements no data stream API (_data_stream: no handler found)",
    "cidr": "noida-db: a CIDR term query on an ip field silently returns 0 hits",
    "ipv6_term": "noida-db: a term query on an ip field never matches an IPv6 address (IPv4 works)",
    "lucene_numeric_term": "noida-db: a query_string term on a numeric field (destination.port:22) returns 0 hits",
    "lucene_ip_term": "noida-db: a query_string term on an ip field fails with 400 'For input string'",
    "lucene_regex": "noida-db: a query_string /regex/ is searched as a literal term (x:/oth.*/ misses 'other'; "
                    "a [class] or {n,m} answers 400 'Cannot parse range')",
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
    namespaces: set[str] = field(default_factory=set)

    def uri(self, namespace: str | None = None, via: str | None = None, **params: str) -> str:
        """A store URI for a fresh namespace of its own (or `namespace`), optionally through a proxy at `via`."""
        query = {"namespace": namespace or "t" + uuid.uuid4().hex[:12], **params}
        self.namespaces.add(query["namespace"])
        return (via or self.url) + "/?" + "&".join(f"{k}={v}" for k, v in query.items())

    def store(self, namespace: str | None = None, via: str | None = None, **params: str) -> ElasticStore:
        """A store in a fresh namespace of its own (not yet initialized)."""
        return ElasticStore(self.uri(namespace, via, **params), **self.client_options)

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
        """Remove what the tests created (a real cluster outlives the session)."""
        raw = Elasticsearch(self.url, **self.client_options, request_timeout=10, max_retries=0)
        if not raw.options(ignore_status=404).ping():
            warnings.warn(f"{self.name}: server down at the end of the session, test namespaces left", stacklevel=1)
            return
        for ns in self.namespaces:
            gone = raw.options(ignore_status=(400, 404))
            gone.indices.delete_data_stream(name=f"logs-soc.events-{ns}")
            gone.indices.delete(index=f"logs-soc.events-{ns},soc-alerts-{ns},soc-audit-{ns},soc-meta-{ns}",
                                ignore_unavailable=True)
            for template in (f"soc-events-{ns}", f"soc-alerts-{ns}", f"soc-audit-{ns}", f"soc-meta-{ns}"):
                gone.indices.delete_index_template(name=template)
            gone.cluster.delete_component_template(name=f"soc-ecs-{ns}")
            gone.ilm.delete_lifecycle(name=f"soc-events-{ns}")
        raw.close()


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

    def close(self) -> None:
        super().close()
        self.stop()


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
        super().close()
        self.server.close()


def start_server(name: str, tmp: Path) -> EsServer:
    if name == "external":
        return EsServer("external", os.environ["SOC_TEST_ES_URL"].rstrip("/"))
    if name == "noida":
        return NoidaServer(tmp / "noida-data")
    return OsmemServer()


def server_names() -> list[str]:
    return ["external"] if os.environ.get("SOC_TEST_ES_URL") else ["noida", "osmem"]


class FaultProxy:
    """An HTTP proxy in front of a server that answers some bulk requests or items with 429/5xx itself,
    without forwarding them (so they are really not stored): to test retry with backoff on a live server."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.fail_requests: list[int] = []  # statuses for the next whole bulk requests
        self.fail_items: list[tuple[int, int]] = []  # (how many leading items, status) for the next bulk requests
        self.bulk_times: list[float] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, payload = proxy.handle(self.command, self.path, dict(self.headers), body)
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        try:
            conn.request(method, path, body=body or None,
                         headers={k: v for k, v in headers.items()
                                  if k.lower() not in ("host", "content-length", "connection", "transfer-encoding")})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        if "/_bulk" not in path:
            return self.forward(method, path, headers, body)
        self.bulk_times.append(time.monotonic())
        json_headers = {"Content-Type": "application/json", "X-Elastic-Product": "Elasticsearch"}
        if self.fail_requests:
            status = self.fail_requests.pop(0)
            error = {"error": {"type": "injected", "reason": f"injected {status}"}, "status": status}
            return status, json_headers, json.dumps(error).encode()
        if not self.fail_items:
            return self.forward(method, path, headers, body)
        n, status = self.fail_items.pop(0)
        lines = body.decode().splitlines()
        pairs = [lines[i:i + 2] for i in range(0, len(lines), 2)]  # create/index actions: header + source
        refused, passed = pairs[:n], pairs[n:]
        items = []
        for head, _ in refused:
            op, meta = next(iter(json.loads(head).items()))
            items.append({op: {"_index": meta["_index"], "_id": meta["_id"], "status": status,
                               "error": {"type": "injected", "reason": f"injected {status}"}}})
        if passed:
            forwarded = "\n".join(line for pair in passed for line in pair) + "\n"
            code, _, payload = self.forward(method, path, headers, forwarded.encode())
            assert code == 200, payload
            items += json.loads(payload)["items"]
        return 200, json_headers, json.dumps({"took": 1, "errors": True, "items": items}).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
