"""Fuzz the audit chain's verifier and the anchor file reader (docs/audit.md).

- Any mutation a writer of the store can make to a keyed chain (edit any field to any JSON value, drop a field,
  delete, swap, rewrite the head) is reported, each problem naming the entry or the anchor's place, and never
  raises; an unchanged chain is intact.
- Any anchor file (valid records mixed with arbitrary lines) is read without an exception: every valid record is
  kept, in order with its line number, and every bad line is reported as `FILE:LINE: reason`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from correlator.audit import ANCHOR_ENV, KEY_ENV, Chain, FileAnchors
from correlator.store import open_store

FIELDS = ["seq", "ts", "actor", "action", "details", "prev_hash", "hash"]
N = 6
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def keyed_chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Chain, list[dict[str, Any]], str]:
    """A real store's keyed chain of N entries, each anchored; the Chain that verifies it, and its head."""
    home = tmp_path_factory.mktemp("fuzz-audit")
    with mock.patch.dict(os.environ, {KEY_ENV: str(home / "audit.key"), ANCHOR_ENV: str(home / "audit.anchors")}):
        store = open_store(f"sqlite:///{home / 'soc.db'}")
        store.init()
        for i in range(N):
            store.audit("read", {"n": i, "ids": [f"e{i}"]}, actor="analyst")
        entries = store.audit_entries()
        chain = store.audit_chain
        assert chain.verify(entries, f"{N}:{entries[-1]['hash']}") == []
        store.close()
    return chain, entries, f"{N}:{entries[-1]['hash']}"


MUTATION = st.one_of(
    st.tuples(st.just("edit"), st.integers(0, N - 1), st.sampled_from(FIELDS), JSON),
    st.tuples(st.just("drop"), st.integers(0, N - 1), st.sampled_from(FIELDS)),
    st.tuples(st.just("delete"), st.integers(0, N - 1)),
    st.tuples(st.just("swap"), st.integers(0, N - 1), st.integers(0, N - 1)),
    st.tuples(st.just("head"), st.one_of(st.none(), st.text(max_size=80), st.integers(0, N + 1).map(str))),
)


@pytest.mark.fuzz
@given(mutations=st.lists(MUTATION, min_size=1, max_size=4))
def test_every_change_to_a_keyed_chain_is_reported_and_located(keyed_chain, mutations):
    chain, original, original_head = keyed_chain
    entries, head = [dict(e) for e in original], original_head
    for m in mutations:
        live = len(entries)
        if m[0] == "edit" and m[1] < live:
            entries[m[1]][m[2]] = m[3]
        elif m[0] == "drop" and m[1] < live:
            entries[m[1]].pop(m[2], None)
        elif m[0] == "delete" and m[1] < live:
            del entries[m[1]]
        elif m[0] == "swap" and max(m[1], m[2]) < live:
            entries[m[1]], entries[m[2]] = entries[m[2]], entries[m[1]]
        elif m[0] == "head":
            head = m[1]
    problems = chain.verify(entries, head)
    changed = json.dumps([entries, head], sort_keys=True) != json.dumps([original, original_head], sort_keys=True)
    if not changed:
        assert problems == []
        return
    assert problems, (entries, head)
    anchors = str(chain.anchors.path) if chain.anchors else "\0"
    for p in problems:
        assert p.startswith(("audit entry seq=", anchors + ":")), p


def _is_record(value: Any, store: str) -> bool:  # noqa: ANN401
    """The documented anchor record: {store: str, seq: int >= 1, hash: str, ...}."""
    return (isinstance(value, dict) and isinstance(value.get("store"), str) and isinstance(value.get("hash"), str)
            and type(value.get("seq")) is int and value["seq"] >= 1)


RECORD = st.builds(lambda seq, h, t: {"store": "sqlite:///s.db", "seq": seq, "hash": h, "time": t},
                   st.integers(1, 10**12), st.text(max_size=70), st.text(max_size=30))
BAD_LINE = st.one_of(
    st.binary(max_size=60).filter(lambda b: b"\n" not in b and b.strip() != b""),
    JSON.map(lambda v: json.dumps(v).encode()),
)


@pytest.mark.fuzz
@given(lines=st.lists(st.one_of(RECORD, BAD_LINE), max_size=12))
def test_anchor_file_keeps_every_record_and_locates_every_bad_line(lines):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "audit.anchors"
        raw = [json.dumps(x, ensure_ascii=False).encode() if isinstance(x, dict) else x for x in lines]
        path.write_bytes(b"".join(r + b"\n" for r in raw))
        found, problems = FileAnchors(path).read("sqlite:///s.db")
    want, bad = [], []
    for n, r in enumerate(raw, 1):
        try:
            value = json.loads(r)
        except ValueError:
            value = None
        if _is_record(value, "sqlite:///s.db"):
            if value["store"] == "sqlite:///s.db":
                want.append((f"{path}:{n}", value))
        else:
            bad.append(n)
    assert found == want
    assert [int(p.split(":", 2)[1]) for p in problems] == bad
    assert all(p.startswith(f"{path}:") and ": not an anchor record (" in p for p in problems)
