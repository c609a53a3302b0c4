"""Community ID v1 (https://github.com/corelight/community-id-spec) for TCP/UDP/SCTP computed directly on packed
addresses (the per-flow hot path); ICMP/ICMPv6 type mapping and other protocols go to the `communityid` package.
tests/sensors/test_community.py holds this to the package on every corpus flow."""

from __future__ import annotations

from binascii import b2a_base64
from hashlib import sha1
from struct import Struct

from communityid import CommunityID, FlowTuple

PORT_PROTOS = frozenset({6, 17, 132})
_REFERENCE = CommunityID()
_SEEDS: dict[int, bytes] = {}
_TAIL = Struct("!BBHH").pack  # protocol, padding, source port, destination port


def community_id(proto: int, src: bytes, dst: bytes, sport: int, dport: int, seed: int = 0) -> str | None:
    """`1:<base64 sha1>` of the flow; ports are ICMP type/code for ICMP. None when the package refuses the tuple."""
    if proto in PORT_PROTOS:
        if src > dst or (src == dst and sport > dport):
            src, dst, sport, dport = dst, src, dport, sport
        head = _SEEDS.get(seed) or _SEEDS.setdefault(seed, seed.to_bytes(2, "big"))
        digest = sha1(head + src + dst + _TAIL(proto, 0, sport, dport)).digest()
        return "1:" + b2a_base64(digest, newline=False).decode()
    try:
        tup = FlowTuple(proto, src, dst, sport, dport) if proto in (1, 58) else FlowTuple(proto, src, dst)
        return (_REFERENCE if seed == 0 else CommunityID(seed)).calc(tup)
    except Exception:  # the package rejects malformed tuples: no community id rather than a crash
        return None
