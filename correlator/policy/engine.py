"""Applies a policy to events: where each endpoint is, what the flow's label is, and which rules it breaks.

`PolicyEngine.enrich` (a pipeline enricher) adds the `gov.*` namespace to every event; the per-flow part of the
verdict is cached by (source, destination, port, name, vlan, sensor, who sent payload) so repeated flows cost one
dict lookup. Data-flow rules judge the data that moved: `senders` says which side sent payload.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from correlator.policy.lookup import NetworkMap
from correlator.policy.model import Asset, Level, Policy, PolicyException, Zone

Event = dict[str, Any]
PORT_PROTOCOLS = {21: "ftp", 23: "telnet", 80: "http", 8080: "http", 139: "smb1", 445: "smb", 53: "dns"}
ICMP_REPLIES = frozenset({0, 14, 16, 18, 129})  # echo/timestamp/info/mask replies, ICMPv6 echo reply
NO_DATA = frozenset({"rejected", "unanswered"})  # TCP flows that carried no data: nothing can have leaked
APP_DATASETS = {"soc.http": "http", "soc.tls": "tls", "soc.ssh": "ssh", "soc.dns": "dns"}
ICMP_ERRORS = {"icmp": frozenset({3, 4, 5, 11, 12}), "ipv6-icmp": frozenset({1, 2, 3, 4})}  # quote a header, no data
# Which side of an application event sent a message: (field the client's message sets, field the server's sets).
APP_SENDERS = {"soc.http": ("http.request.method", "http.response.status_code"),
               "soc.ssh": ("soc.ssh.client.banner", "soc.ssh.server.banner"),
               "soc.tls": ("@timestamp", "tls.server.ja3s")}  # a TLS event starts with the ClientHello
SRC, DST, BOTH = 1, 2, 3  # payload senders in the event's orientation (`senders`)
CLIENT, SERVER = 1, 2  # and in the flow's (the verdict's `sent`)
DIRECTIONS = {0: "none", CLIENT: "client-to-server", SERVER: "server-to-client", CLIENT | SERVER: "both"}


@dataclass(frozen=True)
class Violation:
    rule: str  # write-down | cross-organization | caveat | protection
    reason: str


@dataclass(frozen=True)
class FlowVerdict:
    """The cached, per-flow part of a decision."""

    src: Zone
    dst: Zone
    service: Asset | None
    service_level: Level
    label: Level  # the high-water mark of everything the flow touches: the event's own classification
    moved: Level | None  # the label of the data that moved (None: no payload either way)
    violations: tuple[Violation, ...]
    fields: dict[str, Any]


def _version(text: Any) -> tuple[int, ...] | None:
    try:
        return tuple(int(x) for x in str(text).split("."))
    except ValueError:
        return None


class PolicyEngine:
    """Classification and flow rules for one policy."""

    def __init__(self, policy: Policy, cache_size: int = 65536) -> None:
        self.policy = policy
        self.by_cidr: NetworkMap[Zone] = NetworkMap((net, z) for z in policy.zones for net in z.cidrs)
        self.by_vlan = {v: z for z in policy.zones for v in z.vlans}
        self.by_sensor = {s: z for z in policy.zones for s in z.sensors}
        self.endpoints = {ep: a for a in policy.assets for ep in a.endpoints}
        self.ips = {ip: a for a in policy.assets for ip in a.ips}
        self.domains = {d: a for a in policy.assets for d in a.domains}
        self.asset_addresses = {str(ipaddress.ip_address(ip)) for ip in [*self.ips, *(ep[0] for ep in self.endpoints)]}
        self.agreed: dict[frozenset[str], int] = {}
        for ag in policy.agreements:
            for a in ag.parties:
                for b in ag.parties:
                    if a != b:
                        key = frozenset((a, b))
                        self.agreed[key] = max(self.agreed.get(key, -1), ag.up_to.rank)
        # Protection profiles that apply at each rank.
        self.profiles_at = [[p for p in policy.profiles if p.from_level.rank <= lv.rank] for lv in policy.levels]
        self.flow = lru_cache(maxsize=cache_size)(self._flow)
        self.zone_of = lru_cache(maxsize=cache_size)(self._zone_of)

    # --- lookups -------------------------------------------------------------------------------------------
    def _zone_of(self, ip: str | None, vlan: str | None = None, sensor: str | None = None) -> Zone:
        """CIDR (most specific) first, then the VLAN and sensor the traffic was seen on, else the default zone."""
        z = self.by_cidr.get(ip) if ip else None
        if z is None and vlan is not None:
            z = self.by_vlan.get(vlan)
        if z is None and sensor is not None:
            z = self.by_sensor.get(sensor)
        return z or self.policy.default_zone

    def placed_inside(self, ip: str) -> bool:
        """True when the policy puts the address inside government: in a zone an organization owns, in any zone
        but the default (the internet), or as an asset's address (ip or ip:port)."""
        zone = self.zone_of(ip)
        if zone.organization is not None or zone is not self.policy.default_zone:
            return True
        try:
            canonical = str(ipaddress.ip_address(ip))
        except ValueError:
            return False
        return canonical in self.asset_addresses

    def service(self, ip: str | None, port: int | None, name: str | None) -> Asset | None:
        """The asset behind ip:port, else ip, else the domain name (or a parent domain declared `*.domain`)."""
        if ip is not None:
            a = self.endpoints.get((ip, port)) if port is not None else None
            if a is not None:
                return a
            a = self.ips.get(ip)
            if a is not None:
                return a
        if name:
            name = name.lower().rstrip(".")
            a = self.domains.get(name)
            if a is not None:
                return a
            parts = name.split(".")
            for i in range(1, len(parts)):
                a = self.domains.get("*." + ".".join(parts[i:]))
                if a is not None:
                    return a
        return None

    # --- the per-flow verdict --------------------------------------------------------------------------------
    def _flow(self, src_ip: str | None, dst_ip: str | None, port: int | None, name: str | None,
              vlan: str | None, sensor: str | None, sent: int = CLIENT | SERVER) -> FlowVerdict:
        """The verdict on a flow whose payload was sent by `sent` (CLIENT | SERVER bits): the data that moved is
        the sender's (a client's: its asset level or zone floor; a server's: its service level and zone floor, the
        high-water mark of both when both sent), judged where it arrived."""
        p = self.policy
        src = self.zone_of(src_ip, vlan, sensor)  # the initiator is on the segment the sensor sees
        dst = self.zone_of(dst_ip) if dst_ip else src
        service = self.service(dst_ip, port, name)
        service_level = service.level if service else dst.max_level  # unknown service: fail closed
        held = self.ips.get(src_ip) if src_ip else None  # a client that is itself an asset sends its data
        levels = p.levels
        client_rank = max(held.level.rank, src.floor.rank) if held else src.floor.rank
        server_rank = max(service_level.rank, dst.floor.rank)
        label = levels[max(client_rank, server_rank)]
        moved = (label if sent == CLIENT | SERVER else levels[client_rank] if sent == CLIENT
                 else levels[server_rank] if sent else None)
        # (side, receiving zone, its organization) for each receiver of payload; the assets whose data moved
        receivers = ([("source", src)] if sent & SERVER else []) + ([("destination", dst)] if sent & CLIENT else [])
        senders = [a for a, bit in ((service, SERVER), (held, CLIENT)) if a is not None and sent & bit]
        v: list[Violation] = []
        for side, zone in receivers if moved is not None else ():
            if moved.rank > zone.max_level.rank:
                v.append(Violation("write-down", f"{moved.name} data reaches {side} zone {zone.id} accredited up to "
                                                 f"{zone.max_level.name}"))
        a, b = src.organization, dst.organization
        if moved is not None and a and b and a != b and moved.rank > p.agreement_free_up_to.rank:
            allowed = self.agreed.get(frozenset((a, b)), -1)
            if allowed < moved.rank:
                up_to = f"only up to {p.levels[allowed].name}" if allowed >= 0 else "no agreement"
                v.append(Violation("cross-organization", f"{moved.name} flow {a} -> {b}: {up_to}"))
        orgs = (a, b) if sent == CLIENT | SERVER else tuple(z.organization for _, z in receivers)
        for asset in senders:
            for c in asset.caveats:
                members = p.caveats[c].organizations
                for org in orgs:
                    if org not in members:
                        v.append(Violation("caveat", f"{c} data of {asset.id} reaches {org or 'the internet'}"))
        fields: dict[str, Any] = {
            "gov.source.zone": src.id, "gov.source.level": src.max_level.name,
            "gov.destination.zone": dst.id, "gov.destination.level": dst.max_level.name,
            "gov.service.level": service_level.name, "gov.service.known": service is not None,
            "gov.label.level": label.name, "gov.label.ar": label.ar, "gov.label.rank": label.rank,
            "gov.data.direction": DIRECTIONS[sent],
        }
        if moved is not None:
            fields["gov.data.level"] = moved.name
        if a:
            fields["gov.source.organization"] = a
        if b:
            fields["gov.destination.organization"] = b
        if service is not None:
            fields["gov.service.id"] = service.id
        if held is not None:
            fields["gov.source.asset"] = held.id
        caveats = sorted({c for asset in (service, held) if asset is not None for c in asset.caveats})
        if caveats:
            fields["gov.label.caveats"] = caveats
        return FlowVerdict(src, dst, service, service_level, label, moved, tuple(v), fields)

    @staticmethod
    def flipped(ev: Event) -> bool:
        """True when the event's source is the server: a DNS answer, an ICMP reply, or source port < 1024 <= the
        destination port."""
        sport, dport = ev.get("source.port"), ev.get("destination.port")
        return (ev.get("dns.type") == "answer" or ev.get("soc.icmp.type") in ICMP_REPLIES
                or (isinstance(sport, int) and isinstance(dport, int) and sport < 1024 <= dport))

    @classmethod
    def orient(cls, ev: Event) -> tuple[Any, Any, int | None]:
        """(client ip, server ip, service port): answers and replies sent by the server are turned around."""
        return cls._orient(ev)[:3]

    @classmethod
    def _orient(cls, ev: Event) -> tuple[Any, Any, int | None, bool]:
        """`orient` and whether the event was turned around."""
        src, dst = ev.get("source.ip") or ev.get("host.ip"), ev.get("destination.ip")
        if isinstance(src, list):
            src = src[0] if src else None
        if cls.flipped(ev):
            sport = ev.get("source.port")
            return dst, src, sport if isinstance(sport, int) else None, True
        dport = ev.get("destination.port")
        return src, dst, dport if isinstance(dport, int) else None, False

    @staticmethod
    def senders(ev: Event) -> int:
        """Which side of the event sent payload (SRC | DST bits, event orientation), from what the event shows:
        ICMP errors carry none; flow records count payload each way (the sensor's and Zeek's
        `soc.flow.*_payload_bytes`), else TCP `rejected`/`unanswered` carried none, else a side that sent no
        packet sent nothing (Suricata flows); a DNS message or ICMP packet is its source's; an HTTP, TLS or SSH
        event shows each side's messages; an event naming a destination but no source can only show data that
        reached the destination. Nothing known: both (fail closed, the high-water mark)."""
        itype = ev.get("soc.icmp.type")
        if itype is not None and itype in ICMP_ERRORS.get(ev.get("network.transport"), ()):
            return 0
        sent = ev.get("soc.flow.source_payload_bytes")
        if sent is not None:
            return (SRC if sent else 0) | (DST if ev.get("soc.flow.destination_payload_bytes") else 0)
        if ev.get("soc.flow.state") in NO_DATA:
            return 0
        ds = ev.get("event.dataset")
        if ds == "soc.icmp":
            return SRC if ev.get("soc.icmp.payload_bytes", 1) else 0
        if ds == "soc.dns":
            return SRC
        app = APP_SENDERS.get(ds)
        if app is not None:
            return (SRC if app[0] in ev else 0) | (DST if app[1] in ev else 0)
        sp, dp = ev.get("source.packets"), ev.get("destination.packets")
        if isinstance(sp, int) and isinstance(dp, int):
            return (SRC if sp else 0) | (DST if dp else 0)
        if not (ev.get("source.ip") or ev.get("host.ip")) and ev.get("destination.ip"):
            return SRC  # no source named (a summary over many senders, as soc.flood): only the destination received
        return BOTH

    def verdict(self, ev: Event, sent: int | None = None) -> FlowVerdict:
        """The per-flow verdict for an event (cached); `sent`: the SRC | DST senders (default `senders(ev)`)."""
        client, server, port, flipped = self._orient(ev)
        if sent is None:
            sent = self.senders(ev)
        if flipped and sent in (SRC, DST):
            sent ^= BOTH  # the event's source is the server
        name = ev.get("tls.client.server_name") or ev.get("url.domain")
        vlan = ev.get("network.vlan.id")
        return self.flow(client, server, port, name, str(vlan) if vlan is not None else None, ev.get("observer.name"),
                         sent)

    # --- per-event rules ------------------------------------------------------------------------------------
    def channel(self, ev: Event) -> tuple[str, tuple[int, ...] | None] | None:
        """(protocol, version) of the data channel an event shows, or None when it is not judged here.

        Application events (http/tls/ssh/dns) judge their connection; a flow record is judged only when no
        application protocol was recognised, by its well-known port (ftp, telnet, smb...) or as `unknown`.
        """
        ds = ev.get("event.dataset")
        proto = APP_DATASETS.get(ds)
        if proto is None:
            if ds == "soc.icmp":
                return None
            proto = ev.get("network.protocol")
            if ds == "soc.flow":
                if proto or ev.get("soc.flow.state") in NO_DATA:
                    return None  # an application event judges it, or no data was exchanged
                port = ev.get("destination.port")
                proto = PORT_PROTOCOLS.get(port, "unknown") if isinstance(port, int) else "unknown"
                if proto == "dns":
                    return None  # soc.dns events judge DNS
            elif not proto:
                return None
        version = _version(ev.get("tls.version")) if proto == "tls" else None
        return str(proto).lower(), version

    def protection(self, ev: Event, label: Level) -> list[Violation]:
        profiles = self.profiles_at[label.rank]
        if not profiles:
            return []
        ch = self.channel(ev)
        if ch is None:
            return []
        proto, version = ch
        failing = [p for p in profiles if not any(
            c.protocol == proto and (c.min_version is None or (version is not None and version >= c.min_version))
            for c in p.allowed)]
        if not failing:
            return []
        prof = max(failing, key=lambda p: p.from_level.rank)  # report the strictest profile broken
        if proto in prof.forbidden:
            why = f"cleartext {proto} is forbidden"
        elif proto == "tls":
            why = f"TLS {'.'.join(map(str, version)) if version else '(version unknown)'} is below the minimum"
        else:
            why = f"{proto} is not an approved encrypted channel"
        allowed = ", ".join(c.protocol + (">=" + ".".join(map(str, c.min_version)) if c.min_version else "")
                            for c in prof.allowed)
        return [Violation("protection", f"{label.name} flow on port {ev.get('destination.port')}: {why}; "
                                        f"profile {prof.name} allows {allowed}")]

    def exception_for(self, ev: Event, rule: str) -> PolicyException | None:
        """The first exception whose scope covers this event and rule (expired or not)."""
        src, dst, port = self.orient(ev)
        for x in self.policy.exceptions:
            if x.rules and rule not in x.rules:
                continue
            if x.ports and port not in x.ports:
                continue
            if x.sources and not _in(src, x.sources):
                continue
            if x.destinations and not _in(dst, x.destinations):
                continue
            return x
        return None

    def decide(self, ev: Event) -> tuple[FlowVerdict, list[Violation], list[tuple[Violation, PolicyException]]]:
        """(verdict, violations in force, violations covered by an exception) for one event."""
        fv = self.verdict(ev)
        violations = list(fv.violations) + (self.protection(ev, fv.moved) if fv.moved is not None else [])
        if not violations or not self.policy.exceptions:
            return fv, violations, []
        open_, covered = [], []
        for v in violations:
            x = self.exception_for(ev, v.rule)
            if x is None:
                open_.append(v)
            else:
                covered.append((v, x))
        return fv, open_, covered

    def enrich(self, events: list[Event]) -> None:
        """Pipeline enricher: add `gov.*` (zones, organizations, label, policy decision) to each event in place."""
        for ev in events:
            fv, violations, covered = self.decide(ev)
            if fv.moved is None:
                ev.update(fv.fields)
                ev["gov.policy.decision"] = "no-data"
                continue
            ev.update(fv.fields)
            expired = [(v, x) for v, x in covered if _expired(ev, x)]
            if violations or expired:
                ev["gov.policy.decision"] = "deny"
                ev["gov.policy.violations"] = [v.rule for v in violations] + ["expired-exception"] * len(expired)
                ev["gov.policy.reasons"] = [v.reason for v in violations] + [
                    f"{v.rule}: {v.reason}; exception {x.id} (owner {x.owner}) expired {x.expires.isoformat()}"
                    for v, x in expired]
            elif covered:
                ev["gov.policy.decision"] = "excepted"
            else:
                ev["gov.policy.decision"] = "allow"
            if covered:
                ev["gov.policy.exception"] = sorted({x.id for _, x in covered})

    __call__ = enrich

    def explain(self, src: str, dst: str, port: int | None = None, name: str | None = None,
                protocol: str | None = None, tls_version: str | None = None,
                when: str | None = None) -> dict[str, Any]:
        """The decision for a hypothetical flow, with the reasons (for `soc policy explain`)."""
        ev: Event = {"source.ip": src, "destination.ip": dst, "network.transport": "tcp",
                     "event.dataset": "soc.explain"}
        if protocol:
            ev["network.protocol"] = protocol.lower()
        if port is not None:
            ev["destination.port"] = port
        if name:
            ev["tls.client.server_name"] = name
        if tls_version:
            ev["tls.version"] = tls_version
        ev["@timestamp"] = when or datetime.now(UTC).isoformat()
        self.enrich([ev])
        fv = self.verdict(ev)
        rules = []
        if fv.service is not None:
            rules.append(f"asset {fv.service.id} (line {fv.service.line}) serves {fv.service.level.name} data")
        else:
            rules.append(f"no asset matches: fail closed to the destination zone's maximum {fv.dst.max_level.name}")
        rules.append(f"source zone {fv.src.id} (line {fv.src.line}) accredited up to {fv.src.max_level.name}, floor "
                     f"{fv.src.floor.name}; destination zone {fv.dst.id} (line {fv.dst.line}) up to "
                     f"{fv.dst.max_level.name}, floor {fv.dst.floor.name}")
        held = self.ips.get(src)
        if held is not None:
            rules.append(f"the client is asset {held.id} (line {held.line}) holding {held.level.name} data")
        rules.append(f"label = high-water mark of service, client asset and zone floors = {fv.label.name} "
                     f"({fv.label.ar})")
        profiles = self.profiles_at[fv.label.rank]
        if profiles and not protocol:
            rules.append(f"protection not judged (no --protocol): at {fv.label.name} profiles "
                         f"{', '.join(p.name for p in profiles)} apply")
        return {k: v for k, v in ev.items() if k.startswith("gov.")} | {
            "source.ip": src, "destination.ip": dst, "destination.port": port, "why": rules}


def _in(ip: Any, nets: tuple) -> bool:
    if not isinstance(ip, str):
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in n for n in nets)


def _expired(ev: Event, x: PolicyException) -> bool:
    ts = ev.get("@timestamp")
    if not ts:
        return False
    try:
        when = datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
    except ValueError:
        return False
    return when > x.expires
