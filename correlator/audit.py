"""The hash chain behind every store's append-only audit log."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
from collections.abc import Iterable
from typing import Any

GENESIS = "0" * 64


def current_actor() -> str:
    """The OS account running soc, from the effective uid (not $USER or $LOGNAME, which anyone can set)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # no passwd entry in some containers
        return f"uid:{uid}"


def entry_hash(prev_hash: str, seq: int, ts: str, actor: str, action: str, details: dict[str, Any]) -> str:
    """SHA-256 over the previous hash and the canonical form of one entry."""
    body = json.dumps([seq, ts, actor, action, details], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def verify_chain(entries: Iterable[dict[str, Any]]) -> list[str]:
    """Check entries (`seq, ts, actor, action, details, prev_hash, hash`, in seq order); return the problems found."""
    problems: list[str] = []
    prev, expected_seq = GENESIS, 1
    for e in entries:
        where = f"audit entry seq={e['seq']}"
        if e["seq"] != expected_seq:
            problems.append(f"{where}: expected seq {expected_seq} (entries deleted or reordered)")
        if e["prev_hash"] != prev:
            problems.append(f"{where}: prev_hash does not link to the entry before it")
        if entry_hash(e["prev_hash"], e["seq"], e["ts"], e["actor"], e["action"], e["details"]) != e["hash"]:
            problems.append(f"{where}: content does not match its hash (edited)")
        prev, expected_seq = e["hash"], e["seq"] + 1
    return problems
