"""Benchmark: soc's read-only tree walk for the baseline's file-permission checks vs GNU find.

    python benchmarks/bench_compliance.py [DIR]        # default /usr

Both sides answer the questions of baseline checks 10601/10602 over the same tree, one filesystem, no symlinks
followed: world-writable files, world-writable directories without the sticky bit, and set-uid regular files.
soc runs its `find:` probe (RootFS walk -> `ls -l`-style lines) and the policy's own PCRE rules; the peer runs
one `find DIR -xdev ...` pass (comma operator). The answers must be identical; the script prints both timings
and the ratio.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

from sensors.compliance.probes import Probes
from sensors.compliance.rootfs import RootFS

WORLD_WRITABLE = re.compile(r"^-.{7}w|^d.{7}w[^t]")
SETUID = re.compile(r"^-..[sS]")


def soc(top: str) -> tuple[set[str], set[str], int]:
    lines = Probes(RootFS("/"), probe_tls=False).lines("find", top) or []
    ww = {line.split(" ", 1)[1] for line in lines if WORLD_WRITABLE.search(line)}
    suid = {line.split(" ", 1)[1] for line in lines if SETUID.search(line)}
    return ww, suid, len(lines)


def gnu_find(top: str) -> tuple[set[str], set[str]]:
    """One GNU find pass with the comma operator evaluating both questions for every entry."""
    out = subprocess.run(["find", top, "-xdev",
                          "(", "(", "-type", "f", "-perm", "-0002", ")", "-o",
                          "(", "-type", "d", "-perm", "-0002", "!", "-perm", "-1000", ")", ")",
                          "-printf", "W %p\\n", ",", "-type", "f", "-perm", "-4000", "-printf", "S %p\\n"],
                         capture_output=True, text=True).stdout.split("\n")
    ww = {line[2:] for line in out if line.startswith("W ") and line[2:] != top}
    return ww, {line[2:] for line in out if line.startswith("S ")}


def best_of(fn, runs: int = 3):
    best, out = float("inf"), None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    top = sys.argv[1] if len(sys.argv) > 1 else "/usr"
    t_soc, (ww, suid, entries) = best_of(lambda: soc(top))
    t_find, (ww_ref, suid_ref) = best_of(lambda: gnu_find(top))
    same = ww == ww_ref and suid == suid_ref
    print(f"tree {top}: {entries} entries; world-writable {len(ww)}, set-uid {len(suid)}; identical answers: {same}")
    print(f"soc find: probe + policy regexes  {t_soc:8.3f} s  ({entries / t_soc:,.0f} entries/s)")
    print(f"GNU find (one pass, -xdev)        {t_find:8.3f} s")
    print(f"ratio soc/find: {t_soc / t_find:.2f}x")
    if not same:
        print("DIFF world-writable:", sorted(ww ^ ww_ref)[:10], "set-uid:", sorted(suid ^ suid_ref)[:10])
        sys.exit(1)


if __name__ == "__main__":
    main()
