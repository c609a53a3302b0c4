"""Elasticsearch goes away mid-ingest: batches are spooled (exit 3), and once it is back `soc store replay`
writes them, so that every accepted event is stored exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from correlator.events import event_id
from correlator.pipeline import Pipeline
from correlator.query import Query
from correlator.store import StoreUnavailable, spool_for

pytestmark = pytest.mark.es
SOC = str(Path(sys.executable).with_name("soc"))
BATCH = 2000  # the pipeline's batch size


def _events(start: int, n: int) -> list[dict]:
    out = []
    for i in range(start, start + n):
        ev = {"@timestamp": f"2024-05-01T{10 + i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}.{i:06d}Z",
              "event.kind": "event", "event.dataset": "soc.flow", "event.sequence": i,
              "source.ip": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", "destination.port": 443}
        ev["event.id"] = event_id(ev)
        out.append(ev)
    return out


def _stored_ids(server, store) -> list[str]:
    """What the cluster holds, read with the default timeout (a store under test may have a 1 s one)."""
    raw = Elasticsearch(server.url, **server.client_options)
    raw.indices.refresh(index=store.events_index)
    return [e["event.id"] for e in server.store(store.namespace).search_events(Query(), limit=100_000)]


def test_cli_ingest_spools_while_elasticsearch_is_down_and_replay_stores_each_event_once(es_server, soc_env, tmp_path):
    if not es_server.can_restart:
        pytest.skip(f"{es_server.name}: the test cannot stop and restart this server with its data "
                    "(osmem-server keeps data in memory; an external cluster is not ours to stop)")
    store = es_server.store()
    store.init()
    uri = es_server.uri(store.namespace)  # with the password, if any (store.uri hides it)
    first, second = _events(0, 2 * BATCH), _events(2 * BATCH, 2 * BATCH + 500)
    fifo = tmp_path / "events.ndjson"
    os.mkfifo(fifo)
    ingest = subprocess.Popen([SOC, "events", "ingest", str(fifo), "--store", uri, "--no-rules", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with fifo.open("w") as feed:
        feed.writelines(json.dumps(e) + "\n" for e in first)
        feed.flush()
        deadline = time.monotonic() + 60
        while len(_stored_ids(es_server, store)) < len(first):  # two full batches written, the third not yet read
            assert time.monotonic() < deadline and ingest.poll() is None, ingest.communicate()
            time.sleep(0.2)
        es_server.stop()
        feed.writelines(json.dumps(e) + "\n" for e in second)
    out, err = ingest.communicate(timeout=120)
    assert ingest.returncode == 3, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["written"] == len(first) and summary["spooled_events"] == len(second)
    assert "unavailable" in err
    assert spool_for(store.uri).pending()["events"] == len(second)

    es_server.start()
    assert sorted(_stored_ids(es_server, store)) == sorted(e["event.id"] for e in first)  # nothing lost in the stop
    replay = subprocess.run([SOC, "store", "replay", "--store", uri, "--json"], capture_output=True, text=True,
                            timeout=120)
    assert replay.returncode == 0, replay.stderr
    assert json.loads(replay.stdout) | {"skipped": []} == {"events": len(second), "alerts": 0,
                                                          "new_events": len(second), "skipped": []}
    ids = _stored_ids(es_server, store)
    assert len(ids) == len(set(ids)) == len(first) + len(second)
    assert set(ids) == {e["event.id"] for e in first + second}
    assert spool_for(store.uri).pending()["events"] == 0


def test_cli_ingest_with_elasticsearch_down_from_the_start_spools_everything(es_server, soc_env, tmp_path):
    if not es_server.can_restart:
        pytest.skip(f"{es_server.name}: the test cannot stop and restart this server with its data")
    store = es_server.store()
    store.init()
    uri = es_server.uri(store.namespace)
    events = _events(0, BATCH + 10)
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    es_server.stop()
    try:
        run = subprocess.run([SOC, "events", "ingest", str(path), "--store", uri, "--no-rules"],
                             capture_output=True, text=True, timeout=120)
    finally:
        es_server.start()
    assert run.returncode == 3, run.stderr
    assert f"{len(events)} spooled" in " ".join(run.stdout.split())
    replay = subprocess.run([SOC, "store", "replay", "--store", uri], capture_output=True, text=True,
                            timeout=120)
    assert replay.returncode == 0, replay.stderr
    assert sorted(_stored_ids(es_server, store)) == sorted(e["event.id"] for e in events)


def test_hung_cluster_times_out_into_the_spool(es_server, soc_env):
    """A cluster that accepts connections but never answers (SIGSTOP) is unavailable after the timeout."""
    if es_server.name == "external":
        pytest.skip("an external cluster cannot be frozen by the test")
    namespace = "t" + uuid.uuid4().hex[:12]
    warm = es_server.store(namespace, timeout="60")  # the healthy batch must not time out on a loaded machine
    warm.init()
    first, second = _events(0, BATCH), _events(BATCH, BATCH)
    Pipeline(warm, batch_size=BATCH).process([dict(e) for e in first])
    store = es_server.store(namespace, timeout="1")
    pipeline = Pipeline(store, batch_size=BATCH)
    es_server.freeze()
    try:
        started = time.monotonic()
        pipeline.process([dict(e) for e in second])
        assert time.monotonic() - started < 30
        assert pipeline.stats.spooled_events == BATCH
        with pytest.raises(StoreUnavailable):
            store.count_events(Query())
    finally:
        es_server.thaw()
    # replayed through the patient client: a loaded machine's emulator may take more than 1 s for 2,000 events
    assert pipeline.spool.replay(warm)["events"] == BATCH
    ids = _stored_ids(es_server, store)
    assert len(ids) == len(set(ids)) == 2 * BATCH
