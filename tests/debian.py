"""Debian tools some tests compare with or drive (tshark, chromium, nftables): found on PATH, or installed with
apt-get when the tests run as root (an `apt-get update` first if the package lists do not know the package, as on a
fresh machine). A missing tool fails the test in CI (CI=true) and skips it loudly elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache

import pytest

_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


@cache
def _install(package: str, binary: str) -> str | None:
    found = shutil.which(binary)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package]
        if subprocess.run(install, env=_ENV, capture_output=True, timeout=1200).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=_ENV, capture_output=True, timeout=600)
            subprocess.run(install, env=_ENV, capture_output=True, timeout=1200)
        found = shutil.which(binary)
    return found


def require(package: str, binary: str | None = None, why: str = "") -> str:
    """The path of `binary` (default: the package's name), installing `package` if needed and possible."""
    path = _install(package, binary or package)
    if path is None:
        message = f"{package.upper()} ABSENT (apt-get install {package}){': ' + why if why else ''}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
