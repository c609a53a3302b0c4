"""Elasticsearch store ingest: soc's `ElasticStore.write_events` vs the official client's raw bulk path.

    python benchmarks/bench_elastic.py [--events 200000] [--batch 2000] [--url http://127.0.0.1:9200]

Both write the same synthetic ECS events into fresh namespaces of the same server, batch by batch with op_type
create and `_id = event.id`. The peer (`helpers.bulk` of documents prepared before the clock starts) is the limit:
what the client and server cost without soc. soc's figure includes its per-event work (nesting the flat event,
building the free-text field) and its per-item result handling. Without --url the script starts noida-db on a free
port (or osmem-server with --emulator osmem; Elasticsearch itself cannot be installed here), so absolute rates are
the emulator's; the ratio is the figure.
"""

from __future__ import annotations

import argparse
import importlib.resources
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from elasticsearch import Elasticsearch, helpers

from correlator.events import event_id, to_utc_iso
from correlator.store.elastic import ElasticStore


def synthetic(n: int, seed: int = 1) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        ev = {
            "@timestamp": to_utc_iso(1714550000 + i * 0.01),
            "event.kind": "event", "event.category": ["network"], "event.type": ["connection"],
            "event.dataset": rnd.choice(["soc.flow", "soc.dns", "soc.http"]), "event.module": "soc",
            "event.sequence": i, "observer.name": "bench",
            "source.ip": f"10.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}",
            "source.port": rnd.randint(1024, 65535),
            "destination.ip": rnd.choice(["192.0.2.10", "198.51.100.7", "2001:db8::53"]),
            "destination.port": rnd.choice([53, 80, 443, 3389]), "network.transport": "tcp",
            "network.bytes": rnd.randint(60, 100_000), "network.packets": rnd.randint(1, 200),
            "dns.question.name": rnd.choice(["www.mof.gov.example", "cdn.example.net", "x1.evil.example"]),
        }
        ev["event.id"] = event_id(ev)
        out.append(ev)
    return out


def start_noida(tmp: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    binary = str(importlib.resources.files("noida_db").joinpath("noida-db"))
    proc = subprocess.Popen([binary, "start", "--data-dir", str(tmp / "data"), "--only", "elasticsearch",
                             "--elasticsearch-port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("noida-db did not start")


def run_soc(url: str, events: list[dict], batch: int, tag: str, options: dict) -> float:
    store = ElasticStore(f"{url}/?namespace=bsoc{tag}", **options)
    store.init()
    started = time.perf_counter()
    for i in range(0, len(events), batch):
        assert store.write_events(events[i:i + batch]) == len(events[i:i + batch])
    took = time.perf_counter() - started
    store.close()
    return took


def run_raw(url: str, events: list[dict], batch: int, tag: str, options: dict) -> tuple[float, float]:
    """Seconds for the raw client bulk of prepared documents, and seconds soc's preparation of them took."""
    peer = ElasticStore(f"{url}/?namespace=braw{tag}", **options)
    peer.init()  # same templates and mappings
    started = time.perf_counter()
    docs = [{"_op_type": "create", "_index": peer.events_index, "_id": e["event.id"], "_source": peer._source(e)}
            for e in events]
    prep = time.perf_counter() - started
    es = Elasticsearch(url, **options)
    started = time.perf_counter()
    for i in range(0, len(docs), batch):
        ok, errors = helpers.bulk(es, docs[i:i + batch], chunk_size=1000, raise_on_error=False)
        assert ok == len(docs[i:i + batch]), errors[:3]
    took = time.perf_counter() - started
    peer.close()
    es.close()
    return took, prep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--url", help="an Elasticsearch cluster (default: start an emulator, see --emulator)")
    ap.add_argument("--emulator", choices=["noida", "osmem"], default="noida")
    args = ap.parse_args()
    events = synthetic(args.events)
    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        url, options = args.url, {}
        if not url and args.emulator == "osmem":
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            from es_server import OsmemServer  # bundled binary + the test-only plain-JSON transport

            osmem = OsmemServer()
            url, options = osmem.url, osmem.client_options
        elif not url:
            proc, url = start_noida(Path(tmp))
        try:
            info = Elasticsearch(url, **options).info()
            print(f"server {info['version'].get('distribution', 'elasticsearch')} {info['version']['number']} "
                  f"at {url}; {args.events} events, batches of {args.batch}")
            results = []
            for r in range(args.repeat):  # alternate the order: the server slows as it fills
                tag = f"{r}{time.time_ns() % 10**6}"
                job = (url, events, args.batch, tag, options)
                if r % 2:
                    (raw, prep), soc = run_raw(*job), run_soc(*job)
                else:
                    soc, (raw, prep) = run_soc(*job), run_raw(*job)
                results.append((soc, raw, prep))
                print(f"run {r + 1}: soc {soc:.2f} s ({args.events / soc:,.0f} ev/s)  "
                      f"raw helpers.bulk {raw:.2f} s ({args.events / raw:,.0f} ev/s)  ratio {raw / soc:.3f}  "
                      f"(soc's document preparation alone: {prep / args.events * 1e6:.1f} us/event)")
            soc, raw = min(r[0] for r in results), min(r[1] for r in results)
            prep = min(r[2] for r in results)
            print(f"best: soc {args.events / soc:,.0f} ev/s, raw {args.events / raw:,.0f} ev/s, "
                  f"soc/raw throughput ratio {raw / soc:.3f}; preparation {prep / args.events * 1e6:.1f} us/event")
        finally:
            if proc:
                proc.terminate()
                proc.wait()


if __name__ == "__main__":
    main()
