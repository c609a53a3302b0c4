"""`scan --follow`: inotify (watchdog) for changes as they happen, a full scan every interval for what inotify
misses (queue overflow, changes while soc was not running, other filesystems).

The follower keeps the watched entries' state in memory (loaded from the stored baseline), reports each change once
and moves the state on; the stored baseline is rewritten from it at every full scan and when the follower stops.
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
from sensors.integrity.events import EventMaker, changed_attributes, diff
from sensors.integrity.policy import Watch, WatchPolicy
from sensors.integrity.scan import nested
from sensors.integrity.walker import Entry, entry_of, sort_key, walk

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
        self.state: dict[str, tuple[int, Entry]] = {}
        base = Baseline(store, key, head)
        for i in range(len(policy.watches)):
            for e in base.entries(i):
                self.state[e.path] = (i, e)  # (an edited baseline was reported by the scan before the follow)

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
            self.persist(make_maker().ts)

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
            gone = [p for p in self.state if p == path or p.startswith(path.rstrip("/") + "/")]
            for p in sorted(gone, key=sort_key):
                w, old = self.state.pop(p)
                out.append(maker.file_event(self.policy.watches[w], "deletion", old, None, []))
            return out
        new = entry_of(self.fs, path, st, real, "sha256" in watch.attributes)
        known = self.state.get(path)
        if known is None:
            entries = walk(self.fs, replace(watch, path=path), nested(self.policy, watch)) \
                if new.type == "dir" else iter([new])
            for e in entries:
                if e.path not in self.state:
                    self.state[e.path] = (i, e)
                    out.append(maker.file_event(watch, "creation", None, e, []))
            return out
        changed = changed_attributes(known[1], new, watch.attributes)
        self.state[path] = (i, new)
        if changed:
            out.append(maker.file_event(watch, "change", known[1], new, changed))
        return out

    def full_scan(self, maker: EventMaker) -> list[dict[str, Any]]:
        """Walk everything again against the state (what inotify missed), then store the state as the baseline."""
        out: list[dict[str, Any]] = []
        for i, watch in enumerate(self.policy.watches):
            old = sorted((e for w, e in self.state.values() if w == i), key=lambda e: sort_key(e.path))
            for kind, o, n, changed in diff(old, walk(self.fs, watch, nested(self.policy, watch)), watch.attributes):
                out.append(maker.file_event(watch, kind, o, n, changed))
                if n is None:
                    self.state.pop(o.path, None)  # type: ignore[union-attr]
                else:
                    self.state[n.path] = (i, n)
        self.reported += len(out)
        self.persist(maker.ts)
        return out

    def persist(self, when: str) -> None:
        """Store the state as this host's baseline (the other slot; the head switched last)."""
        writer = BaselineWriter(self.store, self.key, self.host, self.policy.id, self.policy.digest, when,
                                self.head.get("slot"))
        for i in range(len(self.policy.watches)):
            for e in sorted((e for w, e in self.state.values() if w == i), key=lambda e: sort_key(e.path)):
                writer.add(i, e)
        self.head = writer.commit()
        self.store.audit("integrity-baseline-update", {"host": self.host, "policy": self.policy.id,
                                                       "entries": writer.count, "differences": self.reported,
                                                       "by": "follow"}, actor=self.actor)
        self.reported = 0
