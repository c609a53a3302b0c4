#!/usr/bin/env python3
"""File integrity benchmark: `soc integrity baseline|scan` vs AIDE (Debian's `aide`) on the same tree.

    python benchmarks/bench_integrity.py [--tree /usr] [--small /usr/share/doc] [--work /tmp/soc-bench-integrity]

The tree is a hard-linked copy of `--tree` under `--work` (instant, no data copied); the files the script will
edit get their own copy first (so no edit ever reaches the real tree). Both tools watch the same copy with the same
attributes (sha256, size, permissions and type, uid, gid, mtime, inode, link target), each with one worker. After
the scripted edits (content, content with size and mtime kept, mode, mtime, owner, new files incl. a SUID one,
deletions, symlink retargets, replaced inodes) both must report exactly the same changed paths (asserted).
Printed: each tool's time and peak RSS (the child's VmHWM) for baseline and check, and soc/AIDE ratios; with
`--small`, soc's peak RSS on that smaller tree too (RSS should not grow with the number of files: the walk and the
baseline are streamed). Load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SOC = str(Path(sys.executable).with_name("soc"))
AIDE_RULE = "p+i+l+u+g+s+m+sha256+ftype"  # = soc's sha256,size,mode,owner,group,mtime,inode,link


def aide_path() -> str:
    found = shutil.which("aide")
    if found is None and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "aide"],
                       env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"}, capture_output=True)
        found = shutil.which("aide")
    if found is None:
        sys.exit("AIDE ABSENT (apt-get install aide): the benchmark compares with it")
    return found


def run(argv: list[str], env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)) -> tuple[float, int, str]:
    """(seconds, peak RSS in MiB, stdout) of one child process. The peak is the child's own VmHWM, polled every
    50 ms: wait4's ru_maxrss would count the memory of this (forking) process too."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    streams: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda n=n, f=f: streams.__setitem__(n, f.read()))
               for n, f in (("out", proc.stdout), ("err", proc.stderr))]
    for t in readers:
        t.start()
    peak_kb = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    for t in readers:
        t.join()
    out, err = streams["out"], streams["err"]
    if proc.returncode not in ok or b"Traceback" in err or b"error:" in err:
        sys.exit(f"{' '.join(argv[:3])} exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    return seconds, peak_kb // 1024, out.decode(errors="replace")


def make_tree(src: Path, work: Path, rng: random.Random) -> tuple[Path, dict[str, list[Path]]]:
    """A hard-linked copy of `src` at work/root/<src>, and the victims of each edit, each given its own copy."""
    root = work / "root"
    dst = root / src.relative_to("/")
    if root.exists():
        shutil.rmtree(root)
    dst.parent.mkdir(parents=True)
    subprocess.run(["cp", "-al", str(src), str(dst)], check=True)
    files, links, dirs = [], [], []
    for dirpath, _dirnames, filenames in os.walk(dst):
        dirs.append(Path(dirpath))
        for name in filenames:
            p = Path(dirpath) / name
            (links if p.is_symlink() else files).append(p)
    files = [p for p in files if p.is_file() and 0 < p.stat().st_size < 4 << 20]
    picked = rng.sample(files, 70)
    victims = {"content": picked[:15], "hash_only": picked[15:20], "mode": picked[20:30], "mtime": picked[30:40],
               "owner": picked[40:45], "inode": picked[45:50], "delete": picked[50:60], "unused": picked[60:70],
               "symlink": rng.sample(links, min(5, len(links))), "create_in": rng.sample(dirs, 10)}
    for p in picked[:50]:  # own copies (same attributes) so that edits never reach `src`
        tmp = p.with_name(p.name + ".soc-bench-tmp")
        shutil.copy2(p, tmp)
        os.chown(tmp, p.stat().st_uid, p.stat().st_gid)
        os.replace(tmp, p)
    return root, victims


def edit(victims: dict[str, list[Path]]) -> None:
    """The scripted edits (the truth both tools must find)."""
    for p in victims["content"]:
        with p.open("ab") as f:
            f.write(b"\n# tampered\n")
    for p in victims["hash_only"]:  # one byte flipped, size and mtime kept: only the content hash tells
        st = p.stat()
        with p.open("r+b") as f:
            first = f.read(1) or b"\0"
            f.seek(0)
            f.write(bytes([first[0] ^ 0xFF]))
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    for p in victims["mode"]:
        p.chmod(p.stat().st_mode & 0o7777 ^ 0o020)
    for p in victims["mtime"]:
        os.utime(p, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    for p in victims["owner"]:
        os.chown(p, 4242, 4242)
    for p in victims["inode"]:
        tmp = p.with_name(p.name + ".new")
        shutil.copy2(p, tmp)
        os.replace(tmp, p)
    for p in victims["delete"]:
        p.unlink()
    for p in victims["symlink"]:
        p.unlink()
        p.symlink_to("/nonexistent/retargeted")
    for i, d in enumerate(victims["create_in"]):
        new = d / f"soc-bench-new-{i}"
        new.write_bytes(os.urandom(64))
        if i == 0:
            new.chmod(0o4755)


def soc_paths(out: str) -> set[str]:
    return {json.loads(x)["file"]["path"] for x in out.splitlines()}


def aide_paths(out: str, prefix: str) -> set[str]:
    report = json.loads(out)
    found = set()
    for section in ("added", "removed", "changed"):
        found |= set(report.get(section) or {})
    return {p[len(prefix):] for p in found}


def bench(tree: Path, work: Path, aide: str, seed: int) -> dict[str, float | int]:
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    root, victims = make_tree(tree, work, rng)
    watched = root / tree.relative_to("/")
    count = 1 + sum(len(d) + len(f) for _, d, f in os.walk(watched))
    policy = work / "watch.yml"
    policy.write_text(f"policy: {{id: bench, name: bench}}\nwatch:\n  - path: {tree}\n")
    conf = work / "aide.conf"
    conf.write_text(f"database_in=file:{work}/aide.db\ndatabase_out=file:{work}/aide.db.new\ngzip_dbout=no\n"
                    f"report_format=json\nreport_level=list_entries\nreport_url=stdout\nnum_workers=1\n"
                    f"SOCATTR = {AIDE_RULE}\n{watched} SOCATTR\n")
    for f in ("aide.db", "aide.db.new", "soc.db", "soc.db-wal", "soc.db-shm"):
        (work / f).unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOC_")} | {
        "SOC_HOME": str(work / "home"), "SOC_STORE": f"sqlite:///{work / 'soc.db'}",
        "XDG_CONFIG_HOME": str(work / "config"), "SOC_AUDIT_KEY_FILE": str(work / "home" / "audit.key"),
        "SOC_AUDIT_ANCHOR_FILE": ""}
    r: dict[str, float | int] = {"entries": count}
    soc = [SOC, "integrity"]
    common = ["--policy", str(policy), "--root", str(root), "--host", "bench"]
    # baseline / init: AIDE, soc, then the same order after the edits
    r["aide_init_s"], r["aide_init_mb"], _ = run([aide, "--init", "-c", str(conf)])
    os.replace(work / "aide.db.new", work / "aide.db")
    r["soc_init_s"], r["soc_init_mb"], _ = run([*soc, "baseline", *common], env)
    time.sleep(1.1)  # edits land in a later second than the baselines (mtime granularity of either tool)
    edit(victims)
    r["aide_check_s"], r["aide_check_mb"], aide_out = run([aide, "--check", "-c", str(conf)], ok=(0, 1, 2, 3, 4,
                                                                                                   5, 6, 7))
    r["soc_check_s"], r["soc_check_mb"], soc_out = run([*soc, "scan", *common, "--json"], env, ok=(1,))
    a, s = aide_paths(aide_out, str(root)), soc_paths(soc_out)
    if a != s:
        sys.exit(f"the tools disagree: only AIDE {sorted(a - s)[:20]}, only soc {sorted(s - a)[:20]}")
    expected = {"/" + str(p.relative_to(root)) for k, ps in victims.items() if k not in ("unused", "create_in")
                for p in ps}
    missing = expected - s
    if missing:
        sys.exit(f"both tools missed scripted edits: {sorted(missing)[:20]}")
    r["changed_paths"] = len(s)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", type=Path, default=Path("/usr"))
    ap.add_argument("--small", type=Path, default=None, help="also measure soc on this smaller tree (RSS vs files)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/soc-bench-integrity"))
    ap.add_argument("--seed", type=int, default=14)
    args = ap.parse_args()
    aide = aide_path()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    runs = [(args.tree, bench(args.tree, args.work, aide, args.seed))]
    if args.small:
        runs.append((args.small, bench(args.small, args.work, aide, args.seed)))
    for tree, r in runs:
        print(f"\n{tree}: {r['entries']} entries, {r['changed_paths']} changed paths reported identically by both")
        print(f"  {'':10} {'AIDE s':>8} {'soc s':>8} {'soc/AIDE':>9} {'AIDE MiB':>9} {'soc MiB':>8} {'soc/AIDE':>9}")
        for step in ("init", "check"):
            at, st, am, sm = (r[f"aide_{step}_s"], r[f"soc_{step}_s"], r[f"aide_{step}_mb"], r[f"soc_{step}_mb"])
            print(f"  {step:10} {at:8.1f} {st:8.1f} {st / at:9.2f} {am:9d} {sm:8d} {sm / max(am, 1):9.2f}")
    if len(runs) == 2:
        big, small = runs[0][1], runs[1][1]
        print(f"\nsoc check peak RSS: {small['soc_check_mb']} MiB at {small['entries']} entries, "
              f"{big['soc_check_mb']} MiB at {big['entries']} entries "
              f"({big['entries'] / small['entries']:.1f}x the files)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    shutil.rmtree(args.work / "root", ignore_errors=True)


if __name__ == "__main__":
    main()
