"""Compare a walk with a baseline (a streaming merge in walk order) and turn each difference into an ECS event.

Event shape (`event.dataset: integrity.file`): `event.category: [file]`, `event.type: [creation|change|deletion]`,
`file.*` (the new state; the baseline's for a deletion), `file.hash.sha256`, `soc.integrity.changed` (attribute
names), `soc.integrity.old.*` / `soc.integrity.new.*` (their values), `soc.integrity.setuid|setgid`,
`soc.integrity.tags`, `soc.integrity.label.*` (the watch's classification level) and
`soc.integrity.change_window` (the change was seen inside one of the policy's windows). The labels become
`gov.label.*` through `LabelEnricher`, after the classification policy's enricher.
"""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from sensors.integrity.baseline import Tamper
from sensors.integrity.policy import Watch, WatchPolicy
from sensors.integrity.walker import Entry, sort_key

DATASET = "integrity.file"
# attribute -> the Entry fields it compares
_FIELDS = {"sha256": ("sha256",), "size": ("size",), "mode": ("mode", "type"), "owner": ("uid",), "group": ("gid",),
           "mtime": ("mtime_ns",), "inode": ("inode",), "link": ("target",)}
_ACTIONS = {"creation": "created", "change": "updated", "deletion": "deleted"}


def changed_attributes(old: Entry, new: Entry, attributes: frozenset[str]) -> list[str]:
    """The watched attributes whose values differ (in ATTRIBUTES order)."""
    out = []
    for attr, fields in _FIELDS.items():
        if attr in attributes and any(getattr(old, f) != getattr(new, f) for f in fields):
            out.append(attr)
    if old.type != new.type and "type" not in out:
        out.append("type")
    return out


def diff(old: Iterable[Entry], new: Iterable[Entry], attributes: frozenset[str],
         unreadable: list[str] | None = None) -> Iterator[tuple[str, Entry | None, Entry | None, list[str]]]:
    """(event type, old, new, changed attributes) for each difference; both inputs in walk order. Entries below a
    folder the walk could not list (`unreadable`, filled by the walk) are not reported deleted: they are unknown."""
    olds, news = iter(old), iter(new)
    o, n = next(olds, None), next(news, None)
    ok = sort_key(o.path) if o is not None else None
    nk = sort_key(n.path) if n is not None else None
    while o is not None or n is not None:
        if n is None or (o is not None and ok < nk):  # type: ignore[operator]
            if not (unreadable and any(o.path.startswith(u.rstrip("/") + "/") for u in unreadable)):  # type: ignore[union-attr]
                yield "deletion", o, None, []
            o = next(olds, None)
            ok = sort_key(o.path) if o is not None else None
        elif o is None or nk < ok:  # type: ignore[operator]
            yield "creation", None, n, []
            n = next(news, None)
            nk = sort_key(n.path) if n is not None else None
        else:
            if o != n:
                changed = changed_attributes(o, n, attributes)
                if changed:
                    yield "change", o, n, changed
            o, n = next(olds, None), next(news, None)
            ok = sort_key(o.path) if o is not None else None
            nk = sort_key(n.path) if n is not None else None


def _values(e: Entry, attributes: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": e.type}
    if "sha256" in attributes and e.sha256 is not None:
        out["sha256"] = e.sha256
    if "size" in attributes:
        out["size"] = e.size
    if "mode" in attributes:
        out["mode"] = f"{e.mode:04o}"
    if "owner" in attributes:
        out["uid"] = e.uid
    if "group" in attributes:
        out["gid"] = e.gid
    if "mtime" in attributes:
        out["mtime"] = _iso_ns(e.mtime_ns)
    if "inode" in attributes:
        out["inode"] = str(e.inode)
    if "link" in attributes and e.target is not None:
        out["target_path"] = e.target
    return out


def _iso_ns(ns: int) -> str:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{(ns % 1_000_000_000) // 1000:06d}Z"


class EventMaker:
    """Builds the ECS events of one scan (host, policy, time, owner names and labels fixed for the scan)."""

    def __init__(self, policy: WatchPolicy, host: str, now: datetime, levels: dict[str, tuple[int, str]],
                 users: dict[int, str] | None = None, groups: dict[int, str] | None = None) -> None:
        self.policy, self.host, self.now = policy, host, now
        self.ts = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self.levels = levels  # level name -> (rank, arabic name)
        self.users, self.groups = users or {}, groups or {}
        self.in_window = policy.in_change_window(now)

    def file_event(self, watch: Watch, kind: str, old: Entry | None, new: Entry | None,
                   changed: list[str]) -> dict[str, Any]:
        cur = new or old
        assert cur is not None
        attrs = watch.attributes
        name = cur.path.rsplit("/", 1)[-1]
        ev: dict[str, Any] = {
            "@timestamp": self.ts, "event.kind": "event", "event.category": ["file"], "event.type": [kind],
            "event.action": _ACTIONS[kind], "event.dataset": DATASET, "event.module": "integrity",
            "host.name": self.host, "file.path": cur.path, "file.name": name,
            "file.directory": cur.path.rsplit("/", 1)[0] or "/", "file.type": cur.type,
            "soc.integrity.policy.id": self.policy.id, "soc.integrity.watch.path": watch.path,
            "soc.integrity.change_window": self.in_window,
        }
        if "." in name.strip("."):
            ev["file.extension"] = name.rsplit(".", 1)[-1]
        values = _values(cur, attrs)
        for k, v in values.items():
            if k == "sha256":
                ev["file.hash.sha256"] = v
            elif k != "type":
                ev[f"file.{k}"] = v
        if "owner" in attrs and cur.uid in self.users:
            ev["file.owner"] = self.users[cur.uid]
        if "group" in attrs and cur.gid in self.groups:
            ev["file.group"] = self.groups[cur.gid]
        special = cur.mode & (stat.S_ISUID | stat.S_ISGID)
        if cur.type == "file" and special:
            ev["soc.integrity.setuid"] = bool(cur.mode & stat.S_ISUID)
            ev["soc.integrity.setgid"] = bool(cur.mode & stat.S_ISGID)
        if kind == "change":
            ov, nv = _values(old, attrs), _values(new, attrs)  # type: ignore[arg-type]
            keys = [k for k in nv.keys() | ov.keys() if ov.get(k) != nv.get(k)]
            ev["soc.integrity.changed"] = changed
            for k in sorted(keys):
                if k in ov:
                    ev[f"soc.integrity.old.{k}"] = ov[k]
                if k in nv:
                    ev[f"soc.integrity.new.{k}"] = nv[k]
        if watch.tags:
            ev["soc.integrity.tags"] = list(watch.tags)
        self._label(ev, watch.label)
        verb = {"creation": "created", "change": "changed (" + ", ".join(changed) + ")", "deletion": "deleted"}[kind]
        ev["message"] = f"{cur.type} {cur.path} {verb}"
        ev["event.id"] = _id(self.host, self.policy.id, kind, old, new)
        return ev

    def tamper_event(self, t: Tamper) -> dict[str, Any]:
        """The stored baseline itself was edited: reported as a changed file (the store's record)."""
        ev = {"@timestamp": self.ts, "event.kind": "event", "event.category": ["file"], "event.type": ["change"],
              "event.action": "baseline-tampered", "event.dataset": DATASET, "event.module": "integrity",
              "host.name": self.host, "file.path": t.where, "file.type": "baseline",
              "soc.integrity.policy.id": self.policy.id, "soc.integrity.baseline.tampered": True,
              "soc.integrity.changed": ["baseline"], "message": f"{t.where}: {t.reason}"}
        if t.first:
            ev["soc.integrity.baseline.first_path"] = t.first
            ev["soc.integrity.baseline.last_path"] = t.last
        ev["event.id"] = _hash([self.host, self.policy.id, t.where, t.reason, self.ts])
        return ev

    def _label(self, ev: dict[str, Any], level: str | None) -> None:
        if level and level in self.levels:
            rank, ar = self.levels[level]
            ev.update({"soc.integrity.label.level": level, "soc.integrity.label.rank": rank,
                       "soc.integrity.label.ar": ar})


def _id(host: str, policy: str, kind: str, old: Entry | None, new: Entry | None) -> str:
    """Deterministic: the same difference from the same baseline is the same event (a re-scan stores no copy)."""
    return _hash([host, policy, kind, list(old) if old else None, list(new) if new else None])


def _hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, separators=(",", ":")).encode()).hexdigest()[:32]


class LabelEnricher:
    """Pipeline enricher: a file event's label is its watch's level (or the policy's, if higher)."""

    def __call__(self, events: list[dict[str, Any]]) -> None:
        for ev in events:
            rank = ev.get("soc.integrity.label.rank")
            if rank is None or int(ev.get("gov.label.rank") or 0) > rank:
                continue
            ev["gov.label.level"] = ev["soc.integrity.label.level"]
            ev["gov.label.rank"] = rank
            ev["gov.label.ar"] = ev.get("soc.integrity.label.ar")


def names_from(lines: list[str]) -> dict[int, str]:
    """uid/gid -> name from passwd/group lines (the scanned tree's own, not this machine's)."""
    out: dict[int, str] = {}
    for line in lines:
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            out.setdefault(int(parts[2]), parts[0])
    return out
