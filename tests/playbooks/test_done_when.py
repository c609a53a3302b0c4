"""Issue 18's "done when", as a user runs it from two shells (separate `soc` processes): the demo capture through
`soc sensor pcap` raises the port-scan alert (203.0.113.66 → 172.16.10.10); the scanning playbook is listed,
dry-run (nothing changes), executed (it waits), approved from a second shell — and the scanner's TCP connections
into a network namespace standing for the target really fail — then undone (they work again); every step is in
`playbook show RUN` and `audit list`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from soc_cli.common import SHIPPED_POLICY
from tests import netns
from tests.debian import require
from tests.netns import tcp_listener, veth_pair
from tests.triage.world import DEMO_PCAP

pytestmark = pytest.mark.netns
SOC = str(Path(sys.executable).parent / "soc")
TARGET, SCANNER = "172.16.10.10", "203.0.113.66"


@pytest.fixture
def lab():
    """(target netns, scanner netns): a veth pair 172.16.10.10 <-> 203.0.113.66, a TCP listener on the target."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    require("nftables", "nft", "the done-when run blocks with nftables")
    with veth_pair(TARGET, SCANNER, prefix="pb", prefixlen=32) as (tgt, scn), \
            tcp_listener(tgt, TARGET, probe_from=scn):
        yield tgt, scn


def reachable(scn: str) -> bool:
    return netns.reachable(scn, TARGET)


def test_scan_alert_to_block_in_the_namespace_and_back(lab, tmp_path):
    tgt, scn = lab
    policy = tmp_path / "policy.yml"  # the shipped policy, with this OS account (root) cleared to top-secret
    policy.write_text(SHIPPED_POLICY.read_text().replace("    soc-admin: top-secret\n",
                                                         "    soc-admin: top-secret\n    root: top-secret\n"))
    env = os.environ | {"SOC_HOME": str(tmp_path / "home"), "SOC_STORE": f"sqlite:///{tmp_path / 'soc.db'}",
                        "SOC_POLICY": str(policy), "SOC_AUDIT_ANCHOR_FILE": "",
                        "XDG_CONFIG_HOME": str(tmp_path / "config")}
    env.pop("SOC_CLEARANCE", None), env.pop("SOC_CONFIG", None)

    def soc(*args: str, code: int = 0) -> str:
        proc = subprocess.run([SOC, *args], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == code, f"soc {' '.join(args)}: {proc.returncode} {proc.stderr}"
        return proc.stdout

    soc("sensor", "pcap", str(DEMO_PCAP), "--home-net", "10.0.0.0/8")
    alerts = [json.loads(x) for x in soc("alerts", "list", "--where", f"source.ip:{SCANNER}", "--json").splitlines()]
    [scan] = [a["id"] for a in alerts if a["title"].startswith("Port Scan")]
    assert "scanning" in soc("playbook", "list")
    dry = soc("playbook", "run", "scanning", "--alert", scan)
    assert "dry run: nothing changed" in dry and f"blocked {{ {SCANNER} timeout 86400s }}" in dry
    assert reachable(scn)
    waiting = [json.loads(x) for x in soc("playbook", "run", "scanning", "--alert", scan, "--execute",
                                          "--var", f"__netns__={tgt}", "--json", code=3).splitlines()]
    run = waiting[0]["id"]
    assert waiting[0]["status"] == "waiting" and reachable(scn)
    assert f"waiting on {waiting[0]['pending']['step']}" in soc("playbook", "runs")
    soc("playbook", "approve", run, "block")  # the second shell
    assert not reachable(scn), "the scanner still reaches the target after the approved block"
    soc("playbook", "undo", run)
    assert reachable(scn)
    shown = [json.loads(x) for x in soc("playbook", "show", run, "--json").splitlines()]
    assert shown[0]["status"] == "undone"
    assert {s["name"]: s["status"] for s in shown[1:] if s["type"] == "action"} == {
        "enrich": "succeeded", "search": "succeeded", "note": "succeeded", "block": "succeeded"}
    assert shown[-2]["undone"]["outputs"]["unblocked"] == SCANNER
    audit = [json.loads(x) for x in soc("audit", "list", "--json").splitlines()]
    mine = [(e["action"], (e.get("details") or {}).get("step")) for e in audit
            if (e.get("details") or {}).get("run") == run]
    assert [a for a, _ in mine] == ["playbook-run", "playbook-step", "playbook-step", "playbook-step",
                                    "playbook-approval-requested", "playbook-approval", "playbook-step",
                                    "playbook-run-end", "playbook-undo"]
