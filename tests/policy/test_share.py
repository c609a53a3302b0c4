"""STIX sharing: a valid 2.1 bundle with the official TLP 2.0 marking and the national classification marking."""

from __future__ import annotations

import ipaddress
import json
import re

import stix2
import yaml
from typer.testing import CliRunner

from correlator.policy import PolicyEngine, load_policy
from correlator.policy.sharing import TLP2_IDS, Sharer
from soc_cli.main import app

from .conftest import BACKBONE

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


def _government(policy_text: str) -> tuple[list, set[str]]:
    """From the policy YAML itself (not the engine): the networks of every non-default or owned zone, and the asset
    addresses."""
    doc = yaml.safe_load(policy_text)
    nets = [ipaddress.ip_network(c) for z in doc["zones"] if z.get("organization") or not z.get("default")
            for c in z.get("cidrs", [])]
    hosts = {str(m).rsplit(":", 1)[0] if str(m).count(":") == 1 else str(m) for a in doc["assets"] for m in a["match"]}
    return nets, {h for h in hosts if h.replace(".", "").isdigit()}


def test_demo_attackers_are_shared_and_no_government_address(soc_env, monkeypatch, tmp_path):
    """The README's two commands: `soc demo`, then `share export` from its store. The demo's attackers (documentation
    addresses the policy leaves in the `internet` zone) are exported; nothing the policy places inside is."""
    monkeypatch.setattr("correlator.audit.current_actor", lambda: "nobody-listed")
    runner = CliRunner()
    env = {"SOC_CLEARANCE": None, "SOC_POLICY": None, "SOC_CONFIG": None, "SOC_STORE": None}
    assert runner.invoke(app, ["demo"], env=env).exit_code == 0
    out = tmp_path / "b.json"
    res = runner.invoke(app, ["--store", f"sqlite:///{soc_env / 'home' / 'demo.db'}", "share", "export",
                              "--tlp", "amber+strict", "--since", "24h", "-o", str(out)], env=env)
    assert res.exit_code == 0, res.stderr
    bundle = stix2.parse(out.read_text(encoding="utf-8"), allow_custom=False)
    shared = {re.search(r"value = '([^']+)'", o.pattern).group(1) for o in bundle.objects if o.type == "indicator"}
    assert {"203.0.113.66", "198.51.100.99"} <= shared
    nets, hosts = _government(BACKBONE.read_text(encoding="utf-8"))
    assert len(nets) >= 8 and hosts
    for value in shared:
        ip = ipaddress.ip_address(value)
        assert value not in hosts and not any(ip in n for n in nets), f"government address {value} shared"
        assert not any(ip in ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
    assert "172.16.10.10" in res.stderr and "10.20.9.9" in res.stderr  # the attackers' targets: left out, said so
    # the unsanctioned-resolver rule says its observables are not indicators: Google's resolver is never "malicious"
    assert "8.8.8.8" not in shared and "not indicators (soc_indicators: false)" in res.stderr


def test_the_policy_places_addresses_not_pythons_is_private(policy, tmp_path):
    """A zone that claims public space keeps it home; documentation space the policy leaves outside is shared;
    unrouted and special addresses never leave, placed or not."""
    text = BACKBONE.read_text(encoding="utf-8").replace(
        "  - id: portal-dmz\n", "  - id: portal-public\n    organization: portal\n    max_level: public\n"
        "    cidrs: [203.0.113.0/28, \"2001:db8:9::/48\"]\n  - id: portal-dmz\n", 1)
    placed = tmp_path / "placed.yml"
    placed.write_text(text, encoding="utf-8")
    sharer = Sharer(PolicyEngine(load_policy(placed)), "green", policy.level("restricted"))
    nets, hosts = _government(text)
    for value in ("203.0.113.66", "198.51.100.99", "192.0.2.7", "8.8.8.8", "2001:db8:1::5", "2a01:4f8::7"):
        assert sharer.shareable(value, "ip"), value
    for value in ("203.0.113.5", "2001:db8:9::1", "10.1.0.10", "10.20.200.5", "192.168.1.1", "100.64.0.1",
                  "127.0.0.1", "169.254.0.1", "224.0.0.1", "0.0.0.0", "fd00:20::1", "fe80::1", "::1",
                  "::ffff:10.1.2.3", "not-an-ip"):
        assert not sharer.shareable(value, "ip"), value
    assert any(ipaddress.ip_address("203.0.113.5") in n for n in nets)  # the truth agrees the zone holds it
