"""The two-process pipeline (`Pipeline.run_parallel`, `soc sensor pcap --processes 2`) stores exactly what the
one-process path stores: the same events and alerts, byte for byte, on the demo capture and corpus captures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from correlator.query import Query
from correlator.store import Store, open_store
from sensors.capture import read_file
from sensors.engine import Sensor
from soc_cli.main import app
from soc_cli.wiring import build_pipeline

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "rules" / "samples" / "demo-ministry.pcap"
runner = CliRunner()


def _contents(uri: str) -> tuple[list[str], list[str]]:
    """Every stored event and alert as its JSON text (key order included), in a fixed order; alerts without the
    time they were first written (the clock, not the input)."""
    store = open_store(uri, create=False)
    try:
        events = [json.dumps(e) for e in store.search_events(Query([]), limit=1_000_000)]
        alerts = [json.dumps({k: v for k, v in a.items() if k != "soc.alert.created"})  # the write's wall time
                  for a in store.search_alerts(Query([]), limit=1_000_000)]
    finally:
        store.close()
    return sorted(events), sorted(alerts)


def _ingest(pcaps: list[Path], db: Path, processes: int) -> dict:
    res = runner.invoke(app, ["sensor", "pcap", *map(str, pcaps), "--store", f"sqlite:///{db}", "--json",
                              "--sensor-name", "core-1", "--processes", str(processes)])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.corpus
def test_cli_two_processes_store_what_one_process_stores(corpus: Path, soc_env: Path) -> None:
    pcaps = [DEMO, corpus / "pcaps" / "zk_ssh-bruteforce.pcap", corpus / "pcaps" / "es_masscan-tcp-scan.pcap",
             corpus / "pcaps" / "es_nmap-80-all.pcap"]
    one = _ingest(pcaps, soc_env / "one.db", 1)
    two = _ingest(pcaps, soc_env / "two.db", 2)
    assert one == two and one["alerts"] > 0 and one["written"] > 1000  # alerts and correlations
    events1, alerts1 = _contents(f"sqlite:///{soc_env / 'one.db'}")
    events2, alerts2 = _contents(f"sqlite:///{soc_env / 'two.db'}")
    assert len(events1) == one["written"] and alerts1
    assert any('"soc_port_scan"' in a or "Port Scan" in a for a in alerts1)  # a correlation fired across batches
    assert events1 == events2
    assert alerts1 == alerts2


def _sensor_events(pcap: Path) -> list[dict]:
    return list(Sensor("core-1", source=str(pcap)).run(read_file(str(pcap))))


@pytest.mark.corpus
def test_small_batches_bad_events_and_stats(corpus: Path, soc_env: Path) -> None:
    """Many small batches, with unusable events among them: the same stored contents and the same statistics."""
    events = _sensor_events(corpus / "pcaps" / "zk_ssh-bruteforce.pcap")
    events.insert(7, {"message": "no timestamp"})
    events.insert(300, {"@timestamp": "yesterday"})
    stats = []
    for name, parallel in (("one", False), ("two", True)):
        uri = f"sqlite:///{soc_env / name}.db"
        store = open_store(uri)
        store.init()
        pipeline = build_pipeline(store)
        pipeline.batch_size = 50
        copies = [dict(e) for e in events]
        stats.append((pipeline.run_parallel(copies, lambda u=uri: open_store(u)) if parallel
                      else pipeline.run(copies)).as_dict())
        store.close()
    assert stats[0] == stats[1]
    assert stats[0]["rejected"] == 2 and stats[0]["errors"][0].startswith("event 8: ")
    assert _contents(f"sqlite:///{soc_env / 'one.db'}") == _contents(f"sqlite:///{soc_env / 'two.db'}")


class _Broken:
    def detect(self, events: list[dict]) -> list[dict]:
        raise ValueError("detector broke")

    def flush(self) -> list[dict]:
        return []


def test_child_failure_is_raised_in_the_parent(sqlite_store: Store) -> None:
    from correlator.pipeline import Pipeline

    events = [{"@timestamp": "2024-01-01T00:00:00Z", "message": str(i)} for i in range(10)]
    with pytest.raises(ValueError, match="detector broke"):
        Pipeline(sqlite_store, detectors=[_Broken()]).run_parallel(events, lambda: open_store(sqlite_store.uri))


def test_producer_failure_still_stores_the_batches_sent(sqlite_store: Store) -> None:
    from correlator.pipeline import Pipeline

    def produce():
        for i in range(25):
            yield {"@timestamp": "2024-01-01T00:00:00Z", "message": str(i)}
        raise OSError("capture file vanished")

    with pytest.raises(OSError, match="vanished"):
        Pipeline(sqlite_store, batch_size=10).run_parallel(produce(), lambda: open_store(sqlite_store.uri))
    assert sqlite_store.count_events(Query([])) == 20  # two full batches were sent before the error


KILLED_PRODUCER = """
import multiprocessing, os, signal, sys
from correlator.pipeline import Pipeline
from correlator.store import open_store

uri = sys.argv[1]
store = open_store(uri)
store.init()

def produce():
    for i in range(25):
        if i == 24:  # two batches of 10 sent, the third half-read: the producer dies without a word
            print(multiprocessing.active_children()[0].pid, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        yield {"@timestamp": "2024-01-01T00:00:00Z", "message": str(i)}

Pipeline(store, batch_size=10).run_parallel(produce(), lambda: open_store(uri))
"""


def test_killed_producer_leaves_what_it_sent_stored_and_no_process(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    uri = f"sqlite:///{tmp_path / 'k.db'}"
    proc = subprocess.run([sys.executable, "-c", KILLED_PRODUCER, uri], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == -9, proc.stderr
    child = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 60  # the orphan finishes and exits on its own; a generous wait, not a timing
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{child}/stat").read_text().split()[2]
        except FileNotFoundError:
            break
        if state == "Z":  # exited, not reaped (no init in this container)
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the pipeline process {child} still runs after its producer died")
    store = open_store(uri, create=False)
    assert store.count_events(Query([])) == 20
    store.close()
