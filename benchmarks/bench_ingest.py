"""Benchmark: soc's SQLite ingest vs raw sqlite3.executemany of the same rows (the limit), and memory vs input size.

    python benchmarks/bench_ingest.py [N]        # default 1,000,000 events

Both sides write the same rows into the same schema (events with hot-column indexes + the FTS index). soc's side
starts from ECS dicts and does everything ingest does (normalize, deterministic ids, JSON, hot columns, batching,
idempotent insert); the raw side gets pre-built tuples and only calls executemany. Peak RSS is measured in fresh
processes at N/4 and N events to show memory stays flat. The write path's per-event Python stages are timed (CPU)
on the same events: the document encoder soc uses (orjson, `_encode_event`) against the stdlib `json` one it replaced
(`dumps_event`), the free text and the hot columns.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from correlator.pipeline import Pipeline
from correlator.query import searchable_text
from correlator.store import Spool, open_store
from correlator.store.sqlite import _category, _column, _encode_event, _rank, ip_bytes


def synthetic(n: int, seed: int = 1):
    """Yield n varied flow/DNS/HTTP ECS events (flat dicts, no ids)."""
    rnd = random.Random(seed)
    for i in range(n):
        kind = i % 3
        ev = {
            "@timestamp": f"2024-05-01T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000000:06d}Z",
            "event.kind": "event",
            "event.category": ["network"],
            "event.type": ["connection"],
            "event.dataset": ("soc.flow", "soc.dns", "soc.http")[kind],
            "event.sequence": i,
            "observer.name": "bench",
            "source.ip": f"10.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}",
            "source.port": rnd.randint(1024, 65535),
            "destination.ip": f"192.0.2.{rnd.randint(1, 254)}",
            "destination.port": (443, 53, 80)[kind],
            "network.transport": "udp" if kind == 1 else "tcp",
            "network.bytes": rnd.randint(60, 90000),
            "network.packets": rnd.randint(1, 80),
        }
        if kind == 1:
            ev["dns.question.name"] = f"host{rnd.randint(0, 9999)}.ministry.gov.example"
        elif kind == 2:
            ev["url.original"] = f"/portal/page{rnd.randint(0, 999)}?id={i}"
            ev["http.request.method"] = "GET"
        yield ev


def soc_ingest(db: Path, n: int) -> float:
    store = open_store(f"sqlite:///{db}")
    store.init()
    t = time.perf_counter()
    stats = Pipeline(store, spool=Spool(db.parent / "spool")).run(synthetic(n))
    elapsed = time.perf_counter() - t
    assert stats.written == n, stats
    store.close()
    return elapsed


def raw_executemany(db: Path, n: int) -> float:
    from correlator.events import normalize

    store = open_store(f"sqlite:///{db}")
    store.init()
    rows, texts = [], []
    for ev in synthetic(n):
        ev = normalize(ev)
        rows.append((ev["event.id"], ev["@timestamp"], ev["event.kind"], _category(ev["event.category"]),
                     ev["event.dataset"], ip_bytes(ev["source.ip"]), ev["source.port"], ip_bytes(ev["destination.ip"]),
                     ev["destination.port"], None, ev["observer.name"], json.dumps(ev, separators=(",", ":"))))
        texts.append(searchable_text(ev))
    db_conn = store.db
    t = time.perf_counter()
    for i in range(0, n, 2000):
        db_conn.execute("BEGIN")
        db_conn.executemany("INSERT INTO events (id, ts, kind, category, dataset, src_ip, src_port, dst_ip, dst_port,"
                            " host, observer, doc) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows[i:i + 2000])
        db_conn.executemany("INSERT INTO events_fts (rowid, text) VALUES (?, ?)",
                            [(i + j + 1, x) for j, x in enumerate(texts[i:i + 2000])])
        db_conn.execute("COMMIT")
    elapsed = time.perf_counter() - t
    store.close()
    return elapsed


def stages(n: int) -> dict[str, float]:
    """CPU µs per event of each Python stage of `SQLiteStore.write_events`, on n normalized synthetic events."""
    from correlator.events import dumps_event, normalize

    evs = [normalize(ev) for ev in synthetic(n)]
    runs = {
        "json (dumps_event)": lambda: [dumps_event(e) for e in evs],
        "orjson (_encode_event)": lambda: [_encode_event(e) for e in evs],
        "free text": lambda: [searchable_text(e) for e in evs],
        "hot columns": lambda: [(_column(e.get("event.kind")), _category(e.get("event.category")),
                                 ip_bytes(e.get("source.ip")), ip_bytes(e.get("destination.ip")),
                                 _column(e.get("source.port")), _rank(e.get("gov.label.rank"))) for e in evs],
    }
    out = {}
    for name, run in runs.items():
        t = time.process_time()
        run()
        out[name] = (time.process_time() - t) / n * 1e6
    return out


def peak_rss_mb(n: int) -> float:
    """Peak RSS (VmHWM: ru_maxrss would carry the parent's peak across fork+exec) of a fresh soc ingest of n events."""
    code = (f"import sys, tempfile, pathlib; sys.path.insert(0, {str(Path(__file__).parent)!r});"
            "import bench_ingest as b\n"
            "with tempfile.TemporaryDirectory(prefix='soc-bench-') as d:\n"
            f"    b.soc_ingest(pathlib.Path(d) / 's.db', {n})\n"
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    small, large = peak_rss_mb(n // 4), peak_rss_mb(n)
    with tempfile.TemporaryDirectory() as tmp:
        soc_s = soc_ingest(Path(tmp) / "soc.db", n)
        raw_s = raw_executemany(Path(tmp) / "raw.db", n)
    print(f"events: {n:,}")
    print(f"soc ingest:            {n / soc_s:12,.0f} events/s ({soc_s:.1f} s)")
    print(f"raw executemany:       {n / raw_s:12,.0f} events/s ({raw_s:.1f} s)")
    print(f"ratio soc/raw:         {raw_s / soc_s:12.2f}   (goal >= 0.5)")
    per = stages(min(n, 200_000))
    for name, us in per.items():
        print(f"write stage {name + ':':24s} {us:6.2f} µs/event CPU")
    print(f"ratio json/orjson:     {per['json (dumps_event)'] / per['orjson (_encode_event)']:12.2f}")
    print(f"peak RSS at {n // 4:,}: {small:.0f} MB; at {n:,}: {large:.0f} MB (growth x{large / small:.2f})")


if __name__ == "__main__":
    main()
