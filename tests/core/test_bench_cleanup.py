"""benchmarks/bench_ingest.py runs to the end on a small N and leaves no temporary database behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_ingest_cleans_up(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_ingest.py"), "400"], capture_output=True,
                         text=True, env={**os.environ, "TMPDIR": str(tmp)}, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    assert "events: 400" in res.stdout
    assert sorted(p.name for p in tmp.iterdir()) == []  # every database, FTS file and spool directory removed
