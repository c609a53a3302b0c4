"""The audit chain against someone who can write the store but lacks the key (docs/audit.md).

The attacker here works on the raw rows: drops the append-only triggers, rewrites entries, recomputes every later
digest and the stored head with plain SHA-256 of the documented canonical form (hashlib, not soc's code), deletes,
reorders, truncates, replaces the key file. Each is detected by `audit_verify` / `soc audit verify` naming the entry;
those only anchors can catch (removing whole entries with the head) are caught with the anchor file.
tests/store/test_audit_tamper_elastic.py runs the same tamperings on the Elasticsearch emulators.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from correlator.audit import ANCHOR_ENV, KEY_ENV, AuditKeyError
from correlator.store import open_store
from soc_cli.main import app

runner = CliRunner()
GENESIS = "0" * 64
Entry = dict[str, Any]


def plain_digest(prev: str, e: Entry) -> str:
    """SHA-256 over prev_hash + the canonical JSON of [seq, ts, actor, action, details] (the unkeyed chain)."""
    body = json.dumps([e["seq"], e["ts"], e["actor"], e["action"], e["details"]], sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev + body).encode()).hexdigest()


def rechain(entries: list[Entry], start: int = 0) -> list[Entry]:
    """Renumber from 1 and recompute every link and digest from index `start` on, as a writer without the key can."""
    out = [dict(e) for e in entries]
    for i, e in enumerate(out):
        e["seq"] = i + 1
        if i >= start:
            e["prev_hash"] = out[i - 1]["hash"] if i else GENESIS
            e["hash"] = plain_digest(e["prev_hash"], e)
    return out


def head_of(entries: list[Entry]) -> str | None:
    return f"{entries[-1]['seq']}:{entries[-1]['hash']}" if entries else None


# Each tampering: (entries, head) -> (entries, head); the entry verify must name; whether only anchors can see it.
def edit_and_rechain(es: list[Entry], head: str | None) -> tuple[list[Entry], str | None]:
    es = [dict(e) for e in es]
    es[2]["details"] = {"n": 3, "level": "public"}
    es = rechain(es, 2)
    return es, head_of(es)


def delete_all_with_head(es: list[Entry], head: str | None) -> tuple[list[Entry], str | None]:
    return [], None


def delete_tail_with_head(es: list[Entry], head: str | None) -> tuple[list[Entry], str | None]:
    return es[:3], head_of(es[:3])


def truncate(es: list[Entry], head: str | None) -> tuple[list[Entry], str | None]:
    return es[:3], head


def reorder(es: list[Entry], head: str | None) -> tuple[list[Entry], str | None]:
    es = [dict(e) for e in es]
    es[1]["seq"], es[2]["seq"] = es[2]["seq"], es[1]["seq"]
    return sorted(es, key=lambda e: e["seq"]), head


def reorder_and_rechain(es: list[Entry], head: str | None) -> tuple[list[Entry], str | None]:
    es = rechain([es[0], es[2], es[1], *es[3:]], 1)
    return es, head_of(es)


def append_forged(es: list[Entry], head: str | None) -> tuple[list[Entry], str | None]:
    forged = {"seq": len(es) + 1, "ts": es[-1]["ts"], "actor": "analyst", "action": "read", "details": {"n": 99},
              "prev_hash": es[-1]["hash"]}
    forged["hash"] = plain_digest(forged["prev_hash"], forged)
    return [*es, forged], head_of([forged])


Tamper = Callable[[list[Entry], str | None], tuple[list[Entry], str | None]]
TAMPERINGS: list[tuple[str, Tamper, str, bool]] = [
    ("edit-and-rechain", edit_and_rechain, "audit entry seq=3:", False),
    ("delete-all-with-head", delete_all_with_head, "audit entry seq=1: anchored", True),
    ("delete-tail-with-head", delete_tail_with_head, "audit entry seq=4: anchored", True),
    ("truncate", truncate, "audit entry seq=4: missing; the stored head is seq=5", False),
    ("reorder", reorder, "audit entry seq=2:", False),
    ("reorder-and-rechain", reorder_and_rechain, "audit entry seq=2:", False),
    ("append-forged", append_forged, "audit entry seq=6: unkeyed entry after the chain was keyed", False),
]


# -- SQLite --------------------------------------------------------------------------------------------------------


class SqliteWriter:
    """Someone who can write the database file (its own connection; drops the guard triggers)."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)

    def entries(self) -> list[Entry]:
        rows = self.db.execute("SELECT seq, ts, actor, action, details, prev_hash, hash FROM audit ORDER BY seq")
        return [dict(seq=r[0], ts=r[1], actor=r[2], action=r[3], details=json.loads(r[4]), prev_hash=r[5],
                     hash=r[6]) for r in rows]

    def head(self) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key='audit_head'").fetchone()
        return row and row[0]

    def rewrite(self, entries: list[Entry], head: str | None) -> None:
        db = self.db
        db.execute("DROP TRIGGER IF EXISTS audit_no_update")
        db.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        db.execute("DELETE FROM audit")
        db.executemany("INSERT INTO audit VALUES (?,?,?,?,?,?,?)", [
            (e["seq"], e["ts"], e["actor"], e["action"], json.dumps(e["details"], sort_keys=True), e["prev_hash"],
             e["hash"]) for e in entries])
        db.execute("DELETE FROM meta WHERE key='audit_head'")
        if head:
            db.execute("INSERT INTO meta VALUES ('audit_head', ?)", (head,))


@pytest.fixture
def keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Key file and anchor file of their own, and a SQLite store with five audited reads."""
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "soc-home" / "audit.key"))
    monkeypatch.setenv(ANCHOR_ENV, str(tmp_path / "soc-home" / "audit.anchors"))
    (tmp_path / "soc-home").mkdir()
    uri = f"sqlite:///{tmp_path / 'soc.db'}"
    with open_store(uri) as store:
        store.init()
        for i in range(1, 6):
            store.audit("read", {"n": i, "level": "secret"}, actor="analyst")
        assert store.audit_verify() == []
    return {"uri": uri, "db": tmp_path / "soc.db", "home": tmp_path / "soc-home"}


def verify(uri: str, *args: str) -> Any:  # noqa: ANN401 - a click Result
    return runner.invoke(app, ["--store", uri, "audit", "verify", *args])


def test_key_file_is_created_0600_outside_the_store_and_never_printed(keyed):
    key = keyed["home"] / "audit.key"
    assert key.stat().st_mode & 0o777 == 0o600
    secret = key.read_text().strip()
    assert len(bytes.fromhex(secret)) == 32
    assert secret.encode() not in keyed["db"].read_bytes()
    for args in (["audit", "verify"], ["audit", "list", "--json"], ["audit", "anchor"], ["audit", "verify", "--json"]):
        res = runner.invoke(app, ["--store", keyed["uri"], *args])
        assert res.exit_code == 0, (args, res.stderr)
        assert secret not in res.stdout + res.stderr
    assert "intact: 5 entries, keyed from seq=1" in verify(keyed["uri"]).stdout


@pytest.mark.parametrize("name, tamper, needle, anchored_only", TAMPERINGS, ids=[t[0] for t in TAMPERINGS])
def test_tampering_by_a_store_writer_is_detected(keyed, monkeypatch, name, tamper, needle, anchored_only):
    writer = SqliteWriter(keyed["db"])
    writer.rewrite(*tamper(writer.entries(), writer.head()))
    # without any anchor, only what the key (and head) can see
    monkeypatch.setenv(ANCHOR_ENV, "")
    res = verify(keyed["uri"])
    if anchored_only:
        assert res.exit_code == 0, res.stderr  # removing whole entries with their head needs an anchor to be seen
    else:
        assert res.exit_code == 1, res.stdout
        assert f"TAMPERED {needle}" in res.stderr, res.stderr
    # with the anchor file every append wrote
    monkeypatch.setenv(ANCHOR_ENV, str(keyed["home"] / "audit.anchors"))
    res = verify(keyed["uri"], "--json")
    assert res.exit_code == 1, res.stdout
    out = json.loads(res.stdout)
    assert not out["intact"] and any(needle in p for p in out["problems"]), out["problems"]


def test_explicit_anchor_catches_deleting_everything(keyed, tmp_path, monkeypatch):
    monkeypatch.setenv(ANCHOR_ENV, "")  # no automatic anchors: only `soc audit anchor --to`
    outside = tmp_path / "elsewhere" / "heads.ndjson"
    outside.parent.mkdir()
    res = runner.invoke(app, ["--store", keyed["uri"], "audit", "anchor", "--to", str(outside), "--json"])
    assert res.exit_code == 0, res.stderr
    record = json.loads(res.stdout)
    assert (record["seq"], record["store"]) == (5, keyed["uri"])
    assert "password" not in record and record["hash"] == SqliteWriter(keyed["db"]).entries()[-1]["hash"]
    assert verify(keyed["uri"], "--anchor", str(outside)).exit_code == 0
    SqliteWriter(keyed["db"]).rewrite([], None)
    assert verify(keyed["uri"]).exit_code == 0  # nothing left to check without the anchor
    res = verify(keyed["uri"], "--anchor", str(outside))
    assert res.exit_code == 1
    assert f"TAMPERED audit entry seq=5: anchored at {record['time']} ({outside}:1) but missing" in res.stderr
    assert verify(keyed["uri"], "--anchor", str(tmp_path / "nope")).exit_code == 2


def test_a_tampered_chain_is_not_anchored(keyed, tmp_path):
    writer = SqliteWriter(keyed["db"])
    writer.rewrite(*edit_and_rechain(writer.entries(), writer.head()))
    outside = tmp_path / "heads.ndjson"
    res = runner.invoke(app, ["--store", keyed["uri"], "audit", "anchor", "--to", str(outside)])
    assert res.exit_code == 1 and "seq=3" in res.stderr
    assert not outside.exists()


def test_replaced_key_file_is_detected(keyed):
    key = keyed["home"] / "audit.key"
    key.unlink()
    key.write_text(secrets.token_hex(32) + "\n")
    key.chmod(0o600)
    res = verify(keyed["uri"])
    assert res.exit_code == 1
    assert "TAMPERED audit entry seq=1: sealed with key id" in res.stderr and "key file replaced" in res.stderr
    # and appending under the wrong key is refused, not sealed on
    with open_store(keyed["uri"]) as store, pytest.raises(AuditKeyError, match="is not the key"):
        store.audit("read", {"n": 6})


def test_chain_rewritten_under_a_replaced_key_is_caught_by_the_anchors(keyed, monkeypatch):
    """Whoever can replace the key file re-seals the whole chain under the new key; the anchors still differ."""
    import hmac

    key = keyed["home"] / "audit.key"
    secret = secrets.token_bytes(32)
    key.write_text(secret.hex() + "\n")
    kid = hmac.new(secret, b"soc audit key id", hashlib.sha256).hexdigest()[:16]
    writer = SqliteWriter(keyed["db"])
    es = [dict(e) for e in writer.entries()]
    es[2]["actor"] = "someone-else"
    for i, e in enumerate(es):
        e["prev_hash"] = es[i - 1]["hash"] if i else GENESIS
        body = json.dumps([e["seq"], e["ts"], e["actor"], e["action"], e["details"]], sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False)
        e["hash"] = f"hmac-sha256:{kid}:" + hmac.new(secret, (e["prev_hash"] + body).encode(),
                                                      hashlib.sha256).hexdigest()
    writer.rewrite(es, head_of(es))
    monkeypatch.setenv(ANCHOR_ENV, "")
    assert verify(keyed["uri"]).exit_code == 0  # a consistent chain under the new key
    monkeypatch.setenv(ANCHOR_ENV, str(keyed["home"] / "audit.anchors"))
    res = verify(keyed["uri"])
    assert res.exit_code == 1
    assert all(f"TAMPERED audit entry seq={n}: hash differs from the one anchored" in res.stderr for n in range(1, 6))


def test_missing_key_is_a_clear_error_not_intact(keyed):
    key = keyed["home"] / "audit.key"
    key.unlink()
    res = verify(keyed["uri"])
    assert res.exit_code == 2
    assert f"{key}: the audit chain is keyed from seq=1" in res.stderr and "intact" not in res.stdout
    with open_store(keyed["uri"]) as store, pytest.raises(AuditKeyError, match="missing"):
        store.audit("read", {"n": 6})
    assert not key.exists()  # no new key was made up: the chain would be unverifiable


def test_key_open_to_others_is_refused(keyed):
    key = keyed["home"] / "audit.key"
    key.chmod(0o644)
    res = verify(keyed["uri"])
    assert res.exit_code == 2 and "open to other users (mode 644)" in res.stderr


def test_unkeyed_chain_migrates_and_stays_verified(tmp_path, monkeypatch):
    """A chain written before keying (plain SHA-256) verifies; the first append keys it; a plain rewrite after the
    switch, or of the plain part with every later entry, is detected."""
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "audit.key"))
    monkeypatch.setenv(ANCHOR_ENV, str(tmp_path / "audit.anchors"))
    uri = f"sqlite:///{tmp_path / 'old.db'}"
    with open_store(uri) as store:
        store.init()
    old = rechain([{"ts": f"2025-01-01T00:00:0{i}Z", "actor": "analyst", "action": "read", "details": {"n": i}}
                   for i in range(1, 4)])
    writer = SqliteWriter(tmp_path / "old.db")
    writer.rewrite(old, head_of(old))  # what soc wrote before this change
    assert verify(uri).stdout.strip().endswith("intact: 3 entries, unkeyed")
    assert not (tmp_path / "audit.key").exists()  # verifying creates no key
    with open_store(uri) as store:
        store.audit("read", {"n": 4}, actor="analyst")
        store.audit("read", {"n": 5}, actor="analyst")
    entries = writer.entries()
    assert [e["hash"].startswith("hmac-sha256:") for e in entries] == [False, False, False, True, True]
    assert entries[:3] == old
    assert "intact: 5 entries, keyed from seq=4" in verify(uri).stdout
    # edit the plain part and re-derive everything after it as plain: the chain alone cannot tell ...
    es = [dict(e) for e in entries]
    es[1]["details"] = {"n": 2, "edited": True}
    es = rechain(es, 1)
    writer.rewrite(es, head_of(es))
    monkeypatch.setenv(ANCHOR_ENV, "")
    assert verify(uri).exit_code == 0
    # ... the anchors of the keyed appends can
    monkeypatch.setenv(ANCHOR_ENV, str(tmp_path / "audit.anchors"))
    res = verify(uri)
    assert res.exit_code == 1
    assert "seq=4: hash differs" in res.stderr and "seq=5: hash differs" in res.stderr


def test_anchor_file_is_append_only_and_bad_lines_are_located(keyed):
    anchors = keyed["home"] / "audit.anchors"
    assert anchors.stat().st_mode & 0o777 == 0o600
    lines = anchors.read_text().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == [1, 2, 3, 4, 5]
    with anchors.open("a") as f:
        f.write('{"store": "x", "seq": "one", "hash": "h"}\n{not json\n')
    res = verify(keyed["uri"])
    assert res.exit_code == 1
    assert f"TAMPERED {anchors}:6: not an anchor record (seq must be a positive integer)" in res.stderr
    assert f"TAMPERED {anchors}:7: not an anchor record (JSONDecodeError)" in res.stderr
    assert os.environ[ANCHOR_ENV] == str(anchors)
