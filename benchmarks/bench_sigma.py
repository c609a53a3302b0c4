"""Benchmark: soc's streaming Sigma engine vs the "Zircolite method" (pySigma SQLite backend, in-memory SQLite).

Measured in one run, one process, one core, as CPU time of the process (time.process_time: the machine's cores are
shared, wall time would measure the neighbours):
1. Load time of SigmaHQ's whole rule tree: cold (parse + compile) and from the compiled cache (fresh processes).
2. Windows: every SigmaHQ Windows rule over the regression events (Sigma/Sysmon names) replicated to --events;
   peer: the same rules converted by pySigma's SQLite backend (sysmon + windows-logsources pipelines), the
   events inserted into an in-memory table (untyped COLLATE NOCASE columns, Python re as REGEXP) and every
   rule's query run — as Zircolite does. Both count matches on the peer's events, and the counts must agree.
3. Network: soc's shipped rules (with correlations) plus SigmaHQ's network/web rules on soc sensor events decoded
   from the corpus captures, replicated (timestamps shifted) to --events; SigmaDetector (alerts folded,
   correlation windows), with its correlation state reported; peer: the SQLite method for the base rules.

Usage: python benchmarks/bench_sigma.py [--events 100000] [--sqlite-events 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sigma.backends.sqlite import sqliteBackend  # noqa: E402
from sigma.collection import SigmaCollection  # noqa: E402
from sigma.pipelines.sysmon import sysmon_pipeline  # noqa: E402
from sigma.pipelines.windows import windows_logsource_pipeline  # noqa: E402

from correlator.events import flatten, normalize, parse_ts, to_utc_iso  # noqa: E402
from correlator.sigma import SHIPPED_RULES  # noqa: E402
from correlator.sigma.detector import SigmaDetector, SigmaEngine  # noqa: E402
from correlator.sigma.engine import Matcher, compile_rules  # noqa: E402
from correlator.sigma.loader import load_placeholders, load_rules, rule_path  # noqa: E402
from correlator.sigma.pipelines import build_pipeline  # noqa: E402

# CPU time of this process: the 2 cores are shared with other work, so wall time measures the neighbours too.
CLOCK = time.process_time
CORPUS = Path(os.environ.get("SOC_CORPUS") or ROOT.parent / "shared" / "data")
TREE = CORPUS / "sigma" / "rules-tree"
REGRESSION = CORPUS / "sigma" / "regression"


def replicate(events: list[dict], n: int) -> list[dict]:
    return (events * (n // len(events) + 1))[:n]


def load_in_subprocess(cache_dir: str) -> tuple[float, int, int, bool]:
    code = (
        f"import time, sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "t = time.process_time()\n"
        "from correlator.sigma.detector import SigmaEngine\n"
        f"e = SigmaEngine.load([{str(TREE)!r}], 'ecs', cache={cache_dir!r})\n"
        "print(time.process_time() - t, len(e.infos), len(e.failures), e.from_cache)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1]), int(out[2]), out[3] == "True"


def sqlite_method(queries: list[str], events: list[dict]) -> tuple[float, int]:
    """Zircolite's method: insert the events into an in-memory table, run every rule query. Returns (s, matches)."""
    t = CLOCK()
    fields = sorted({k for e in events for k in e})
    db = sqlite3.connect(":memory:")
    db.create_function("REGEXP", 2, lambda p, v: v is not None and re.search(p, str(v)) is not None,
                       deterministic=True)
    cols = ", ".join(f'"{f}" COLLATE NOCASE' for f in fields)
    db.execute(f"CREATE TABLE logs ({cols})")
    marks = ", ".join("?" for _ in fields)
    db.executemany(f"INSERT INTO logs VALUES ({marks})",
                   [[json.dumps(e[f]) if isinstance(e.get(f), (list, dict)) else e.get(f) for f in fields]
                    for e in events])
    matches = 0
    for q in queries:
        sql = q.replace("SELECT *", "SELECT count(*)", 1)
        while True:
            try:
                matches += db.execute(sql).fetchone()[0]
                break
            except sqlite3.OperationalError as exc:  # a field no event has: add it (all NULL), as Sigma reads it
                m = re.match(r"no such column: (.+)", str(exc))
                if not m:
                    raise
                db.execute(f'ALTER TABLE logs ADD COLUMN "{m.group(1).strip(chr(34))}" COLLATE NOCASE')
    return CLOCK() - t, matches


def stream(matcher: Matcher, events: list[dict]) -> tuple[float, int]:
    match = matcher.match
    t = CLOCK()
    n = 0
    for e in events:
        n += len(match(e))
    return CLOCK() - t, n


def windows(n_events: int, n_sql: int) -> dict:
    rs = load_rules([TREE])
    rs.rules = [r for r in rs.rules if (r.logsource.product or "").lower() == "windows"]
    rs.correlations = []
    n_rules = len(rs.rules)
    compiled, failures = compile_rules(rs, "native", copy_rules=True)
    matcher = Matcher(compiled)
    base = [json.loads(line) for p in sorted(REGRESSION.rglob("*.flat.ndjson"))
            for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    events = replicate(base, n_events)
    secs, matches = stream(matcher, events)
    # peer
    backend = sqliteBackend(sysmon_pipeline() + windows_logsource_pipeline(), collect_errors=True)
    queries = backend.convert(SigmaCollection(rs.rules, resolve_references=False))
    sql_events = replicate(base, n_sql)
    sql_secs, sql_matches = sqlite_method(queries, sql_events)
    _, stream_on_sql = stream(matcher, sql_events)
    cli_cpu, cli_small_cpu, cli_matches = cli_rules_test(sorted({rule_path(r) for r in rs.rules}), events)
    return {"cli_eps": n_events / cli_cpu, "cli_cpu": cli_cpu, "cli_matches": cli_matches,
            "cli_marginal_eps": (n_events - len(base)) / max(cli_cpu - cli_small_cpu, 1e-9),
            "rules": n_rules, "compiled": len(compiled.infos), "unsupported": len(failures),
            "events": n_events, "soc_eps": n_events / secs, "soc_matches": matches,
            "sqlite_events": n_sql, "sqlite_queries": len(queries), "sqlite_eps": n_sql / sql_secs,
            "sqlite_matches": sql_matches, "soc_matches_on_sqlite_events": stream_on_sql}


def cli_rules_test(rule_files: list[str], events: list[dict]) -> tuple[float, float, int]:
    """`soc rules test <the same rule files> --events FILE` as a user runs it (a fresh process, the compiled-rule
    cache warm from a first run): CPU seconds (wait4: the whole process, start-up included) over ``events`` and
    over their first 76, and the total of matches it printed."""
    soc = str(Path(sys.executable).with_name("soc"))
    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {"XDG_CACHE_HOME": tmp}
        files = []
        for name, evs in (("all", events), ("small", events[:76])):
            f = Path(tmp) / f"{name}.ndjson"
            f.write_text("".join(json.dumps(e) + "\n" for e in evs), encoding="utf-8")
            files.append(f)
        cmd = [soc, "rules", "test", *rule_files, "--json", "--events"]
        subprocess.run([*cmd, str(files[1])], env=env, capture_output=True)  # fills the compiled cache
        out = []
        for f in files:
            proc = subprocess.Popen([*cmd, str(f)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            stdout = proc.stdout.read()
            _, _, usage = os.wait4(proc.pid, 0)
            matches = sum(json.loads(line)["matches"] for line in stdout.splitlines() if line.strip())
            out.append((usage.ru_utime + usage.ru_stime, matches))
    return out[0][0], out[1][0], out[0][1]


def sensor_events() -> list[dict]:
    from sensors.capture import read_file
    from sensors.engine import Sensor

    out = []
    for p in sorted((CORPUS / "pcaps").glob("*.pcap*")):
        try:
            out.extend(normalize(e) for e in Sensor("bench", source=p.name).run(read_file(str(p))))
        except Exception as exc:  # noqa: BLE001 - a capture the sensor rejects is skipped, and said
            print(f"  skipped {p.name}: {exc}", file=sys.stderr)
    return out


def detector_stages(engine: SigmaEngine, events: list[dict]) -> dict[str, float]:
    """CPU seconds per stage of SigmaDetector.detect over ``events`` (batches of 2,000), without cProfile's charge
    on every call: only the detector's collaborators are wrapped in thread-CPU-time counters (the matcher, event
    time, group key, alert folding, correlation windows), so the detector's own loop is the one measured; ``loop``
    is the rest (routing, the batch's alert copies, expiry). Each counted call costs two clock reads (~0.5 µs),
    most of it charged to its stage: read the split, not the sum. (py-spy's sampling gives the same split.)"""
    import correlator.sigma.detector as detector_module

    det = SigmaDetector(engine)
    spent: dict[str, int] = {}
    ns = time.thread_time_ns  # CPU time: the shared cores' other work is not counted

    def timed(name: str, fn: Any) -> Any:
        spent[name] = 0

        def wrapper(*args: Any) -> Any:
            t = ns()
            try:
                return fn(*args)
            finally:
                spent[name] += ns() - t
        return wrapper

    saved = {n: getattr(detector_module, n) for n in ("event_time", "group_of", "group_key")}
    det.matcher.match = timed("match", engine.matcher.match)
    det.folder.add = timed("fold alerts", det.folder.add)
    det.correlation.feed_targets = timed("correlation windows", det.correlation.feed_targets)
    detector_module.event_time = timed("event time", saved["event_time"])
    detector_module.group_of = timed("group key", saved["group_of"])
    detector_module.group_key = timed("group key+", saved["group_key"])
    try:
        t = ns()
        for i in range(0, len(events), 2000):
            det.detect(events[i:i + 2000])
        total = ns() - t
    finally:
        del engine.matcher.match
        for n, fn in saved.items():
            setattr(detector_module, n, fn)
    spent["group key"] += spent.pop("group key+")
    out = {k: v / 1e9 for k, v in spent.items()}
    out["loop"] = total / 1e9 - sum(out.values())
    return out


def network(n_events: int, n_sql: int) -> dict:
    paths = [SHIPPED_RULES, TREE / "rules" / "network", TREE / "rules" / "web"]
    engine = SigmaEngine.load(paths, "ecs", load_placeholders([SHIPPED_RULES]))
    base = sensor_events()
    events = []
    span = timedelta(hours=1)
    for i in range(n_events // len(base) + 1):  # replicas an hour apart: fresh correlation windows
        for e in base:
            events.append(e | {"@timestamp": to_utc_iso(parse_ts(e["@timestamp"]) + i * span)})
    events = events[:n_events]
    secs = match_secs = float("inf")
    for _ in range(3):  # interleaved, best of 3 each: the shared cores' speed drifts between runs
        det = SigmaDetector(engine)
        t = CLOCK()
        alerts = 0
        for i in range(0, len(events), 2000):
            alerts += len(det.detect(events[i:i + 2000]))
        secs = min(secs, CLOCK() - t)
        stats = det.stats()
        # the matcher alone: no alert folding, no correlation windows
        match_secs = min(match_secs, stream(engine.matcher, events)[0])
    stages = detector_stages(engine, events)
    rs = load_rules(paths)
    backend = sqliteBackend(build_pipeline("ecs", load_placeholders([SHIPPED_RULES])), collect_errors=True)
    rules = [r for r in rs.rules if getattr(r, "_output", True)]
    queries = backend.convert(SigmaCollection(rules, resolve_references=False))
    sql_secs, sql_matches = sqlite_method(queries, [flatten(e) for e in replicate(base, n_sql)])
    return {"rules": len(engine.infos) + len(engine.correlations), "correlations": len(engine.correlations),
            "unsupported": len(engine.failures), "distinct_events": len(base), "events": n_events,
            "soc_eps": n_events / secs, "match_eps": n_events / match_secs, "alerts_upserted": alerts, "state": stats,
            "stages": stages,
            "sqlite_events": n_sql, "sqlite_queries": len(queries), "sqlite_eps": n_sql / sql_secs,
            "sqlite_matches": sql_matches}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--sqlite-events", type=int, default=10_000)
    args = ap.parse_args()
    if not TREE.is_dir():
        sys.exit(f"corpus missing: {TREE} (set SOC_CORPUS)")
    print(f"python {sys.version.split()[0]}, one process; corpus {CORPUS}")
    with tempfile.TemporaryDirectory() as cache:
        cold, n, bad, hit = load_in_subprocess(cache)
        warm, n2, bad2, hit2 = load_in_subprocess(cache)
    assert not hit and hit2 and n == n2
    print(f"\nload {n + bad} SigmaHQ rules ({n} compiled, {bad} unsupported): cold {cold:.2f} s, "
          f"from compiled cache {warm:.2f} s")
    w = windows(args.events, args.sqlite_events)
    print(f"\nWindows: {w['rules']} rules ({w['compiled']} compiled), {w['events']} events")
    print(f"  soc streaming   {w['soc_eps']:>10,.0f} events/s   ({w['soc_matches']} matches)")
    print(f"  SQLite method   {w['sqlite_eps']:>10,.0f} events/s   ({w['sqlite_queries']} queries over "
          f"{w['sqlite_events']} events: {w['sqlite_matches']} matches; soc on the same events: "
          f"{w['soc_matches_on_sqlite_events']})")
    print(f"  ratio           {w['soc_eps'] / w['sqlite_eps']:>10.1f} x")
    print(f"  soc rules test  {w['cli_eps']:>10,.0f} events/s   (the CLI in a fresh process, compiled cache warm, "
          f"start-up included: {w['cli_cpu']:.2f} s CPU, {w['cli_matches']} matches; per event after start-up "
          f"{w['cli_marginal_eps']:,.0f}/s)")
    print(f"  CLI ratio       {w['cli_eps'] / w['sqlite_eps']:>10.1f} x   "
          f"(after start-up {w['cli_marginal_eps'] / w['sqlite_eps']:.1f} x)")
    net = network(args.events, args.sqlite_events)
    print(f"\nNetwork: {net['rules']} rules ({net['correlations']} correlations) on {net['events']} sensor events "
          f"({net['distinct_events']} distinct, replicated an hour apart)")
    print(f"  soc detector    {net['soc_eps']:>10,.0f} events/s   ({net['alerts_upserted']} alert upserts; "
          f"correlation state {net['state']['correlation']})")
    print(f"  soc matcher     {net['match_eps']:>10,.0f} events/s   (rule matching alone, same events)")
    print(f"  detector/matcher {net['match_eps'] / net['soc_eps']:>9.2f} x   (CPU, best of 3 interleaved each; goal "
          "<= 1.5 x)")
    print("  detector stages (counted run): " + ", ".join(f"{k} {v:.3f} s" for k, v in net["stages"].items()))
    print(f"  SQLite method   {net['sqlite_eps']:>10,.0f} events/s   ({net['sqlite_queries']} base-rule queries, "
          f"no correlations)")
    print(f"  ratio           {net['soc_eps'] / net['sqlite_eps']:>10.1f} x")
    print("\n" + json.dumps({"load_cold_s": cold, "load_cached_s": warm, "windows": w, "network": net},
                            default=str))


if __name__ == "__main__":
    main()
