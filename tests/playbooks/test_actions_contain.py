"""contain.block_ip / unblock_ip for real: two network namespaces joined by a veth pair; a TCP connection from one
to a listener in the other works, fails once the address is blocked inside the listener's namespace, and works
again after the recorded inverse (the unblock) ran. Only addresses inside the test's namespaces are touched."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from playbooks.actions import REGISTRY, ActionError
from playbooks.actions.contain import RULESET
from tests.debian import require
from tests.playbooks.actions_world import context, seeded

pytestmark = pytest.mark.netns
SERVER, CLIENT = "10.231.7.1", "10.231.7.2"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


@pytest.fixture(scope="module")
def nft_installed() -> None:
    """nft is installed (apt-get, as root) or the test fails loudly: CI must exercise the real thing."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    require("nftables", "nft", "containment is not exercised for real")


@pytest.fixture
def pair(nft_installed):
    """(server netns, client netns): veth 10.231.7.1 <-> 10.231.7.2, a TCP listener on the server side."""
    tag = uuid.uuid4().hex[:6]
    srv, cli = f"socs{tag}", f"socc{tag}"
    sh("ip", "netns", "add", srv)
    sh("ip", "netns", "add", cli)
    listener = None
    try:
        sh("ip", "link", "add", f"vs{tag}", "netns", srv, "type", "veth", "peer", "name", f"vc{tag}", "netns", cli)
        for ns, dev, ip in ((srv, f"vs{tag}", SERVER), (cli, f"vc{tag}", CLIENT)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        code = ("import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                f"s.bind(('{SERVER}',8080));s.listen()\nwhile True:\n c,_=s.accept();c.sendall(b'ok');c.close()")
        listener = subprocess.Popen(["ip", "netns", "exec", srv, sys.executable, "-c", code])
        for _ in range(50):
            if reachable(cli):
                break
            time.sleep(0.1)
        yield srv, cli
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
        sh("ip", "netns", "del", srv, check=False)
        sh("ip", "netns", "del", cli, check=False)


def reachable(cli: str) -> bool:
    """A TCP connection from the client namespace to the listener completes within a second."""
    code = (f"import socket\ns=socket.create_connection(('{SERVER}',8080),timeout=1)\n"
            "assert s.recv(2)==b'ok'")
    return subprocess.run(["ip", "netns", "exec", cli, sys.executable, "-c", code], capture_output=True,
                          timeout=20).returncode == 0


def elements(ns: str) -> str:
    return sh("ip", "netns", "exec", ns, "nft", "list", "set", "inet", "soc", "blocked", check=False).stdout


def test_block_then_undo_with_traffic(pair, tmp_path_factory, tmp_path):
    srv, cli = pair
    ctx = context(seeded(tmp_path_factory.getbasetemp()), tmp_path)
    block, args = REGISTRY["contain.block_ip"](), {"ip": CLIENT, "netns": srv, "timeout": "1h"}
    assert reachable(cli)

    plan = block.plan(ctx, args)
    assert plan["commands"][-1] == (f"ip netns exec {srv} nft add element inet soc blocked "
                                    f"{{ {CLIENT} timeout 3600s }}")
    assert plan["ruleset_if_missing"] == RULESET
    dry = block.run(context(seeded(tmp_path_factory.getbasetemp()), tmp_path, execute=False), args)
    assert dry.outputs["planned"] and "table" not in elements(srv)  # a dry run changes nothing
    assert reachable(cli)

    first = block.run(ctx, args)
    again = block.run(ctx, args)  # idempotent: same state, no duplicate rule
    assert first.inverse == again.inverse == {"action": "contain.unblock_ip", "args": {"ip": CLIENT, "netns": srv}}
    listed = elements(srv)
    assert CLIENT in listed and "expires" in listed
    rules = sh("ip", "netns", "exec", srv, "nft", "list", "chain", "inet", "soc", "input").stdout
    assert rules.count("@blocked drop") == 1
    assert not reachable(cli)

    undo = REGISTRY[first.inverse["action"]]()
    assert undo.run(ctx, first.inverse["args"]).outputs["was_blocked"] is True
    assert CLIENT not in elements(srv)
    assert reachable(cli)
    assert undo.run(ctx, first.inverse["args"]).outputs["was_blocked"] is False  # idempotent


def test_bad_address_and_timeout_are_refused(tmp_path_factory, tmp_path):
    ctx = context(seeded(tmp_path_factory.getbasetemp()), tmp_path)
    with pytest.raises(ActionError, match="not an IP address"):
        REGISTRY["contain.block_ip"]().plan(ctx, {"ip": "10.0.0.0/8"})
    with pytest.raises(ActionError, match="timeout"):
        REGISTRY["contain.block_ip"]().plan(ctx, {"ip": "10.231.7.9", "timeout": "soon"})
