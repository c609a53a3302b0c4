"""contain.block_ip / unblock_ip for real: two network namespaces joined by a veth pair; a TCP connection from one
to a listener in the other works, fails once the address is blocked inside the listener's namespace, and works
again after the recorded inverse (the unblock) ran. Only addresses inside the test's namespaces are touched."""

from __future__ import annotations

import os

import pytest

from playbooks.actions import REGISTRY, ActionError
from playbooks.actions.contain import RULESET
from tests import netns
from tests.debian import require
from tests.netns import sh, tcp_listener, veth_pair
from tests.playbooks.actions_world import context, seeded

pytestmark = pytest.mark.netns
SERVER, CLIENT = "10.231.7.1", "10.231.7.2"


@pytest.fixture(scope="module")
def nft_installed() -> None:
    """nft is installed (apt-get, as root) or the test fails loudly: CI must exercise the real thing."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    require("nftables", "nft", "containment is not exercised for real")


@pytest.fixture
def pair(nft_installed):
    """(server netns, client netns): veth 10.231.7.1 <-> 10.231.7.2, a TCP listener on the server side."""
    with veth_pair(SERVER, CLIENT, prefix="soc") as (srv, cli), tcp_listener(srv, SERVER, probe_from=cli):
        yield srv, cli


def reachable(cli: str) -> bool:
    """A TCP connection from the client namespace to the listener completes within a second."""
    return netns.reachable(cli, SERVER)


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
