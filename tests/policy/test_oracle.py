"""The engine's classification against a brute-force oracle written from docs/policy.md (linear scans over the
policy's zones, assets and agreements), on random flows over the example policy's address plan."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from correlator.policy import PolicyEngine

PREFIXES = ["10.20.", "10.20.200.", "10.10.", "10.30.", "10.40.", "10.1.", "10.1.250.", "10.1.0.", "172.16.10.",
            "185.220.101.", "8.8.8."]
KNOWN = ["10.1.0.10", "10.1.0.53", "10.1.0.80", "10.1.0.25", "10.20.200.5", "10.20.5.20", "10.10.5.10",
         "10.30.2.10", "10.40.1.10", "172.16.10.10", "172.16.10.20", "10.1.250.30"]


@st.composite
def addresses(draw):
    if draw(st.booleans()):
        return draw(st.sampled_from(KNOWN))
    p = draw(st.sampled_from(PREFIXES))
    parts = 4 - p.count(".")
    return p + ".".join(str(draw(st.integers(0, 255))) for _ in range(parts))


def oracle(policy, client: str, server: str, port: int):
    def zone(ip):
        a = ipaddress.ip_address(ip)
        best = None
        for z in policy.zones:
            for n in z.cidrs:
                if a.version == n.version and a in n and (best is None or n.prefixlen > best[1]):
                    best = (z, n.prefixlen)
        return best[0] if best else policy.default_zone

    def asset(ip, p):
        for a in policy.assets:
            if (ip, p) in a.endpoints:
                return a
        for a in policy.assets:
            if ip in a.ips:
                return a
        return None

    zc, zs = zone(client), zone(server)
    svc = asset(server, port)
    held = next((a for a in policy.assets if client in a.ips), None)
    ranks = [svc.level.rank if svc else zs.max_level.rank, zc.floor.rank, zs.floor.rank]
    if held:
        ranks.append(held.level.rank)
    label = max(ranks)
    rules = set()
    if label > zc.max_level.rank or label > zs.max_level.rank:
        rules.add("write-down")
    oa, ob = zc.organization, zs.organization
    if oa and ob and oa != ob and label > policy.agreement_free_up_to.rank:
        ok = any({oa, ob} <= ag.parties and ag.up_to.rank >= label for ag in policy.agreements)
        if not ok:
            rules.add("cross-organization")
    for a in (svc, held):
        for c in (a.caveats if a else ()):
            if oa not in policy.caveats[c].organizations or ob not in policy.caveats[c].organizations:
                rules.add("caveat")
    return zc.id, zs.id, label, rules


@settings(max_examples=400, deadline=None)
@given(addresses(), addresses(), st.sampled_from([22, 80, 443, 5432, 8443, 25]))
def test_engine_matches_oracle(policy, client, server, port):
    engine = PolicyEngine(policy)
    ev = {"source.ip": client, "destination.ip": server, "source.port": 50000, "destination.port": port,
          "event.dataset": "soc.flow", "network.protocol": "ssh", "@timestamp": "2026-01-15T09:00:00.000000Z"}
    engine.enrich([ev])
    zc, zs, label, rules = oracle(policy, client, server, port)
    assert (ev["gov.source.zone"], ev["gov.destination.zone"], ev["gov.label.rank"]) == (zc, zs, label)
    got = set(ev.get("gov.policy.violations", []))
    assert got == rules, (client, server, port, ev.get("gov.policy.reasons"))
