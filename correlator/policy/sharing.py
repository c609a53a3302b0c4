"""STIX 2.1 sharing of alert indicators with TLP 2.0 and national-classification markings, capped by level.

Only observables outside every organization's zones and assets are shared: an address is kept home when the
policy places it inside (`PolicyEngine.placed_inside`: an organization's zone, any zone but the default one, an
asset) or when it names no one on the internet (`never_shared`: loopback, link-local, multicast, RFC 1918, …);
service names an asset claims never leave; alerts labelled above the cap are left out, and every omission is reported.
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass, field
from typing import Any

import stix2

from correlator.policy.engine import PolicyEngine
from correlator.policy.model import Level

# The OASIS TLP 2.0 marking definitions (cti-stix-common-objects, extension-definition--60a3c5c5...).
TLP2_EXTENSION = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
TLP2_IDS = {
    "clear": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "green": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "amber": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "amber+strict": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "red": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}
NAMESPACE = uuid.UUID("6f1d3c52-7f3e-5d1a-9a61-5f0c2b9e4a10")  # soc's namespace for deterministic STIX ids
IP_FIELDS = ("source.ip", "destination.ip")
NAME_FIELDS = ("url.domain", "tls.client.server_name", "dns.question.name")


# Addresses that name no one on the internet, whatever the policy says: RFC 1918 and IPv6 unique-local space,
# carrier-grade NAT (RFC 6598). Documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) are not here:
# the policy's zones decide about them (Python's `is_private` counts them, the demo's attackers live there).
UNROUTED = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                                                    "fc00::/7"))


def never_shared(value: str) -> bool:
    """True for a string that is no address, or a loopback, link-local, multicast, unspecified, reserved or
    unrouted (`UNROUTED`) one; an IPv4-mapped IPv6 address is judged as its IPv4 address."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved
            or any(ip in net for net in UNROUTED if net.version == ip.version))


def tlp_marking(tlp: str) -> stix2.MarkingDefinition:
    """The official TLP 2.0 marking definition object for `tlp` (clear, green, amber, amber+strict, red)."""
    return stix2.MarkingDefinition(
        id=TLP2_IDS[tlp], created="2022-10-01T00:00:00.000Z", name=f"TLP:{tlp.upper()}",
        extensions={TLP2_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": tlp}})


@dataclass
class ShareResult:
    bundle: stix2.Bundle
    indicators: int
    left_out: list[str] = field(default_factory=list)


def _sid(kind: str, *parts: Any) -> str:
    return f"{kind}--{uuid.uuid5(NAMESPACE, '|'.join(map(str, parts)))}"


class Sharer:
    """Builds bundles from alerts for one policy and TLP, never above `cap`."""

    def __init__(self, engine: PolicyEngine, tlp: str, cap: Level, producer: str = "soc") -> None:
        self.engine, self.tlp, self.cap = engine, tlp, cap
        self.policy = engine.policy
        self.identity = stix2.Identity(id=_sid("identity", producer, self.policy.name), name=producer,
                                       identity_class="organization", created="2024-01-01T00:00:00Z",
                                       modified="2024-01-01T00:00:00Z")
        self.tlp_def = tlp_marking(tlp)
        self.national: dict[int, stix2.MarkingDefinition] = {}

    def national_marking(self, level: Level) -> stix2.MarkingDefinition:
        """A statement marking carrying the national classification (English and Arabic)."""
        if level.rank not in self.national:
            self.national[level.rank] = stix2.MarkingDefinition(
                id=_sid("marking-definition", self.policy.name, level.name), created="2024-01-01T00:00:00Z",
                name=f"National classification: {level.name}", definition_type="statement",
                definition=stix2.StatementMarking(
                    statement=f"National classification {level.name.upper()} / {level.ar} (policy {self.policy.name})"),
                created_by_ref=self.identity.id)
        return self.national[level.rank]

    def shareable(self, value: str, kind: str) -> bool:
        """Only observables outside every organization: the internet's addresses and names no asset claims."""
        if kind == "ip":
            return not never_shared(value) and not self.engine.placed_inside(value)
        return self.engine.service(None, None, value) is None

    def build(self, alerts: list[dict[str, Any]]) -> ShareResult:
        indicators, left_out = [], []
        for a in alerts:
            aid = a.get("soc.alert.uuid")
            rank = int(a.get("gov.label.rank") or 0)
            level = self.policy.levels[min(rank, len(self.policy.levels) - 1)]
            if rank > self.cap.rank:
                left_out.append(f"alert {aid} ({a.get('soc.alert.rule.name')}): labelled {level.name}, above the "
                                f"shareable maximum {self.cap.name}")
                continue
            if a.get("soc.alert.rule.indicators") is False:
                left_out.append(f"alert {aid} ({a.get('soc.alert.rule.name')}): the rule says its observables are "
                                f"not indicators (soc_indicators: false)")
                continue
            marking = self.national_marking(level)
            for kind, fields in (("ip", IP_FIELDS), ("name", NAME_FIELDS)):
                for f in fields:
                    value = a.get(f)
                    if not isinstance(value, str) or not value:
                        continue
                    if not self.shareable(value, kind):
                        left_out.append(f"alert {aid}: {f} {value} is internal or government, not shared")
                        continue
                    if kind == "ip":
                        obj = "ipv6-addr" if ":" in value else "ipv4-addr"
                        pattern = f"[{obj}:value = '{value}']"
                    else:
                        pattern = f"[domain-name:value = '{value.lower().rstrip('.')}']"
                    indicators.append(stix2.Indicator(
                        id=_sid("indicator", aid, f, value), created_by_ref=self.identity.id,
                        created=a.get("@timestamp"), modified=a.get("@timestamp"),
                        name=f"{a.get('soc.alert.rule.name')}: {value}",
                        description=str(a.get("soc.alert.reason") or ""), pattern=pattern, pattern_type="stix",
                        valid_from=a.get("@timestamp"), indicator_types=["malicious-activity"],
                        labels=[f"severity:{a.get('soc.alert.severity')}"],
                        external_references=[{"source_name": "soc", "external_id": aid}],
                        object_marking_refs=[self.tlp_def.id, marking.id]))
        objects = [self.identity, self.tlp_def, *self.national.values(), *indicators]
        return ShareResult(stix2.Bundle(objects=objects, allow_custom=False), len(indicators), left_out)
