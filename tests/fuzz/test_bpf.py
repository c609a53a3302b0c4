"""Fuzzing `--bpf`: arbitrary filter expressions through libpcap's compiler (the copy the cypcap wheel ships) and
arbitrary packets through the compiled programs. An expression either compiles or is refused with a ValueError that
names it; a compiled program matches any bytes on any link type without raising."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensors.capture import BpfFilter

TOKENS = ["tcp", "udp", "icmp", "ip", "ip6", "arp", "ether", "host", "net", "port", "portrange", "src", "dst", "and",
          "or", "not", "(", ")", "[", "]", ":", "&", "|", "=", "!=", ">", "<", "+", "-", "*", "/", "len", "greater",
          "less", "proto", "vlan", "mpls", "tcp[tcpflags]", "tcp-syn", "0", "1", "22", "80", "65535", "4294967296",
          "10.0.0.0/8", "10.0.0.1", "::1", "02:00:00:00:00:01", "broadcast", "multicast", "\x00", "\udcff", "é"]
# Mostly near-valid token soup (reaches the grammar and code generator), sometimes any text at all.
EXPRESSIONS = st.one_of(st.lists(st.sampled_from(TOKENS), max_size=12).map(" ".join), st.text(max_size=60))
LINKTYPES = st.sampled_from([0, 1, 12, 101, 105, 113, 127, 228, 229, 276, 147, 65535])


def _compiled(expression: str) -> BpfFilter | None:
    """The filter, or None when refused; a refusal must be a ValueError naming the expression."""
    try:
        return BpfFilter(expression)
    except ValueError as exc:
        assert repr(expression) in str(exc), str(exc)
        return None


@pytest.mark.fuzz
@given(EXPRESSIONS, LINKTYPES, st.binary(max_size=200), st.integers(0, 2**32 - 1))
def test_bpf_expression_compiles_or_is_refused_by_name(expression: str, linktype: int, data: bytes,
                                                       wirelen: int) -> None:
    flt = _compiled(expression)
    if flt is None:
        assert "\x00" in expression or not _accepted_elsewhere(expression)
        return
    assert "\x00" not in expression  # a NUL would silently cut the expression short in libpcap
    try:
        prog = flt.program(linktype)
    except ValueError as exc:  # e.g. `ether host` on raw IP, or a link type libpcap does not know
        assert repr(expression) in str(exc) and f"link type {linktype}" in str(exc), str(exc)
        return
    assert len(prog) >= 1
    assert flt(data, max(wirelen, len(data)), linktype) in (True, False)


def _accepted_elsewhere(expression: str) -> bool:
    """Whether the expression compiles through a second, independent handle (libpcap's pcap_open_dead + pcap_compile
    for Ethernet): a refusal by BpfFilter must agree with libpcap itself."""
    import cypcap

    try:
        with cypcap.open_dead(cypcap.DatalinkType.EN10MB, 65535) as pcap:
            pcap.compile(expression, True, cypcap.NETMASK_UNKNOWN)
    except (cypcap.Error, UnicodeEncodeError):
        return False
    return True
