"""The `soc` commands on an Elasticsearch store, as a user runs them: init, ingest, search, status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from correlator.events import event_id, flatten

pytestmark = pytest.mark.es
SOC = str(Path(sys.executable).with_name("soc"))


def soc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SOC, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def uri(es_server, soc_env):
    if es_server.client_options:
        pytest.skip(f"{es_server.name}: the stock client cannot talk to it (needs the test-only transport)")
    return es_server.uri()


def test_init_ingest_search_status(uri, tmp_path):
    events = []
    for i in range(30):
        ev = {"@timestamp": f"2024-05-01T10:00:{i:02d}.000001Z", "event.dataset": "soc.dns", "event.kind": "event",
              "source.ip": f"192.0.2.{i}", "destination.ip": "198.51.100.53", "destination.port": 53 if i % 2 else 443,
              "dns.question.name": f"host{i}.mof.gov.example"}
        ev["event.id"] = event_id(ev)
        events.append(ev)
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(e) + "\n" for e in events) + "{not json\n")

    init = soc("store", "init", "--store", uri, "--json")
    assert init.returncode == 0 and json.loads(init.stdout)["initialized"] is True, init.stderr

    ingest = soc("events", "ingest", str(path), "--store", uri, "--no-rules", "--json")
    assert ingest.returncode == 1  # one bad line, reported with its number; the rest ingested
    assert f"{path}:31" in ingest.stderr
    assert json.loads(ingest.stdout.splitlines()[-1])["written"] == 30

    search = soc("events", "search", "destination.port:53 mof", "--store", uri, "--json", "--limit", "5")
    assert search.returncode == 0, search.stderr
    got = [flatten(json.loads(line)) for line in search.stdout.splitlines()]
    want = sorted((e for e in events if e["destination.port"] == 53), key=lambda e: e["@timestamp"], reverse=True)
    # nested ECS on the wire; the event as written, plus the classification the pipeline added (public addresses)
    assert [{k: v for k, v in e.items() if not k.startswith("gov.")} for e in got] == want[:5]
    assert {e["gov.label.level"] for e in got} == {"public"}

    status = soc("store", "status", "--store", uri, "--json")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert (info["backend"], info["healthy"], info["events"]) == ("elasticsearch", True, 30)
    assert info["spool"]["events"] == 0


def test_status_of_an_uninitialized_store_exits_1(uri):
    status = soc("store", "status", "--store", uri, "--json")
    assert status.returncode == 1 and "soc store init" in json.loads(status.stdout)["error"]
