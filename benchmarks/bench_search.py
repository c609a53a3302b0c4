"""Benchmark: searching the embedded store at backbone scale, soc vs DuckDB over the same events (issue 16).

    python benchmarks/bench_search.py [--events N] [--dir DIR]    # default 1,000,000 events

Generates N synthetic ECS flow events (NDJSON, a week of timestamps), ingests them with `soc events ingest`
(detection on, as a sensor would), then runs the issue's six count queries, a first-page search and a 24-hour
time-range count through the CLI (wall time including start-up, as an analyst waits) and the same questions with
DuckDB in process over a table loaded from the same NDJSON, in the same run. Counts must agree (DuckDB is the
independent truth). Prints times, ratios and sizes (NDJSON, soc's database, DuckDB's table, a zstd Parquet file).
With --dir, the files are kept there and a store already ingested there is reused (re-run only the queries).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

SOC = str(Path(sys.executable).with_name("soc"))
START = datetime(2024, 5, 1, tzinfo=UTC)
SPAN_S = 7 * 86400
DAY = (START + timedelta(days=3), START + timedelta(days=4))
NETS = (10, 20, 30, 40)
PORTS = (22, 53, 80, 443)
DUCK_TEXT_COLUMNS = ("event.kind", "event.dataset", "event.action", "network.transport", "observer.name",
                     "source.ip", "destination.ip")


def generate(path: Path, n: int, seed: int = 16) -> None:
    """Write n flow events as NDJSON (dotted keys), a week of timestamps."""
    rnd = random.Random(seed)
    step = SPAN_S / n
    with path.open("w") as out:
        for i in range(n):
            ts = START + timedelta(seconds=i * step)
            src = f"10.{NETS[i % 4]}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"
            ev = {
                "@timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "event.kind": "event",
                "event.category": ["network"], "event.type": ["connection"], "event.dataset": "bars.synthetic",
                "event.action": "flow-end", "event.sequence": i, "observer.name": "backbone-1",
                "source.ip": src, "source.port": rnd.randint(1024, 65535),
                "destination.ip": f"192.0.2.{rnd.randint(1, 254)}", "destination.port": PORTS[rnd.randrange(4)],
                "network.transport": "tcp", "network.bytes": rnd.randint(60, 90000),
                "network.packets": rnd.randint(1, 80),
            }
            out.write(json.dumps(ev, separators=(",", ":")) + "\n")


def queries(probe: str) -> list[tuple[str, list[str], str]]:
    """(label, soc CLI arguments, DuckDB WHERE) for each count question."""
    since, until = (d.strftime("%Y-%m-%dT%H:%M:%SZ") for d in DAY)
    token = " || ' ' || ".join(f'coalesce("{c}", \'\')' for c in DUCK_TEXT_COLUMNS)
    return [
        (f"source.ip:{probe}", [f"source.ip:{probe}"], f"\"source.ip\" = '{probe}'"),
        ("source.ip:10.20.0.0/16", ["source.ip:10.20.0.0/16"], "\"source.ip\" LIKE '10.20.%'"),
        ("destination.port:22", ["destination.port:22"], '"destination.port" = 22'),
        ("destination.port:[20 TO 25] source.ip:10.40.0.0/16", ["destination.port:[20 TO 25] source.ip:10.40.0.0/16"],
         "\"destination.port\" BETWEEN 20 AND 25 AND \"source.ip\" LIKE '10.40.%'"),
        ("free text flow", ["flow"], f"regexp_matches(lower({token}), '(^|[^a-z0-9])flow([^a-z0-9]|$)')"),
        ("event.dataset:bars.synthetic", ["event.dataset:bars.synthetic"], "\"event.dataset\" = 'bars.synthetic'"),
        ("24 h time range", ["--since", since, "--until", until],
         f"\"@timestamp\" >= TIMESTAMPTZ '{since}' AND \"@timestamp\" < TIMESTAMPTZ '{until}'"),
    ]


def soc(args: list[str], env: dict[str, str]) -> tuple[float, str, int]:
    """Run the CLI: wall seconds, stdout, and the events the gate withheld (above the reader's clearance)."""
    t = time.perf_counter()
    out = subprocess.run([SOC, *args], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"soc {' '.join(args)}: exit {out.returncode}: {out.stderr[-2000:]}")
    withheld = re.search(r"(\d+) events above your clearance", out.stderr)
    return elapsed, out.stdout, int(withheld[1]) if withheld else 0


def size(*paths: Path) -> int:
    return sum(p.stat().st_size for p in paths if p.exists())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path, help="keep files here; reuse an ingested store found there")
    ap.add_argument("--prune", action="store_true", help="last, prune the first day (soc store prune; destructive)")
    ap.add_argument("--bulk", action="store_true", help="fill the store in bulk (short documents, indexes built "
                    "after the rows: 10 M in minutes, not hours) and time soc only; counts read index entries alone")
    args = ap.parse_args()
    if args.bulk:
        bulk(args.events, args.dir or Path(tempfile.mkdtemp(prefix="soc-bench-search-")))
        return
    import duckdb

    work = args.dir or Path(tempfile.mkdtemp(prefix="soc-bench-search-"))
    work.mkdir(parents=True, exist_ok=True)
    ndjson, db = work / f"events-{args.events}.ndjson", work / f"soc-{args.events}.db"
    uri = f"sqlite:///{db}"
    env = os.environ | {"SOC_HOME": str(work / "home"), "SOC_SPOOL_DIR": str(work / "spool")}
    print(f"events: {args.events:,}   load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    if not ndjson.exists():
        generate(ndjson, args.events)
    probe = _probe(ndjson)
    if not db.exists():
        wall, out, _ = soc(["events", "ingest", str(ndjson), "--store", uri, "--json"], env)
        print(f"soc ingest (detection on): {wall:8.1f} s  {args.events / wall:10,.0f} events/s  {out.strip()}")
    start, _, _ = soc(["events", "search", "--help"], env)
    print(f"soc CLI start-up (events search --help): {start:.2f} s")

    duck = duckdb.connect(str(work / f"duck-{args.events}.duckdb"))
    t = time.perf_counter()
    duck.execute("CREATE OR REPLACE TABLE ev AS SELECT * FROM read_json(?, format='newline_delimited')", [str(ndjson)])
    print(f"DuckDB load of the NDJSON: {time.perf_counter() - t:.1f} s")
    parquet = work / f"events-{args.events}.parquet"
    duck.execute(f"COPY ev TO '{parquet}' (FORMAT parquet, COMPRESSION zstd)")
    duck.execute("CHECKPOINT")

    os.environ.update(env)  # the in-process reader is the CLI's (same policy, same account)
    from correlator.query import parse_query, parse_time
    from soc_cli.common import get_store, open_reader

    gate = open_reader(get_store(uri), None)
    print(f"\n{'question (soc: readable + withheld)':55} {'count':>10} {'soc CLI s':>9} {'in proc s':>9} "
          f"{'DuckDB s':>9} {'CLI/Duck':>9} {'proc/Duck':>9}")
    wrong = []
    for label, soc_args, where in queries(probe):
        wall, out, withheld = soc(["events", "search", *soc_args, "--count", "--json", "--store", uri], env)
        got = json.loads(out)["count"] + withheld
        since, until = (parse_time(soc_args[i + 1]) if opt in soc_args else None
                        for opt in ("--since", "--until") for i in [soc_args.index(opt) if opt in soc_args else 0])
        q = parse_query("" if since else soc_args[0], since, until)
        t = time.perf_counter()
        gate.count_events(q)
        proc = time.perf_counter() - t
        t = time.perf_counter()
        truth = duck.execute(f"SELECT count(*) FROM ev WHERE {where}").fetchone()[0]
        dt = time.perf_counter() - t
        wrong += [f"{label}: soc {got} != DuckDB {truth}"] if got != truth else []
        print(f"{label:55} {got:>10,} {wall:9.2f} {proc:9.3f} {dt:9.3f} {wall / dt:8.0f}x {proc / dt:8.1f}x")
    for label, text, like in (("first page: source.ip:10.30.0.0/16 (100 events)", "source.ip:10.30.0.0/16", "10.30.%"),
                              (f"first page: source.ip:{probe}", f"source.ip:{probe}", probe)):
        wall, out, _ = soc(["events", "search", text, "--json", "--store", uri], env)
        page = [json.loads(line)["@timestamp"] for line in out.splitlines()]
        t = time.perf_counter()
        gate.search_events(parse_query(text), 100)
        proc = time.perf_counter() - t
        t = time.perf_counter()
        truth_page = [r[0] for r in duck.execute(
            "SELECT strftime(\"@timestamp\" AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%fZ') FROM ev "
            "WHERE \"source.ip\" LIKE ? ORDER BY \"@timestamp\" DESC LIMIT 100", [like]).fetchall()]
        dt = time.perf_counter() - t
        wrong += [f"{label}: differs"] if page != truth_page else []
        print(f"{label:55} {len(page):>10} {wall:9.2f} {proc:9.3f} {dt:9.3f} {wall / dt:8.0f}x {proc / dt:8.1f}x")

    sizes = {"NDJSON": size(ndjson), "soc SQLite (+wal)": size(db, Path(f"{db}-wal")),
             "DuckDB table": size(work / f"duck-{args.events}.duckdb"), "zstd Parquet": size(parquet)}
    print()
    for name, b in sizes.items():
        print(f"{name:20} {b / 1e6:10.1f} MB  {b / sizes['NDJSON']:6.2f}x NDJSON")
    if args.prune:
        age = datetime.now(UTC) - (START + timedelta(days=1))
        wall, out, _ = soc(["store", "prune", "--older-than", f"{int(age.total_seconds())}s", "--json", "--store",
                            uri], env)
        print(f"soc store prune of the first day: {wall:.1f} s, {json.loads(out)['deleted_events']:,} events")
    print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)
    if wrong:
        raise SystemExit("WRONG ANSWERS: " + "; ".join(wrong))


def bulk(n: int, work: Path) -> None:
    """--bulk: a schema-current store of n generated rows (the columns, ranks, indexes and one FTS entry per event as
    ingest writes them, a short document each), then the questions through the CLI and the gate in process."""
    from correlator.query import parse_query, parse_time
    from correlator.store import open_store

    work.mkdir(parents=True, exist_ok=True)
    db, env = work / f"bulk-{n}.db", os.environ | {"SOC_HOME": str(work / "home")}
    uri = f"sqlite:///{db}"
    if not db.exists():
        t = time.perf_counter()
        store = open_store(uri)
        store.init()
        c = store.db
        indexes = c.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' "
                            "AND sql IS NOT NULL").fetchall()
        for name, _ in indexes:
            c.execute(f"DROP INDEX {name}")
        rnd, v4, step = random.Random(16), b"\0" * 10 + b"\xff\xff", SPAN_S / n

        def rows(lo: int, hi: int):
            for i in range(lo, hi):
                stamp = (START + timedelta(seconds=i * step)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                a, b, d = NETS[i % 4], rnd.randint(0, 255), rnd.randint(1, 254)
                rank = 2 if (a, b) == (20, 200) else 0  # the shipped policy's moi-enclave is secret
                doc = {"@timestamp": stamp, "event.id": f"{i:032x}", "source.ip": f"10.{a}.{b}.{d}",
                       "gov.label.rank": rank}
                yield (f"{i:032x}", stamp, "event", "network", "bars.synthetic", v4 + bytes((10, a, b, d)),
                       rnd.randint(1024, 65535), v4 + bytes((192, 0, 2, rnd.randint(1, 254))), PORTS[rnd.randrange(4)],
                       None, "backbone-1", json.dumps(doc), rank)

        for lo in range(0, n, 200_000):
            c.execute("BEGIN")
            c.executemany("INSERT INTO events (id, ts, kind, category, dataset, src_ip, src_port, dst_ip, dst_port, "
                          "host, observer, doc, rank) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                          rows(lo, min(n, lo + 200_000)))
            c.execute("COMMIT")
        c.execute("INSERT INTO events_fts (rowid, text) SELECT rowid, "
                  "'event network connection bars.synthetic flow-end backbone-1 tcp' FROM events")
        for _, sql in indexes:
            c.execute(sql)
        store.close()
        print(f"bulk fill of {n:,} events: {time.perf_counter() - t:.0f} s, {size(db) / 1e6:,.0f} MB")
    os.environ.update(env)
    from soc_cli.common import get_store, open_reader

    gate = open_reader(get_store(uri), None)
    first = b"\0" * 10 + b"\xff\xff" + bytes((10, 30, 0, 0))
    one = json.loads(gate.store.db.execute(  # type: ignore[attr-defined]
        "SELECT doc FROM events WHERE src_ip >= ? LIMIT 1", (first,)).fetchone()[0])
    print(f"events: {n:,} (bulk)   load average: {os.getloadavg()[0]:.2f}")
    print(f"{'question':55} {'readable':>11} {'withheld':>9} {'soc CLI s':>9} {'in proc s':>9}")
    for label, soc_args, _ in queries(one["source.ip"]):
        wall, out, _ = soc(["events", "search", *soc_args, "--count", "--json", "--store", uri], env)
        window = soc_args[0] == "--since"
        q = parse_query("" if window else soc_args[0], parse_time(soc_args[1]) if window else None,
                        parse_time(soc_args[3]) if window else None)
        t = time.perf_counter()
        read = gate.count_events(q)
        proc = time.perf_counter() - t
        print(f"{label:55} {read.count:>11,} {read.withheld or 0:>9,} {wall:9.2f} {proc:9.3f}")
    for text in ("source.ip:10.30.0.0/16", f"source.ip:{one['source.ip']}"):
        wall, out, _ = soc(["events", "search", text, "--json", "--store", uri], env)
        t = time.perf_counter()
        got = len(gate.search_events(parse_query(text), 100).items)
        proc = time.perf_counter() - t
        print(f"{'first page: ' + text:55} {got:>11,} {'':>9} {wall:9.2f} {proc:9.3f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)


def _probe(ndjson: Path) -> str:
    with ndjson.open() as fh:
        for line in fh:
            src = json.loads(line)["source.ip"]
            if src.startswith("10.30."):
                return src
    raise SystemExit(f"{ndjson}: no 10.30.x.x source")


if __name__ == "__main__":
    main()
