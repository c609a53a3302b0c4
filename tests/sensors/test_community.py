"""The direct Community ID computation agrees with the `communityid` reference package on every corpus flow."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from communityid import CommunityID, FlowTuple

from .truth import run_sensor


def _packed(ip: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)


@pytest.mark.corpus
def test_community_id_matches_reference_package(corpus: Path) -> None:
    ref = CommunityID()
    checked = 0
    for pcap in sorted((corpus / "pcaps").glob("*.pcap*")):
        events, _ = run_sensor(pcap)
        for ev in events:
            if ev["event.dataset"] != "soc.flow" or ev["network.transport"] not in ("tcp", "udp"):
                continue
            proto = 6 if ev["network.transport"] == "tcp" else 17
            tup = FlowTuple(proto, _packed(ev["source.ip"]), _packed(ev["destination.ip"]), ev["source.port"],
                            ev["destination.port"])
            assert ev["network.community_id"] == ref.calc(tup), ev
            checked += 1
    assert checked > 1300


def test_spec_example() -> None:
    """The spec's README example: 128.232.110.120:34855 → 66.35.250.204:80 TCP, seed 0."""
    from sensors.community import community_id

    cid = community_id(6, _packed("128.232.110.120"), _packed("66.35.250.204"), 34855, 80)
    assert cid == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    assert cid == community_id(6, _packed("66.35.250.204"), _packed("128.232.110.120"), 80, 34855)
