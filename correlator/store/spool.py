"""Append-only, fsync'd on-disk spool for batches a store could not take; replayed when it is back."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from correlator.store.base import Store, StoreRejected


class Spool:
    """Batches waiting for one store, as NDJSON segment files (one line per batch) in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._segment: Path | None = None
        self.skipped_lines: list[str] = []

    def append(self, kind: str, items: list[dict[str, Any]]) -> None:
        """Durably record one batch (`kind` is `events` or `alerts`) before returning."""
        if self._segment is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._segment = self.directory / f"{time.time_ns():020d}-{os.getpid()}.ndjson"
        data = (json.dumps({"kind": kind, "items": items}, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        while True:
            fd = os.open(self._segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # a replay holds this lock while it reads and removes the file
                if os.fstat(fd).st_nlink == 0:  # replayed and removed meanwhile: start the file anew
                    continue
                os.write(fd, data)
                os.fsync(fd)
                break
            finally:
                os.close(fd)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the segment's directory entry is durable too
        finally:
            os.close(dir_fd)

    def segments(self) -> list[Path]:
        return sorted(self.directory.glob("*.ndjson")) if self.directory.is_dir() else []

    def pending(self) -> dict[str, int]:
        """Counts of spooled batches, events and alerts."""
        counts = {"batches": 0, "events": 0, "alerts": 0}
        for _, kind, items in self._records():
            counts["batches"] += 1
            counts[kind] += len(items)
        return counts

    def _records(self) -> Iterator[tuple[Path, str, list[dict[str, Any]]]]:
        for seg in self.segments():
            with seg.open("rb") as fh:
                for n, raw in enumerate(fh, 1):
                    try:
                        rec = json.loads(raw)
                    except ValueError:  # a line cut short by a crash mid-append was never acknowledged
                        self.skipped_lines.append(f"{seg}:{n}: incomplete spool record skipped")
                        continue
                    yield seg, rec["kind"], rec["items"]

    def replay(self, store: Store) -> dict[str, int]:
        """Write every spooled batch to `store` (idempotent there), removing each segment once it is all written.

        Raises the store's error if it is still unavailable; what was not written stays spooled.
        """
        done = {"events": 0, "alerts": 0, "new_events": 0}
        if not self.segments():
            return done
        with _locked(self.directory):
            for seg in self.segments():
                with seg.open("rb") as fh:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # no append can interleave until it is removed
                    for raw in fh:
                        try:
                            rec = json.loads(raw)
                        except ValueError:
                            continue
                        try:
                            if rec["kind"] == "events":
                                done["new_events"] += store.write_events(rec["items"])
                            else:
                                store.write_alerts(rec["items"])
                        except StoreRejected as exc:  # refused for good: the rest was written; name the refused
                            done["new_events"] += exc.new if rec["kind"] == "events" else 0
                            self.skipped_lines.extend(f"{seg}: store refused {p}" for p in exc.problems)
                        done[rec["kind"]] += len(rec["items"])
                seg.unlink()
        return done


class _locked:
    """An exclusive lock on the spool directory, so two replays never interleave."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / ".lock"

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *_: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
