"""`LogTail`: complete lines of one log file from a checkpoint (inode + byte offset) onwards, following rotation
(rename + new file) and truncation, so a re-run or a follow neither loses nor repeats a line."""

from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sensors.logs.fields import LogError


class LogTail:
    """Reads complete lines of one log file from its checkpoint onwards, following rotation when asked."""

    def __init__(self, path: str, checkpoint: Path | None) -> None:
        self.path = os.path.abspath(path)
        self.checkpoint = checkpoint
        self.fh = None
        self.inode = 0
        self.offset = 0          # byte offset after the last line handed out
        self.incomplete = 0      # bytes of a trailing line without newline left for later
        self.header: list[bytes] = []  # leading '#' lines (Zeek TSV) of the current file

    # checkpoint
    def _load(self) -> dict | None:
        if self.checkpoint and self.checkpoint.exists():
            try:
                return json.loads(self.checkpoint.read_text())
            except (OSError, ValueError):
                return None
        return None

    def commit(self) -> None:
        """Persist the current position (call after the events read so far are stored)."""
        if self.checkpoint is None:
            return
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint.with_suffix(".tmp")
        tmp.write_text(json.dumps({"path": self.path, "inode": self.inode, "offset": self.offset}))
        os.replace(tmp, self.checkpoint)

    # reading
    def _open(self, path: str, offset: int) -> None:
        if self.fh:
            self.fh.close()
        self.fh = open(path, "rb")  # noqa: SIM115 - kept open while following
        st = os.fstat(self.fh.fileno())
        self.inode = st.st_ino
        if offset > st.st_size:  # truncated since the checkpoint (copytruncate rotation)
            offset = 0
        self.header = []
        for line in self.fh:
            if not line.startswith(b"#"):
                break
            self.header.append(line)
        self.fh.seek(offset)
        self.offset = offset

    def _rotated_predecessor(self, inode: int) -> str | None:
        """The rotated file (path.1, path-2024…, …) that still has the checkpoint's inode."""
        for cand in sorted(glob.glob(glob.escape(self.path) + "?*")):
            try:
                if os.stat(cand).st_ino == inode:
                    return cand
            except OSError:
                continue
        return None

    def lines(self, follow: bool = False, stop: Callable[[], bool] = lambda: False,
              poll: float = 0.5) -> Iterator[tuple[int, bytes]]:
        """Yield (byte offset, line without newline) from the checkpoint on; with `follow`, wait for more,
        yielding (-1, None) each time the file is idle."""
        state = self._load()
        try:
            cur = os.stat(self.path)
        except OSError as exc:
            raise LogError(f"{self.path}: cannot read ({exc.strerror})") from exc
        if state and state.get("inode") == cur.st_ino:
            self._open(self.path, int(state.get("offset", 0)))
        elif state and (old := self._rotated_predecessor(state.get("inode", -1))):
            self._open(old, int(state.get("offset", 0)))  # finish the rotated file first
            yield from self._drain()
            self._open(self.path, 0)
        else:
            self._open(self.path, 0)
        while True:
            yield from self._drain()
            if not follow or stop():
                return
            try:
                st = os.stat(self.path)
            except OSError:
                st = None
            if st is not None and st.st_ino != self.inode:  # rotated: finish the old file, then the new one
                yield from self._drain()
                self._open(self.path, 0)
                continue
            if st is not None and st.st_size < self.offset:  # truncated in place
                self._open(self.path, 0)
                continue
            yield -1, None  # idle: lets the caller flush what it holds
            time.sleep(poll)

    def _drain(self) -> Iterator[tuple[int, bytes]]:
        fh = self.fh
        fh.seek(self.offset)
        for line in fh:
            if not line.endswith(b"\n"):
                self.incomplete = len(line)
                break
            start = self.offset
            self.offset += len(line)
            self.incomplete = 0
            yield start, line.rstrip(b"\r\n")

    def close(self) -> None:
        if self.fh:
            self.fh.close()
            self.fh = None


