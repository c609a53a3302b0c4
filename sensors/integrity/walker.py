"""Walk a watched folder read-only under a root (sensors.compliance.rootfs confinement) and take each entry's
attributes. Entries come in one fixed order (depth first, names sorted: the order of their path components), so a
walk and a stored baseline are compared by a streaming merge and nothing holds the tree."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from typing import NamedTuple

from sensors.compliance.rootfs import RootFS, Unreadable, _open_readonly
from sensors.integrity.policy import Watch

_BUF = bytearray(1 << 18)  # one read buffer for every file (a per-file allocation costs more than hashing small files)
_VIEW = memoryview(_BUF)
_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFIFO: "fifo",
          stat.S_IFSOCK: "socket", stat.S_IFCHR: "char", stat.S_IFBLK: "block"}


class Entry(NamedTuple):
    """One path's attributes (a tuple: compact in memory and as stored JSON)."""

    path: str
    type: str
    mode: int  # permission and special bits (stat.S_IMODE)
    uid: int
    gid: int
    size: int
    mtime_ns: int
    inode: int
    sha256: str | None  # regular files, when the watch asks for it
    target: str | None  # symbolic links


def sort_key(path: str) -> list[str]:
    """The walk order: by path components (so `/a/b` comes before `/a-c`, as depth-first with sorted names)."""
    return path.split("/")


def entry_of(fs: RootFS, path: str, st: os.stat_result, real: str, hash_files: bool) -> Entry:
    """The attributes of `path` (lstat `st`, real path `real` under the root)."""
    fmt = stat.S_IFMT(st.st_mode)
    digest = target = None
    if fmt == stat.S_IFREG and hash_files:
        digest = sha256_of(real)
    elif fmt == stat.S_IFLNK:
        try:
            target = os.readlink(real)
        except OSError:
            target = None
    return Entry(path, _KINDS.get(fmt, "other"), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size,
                 st.st_mtime_ns, st.st_ino, digest, target)


def sha256_of(real: str) -> str | None:
    """SHA-256 of a regular file's content (opened O_NOFOLLOW|O_NONBLOCK, no atime update); None if unreadable."""
    try:
        fd = _open_readonly(real)
    except OSError:
        return None
    try:
        h = hashlib.sha256()
        while n := os.readv(fd, [_BUF]):
            h.update(_VIEW[:n])
        return h.hexdigest()
    except OSError:
        return None
    finally:
        os.close(fd)


def walk(fs: RootFS, watch: Watch, skip: frozenset[str] = frozenset(),
         unreadable: list[str] | None = None) -> Iterator[Entry]:
    """Every entry of the watched folder (itself first), in `sort_key` order, ignored paths and `skip` (other
    watches nested inside this one) left out; one filesystem, no symlink followed, nothing written. A folder that
    cannot be listed is appended to `unreadable` (before any entry after it is yielded)."""
    try:
        real = fs.host_path(watch.path)
        st = os.lstat(real)
    except (FileNotFoundError, Unreadable, OSError):
        return
    hash_files = "sha256" in watch.attributes
    yield entry_of(fs, watch.path, st, real, hash_files)
    if not stat.S_ISDIR(st.st_mode):
        return
    base = watch.path.rstrip("/")
    prefix = len(base) + 1
    ignore = watch.ignore
    dev = st.st_dev
    # per level: sorted names (not DirEntry objects, which keep their stat results: memory is then bounded by the
    # widest folder's names, not its entries' attributes), the folder's real path and its in-root path
    stack: list[tuple[Iterator[str], str, str]] = [(_sorted(real, watch.path, unreadable), real, base)]
    while stack:
        names, real_dir, dir_path = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            continue
        path = f"{dir_path}/{name}"
        if path in skip or (ignore.regex is not None and ignore.match(path[prefix:], name)):
            continue
        child = f"{real_dir}/{name}"
        try:
            est = os.lstat(child)
        except OSError:
            continue
        yield entry_of(fs, path, est, child, hash_files)
        if stat.S_ISDIR(est.st_mode) and est.st_dev == dev:
            stack.append((_sorted(child, path, unreadable), child, path))


def _sorted(real: str, path: str, unreadable: list[str] | None) -> Iterator[str]:
    try:
        return iter(sorted(os.listdir(real)))
    except OSError:
        if unreadable is not None:
            unreadable.append(path)
        return iter(())
