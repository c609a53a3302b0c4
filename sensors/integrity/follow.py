"""`scan --follow`: inotify (watchdog) for changes as they happen, a full scan every interval for what inotify
misses (queue overflow, changes while soc was not running, other filesystems).

The follower streams against the stored baseline as `scan` does: a path inotify names is compared with its stored
entry (read by chunk, by id), and what it found since is held as the baseline's pending `changes` (bounded by the
changes, not by the tree), so each change is reported once. Every full scan walks against the stored baseline with
those changes applied and stores the walk as the new baseline (the other slot); on stopping, the stored baseline
with the changes applied is stored.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from sensors.compliance.rootfs import RootFS, Unreadable
from sensors.integrity.baseline import Baseline, BaselineWriter, Records
from sensors.integrity.events import EventMaker, changed_attributes
from sensors.integrity.policy import Watch, WatchPolicy
from sensors.integrity.scan import ScanStats, nested, scan
from sensors.integrity.walker import entry_of, sort_key, walk

QUIET = 0.3  # seconds without new inotify events before the dirty paths are examined


class _Dirty(FileSystemEventHandler):
    """Collects the real paths inotify names (watchdog calls from its own thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.paths: set[str] = set()
        self.last = 0.0

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        with self.lock:
            for p in (event.src_path, getattr(event, "dest_path", "")):
                if p:
                    self.paths.add(os.fsdecode(p))
            self.last = time.monotonic()

    def take(self) -> set[str]:
        with self.lock:
            if not self.paths or time.monotonic() - self.last < QUIET:
                return set()
            out, self.paths = self.paths, set()
            return out


class Follower:
    """Follows one host's watches under a policy from the stored baseline `head`."""

    def __init__(self, fs: RootFS, policy: WatchPolicy, host: str, head: dict[str, Any], store: Records,
                 key: bytes, actor: str) -> None:
        self.fs, self.policy, self.host, self.store, self.key, self.head = fs, policy, host, store, key, head
        self.actor = actor
        self.reported = 0  # differences reported since the baseline was last stored
        self.base = Baseline(store, key, head)  # with the changes seen since it was stored

    def run(self, make_maker: Callable[[], EventMaker], emit: Callable[[list[dict[str, Any]]], None],
            stop: Callable[[], bool], interval: float) -> None:
        """Watch until `stop()`; each batch of changes goes to `emit` as events."""
        dirty = _Dirty()
        observer = Observer()
        for w in self.policy.watches:
            try:
                real = self.fs.host_path(w.path)
            except (FileNotFoundError, Unreadable):
                continue
            if os.path.isdir(real):
                observer.schedule(dirty, real, recursive=True)
        observer.start()
        next_full = time.monotonic() + interval
        try:
            while not stop():
                time.sleep(0.1)
                paths = dirty.take()
                if paths:
                    maker = make_maker()
                    events = [ev for p in sorted(paths) for ev in self.examine(self._inside(p), maker)]
                    events += self._tampered(maker)
                    if events:
                        self.reported += len(events)
                        emit(events)
                if time.monotonic() >= next_full:
                    events = self.full_scan(make_maker())
                    if events:
                        emit(events)
                    next_full = time.monotonic() + interval
        finally:
            observer.stop()
            observer.join(timeout=5)
            maker = make_maker()
            self.persist(maker.ts)
            if events := self._tampered(maker):  # the stored baseline was edited: not re-sealed, reported
                emit(events)

    def _inside(self, real: str) -> str:
        root = self.fs.root.rstrip("/")
        return real[len(root):] or "/" if root else real

    def watch_of(self, path: str) -> tuple[int, Watch] | None:
        """The most specific watch holding `path`, unless an ignore pattern leaves it (or a parent) out."""
        best: tuple[int, Watch] | None = None
        for i, w in enumerate(self.policy.watches):
            base = w.path.rstrip("/")
            if (path == w.path or path.startswith(base + "/")) and (best is None or len(w.path) > len(best[1].path)):
                best = (i, w)
        if best is None:
            return None
        w = best[1]
        rel = path[len(w.path.rstrip("/")) + 1:]
        parts = rel.split("/") if rel else []
        for n in range(1, len(parts) + 1):
            if w.ignore.match("/".join(parts[:n]), parts[n - 1]):
                return None
        return best

    def examine(self, path: str, maker: EventMaker) -> list[dict[str, Any]]:
        """Events for one path inotify named (and, for a new or vanished folder, everything under it)."""
        found = self.watch_of(path)
        if found is None:
            return []
        i, watch = found
        out: list[dict[str, Any]] = []
        try:
            real = self.fs.host_path(path)
            st = os.lstat(real)
        except (FileNotFoundError, Unreadable, OSError):
            gone = self.base.under(path, len(self.policy.watches))
            for p in sorted(gone, key=sort_key):
                w, old = gone[p]
                self.base.changes[p] = (w, None)
                out.append(maker.file_event(self.policy.watches[w], "deletion", old, None, []))
            return out
        new = entry_of(self.fs, path, st, real, "sha256" in watch.attributes)
        known = self.base.find(i, path)
        if known is None:
            entries = walk(self.fs, replace(watch, path=path), nested(self.policy, watch)) \
                if new.type == "dir" else iter([new])
            for e in entries:
                if self.base.find(i, e.path) is None:
                    self.base.changes[e.path] = (i, e)
                    out.append(maker.file_event(watch, "creation", None, e, []))
            return out
        if new != known:
            self.base.changes[path] = (i, new)
        if changed := changed_attributes(known, new, watch.attributes):
            out.append(maker.file_event(watch, "change", known, new, changed))
        return out

    def full_scan(self, maker: EventMaker) -> list[dict[str, Any]]:
        """Walk everything against the stored baseline with the changes applied (what inotify missed) and store the
        walk as the new baseline, as `scan --update` does."""
        writer = self._writer(maker.ts)
        out = list(scan(self.fs, self.policy, maker, self.base, writer, ScanStats()))
        self.reported += len(out)
        self._commit(writer)
        return out

    def persist(self, when: str) -> None:
        """Store the baseline with the changes applied (the other slot; the head switched last). A stored baseline
        found edited meanwhile is left as it is (the next scan reports it), never re-sealed."""
        writer = self._writer(when)
        for i in range(len(self.policy.watches)):
            for e in self.base.entries(i):
                writer.add(i, e)
        if not self.base.edited:
            self._commit(writer)

    def _writer(self, when: str) -> BaselineWriter:
        return BaselineWriter(self.store, self.key, self.host, self.policy.id, self.policy.digest, when,
                              self.head.get("slot"))

    def _commit(self, writer: BaselineWriter) -> None:
        self.head = writer.commit()
        self.base = Baseline(self.store, self.key, self.head)
        self.store.audit("integrity-baseline-update", {"host": self.host, "policy": self.policy.id,
                                                       "entries": writer.count, "differences": self.reported,
                                                       "by": "follow"}, actor=self.actor)
        self.reported = 0

    def _tampered(self, maker: EventMaker) -> list[dict[str, Any]]:
        """Events for the parts of the stored baseline found edited since the last were reported."""
        out = [maker.tamper_event(t) for t in self.base.tampered]
        self.base.tampered.clear()
        return out
