"""--root confinement and read-only scanning: no lookup leaves the tree, nothing in the tree changes."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from sensors.compliance import Scanner, load_policy
from sensors.compliance.rootfs import RootFS, Unreadable
from tests.compliance.test_baseline import BASELINE, GOOD


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "outside" / "etc" / "shadow"
    secret.parent.mkdir(parents=True)
    secret.write_text("OUTSIDE-SECRET\n")
    return secret


def test_symlinks_resolve_inside_the_root(make_tree, outside: Path):
    root = make_tree({"/etc/shadow": "inside\n",
                      "/etc/abs": ("link", str(outside)),                      # absolute host path
                      "/etc/rel": ("link", "../../../../../../" + str(outside)),  # climbs above the root
                      "/etc/up": ("link", "/../../etc/shadow"),
                      "/etc/climb": ("link", "../../../../../../etc/shadow"),
                      "/etc/loop": ("link", "/etc/loop")})
    fs = RootFS(str(root))
    assert fs.read_text("/etc/up") == "inside\n"                 # `..` stops at the root
    assert fs.read_text("/etc/climb") == "inside\n"              # relative `..` chains stop there too
    for escaping in ("/etc/abs", "/etc/rel"):                    # re-rooted: <root>/tmp/.../outside does not exist
        with pytest.raises(FileNotFoundError):
            fs.read_text(escaping)
    assert fs.read_text("/../../../etc/shadow") == "inside\n"
    with pytest.raises(Unreadable, match="too many symbolic links"):
        fs.read_text("/etc/loop")
    for path in ("/etc/abs", "/etc/rel", "/etc/up"):
        real = fs.host_path(path) if fs.stat(path) else None
        assert real is None or os.path.commonpath([real, str(root)]) == str(root)


def test_directory_symlink_escape_is_confined(make_tree, outside: Path):
    root = make_tree({"/etc/ssh": ("link", str(outside.parent))})
    fs = RootFS(str(root))
    assert not fs.is_file("/etc/ssh/shadow")
    assert fs.listdir("/etc/ssh") == []


def test_unreadable_targets_make_checks_not_applicable(make_tree, tls_server):
    root = make_tree(GOOD, {"/etc/login.defs": ("fifo",), "/etc/ssh/sshd_config": ("link", "/etc/ssh/sshd_config")})
    done = threading.Event()
    results = {}

    def run():
        pol = load_policy(BASELINE, {"$tls_endpoint": tls_server().endpoint})
        results.update({r.check.id: r for r in Scanner(str(root), probe_tls=True).scan(pol).results})
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(60), "a FIFO in the tree blocked the scan"
    assert results[10101].status == "not applicable" and "not a regular file" in results[10101].reason
    assert results[10001].status == "not applicable" and "symbolic links" in results[10001].reason
    assert results[10401].status == "passed"                     # the rest of the scan went on


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything a write could change: type, mode, owner, size, mtime, ctime and content of every entry."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() \
                else os.readlink(path) if path.is_symlink() else ""
            out[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
                                                st.st_ctime_ns, digest)
    return out


def test_scan_changes_nothing_in_the_tree(make_tree, tls_server):
    from tests.compliance.test_baseline import MUTATIONS

    root = make_tree(GOOD, *[m for variants in MUTATIONS.values() for m, _ in variants[:1]])
    before = snapshot(root)
    pol = load_policy(BASELINE, {"$tls_endpoint": tls_server().endpoint})
    results = Scanner(str(root), probe_tls=True).scan(pol).results
    assert any(r.status == "failed" for r in results)
    assert snapshot(root) == before


def test_permission_denied_is_not_applicable_with_reason():
    """A file the scanning user may not read: not applicable, the reason names it, the scan goes on.

    As root the scan runs in a forked child that drops to uid/gid 65534 (root could read anything).
    """
    import shutil
    import tempfile

    import yaml

    from sensors.compliance import parse_policy
    from tests.compliance.conftest import build_tree

    root = Path(tempfile.mkdtemp(prefix="soc-perm-", dir="/tmp"))  # /tmp is traversable by every user
    os.chmod(root, 0o755)
    build_tree(root, {"/etc/login.defs": ("file", "PASS_MAX_DAYS 30\n", 0o000), "/etc/os-release": "ID=debian\n"})
    doc = {"policy": {"id": "t", "name": "t", "description": "t"}, "checks": [
        {"id": 1, "title": "a", "condition": "all",
         "rules": [r"f:/etc/login.defs -> n:^PASS_MAX_DAYS\s+(\d+) compare <= 90"]},
        {"id": 2, "title": "b", "condition": "all", "rules": ["f:/etc/os-release -> r:^ID=debian"]}]}
    policy = parse_policy(yaml.safe_dump(doc))

    def run() -> list[str]:
        return [f"{r.status}|{r.reason}" for r in Scanner(str(root)).scan(policy).results]

    if os.getuid() != 0:
        lines = run()
    else:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: drop privileges, scan, report through the pipe
            try:
                os.setgroups([])
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
                os.write(write_fd, "\n".join(run()).encode())
            finally:
                os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd) as fh:
            lines = fh.read().splitlines()
        os.waitpid(pid, 0)
    shutil.rmtree(root)
    assert lines == ["not applicable|cannot open /etc/login.defs: Permission denied", "passed|"]
