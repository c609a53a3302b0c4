#!/usr/bin/env python3
"""Triage benchmark: `soc alerts list` and `soc alerts stats` on 1,000,000 stored alerts (SQLite).

    python benchmarks/bench_alerts.py [--alerts 1000000] [--db bench-data/alerts-1M.db] [--rebuild]

The store is built once (kept in bench-data/, git-ignored): the demo capture goes through `soc sensor pcap` into a
small store, and its real alerts are the templates of `--alerts` variants (new uuid, time over 30 days, source
address out of 5,000, status, assignee and timers as an analyst queue has them, risk jittered), written through
the store's own `write_alerts` in batches, with two active suppressions. Then each query runs through the library
functions the CLI calls (`triage.queue`, `triage.group`, `triage.stats`) for a top-secret reader and for a
restricted one (withheld counts), best of `--repeat`.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from correlator import triage  # noqa: E402
from correlator.events import to_utc_iso  # noqa: E402
from correlator.gate import Gate, Reader  # noqa: E402
from correlator.store import open_store  # noqa: E402
from soc_cli.common import active_policy  # noqa: E402

DEMO_PCAP = ROOT / "rules" / "samples" / "demo-ministry.pcap"
ANALYSTS = [f"analyst{i}" for i in range(8)]
START = datetime(2026, 10, 1, tzinfo=UTC)


def templates() -> list[dict]:
    """The demo capture's alerts, as `soc sensor pcap` stores them."""
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/demo.db"
        subprocess.run([sys.executable, "-m", "soc_cli.main", "--store", uri, "sensor", "pcap", str(DEMO_PCAP),
                        "--home-net", "10.0.0.0/8"], check=True, capture_output=True, cwd=ROOT,
                       env={"PATH": "/usr/bin:/bin", "HOME": tmp})
        store = open_store(uri)
        rows = [json.loads(r[0]) for r in store.db.execute("SELECT doc FROM alerts")]
        store.close()
    return rows


def variant(t: dict, rnd: random.Random) -> dict:
    """One alert like `t`: another id, time, source address, status, assignee and timers."""
    a = dict(t)
    created = START + timedelta(seconds=rnd.randrange(30 * 86400))
    a["soc.alert.uuid"] = uuid.UUID(int=rnd.getrandbits(128)).hex
    a["@timestamp"] = a["soc.alert.created"] = to_utc_iso(created)
    src = f"10.{rnd.randrange(20)}.{rnd.randrange(250)}.{rnd.randrange(1, 13)}"
    a["source.ip"] = src
    a["related.ip"] = [src, a.get("destination.ip") or "10.1.0.1"]
    a["soc.alert.risk_score"] = max(1, min(100, int(a.get("soc.alert.risk_score") or 47) + rnd.randint(-20, 20)))
    a["soc.alert.suppression.docs_count"] = rnd.randint(1, 50)
    status = rnd.choices(triage.STATUSES, weights=(60, 10, 5, 25))[0]
    a["soc.alert.workflow_status"] = status
    if status != "open":
        tta = rnd.randint(30, 7200)
        a["soc.alert.assignees"] = [rnd.choice(ANALYSTS)]
        a["soc.alert.acknowledged_at"] = to_utc_iso(created + timedelta(seconds=tta))
        a["soc.alert.time_to_ack"] = float(tta)
        if status == "closed":
            ttc = tta + rnd.randint(60, 86400)
            a["soc.alert.closed_at"] = to_utc_iso(created + timedelta(seconds=ttc))
            a["soc.alert.time_to_close"] = float(ttc)
            a["soc.alert.workflow_reason"] = rnd.choice(triage.CLOSE_REASONS)
    return a


def build(db: Path, n: int, batch: int = 10_000) -> float:
    """Write `n` alerts into a fresh store at `db` through Store.write_alerts; returns the seconds it took."""
    db.parent.mkdir(parents=True, exist_ok=True)
    for p in db.parent.glob(db.name + "*"):
        p.unlink()
    rnd = random.Random(11)
    base = templates()
    store = open_store(f"sqlite:///{db}")
    store.init()
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        store.write_alerts([variant(rnd.choice(base), rnd) for _ in range(min(batch, n - i))])
    took = time.perf_counter() - t0
    gate = Gate(store, Reader("bench", active_policy().top, "bench"), active_policy())
    rules = sorted({(a["soc.alert.rule.uuid"], a["soc.alert.rule.name"]) for a in base})
    now = to_utc_iso(START + timedelta(days=29))
    for (rule, _), key in zip(rules[:2], ("source.ip:10.3.0.0/16", "source.ip:10.7.7.7"), strict=True):
        triage.suppress(gate, rule, key, "52w", "benchmark: known scanner", "bench", now=now)
    store.db.execute("ANALYZE")
    store.close()
    return took


def timed(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alerts", type=int, default=1_000_000)
    ap.add_argument("--db", type=Path, default=ROOT / "bench-data" / "alerts-1M.db")
    ap.add_argument("--rebuild", action="store_true", help="build the store even when it exists")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if args.rebuild or not args.db.exists():
        took = build(args.db, args.alerts)
        print(f"built {args.alerts:,} alerts in {took:.1f} s ({args.alerts / took:,.0f} alerts/s) "
              f"-> {args.db} ({args.db.stat().st_size / 1e9:.2f} GB)")
    store = open_store(f"sqlite:///{args.db}")
    store.init()  # applies pending migrations (indexes) to a store built by an older soc
    policy = active_policy()
    total = store.count_alerts(triage.alert_query(""))
    print(f"{total:,} alerts in {args.db}; SQLite {store.status()['sqlite_version']}")
    cases = [
        ("alerts list (not closed, by risk, first page)", lambda g: triage.queue(g, triage.Filters())),
        ("alerts list --status open --severity high",
         lambda g: triage.queue(g, triage.Filters(statuses=("open",), min_severity="high"))),
        ("alerts list --group-by source.ip", lambda g: triage.grouped(g, triage.Filters(), "source.ip")),
        ("alerts stats --by rule", lambda g: triage.stats(g, "rule", triage.Filters(statuses=triage.STATUSES))),
    ]
    for level in (policy.top, policy.level("restricted")):
        gate = Gate(store, Reader("bench", level, "bench"), policy)
        for name, fn in cases:
            secs, out = timed(lambda fn=fn, gate=gate: fn(gate), args.repeat)
            shown = len(out.items) if isinstance(out, triage.Queue) else len(out[0])
            print(f"{name:<48} clearance {level.name:<11} {secs * 1000:>9.1f} ms  ({shown} rows)")
    store.close()


if __name__ == "__main__":
    main()
