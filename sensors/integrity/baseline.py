"""The baseline: every watched entry's attributes, kept in the store's records (per host and policy) and sealed with
a keyed hash so that an edit of the stored baseline is detected like an edit of a watched file.

Layout (the store's records API; nothing here imports the store): entries are written in walk order as chunks of
`CHUNK` entries, each its own record kind `integrity-baseline/<host>/<policy>/<slot>/<nnnnnn>` (so a scan reads one
chunk at a time), then a head record (`integrity-baseline`, id `<host>/<policy>`) naming the slot, the policy's
digest and every chunk's watch, count and HMAC, itself HMAC-sealed. A new baseline goes to the other slot and the
head is switched last: an interrupted baseline leaves the previous one in force.

The key (HMAC-SHA256) never goes into the store: `$SOC_INTEGRITY_KEY` (64 hex digits), else the file
`$SOC_INTEGRITY_KEY_FILE`, else `<soc home>/integrity.key` (created 0600 by the first baseline).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sensors.integrity.walker import Entry, sort_key

HEAD_KIND = "integrity-baseline"
CHUNK = 4096
KEY_ENV, KEY_FILE_ENV = "SOC_INTEGRITY_KEY", "SOC_INTEGRITY_KEY_FILE"


class Records(Protocol):
    """The part of correlator.store.Store a baseline uses."""

    def put_record(self, kind: str, record_id: str, doc: dict[str, Any]) -> None: ...

    def records(self, kind: str) -> list[dict[str, Any]]: ...

    def get_record(self, kind: str, record_id: str) -> dict[str, Any] | None: ...

    def audit(self, action: str, details: dict[str, Any], actor: str | None = None) -> None: ...


class KeyError_(Exception):  # noqa: N801 - KeyError is a builtin
    """The integrity key cannot be used (missing for a scan, open to others, malformed)."""


def key_path(home: Path) -> Path:
    return Path(os.environ.get(KEY_FILE_ENV) or home / "integrity.key")


def load_key(home: Path, create: bool = False) -> bytes:
    """The HMAC key: from the environment, else the key file (created 0600 when `create`); refuses a file others
    may read."""
    if env := os.environ.get(KEY_ENV):
        try:
            key = bytes.fromhex(env.strip())
        except ValueError:
            key = b""
        if len(key) < 32:
            raise KeyError_(f"{KEY_ENV}: expected at least 64 hex digits")
        return key
    path = key_path(home)
    if not path.exists():
        if not create:
            raise KeyError_(f"{path}: no integrity key (the first `soc integrity baseline` creates it; or set "
                            f"{KEY_ENV})")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".integrity-key-")  # 0600
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)  # a concurrent creator's key wins
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    mode = path.stat().st_mode
    if mode & 0o077:
        raise KeyError_(f"{path}: the integrity key is open to other users (mode {mode & 0o777:o}); chmod 600 it")
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (ValueError, OSError) as exc:
        raise KeyError_(f"{path}: not an integrity key (expected 64 hex digits): {exc}") from None
    if len(key) < 32:
        raise KeyError_(f"{path}: not an integrity key (expected 64 hex digits)")
    return key


def _mac(key: bytes, body: Any) -> str:
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def head_id(host: str, policy_id: str) -> str:
    return f"{host}/{policy_id}"


def chunk_kind(host: str, policy_id: str, slot: str, seq: int) -> str:
    return f"{HEAD_KIND}/{host}/{policy_id}/{slot}/{seq:06d}"


@dataclass
class Tamper:
    """A part of the stored baseline whose keyed hash does not match: what was edited, as a file path would be."""

    where: str  # `store:integrity-baseline/<host>/<policy>[#chunk n]`
    reason: str
    first: str | None = None  # the chunk's first and last paths, when known
    last: str | None = None


class BaselineWriter:
    """Writes a new baseline chunk by chunk as entries stream in; `commit()` switches the head to it."""

    def __init__(self, store: Records, key: bytes, host: str, policy_id: str, policy_digest: str,
                 created: str, previous_slot: str | None) -> None:
        self.store, self.key, self.host, self.policy_id = store, key, host, policy_id
        self.digest, self.created = policy_digest, created
        self.slot = "b" if previous_slot == "a" else "a"
        self.chunks: list[dict[str, Any]] = []
        self.pending: list[list[Any]] = []
        self.watch = 0
        self.count = 0

    def add(self, watch: int, entry: Entry) -> None:
        if watch != self.watch and self.pending:
            self._flush()
        self.watch = watch
        self.pending.append(list(entry))
        self.count += 1
        if len(self.pending) >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        seq = len(self.chunks)
        body = [self.host, self.policy_id, self.slot, seq, self.watch, self.pending]
        mac = _mac(self.key, body)
        self.store.put_record(chunk_kind(self.host, self.policy_id, self.slot, seq), "0",
                              {"watch": self.watch, "entries": self.pending, "mac": mac})
        self.chunks.append({"watch": self.watch, "count": len(self.pending), "first": self.pending[0][0],
                            "last": self.pending[-1][0], "mac": mac})
        self.pending = []

    def commit(self) -> dict[str, Any]:
        """Seal and store the head: from now on this is the baseline. Returns the head."""
        if self.pending:
            self._flush()
        head = {"host": self.host, "policy": self.policy_id, "policy_digest": self.digest, "slot": self.slot,
                "created": self.created, "entries": self.count, "chunks": self.chunks}
        head["mac"] = _mac(self.key, head)
        self.store.put_record(HEAD_KIND, head_id(self.host, self.policy_id), head)
        return head


class Baseline:
    """A stored baseline read back chunk by chunk, every keyed hash checked; mismatches land in `tampered`.

    `changes` ({path: (watch, entry or None for deleted)}) are differences seen since it was stored (`--follow`):
    `entries`, `find` and `under` read the stored entries with them applied, so nothing holds the whole tree."""

    CACHED = 2  # chunks kept for `find`/`under` (the follower's lookups of one path)

    def __init__(self, store: Records, key: bytes, head: dict[str, Any]) -> None:
        self.store, self.key, self.head = store, key, head
        self.tampered: list[Tamper] = []
        self.changes: dict[str, tuple[int, Entry | None]] = {}
        self.where = f"store:{HEAD_KIND}/{head.get('host')}/{head.get('policy')}"
        self._bad: set[int] = set()  # chunks already reported tampered
        self.edited = False  # some part failed its keyed hash (stays set once `tampered` is drained)
        self._cache: dict[int, dict[str, Entry]] = {}
        self._ranges: dict[int, list[tuple[int, list[str], list[str]]]] = {}  # watch -> (seq, first, last keys)
        body = {k: v for k, v in head.items() if k != "mac"}
        if not hmac.compare_digest(str(head.get("mac", "")), _mac(key, body)):
            self.edited = True
            self.tampered.append(Tamper(self.where, "the baseline's head does not match its keyed hash (edited, or "
                                                    "sealed with another key)"))

    @property
    def slot(self) -> str | None:
        return self.head.get("slot")

    def _chunk(self, seq: int) -> list[Entry]:
        """One stored chunk's entries (one read by id); a keyed-hash mismatch is reported once in `tampered`."""
        host, pid, slot = self.head.get("host"), self.head.get("policy"), self.head.get("slot")
        chunk = (self.head.get("chunks") or [])[seq]
        doc = self.store.get_record(chunk_kind(host, pid, slot, seq), "0") or {}
        entries = doc.get("entries") or []
        body = [host, pid, slot, seq, doc.get("watch"), entries]
        mac = doc.get("mac", "")
        sealed = hmac.compare_digest(str(mac), _mac(self.key, body)) and hmac.compare_digest(str(mac),
                                                                                            chunk.get("mac", ""))
        if not sealed and seq not in self._bad:
            self._bad.add(seq)
            self.edited = True
            self.tampered.append(Tamper(f"{self.where}#chunk{seq}", "stored entries do not match their keyed hash "
                                        "(edited, removed or replaced)", chunk.get("first"), chunk.get("last")))
        out = []
        for row in entries:
            try:
                out.append(Entry(*row))
            except TypeError:
                continue
        return out

    def _stored(self, watch: int) -> Iterator[Entry]:
        for seq, chunk in enumerate(self.head.get("chunks") or []):
            if chunk.get("watch") == watch:
                yield from self._chunk(seq)

    def entries(self, watch: int) -> Iterator[Entry]:
        """The entries of one watch, in walk order (the stored ones with `changes` applied)."""
        if not self.changes:
            yield from self._stored(watch)
            return
        mine = iter(sorted(((sort_key(p), e) for p, (w, e) in self.changes.items() if w == watch),
                           key=lambda x: x[0]))
        nxt = next(mine, None)
        for e in self._stored(watch):
            k = sort_key(e.path)
            while nxt is not None and nxt[0] < k:
                if nxt[1] is not None:
                    yield nxt[1]
                nxt = next(mine, None)
            if nxt is not None and nxt[0] == k:
                if nxt[1] is not None:
                    yield nxt[1]
                nxt = next(mine, None)
            else:
                yield e
        while nxt is not None:
            if nxt[1] is not None:
                yield nxt[1]
            nxt = next(mine, None)

    def _lookup(self, watch: int, key: list[str]) -> Iterator[int]:
        """The chunks of `watch` whose path range reaches `key` or what lies under it."""
        if watch not in self._ranges:
            self._ranges[watch] = [(seq, sort_key(str(c.get("first"))), sort_key(str(c.get("last"))))
                                   for seq, c in enumerate(self.head.get("chunks") or []) if c.get("watch") == watch]
        for seq, first, last in self._ranges[watch]:
            if last >= key and first[:len(key)] <= key:
                yield seq

    def _cached(self, seq: int) -> dict[str, Entry]:
        if seq not in self._cache:
            if len(self._cache) >= self.CACHED:
                del self._cache[next(iter(self._cache))]
            self._cache[seq] = {e.path: e for e in self._chunk(seq)}
        return self._cache[seq]

    def find(self, watch: int, path: str) -> Entry | None:
        """The entry of `path` (under `watch`), or None (never stored, or deleted since)."""
        if path in self.changes:
            return self.changes[path][1]
        key = sort_key(path)
        for seq in self._lookup(watch, key):
            if (e := self._cached(seq).get(path)) is not None:
                return e
        return None

    def under(self, path: str, watches: int) -> dict[str, tuple[int, Entry]]:
        """{path: (watch, entry)} of `path` and everything under it, over the first `watches` watches."""
        key, below = sort_key(path), path.rstrip("/") + "/"
        out: dict[str, tuple[int, Entry]] = {}
        for w in range(watches):
            for seq in self._lookup(w, key):
                out |= {p: (w, e) for p, e in self._cached(seq).items() if p == path or p.startswith(below)}
        for p, (w, e) in self.changes.items():
            if p == path or p.startswith(below):
                if e is None:
                    out.pop(p, None)
                else:
                    out[p] = (w, e)
        return out


def find_head(store: Records, host: str, policy_id: str) -> dict[str, Any] | None:
    """The stored head of this host's baseline under this policy, or None (one read by id)."""
    return store.get_record(HEAD_KIND, head_id(host, policy_id))


def heads(store: Records) -> Iterable[dict[str, Any]]:
    return store.records(HEAD_KIND)
