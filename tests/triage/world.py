"""A store built as a user builds one: `soc sensor pcap` on the bundled demo capture (real sensor, shipped rules and
policy), read back by the red team's reader `soc-admin` (top-secret) lowering its clearance per call."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from soc_cli.main import app

ROOT = Path(__file__).resolve().parents[2]
DEMO_PCAP = ROOT / "rules" / "samples" / "demo-ministry.pcap"
ENV = {"SOC_CLEARANCE": None, "SOC_POLICY": None, "SOC_CONFIG": None, "SOC_STORE": None}
runner = CliRunner()


def soc(uri: str, *args: str, clearance: int | None = None):
    """Run `soc --store URI ARGS [--clearance N]`."""
    argv = ["--store", uri, *args] + (["--clearance", str(clearance)] if clearance is not None else [])
    return runner.invoke(app, argv, env=ENV)


def ingest(uri: str, *pcaps: Path) -> None:
    res = runner.invoke(app, ["--store", uri, "sensor", "pcap", *map(str, pcaps), "--home-net", "10.0.0.0/8"],
                        env=ENV)
    assert res.exit_code == 0, res.stderr


def lines(stdout: str) -> list[dict]:
    return [json.loads(x) for x in stdout.splitlines() if x.strip()]


def withheld(stderr: str, kind: str) -> int:
    import re

    return sum(int(n) for n in re.findall(rf"(\d+) {kind} above your clearance", stderr))
