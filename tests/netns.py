"""Network-namespace labs for tests that need real traffic: two namespaces joined by a veth pair (`veth_pair`), a
TCP listener in one of them (`tcp_listener`) and a connection probe from the other (`reachable`). Root only; every
namespace is removed on exit."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager


def sh(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a command, output captured; raises on failure when `check`."""
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


@contextmanager
def veth_pair(ip_a: str, ip_b: str, *, prefix: str = "soc", prefixlen: int = 24, devs: tuple[str, str] | None = None,
              macs: tuple[str, str] | None = None) -> Iterator[tuple[str, str]]:
    """Namespaces (a, b) named `{prefix}a<tag>`/`{prefix}b<tag>`, joined by veth `devs` (default unique names)
    holding `ip_a`/`ip_b` (`/prefixlen`; with /32 each side gets a route to the other), optionally with `macs`."""
    tag = uuid.uuid4().hex[:6]
    a, b = f"{prefix}a{tag}", f"{prefix}b{tag}"
    dev_a, dev_b = devs or (f"va{tag}", f"vb{tag}")
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        sh("ip", "link", "add", dev_a, "netns", a, "type", "veth", "peer", "name", dev_b, "netns", b)
        mac_a, mac_b = macs or (None, None)
        for ns, dev, ip, peer, mac in ((a, dev_a, ip_a, ip_b, mac_a), (b, dev_b, ip_b, ip_a, mac_b)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/{prefixlen}", "dev", dev)
            if mac:
                sh("ip", "-n", ns, "link", "set", dev, "address", mac)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            if prefixlen == 32:
                sh("ip", "-n", ns, "route", "add", f"{peer}/32", "dev", dev)
        yield a, b
    finally:
        sh("ip", "netns", "del", a, check=False)
        sh("ip", "netns", "del", b, check=False)


@contextmanager
def tcp_listener(ns: str, ip: str, port: int = 8080, probe_from: str | None = None) -> Iterator[None]:
    """A TCP server in `ns` on ip:port answering every connection with b'ok'; with `probe_from`, waits (up to
    5 s) until that namespace reaches it."""
    code = ("import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            f"s.bind(('{ip}',{port}));s.listen()\nwhile True:\n c,_=s.accept();c.sendall(b'ok');c.close()")
    listener = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code])
    try:
        if probe_from is not None:
            for _ in range(50):
                if reachable(probe_from, ip, port):
                    break
                time.sleep(0.1)
        yield
    finally:
        listener.kill()
        listener.wait()


def reachable(ns: str, ip: str, port: int = 8080) -> bool:
    """A TCP connection from `ns` to the listener at ip:port completes (and reads b'ok') within a second."""
    code = f"import socket\ns=socket.create_connection(('{ip}',{port}),timeout=1)\nassert s.recv(2)==b'ok'"
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True,
                          timeout=20).returncode == 0
