#!/usr/bin/env python3
"""End-to-end benchmark: `soc sensor pcap` into a fresh SQLite store (shipped policy and rules, alerts included), one
and two processes, vs `tshark -r PCAP -T ek` with the 18 fields of bench_sensor.py, in one run on the same pcap.
Prints wall and CPU seconds (children included), peak RSS, the ratios tshark/soc and the load average.

    python benchmarks/bench_e2e.py [--rounds 6] [--pcap bench-data/bench-6.pcap] [--repeat 3]

The pcap is built with ../shared/tools/build_bench_pcap.py into bench-data/ (git-ignored) when missing; tshark is
installed with apt-get when absent. Each contender runs --repeat times, interleaved; the best wall time counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from bench_sensor import TSHARK_FIELDS, ensure_pcap, ensure_tshark  # noqa: E402

# soc's CLI with its own CPU and its children's (the pipeline process) printed on stderr at exit
SOC = """
import atexit, json, resource, sys
def _cpu():
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print("CPU " + json.dumps([own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime]), file=sys.stderr)
atexit.register(_cpu)
sys.argv[0] = "soc"
from soc_cli.main import app
app()
"""


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, float, float, list[float]]:
    """Wall seconds, CPU seconds (user + system, the command and its children), peak RSS (MB, the largest
    process) of a command, and the [own, children] CPU soc reports."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {err[-2000:]}")
    split = [json.loads(line[4:]) for line in err.splitlines() if line.startswith("CPU [")]
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, split[-1] if split else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--pcap", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    pcap = args.pcap or ROOT / "bench-data" / f"bench-{args.rounds}.pcap"
    ensure_pcap(pcap, args.rounds)
    tshark = ensure_tshark()
    soc = [sys.executable, "-c", SOC]
    fields = [a for f in TSHARK_FIELDS for a in ("-e", f)]
    results: dict[str, list[tuple[float, float, float, list[float]]]] = {"tshark": [], "soc-1": [], "soc-2": []}
    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {"SOC_HOME": f"{tmp}/home", "XDG_CACHE_HOME": f"{tmp}/cache"}
        env.pop("SOC_STORE", None)
        measure([*soc, "sensor", "pcap", str(ROOT / "rules" / "samples" / "demo-ministry.pcap"), "--store",
                 f"sqlite:///{tmp}/warm.db"], env)  # builds the compiled-rule cache, as any earlier run has
        load = os.getloadavg()
        for n in range(args.repeat):
            results["tshark"].append(measure([tshark, "-r", str(pcap), "-T", "ek", *fields]))
            for p in (1, 2):
                db = f"{tmp}/soc-{p}-{n}.db"
                results[f"soc-{p}"].append(measure([*soc, "sensor", "pcap", str(pcap), "--store", f"sqlite:///{db}",
                                                    "--processes", str(p), "--json"], env))
        load_after = os.getloadavg()
    packets = sum(1 for _ in _records(pcap))
    print(f"{pcap.name}: {packets:,} packets, {pcap.stat().st_size / 1e6:.1f} MB; load average "
          f"{load[0]:.2f} before, {load_after[0]:.2f} after; best of {args.repeat}")
    best = {k: min(v) for k, v in results.items()}
    for k, (wall, cpu, rss, split) in best.items():
        ratio = best["tshark"][0] / wall
        print(f"  {k:<8} wall {wall:6.2f} s  cpu {cpu:6.2f} s  peak RSS {rss:6.0f} MB  "
              f"tshark/soc wall {ratio:5.2f}x  tshark/soc cpu {best['tshark'][1] / cpu:5.2f}x")
        if k == "soc-2" and split:
            print(f"           decoding process {split[0]:.2f} s CPU (start-up included), pipeline process "
                  f"{split[1]:.2f} s: on two idle cores the wall time is at least {max(split):.2f} s "
                  f"({best['tshark'][0] / max(split):.2f}x tshark's wall in this run)")


def _records(pcap: Path):
    from sensors.capture import read_file

    return read_file(str(pcap))


if __name__ == "__main__":
    main()
