"""A Context for the action tests: a temp SQLite store seeded by the real pipeline (`soc sensor pcap` on the demo
capture), the shipped policy, and the red team's reader `soc-admin` (top-secret) at a chosen clearance."""

from __future__ import annotations

import shutil
from pathlib import Path

from correlator.gate import open_gate
from correlator.policy.loader import load_policy
from correlator.store import open_store
from playbooks.actions import Context, load_all
from soc_cli.common import SHIPPED_POLICY
from tests.triage.world import DEMO_PCAP, ingest

USER = "soc-admin"
SCAN = "b76ba43d8fb116e7a92cec167fa2e7ca"  # Port Scan 203.0.113.66 -> 172.16.10.10, restricted
BRUTE = "757ef9f7b3e3c7c6e3bbee39e7115f92"  # SSH brute force 203.0.113.77 -> 10.1.0.22, secret
DNS = "de0435123aada6e31d4a5a7661c80cf6"  # unsanctioned resolver 10.10.7.7 -> 8.8.8.8, public

load_all()


def seeded(folder: Path) -> Path:
    """The demo capture ingested once per folder; returns the database file."""
    db = folder / "seed.db"
    if not db.exists():
        ingest(f"sqlite:///{db}", DEMO_PCAP)
    return db


def context(seed: Path, tmp: Path, clearance: str | None = None, execute: bool = True, label_rank: int = 0,
            **variables) -> Context:
    """A Context on a fresh copy of the seeded store, $SOC_HOME = tmp/home."""
    tmp.mkdir(parents=True, exist_ok=True)
    db = tmp / "soc.db"
    if not db.exists():
        shutil.copy(seed, db)
    store = open_store(f"sqlite:///{db}")
    policy = load_policy(SHIPPED_POLICY)
    gate = open_gate(store, policy, USER, clearance)
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    return Context(store, gate, policy, "run-1", "step-1", execute, variables, label_rank, USER, home)
