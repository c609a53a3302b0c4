"""STIX sharing: a valid 2.1 bundle with the official TLP 2.0 marking and the national classification marking."""

from __future__ import annotations

import json

import stix2

from correlator.policy.sharing import TLP2_IDS, Sharer

ALERTS = [
    {"soc.alert.uuid": "a-public", "@timestamp": "2026-01-15T09:00:00.000000Z", "soc.alert.rule.name": "Bad IP",
     "soc.alert.reason": "listed", "soc.alert.severity": "high", "source.ip": "10.10.3.3",
     "destination.ip": "185.220.101.7", "tls.client.server_name": "c2.evil.example", "gov.label.rank": 0},
    {"soc.alert.uuid": "a-restricted", "@timestamp": "2026-01-15T09:01:00.000000Z", "soc.alert.rule.name": "Beacon",
     "soc.alert.reason": "periodic", "soc.alert.severity": "medium", "source.ip": "10.20.3.3",
     "destination.ip": "2a01:4f8::7", "url.domain": "www.portal.gov.example", "gov.label.rank": 1},
    {"soc.alert.uuid": "a-secret", "@timestamp": "2026-01-15T09:02:00.000000Z", "soc.alert.rule.name": "Exfil",
     "soc.alert.reason": "big upload", "soc.alert.severity": "high", "source.ip": "10.10.3.3",
     "destination.ip": "45.33.32.156", "gov.label.rank": 2},
]


def test_bundle_markings_and_caps(engine, policy):
    result = Sharer(engine, "amber+strict", policy.level("restricted")).build(ALERTS)
    bundle = stix2.parse(result.bundle.serialize(), allow_custom=False)  # round-trips through the library
    objs = {o.id: o for o in bundle.objects}
    tlp = objs[TLP2_IDS["amber+strict"]]
    assert tlp.name == "TLP:AMBER+STRICT"
    assert json.loads(tlp.serialize())["extensions"][
        "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"]["tlp_2_0"] == "amber+strict"
    indicators = [o for o in bundle.objects if o.type == "indicator"]
    patterns = sorted(i.pattern for i in indicators)
    assert patterns == ["[domain-name:value = 'c2.evil.example']", "[ipv4-addr:value = '185.220.101.7']",
                        "[ipv6-addr:value = '2a01:4f8::7']"]
    for ind in indicators:
        assert ind.object_marking_refs[0] == TLP2_IDS["amber+strict"]
        national = objs[ind.object_marking_refs[1]]
        assert national.definition_type == "statement" and "National classification" in national.definition.statement
    statements = sorted(o.definition.statement for o in bundle.objects if getattr(o, "definition_type", "") ==
                        "statement")
    assert statements[0].startswith("National classification PUBLIC / عام")
    assert statements[1].startswith("National classification RESTRICTED / محدود")
    left = "\n".join(result.left_out)
    assert "alert a-secret (Exfil): labelled secret, above the shareable maximum restricted" in left
    assert "45.33.32.156" not in {i.pattern for i in indicators}
    for internal in ("10.10.3.3", "10.20.3.3", "www.portal.gov.example"):  # government infrastructure stays home
        assert internal in left and all(internal not in p for p in patterns)


def test_ids_are_deterministic(engine, policy):
    a = Sharer(engine, "green", policy.level("restricted")).build(ALERTS)
    b = Sharer(engine, "green", policy.level("restricted")).build(ALERTS)
    ids = lambda r: sorted(o.id for o in r.bundle.objects)  # noqa: E731
    assert ids(a) == ids(b) and TLP2_IDS["green"] in ids(a)
