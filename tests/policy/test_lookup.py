"""The interval lookup against a brute-force longest-prefix oracle, and engine lookups by VLAN/sensor/domain."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from correlator.policy.lookup import NetworkMap


def oracle(nets: list, address: str):
    ip = ipaddress.ip_address(address)
    best = None
    for net, value in nets:
        if ip.version == net.version and ip in net and (best is None or net.prefixlen > best[0].prefixlen):
            best = (net, value)
    return best[1] if best else None


@st.composite
def networks(draw):
    out, seen = [], set()
    for i in range(draw(st.integers(0, 40))):
        base = draw(st.integers(0, 2**32 - 1))
        plen = draw(st.integers(4, 32))
        net = ipaddress.ip_network((base, plen), strict=False)
        if net not in seen:
            seen.add(net)
            out.append((net, i))
    return out


@settings(max_examples=300, deadline=None)
@given(networks(), st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=30))
def test_longest_prefix_matches_oracle(nets, probes):
    m = NetworkMap(nets)
    # probe random addresses and every block edge (where off-by-one errors live)
    edges = [int(n.network_address) for n, _ in nets] + [int(n.broadcast_address) for n, _ in nets]
    edges += [e + 1 for e in edges if e < 2**32 - 1] + [e - 1 for e in edges if e > 0]
    for a in probes + edges:
        addr = str(ipaddress.IPv4Address(a))
        assert m.get(addr) == oracle(nets, addr), addr


def test_ipv6_and_garbage():
    m = NetworkMap([(ipaddress.ip_network("fd00:10::/32"), "v6"), (ipaddress.ip_network("10.0.0.0/8"), "v4")])
    assert m.get("fd00:10::1") == "v6" and m.get("fd00:11::1") is None and m.get("10.9.9.9") == "v4"
    assert m.get("not-an-ip") is None


def test_engine_zone_by_vlan_and_sensor_and_domain(engine):
    # an address in no CIDR zone, seen on VLAN 120 (mof) or by the moi-gw sensor, is placed there
    assert engine.zone_of("192.0.2.10", "120", None).id == "mof-lan"
    assert engine.zone_of("192.0.2.10", None, "moi-gw").id == "moi-lan"
    assert engine.zone_of("192.0.2.10", None, None).id == "internet"
    assert engine.zone_of("10.20.200.9").id == "moi-enclave"  # the /24 inside moi's /16 wins
    assert engine.zone_of("fd00:20::5").id == "moi-lan"
    assert engine.service(None, None, "api.portal.gov.example").id == "portal-web"  # *.portal.gov.example
    assert engine.service("10.1.0.10", 5432, None).id == "civil-registry-db"
    assert engine.service("10.1.0.10", 22, None) is None
