"""Read-only view of a directory tree as if it were `/` (chroot semantics, without privileges).

Every path is resolved component by component: `..` stops at the root and an absolute symlink target is
re-rooted, so no lookup ever leaves the tree. Files are opened `O_RDONLY | O_NOFOLLOW | O_NONBLOCK` (plus
`O_NOATIME` where permitted) and only regular files are read, so a FIFO or device cannot block or be touched.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import PurePosixPath

MAX_READ = 16 * 1024 * 1024
_MAX_LINKS = 40
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class Unreadable(Exception):
    """A path that cannot be read; `str()` is the reason shown to the user."""


class RootFS:
    """Resolve and read paths under `root`; never writes, never leaves the tree."""

    def __init__(self, root: str = "/") -> None:
        self.root = os.path.realpath(root)
        self.is_live = self.root == "/"

    def host_path(self, path: str) -> str:
        """The real path of `path` (absolute, as seen from inside the root), symlinks resolved inside the root.

        Raises FileNotFoundError when a component is missing, Unreadable on loops or permission errors.
        """
        parts = [p for p in PurePosixPath("/" + path).parts[1:]]
        resolved: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            real = os.path.join(self.root, *resolved, part)
            try:
                st = os.lstat(real)
            except FileNotFoundError:
                raise
            except NotADirectoryError as exc:
                raise FileNotFoundError(errno.ENOENT, "not a directory", path) from exc
            except PermissionError as exc:
                raise Unreadable(f"permission denied: {path}") from exc
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > _MAX_LINKS:
                    raise Unreadable(f"too many symbolic links: {path}")
                target = os.readlink(real)
                if target.startswith("/"):
                    resolved = []
                parts = [p for p in PurePosixPath(target).parts if p != "/"] + parts
                continue
            resolved.append(part)
        return os.path.join(self.root, *resolved)

    def stat(self, path: str) -> os.stat_result | None:
        """stat() of `path` following in-root symlinks; None when it does not exist."""
        try:
            return os.lstat(self.host_path(path))
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            raise Unreadable(f"permission denied: {path}") from exc

    def is_file(self, path: str) -> bool:
        st = self.stat(path)
        return st is not None and stat.S_ISREG(st.st_mode)

    def is_dir(self, path: str) -> bool:
        st = self.stat(path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def read_text(self, path: str) -> str:
        """Text of a regular file (undecodable bytes replaced). Raises FileNotFoundError or Unreadable."""
        real = self.host_path(path)
        try:
            fd = _open_readonly(real)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise Unreadable(f"cannot open {path}: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise Unreadable(f"not a regular file: {path}")
            chunks, size = [], 0
            while size <= MAX_READ:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks).decode("utf-8", "replace")
        except OSError as exc:
            raise Unreadable(f"cannot read {path}: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def read_lines(self, path: str) -> list[str]:
        return [line.rstrip("\r") for line in self.read_text(path).split("\n")]

    def listdir(self, path: str) -> list[str]:
        """Sorted names in a directory; [] when missing. Raises Unreadable when it cannot be listed."""
        try:
            return sorted(os.listdir(self.host_path(path)))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise Unreadable(f"cannot list {path}: {exc.strerror}") from exc

    def readlink(self, path: str) -> str | None:
        parent, name = os.path.split(path)
        try:
            return os.readlink(os.path.join(self.host_path(parent), name))
        except OSError:
            return None

    def walk(self, top: str, skip: frozenset[str] = frozenset()) -> Iterator[tuple[str, os.stat_result]]:
        """(in-root path, lstat) for everything below `top`: no symlinks followed, one filesystem only."""
        try:
            base = self.host_path(top)
        except (FileNotFoundError, Unreadable):
            return
        start = os.stat(base)
        if not stat.S_ISDIR(start.st_mode):
            return
        top = top.rstrip("/")
        stack = [(top, base)]  # below `top` every directory is real (lstat), so no further resolution is needed
        while stack:
            current, real = stack.pop()
            try:
                entries = sorted(os.scandir(real), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                child = f"{current}/{entry.name}"
                if child in skip:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                yield child, st
                if stat.S_ISDIR(st.st_mode) and st.st_dev == start.st_dev:
                    stack.append((child, entry.path))


def _open_readonly(real: str) -> int:
    noatime = getattr(os, "O_NOATIME", 0)
    if noatime:
        try:
            return os.open(real, _OPEN_FLAGS | noatime)
        except PermissionError:
            pass  # O_NOATIME needs ownership; fall back to a plain read-only open
    return os.open(real, _OPEN_FLAGS)
