"""The audit log's chain, its key and its anchors (threat model: docs/audit.md).

Every entry links to the one before it (`prev_hash`) and carries a digest of its content:
- keyed entries: `hmac-sha256:<key id>:<hex>`, an HMAC-SHA256 under the key file kept outside the store
  (`$SOC_AUDIT_KEY_FILE`, else `$SOC_HOME/audit.key`, created 0600 on first append);
- plain entries (written before soc keyed its chains): the bare SHA-256 hex. They verify as a plain chain, but only
  before the first keyed entry, which records the switch (a plain entry after a keyed one is a rewrite).

Anchors are heads exported outside the store: one JSON line `{store, seq, hash, time}` per appended entry in the
anchor file (`$SOC_AUDIT_ANCHOR_FILE`, else `$SOC_HOME/audit.anchors`; empty disables it), and `soc audit anchor`
to any file or Elasticsearch index. Verification checks every anchored head is still in the store, unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pwd
import secrets
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from correlator.store.base import StoreError

GENESIS = "0" * 64
KEYED = "hmac-sha256"
KEY_ENV = "SOC_AUDIT_KEY_FILE"
ANCHOR_ENV = "SOC_AUDIT_ANCHOR_FILE"
ANCHOR_INDEX = "soc-audit-anchors"


class AuditKeyError(StoreError):
    """The audit key cannot be used: missing while the chain is keyed, unreadable, open to others, or not the
    chain's key when appending."""


def current_actor() -> str:
    """The OS account running soc, from the effective uid (not $USER or $LOGNAME, which anyone can set)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # no passwd entry in some containers
        return f"uid:{uid}"


def _body(prev_hash: str, seq: int, ts: str, actor: str, action: str, details: dict[str, Any]) -> bytes:
    """The canonical bytes an entry's digest covers."""
    body = json.dumps([seq, ts, actor, action, details], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (prev_hash + body).encode()


def entry_hash(prev_hash: str, seq: int, ts: str, actor: str, action: str, details: dict[str, Any]) -> str:
    """The plain (unkeyed) SHA-256 digest of an entry: how chains were sealed before keying."""
    return hashlib.sha256(_body(prev_hash, seq, ts, actor, action, details)).hexdigest()


# -- the key ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditKey:
    """The secret of the keyed chain and its public id (an HMAC of a constant: names the key, reveals nothing)."""

    path: Path
    secret: bytes

    @property
    def id(self) -> str:
        return hmac.new(self.secret, b"soc audit key id", hashlib.sha256).hexdigest()[:16]

    def seal(self, prev_hash: str, seq: int, ts: str, actor: str, action: str, details: dict[str, Any]) -> str:
        """The keyed digest of an entry: `hmac-sha256:<key id>:<hex>`."""
        mac = hmac.new(self.secret, _body(prev_hash, seq, ts, actor, action, details), hashlib.sha256)
        return f"{KEYED}:{self.id}:{mac.hexdigest()}"


def key_path() -> Path:
    """Where the audit key lives: $SOC_AUDIT_KEY_FILE, else `audit.key` in soc's data directory."""
    from correlator.store import data_dir

    return Path(os.environ.get(KEY_ENV) or data_dir() / "audit.key")


def anchor_path() -> Path | None:
    """The anchor file every append writes to: $SOC_AUDIT_ANCHOR_FILE (empty: none), else `audit.anchors` in soc's
    data directory."""
    from correlator.store import data_dir

    value = os.environ.get(ANCHOR_ENV)
    if value is None:
        return data_dir() / "audit.anchors"
    return Path(value) if value else None


def load_key(path: Path) -> AuditKey | None:
    """The key at `path`, or None when there is no file. Refuses a key others may read or a malformed one."""
    try:
        mode = path.stat().st_mode
        if mode & 0o077:
            raise AuditKeyError(f"{path}: the audit key is open to other users (mode {mode & 0o777:o}); "
                                f"`chmod 600 {path}` as the soc service account")
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditKeyError(f"{path}: cannot read the audit key ({exc.__class__.__name__}: "
                            f"{getattr(exc, 'strerror', None) or exc})") from None
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) != 32:
        raise AuditKeyError(f"{path}: not an audit key (expected 64 hex digits)")
    return AuditKey(path, secret)


def create_key(path: Path) -> AuditKey:
    """Create a new random key at `path`, mode 0600 (atomically: a concurrent creator's key wins, and is returned)."""
    from correlator.store import data_dir

    if path.parent == data_dir():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".audit-key-")  # mode 0600
    except OSError as exc:
        raise AuditKeyError(f"{path}: cannot create the audit key ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    except FileExistsError:
        pass
    except OSError as exc:
        raise AuditKeyError(f"{path}: cannot create the audit key ({exc.strerror})") from None
    finally:
        os.unlink(tmp)
    key = load_key(path)
    assert key is not None  # just linked (or created by the concurrent winner)
    return key


def key_id_of(digest: str) -> str | None:
    """The key id a keyed digest names; None for a plain digest."""
    return digest.split(":", 2)[1] if isinstance(digest, str) and digest.startswith(KEYED + ":") else None


# -- anchors ----------------------------------------------------------------------------------------------------------


class Anchors(Protocol):
    """A place heads are exported to, outside the store."""

    where: str

    def append(self, record: dict[str, Any]) -> None: ...

    def read(self, store: str) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
        """This store's anchors as (location, record), and the located problems of unreadable records."""
        ...


def anchor_record(store: str, seq: int, digest: str) -> dict[str, Any]:
    """One anchored head: store (no credentials), seq, hash, time."""
    return {"store": store, "seq": seq, "hash": digest, "time": datetime.now(UTC).isoformat().replace("+00:00", "Z")}


def _check_record(rec: Any) -> str | None:
    if not isinstance(rec, dict):
        return "not a JSON object"
    if not isinstance(rec.get("store"), str) or not isinstance(rec.get("hash"), str):
        return "store and hash must be strings"
    if not isinstance(rec.get("seq"), int) or isinstance(rec.get("seq"), bool) or rec["seq"] < 1:
        return "seq must be a positive integer"
    return None


class FileAnchors:
    """Anchors as JSON lines in a file opened with O_APPEND (make it `chattr +a` to forbid rewriting it)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.where = str(self.path)

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)  # one write of one line: appends never interleave
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot append the audit anchor ({exc.strerror})") from None

    def read(self, store: str) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
        found, problems = [], []
        try:
            with self.path.open("rb") as f:  # lines end at b"\n" only, as they were appended
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except (ValueError, RecursionError) as exc:
                        problems.append(f"{self.path}:{n}: not an anchor record ({exc.__class__.__name__})")
                        continue
                    if reason := _check_record(rec):
                        problems.append(f"{self.path}:{n}: not an anchor record ({reason})")
                    elif rec["store"] == store:
                        found.append((f"{self.path}:{n}", rec))
        except FileNotFoundError:
            raise StoreError(f"{self.path}: no such anchor file") from None
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot read the anchor file ({exc.strerror})") from None
        return found, problems


class EsAnchors:
    """Anchors as documents of an Elasticsearch index, created with op_type=create (give the anchoring user
    `create_doc` only, so an anchor cannot be rewritten)."""

    def __init__(self, url: str, **client_options: Any) -> None:
        """`url`: http(s)://[user:pass@]host:port[/index] (default index soc-audit-anchors)."""
        from elasticsearch import Elasticsearch

        parsed = urlparse(url)
        if not parsed.hostname:
            raise StoreError(f"anchor URL {url!r}: expected http(s)://host:port[/index]")
        self.index = parsed.path.strip("/") or ANCHOR_INDEX
        netloc = parsed.hostname + (f":{parsed.port}" if parsed.port else "")
        base = f"{parsed.scheme}://{netloc}"
        self.where = f"{base}/{self.index}"
        if parsed.username:
            client_options.setdefault("basic_auth", (parsed.username, parsed.password or ""))
        self.es = Elasticsearch(base, **client_options)

    @contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        """Client errors as StoreError naming the anchor index."""
        from elasticsearch import ApiError, TransportError

        try:
            yield
        except (ApiError, TransportError) as exc:
            raise StoreError(f"{self.where}: {what}: {exc}") from None

    def append(self, record: dict[str, Any]) -> None:
        from elasticsearch import BadRequestError

        with self._calls("anchor"):
            try:
                self.es.indices.create(index=self.index, mappings={"properties": {
                    "store": {"type": "keyword"}, "seq": {"type": "long"}, "hash": {"type": "keyword"},
                    "time": {"type": "keyword"}}})
            except BadRequestError as exc:
                if "already_exists" not in str(exc) and "already exists" not in str(exc):
                    raise
            self.es.index(index=self.index, document=record, op_type="create", refresh=True)

    def read(self, store: str) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
        from elasticsearch import NotFoundError

        found, problems, after = [], [], None
        with self._calls("read anchors"):
            try:
                self.es.indices.refresh(index=self.index)
            except NotFoundError:
                raise StoreError(f"{self.where}: no such anchor index") from None
            while True:
                page = {"search_after": after} if after else {}
                hits = self.es.search(index=self.index, query={"term": {"store": store}}, size=1000,
                                      sort=[{"seq": "asc"}, {"time": "asc"}], **page)["hits"]["hits"]
                for h in hits:
                    where = f"{self.where}/_doc/{h['_id']}"
                    if reason := _check_record(h["_source"]):
                        problems.append(f"{where}: not an anchor record ({reason})")
                    else:
                        found.append((where, h["_source"]))
                if len(hits) < 1000:
                    return found, problems
                after = hits[-1]["sort"]


def open_anchors(target: str) -> Anchors:
    """An anchor log: an Elasticsearch index for http(s):// URLs, else an append-only file."""
    if target.startswith(("http://", "https://")):
        return EsAnchors(target)
    return FileAnchors(target)


# -- the chain --------------------------------------------------------------------------------------------------------


class Chain:
    """Seals, anchors and verifies one store's audit entries (the key is read once per Chain)."""

    def __init__(self, store: str) -> None:
        """`store`: the store's name in anchors (its URI without credentials)."""
        self.store = store
        self.key_file = key_path()
        anchor = anchor_path()
        self.anchors: FileAnchors | None = FileAnchors(anchor) if anchor else None
        self._key: AuditKey | None = None

    def key(self, create: bool) -> AuditKey | None:
        """The audit key (created on first use when `create`), or None when there is none."""
        if self._key is None:
            self._key = load_key(self.key_file) or (create_key(self.key_file) if create else None)
        return self._key

    def seal(self, last: str | None, prev_hash: str, seq: int, ts: str, actor: str, action: str,
             details: dict[str, Any]) -> str:
        """The digest of a new entry after the entry whose digest is `last` (None: the first entry).

        Appends are always keyed; the key is created when the chain has no keyed entry yet. A chain keyed with a
        key that is missing or is not this one is refused (AuditKeyError): sealing on would break it.
        """
        chain_key = key_id_of(last) if last else None
        key = self.key(create=chain_key is None)
        if key is None:
            raise AuditKeyError(f"{self.key_file}: the audit chain of {self.store} is keyed (key id {chain_key}) "
                                f"but this key file is missing; restore it (or set {KEY_ENV})")
        if chain_key is not None and chain_key != key.id:
            raise AuditKeyError(f"{self.key_file}: key id {key.id} is not the key the audit chain of {self.store} "
                                f"is keyed with ({chain_key}); set {KEY_ENV} to that key's file")
        return key.seal(prev_hash, seq, ts, actor, action, details)

    def anchored(self, seq: int, digest: str) -> None:
        """Export a new head to the anchor file (when one is configured)."""
        if self.anchors is not None:
            self.anchors.append(anchor_record(self.store, seq, digest))

    def verify(self, entries: Sequence[dict[str, Any]], head: str | None,
               anchors: Iterable[Anchors] = ()) -> list[str]:
        """Check entries (in seq order), the stored head (`seq:hash`) and every anchored head; return the problems,
        each naming the entry. Raises AuditKeyError when the chain is keyed and the key file is missing."""
        problems = verify_chain(entries, self.key(create=False) if _keyed(entries) else None, self.key_file)
        last = f"{entries[-1].get('seq')}:{entries[-1].get('hash')}" if entries else None
        if head != last:
            problems.append(_head_problem(head, entries))
        logs = [*anchors]
        if self.anchors is not None and self.anchors.path.exists() and all(
                getattr(a, "path", None) != self.anchors.path for a in logs):
            logs.append(self.anchors)
        for log in logs:
            problems += check_anchors(entries, *log.read(self.store))
        return problems


def _head_problem(head: str | None, entries: Sequence[dict[str, Any]]) -> str:
    """The stored head (`seq:hash`) does not name the last entry: say which entry is gone or unaccounted for."""
    last_seq = entries[-1].get("seq") if entries else 0
    head_seq = str(head).split(":", 1)[0] if head else ""
    if type(last_seq) is int and head_seq.isascii() and head_seq.isdigit() and int(head_seq) > last_seq:
        return (f"audit entry seq={last_seq + 1}: missing; the stored head is seq={head_seq} but the last entry is "
                f"seq={last_seq}: entries were removed from the end")
    return (f"audit entry seq={last_seq}: the stored head is {head or 'absent'}, not this last entry: entries were "
            "removed from the end, or the head rewritten")


def _keyed(entries: Sequence[dict[str, Any]]) -> bool:
    return any(isinstance(e.get("hash"), str) and key_id_of(e["hash"]) for e in entries)


def verify_chain(entries: Iterable[dict[str, Any]], key: AuditKey | None = None,
                 key_file: Path | None = None) -> list[str]:
    """Check entries (`seq, ts, actor, action, details, prev_hash, hash`, in seq order); return the problems found.

    Plain entries verify with SHA-256, only before the first keyed one; keyed entries with `key`
    (AuditKeyError when there is none)."""
    problems: list[str] = []
    prev, expected_seq, keyed_at, wrong_key = GENESIS, 1, None, False
    for e in entries:
        if reason := malformed(e):
            problems.append(f"audit entry seq={e.get('seq')!r}: malformed ({reason})")
            prev, expected_seq = e.get("hash"), expected_seq + 1
            continue
        where = f"audit entry seq={e['seq']}"
        if e["seq"] != expected_seq:
            problems.append(f"{where}: expected seq {expected_seq} (entries deleted or reordered)")
        if e["prev_hash"] != prev:
            problems.append(f"{where}: prev_hash does not link to the entry before it")
        fields = (e["prev_hash"], e["seq"], e["ts"], e["actor"], e["action"], e["details"])
        kid = key_id_of(e["hash"])
        if kid is None:
            if keyed_at is not None:
                problems.append(f"{where}: unkeyed entry after the chain was keyed at seq={keyed_at} "
                                "(rewritten without the key)")
            elif entry_hash(*fields) != e["hash"]:
                problems.append(f"{where}: content does not match its hash (edited)")
        else:
            keyed_at = keyed_at or e["seq"]
            if key is None:
                raise AuditKeyError(f"{key_file or key_path()}: the audit chain is keyed from seq={keyed_at} "
                                    f"(key id {kid}) but the key file is missing; cannot verify (set {KEY_ENV})")
            if kid != key.id:
                if not wrong_key:
                    problems.append(f"{where}: sealed with key id {kid}, but {key.path} holds key id {key.id} "
                                    "(key file replaced, or the chain rewritten with another key)")
                wrong_key = True
            elif not hmac.compare_digest(key.seal(*fields), e["hash"]):
                problems.append(f"{where}: content does not match its hash (edited)")
        prev, expected_seq = e["hash"], e["seq"] + 1
    return problems


def malformed(entry: dict[str, Any]) -> str | None:
    """Why `entry` is not an audit entry (a store writer can put anything in a row or document), or None."""
    seq = entry.get("seq")
    if type(seq) is not int:
        return "seq is not an integer"
    for name in ("ts", "actor", "action", "prev_hash", "hash"):
        if not isinstance(entry.get(name), str):
            return f"{name} is not a string"
    if "details" not in entry:
        return "details missing"
    try:
        json.dumps(entry["details"], allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"details are not JSON ({exc.__class__.__name__})"
    return None


def check_anchors(entries: Sequence[dict[str, Any]], anchored: list[tuple[str, dict[str, Any]]],
                  problems: list[str]) -> list[str]:
    """Every anchored head must still be in the chain with the same hash; returns `problems` extended."""
    have = {e["seq"]: e["hash"] for e in entries if not malformed(e)}
    out = list(problems)
    for where, rec in anchored:
        seq, digest = rec["seq"], have.get(rec["seq"])
        if digest is None:
            out.append(f"audit entry seq={seq}: anchored at {rec.get('time')} ({where}) but missing from the store "
                       "(deleted)")
        elif digest != rec["hash"]:
            out.append(f"audit entry seq={seq}: hash differs from the one anchored at {rec.get('time')} ({where}) "
                       "(rewritten)")
    return out
