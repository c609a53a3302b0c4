"""The classification policy as plain data: levels, organizations, zones, assets, agreements, profiles, exceptions."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Level:
    """One step of the classification ladder; `rank` 0 is the lowest (public)."""

    name: str
    ar: str
    rank: int


@dataclass(frozen=True)
class Caveat:
    """A handling restriction (e.g. ministry-only): data so marked may only reach these organizations."""

    name: str
    ar: str
    organizations: frozenset[str]


@dataclass(frozen=True)
class Organization:
    id: str
    name: str
    ar: str = ""


@dataclass(frozen=True)
class Zone:
    """A network zone: where it is (CIDRs, VLANs, sensors), who owns it, what it may hold and its floor label."""

    id: str
    organization: str | None  # None: outside every organization (the internet)
    max_level: Level  # accreditation: the highest level the zone may hold
    floor: Level  # every flow touching the zone carries at least this label
    cidrs: tuple[IPNetwork, ...] = ()
    vlans: tuple[str, ...] = ()
    sensors: tuple[str, ...] = ()
    line: int = 0


@dataclass(frozen=True)
class Asset:
    """A service: matched by ip, ip:port, or domain/SNI; serves data of `level` (with caveats)."""

    id: str
    level: Level
    caveats: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    endpoints: tuple[tuple[str, int], ...] = ()
    domains: tuple[str, ...] = ()
    line: int = 0


@dataclass(frozen=True)
class Agreement:
    """Organizations that may exchange data up to `up_to` (every pair among `parties`)."""

    parties: frozenset[str]
    up_to: Level
    reference: str = ""


@dataclass(frozen=True)
class Channel:
    """An approved encrypted channel: a protocol (tls, ssh) with an optional minimum version."""

    protocol: str
    min_version: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ProtectionProfile:
    """At or above `from_level`, only `allowed` channels; `forbidden` names the cleartext protocols called out."""

    name: str
    from_level: Level
    allowed: tuple[Channel, ...]
    forbidden: frozenset[str]


@dataclass(frozen=True)
class PolicyException:
    """A sanctioned deviation: suppresses `rules` for flows in scope until `expires` (after that: an alert)."""

    id: str
    owner: str
    reason: str
    rules: frozenset[str]  # write-down, cross-organization, protection, caveat; empty = all
    sources: tuple[IPNetwork, ...]
    destinations: tuple[IPNetwork, ...]
    ports: frozenset[int]
    expires: datetime
    line: int = 0


@dataclass(frozen=True)
class Response:
    """How playbooks may respond (`response:` in the policy): the owners' rules, not the runner's."""

    two_person_rule: bool = False  # an approval must come from someone other than the runner
    approval_ttl: int = 3600  # seconds an approval request stays open
    protected_assets: tuple[IPNetwork, ...] = ()  # never contained, whatever a playbook says
    approval_impact: int | None = None  # playbooks of this CACAO impact (0-100) or more wait before every action

    def protects(self, value: object) -> bool:
        """Whether `value` is an address inside a protected asset."""
        try:
            ip = ipaddress.ip_address(str(value))
        except ValueError:
            return False
        return any(ip in n for n in self.protected_assets)


@dataclass
class Policy:
    """A validated policy (see `correlator.policy.loader.load_policy`)."""

    name: str
    levels: list[Level]
    caveats: dict[str, Caveat]
    organizations: dict[str, Organization]
    zones: list[Zone]
    default_zone: Zone
    assets: list[Asset]
    agreements: list[Agreement]
    profiles: list[ProtectionProfile]
    exceptions: list[PolicyException]
    agreement_free_up_to: Level
    share_max_level: Level
    clearance_default: Level
    clearance_users: dict[str, Level] = field(default_factory=dict)
    disclose_withheld: bool = True  # tell readers how many items above their clearance were withheld
    response: Response = field(default_factory=Response)
    path: str = ""

    def clearance_of(self, user: str) -> Level:
        """The highest level `user` (an OS account) may read: their mapping, else the default."""
        return self.clearance_users.get(user, self.clearance_default)

    def level(self, name_or_rank: str | int) -> Level:
        """A level by English name, Arabic label or rank; KeyError if unknown."""
        key = name_or_rank if isinstance(name_or_rank, int) else name_or_rank.strip()
        if isinstance(key, str) and key.isascii() and key.isdigit():
            key = int(key) if len(key) < 19 else -1
        if isinstance(key, int):
            if 0 <= key < len(self.levels):  # not levels[-1]: "-1" is no rank
                return self.levels[key]
            raise KeyError(name_or_rank)
        for lv in self.levels:
            if key.lower() == lv.name.lower() or key == lv.ar:
                return lv
        raise KeyError(name_or_rank)

    @property
    def top(self) -> Level:
        return self.levels[-1]

    @property
    def bottom(self) -> Level:
        return self.levels[0]
