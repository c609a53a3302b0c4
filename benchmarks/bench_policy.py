#!/usr/bin/env python3
"""Policy benchmark: the sensor -> store pipeline on the benchmark pcap, without and with classification enrichment
and policy detection, under a generated 1,000-zone / 10,000-asset policy. Prints both runs and the overhead ratio.

    python benchmarks/bench_policy.py [--pcap bench-data/bench.pcap] [--rounds 29] [--repeat 2]

The pcap is built with ../shared/tools/build_bench_pcap.py into bench-data/ (git-ignored) when missing. Each run
writes into a fresh SQLite store; runs alternate (base, policy, base, policy, ...) and the best of each is kept.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from correlator.pipeline import Pipeline  # noqa: E402
from correlator.policy import PolicyDetector, PolicyEngine, parse_policy  # noqa: E402
from correlator.store import Spool, open_store  # noqa: E402
from sensors.capture import read_file  # noqa: E402
from sensors.engine import Sensor  # noqa: E402

TOOL = ROOT.parent / "shared" / "tools" / "build_bench_pcap.py"
LEVELS = ["public", "restricted", "secret", "top-secret"]


def generated_policy(zones: int = 1000, assets: int = 10000, seed: int = 7) -> str:
    """A policy YAML with `zones` zones (nested /16 + /24 blocks over the private ranges the corpus uses, some
    public blocks), 50 organizations, agreements, protection profiles and `assets` services (ip, ip:port, domain)."""
    rnd = random.Random(seed)
    orgs = [f"org{i}" for i in range(50)]
    lines = ["name: bench", "organizations:"] + [f"  - {{id: {o}, name: Org {o}}}" for o in orgs]
    lines += ["zones:", "  - {id: internet, default: true, max_level: public}"]
    blocks: list[ipaddress.IPv4Network] = []
    parents = [ipaddress.ip_network(f"10.{i}.0.0/16") for i in range(0, 256, 4)] + \
        [ipaddress.ip_network(f"172.{i}.0.0/16") for i in range(16, 32)] + [ipaddress.ip_network("192.168.0.0/16")]
    blocks += parents
    subnets = [s for p in parents for s in p.subnets(new_prefix=24)]
    rnd.shuffle(subnets)
    blocks += subnets[: zones - 1 - len(parents) - 40]
    blocks += [ipaddress.ip_network(f"{rnd.randint(11, 223)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.0/24")
               for _ in range(40)]
    blocks = list(dict.fromkeys(blocks))[: zones - 1]
    for i, net in enumerate(blocks):
        lines.append(f"  - {{id: z{i}, organization: {rnd.choice(orgs)}, max_level: {rnd.choice(LEVELS[1:])}, "
                     f"cidrs: ['{net}']}}")
    lines.append("assets:")
    for i in range(assets):
        net = rnd.choice(blocks)
        ip = net[rnd.randint(1, net.num_addresses - 2)]
        kind = i % 3
        match = f"'{ip}:{rnd.choice([443, 80, 22, 8443, 5432])}'" if kind == 0 else (
            f"'{ip}'" if kind == 1 else f"svc{i}.gov.example")
        lines.append(f"  - {{id: a{i}, level: {rnd.choice(LEVELS)}, match: [{match}]}}")
    lines.append("agreements:")
    for _ in range(200):
        a, b = rnd.sample(orgs, 2)
        lines.append(f"  - {{between: [{a}, {b}], up_to: {rnd.choice(LEVELS[1:])}}}")
    lines += ["protection:", "  - {name: c, from_level: restricted, allowed: [tls>=1.2, ssh], "
              "forbidden: [http, ftp, telnet, smb1]}",
              "  - {name: s, from_level: secret, allowed: [tls>=1.3, ssh], forbidden: [http, ftp, telnet, smb1]}"]
    return "\n".join(lines) + "\n"


def run(pcap: Path, engine: PolicyEngine | None, workdir: Path) -> tuple[float, dict, Counter]:
    store = open_store(f"sqlite:///{workdir / 'soc.db'}")
    store.init()
    enrichers, detectors = ([engine.enrich], [PolicyDetector(engine)]) if engine else ([], [])
    pipeline = Pipeline(store, enrichers=enrichers, detectors=detectors, spool=Spool(workdir / "spool"))
    sensor = Sensor(sensor_name="bench", source=str(pcap))
    t = time.perf_counter()
    stats = pipeline.run(sensor.run(read_file(str(pcap))))
    elapsed = time.perf_counter() - t
    labels = Counter()
    if engine:
        for (rank, n) in store.db.execute("SELECT json_extract(doc, '$.\"gov.label.rank\"'), count(*) FROM events "
                                          "GROUP BY 1"):
            labels[rank] = n
    store.close()
    return elapsed, {"events": stats.events_in, "written": stats.written, "alerts": stats.alerts,
                     "packets": sensor.stats()["packets_read"]}, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pcap", type=Path, default=ROOT / "bench-data" / "bench.pcap")
    ap.add_argument("--rounds", type=int, default=29, help="rounds when building a missing pcap")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    if not args.pcap.exists():
        args.pcap.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(TOOL), str(args.rounds), str(args.pcap)], check=True)
    t = time.perf_counter()
    policy = parse_policy(generated_policy(), "<generated>")
    load = time.perf_counter() - t
    t = time.perf_counter()
    PolicyEngine(policy)
    build = time.perf_counter() - t
    print(f"policy: {len(policy.zones)} zones, {len(policy.assets)} assets; parse+validate {load:.2f} s, "
          f"index build {build * 1000:.0f} ms")
    print(f"pcap: {args.pcap} ({args.pcap.stat().st_size / 1e6:.0f} MB)")
    best = {"base": float("inf"), "policy": float("inf")}
    for r in range(args.repeat):
        for name in ("base", "policy"):
            with tempfile.TemporaryDirectory(dir=ROOT / "bench-data") as tmp:
                engine = PolicyEngine(policy) if name == "policy" else None  # fresh caches every run
                elapsed, stats, labels = run(args.pcap, engine, Path(tmp))
            best[name] = min(best[name], elapsed)
            extra = f", labels by rank {dict(sorted(labels.items()))}" if labels else ""
            print(f"run {r + 1} {name:6s}: {elapsed:7.2f} s  {stats['packets'] / elapsed:9,.0f} packets/s  "
                  f"{stats['events'] / elapsed:8,.0f} events/s  events {stats['events']:,}  alerts {stats['alerts']:,}"
                  f"{extra}", flush=True)
    ratio = best["policy"] / best["base"]
    print(f"best: without policy {best['base']:.2f} s, with enrichment+detection {best['policy']:.2f} s; "
          f"ratio {ratio:.3f} (overhead {100 * (ratio - 1):+.1f} %, goal <= +15 %)")


if __name__ == "__main__":
    main()
