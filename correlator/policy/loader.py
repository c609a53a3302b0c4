"""Load and validate a policy YAML file; every error names the file, the line and the field.

Validation keeps going after an error so that one run reports every problem; nothing is returned unless the whole
file is valid (a policy is enforced exactly or not at all).
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml

from correlator.policy.model import (
    Agreement,
    Asset,
    Caveat,
    Channel,
    Level,
    Organization,
    Policy,
    PolicyException,
    ProtectionProfile,
    Response,
    Zone,
)

DEFAULT_LADDER = [("public", "عام"), ("restricted", "محدود"), ("secret", "سري"), ("top-secret", "سري للغاية")]
RULES = frozenset({"write-down", "cross-organization", "protection", "caveat"})
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
_CHANNEL_RE = re.compile(r"^([a-z0-9]+)\s*(?:>=\s*([0-9]{1,4}(?:\.[0-9]{1,4})*))?$")
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")  # what YAML (and so libyaml's marks) counts as a line break
_DOMAIN_RE = re.compile(r"^(\*\.)?([a-z0-9-]+\.)*[a-z0-9-]+\.?$")


class PolicyError(ValueError):
    """An invalid policy; `problems` lists `file:line: field: reason` for each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def one_line(text: str) -> str:
    """`text` with each unprintable character (line breaks, controls) escaped as in a repr; Arabic stays as is."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _Reader:
    """Walks the YAML node tree, converting values and recording problems with their marks."""

    def __init__(self, path: str, text: str = "") -> None:
        self.path = path
        self.last_line = len(_LINE_BREAK.findall(text)) + 1  # libyaml marks end of input one line past the last
        self.problems: list[str] = []
        self.item_line = 1  # line of the list item being read: where a missing field is reported

    def fail(self, node: yaml.Node | None, where: str, reason: str) -> None:
        self.add(node.start_mark.line + 1 if node is not None else 1, where, reason)

    def add(self, line: int, where: str, reason: str) -> None:
        """Record `file:line: field: reason` on one line (a key or a level name may hold a line break)."""
        self.problems.append(f"{self.path}:{min(line, self.last_line)}: {one_line(where)}: {one_line(reason)}")

    def mapping(self, node: yaml.Node, where: str, known: set[str] | None = None) -> dict[str, yaml.Node] | None:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, where, "expected a mapping")
            return None
        out: dict[str, yaml.Node] = {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):  # str() of an aliased collection could be an alias bomb
                self.fail(k, where, "a key must be a plain name, not a list or mapping")
                continue
            key = str(k.value)
            if known is not None and key not in known:
                self.fail(k, f"{where}.{key}", f"unknown field (known: {', '.join(sorted(known))})")
            elif key in out:
                self.fail(k, f"{where}.{key}", "duplicate field")
            out[key] = v
        return out

    def seq(self, node: yaml.Node | None, where: str) -> list[yaml.Node]:
        if node is None:
            return []
        if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, where, "expected a list")
            return []
        return list(node.value)

    def scalar(self, node: yaml.Node | None, where: str, required: bool = True) -> str | None:
        if node is None:
            if required:
                self.add(self.item_line, where, "required field missing")
            return None
        if not isinstance(node, yaml.ScalarNode) or node.value == "":
            self.fail(node, where, "expected a non-empty value")
            return None
        return str(node.value)

    def strings(self, node: yaml.Node | None, where: str) -> list[tuple[str, yaml.Node]]:
        if isinstance(node, yaml.ScalarNode) and node.value not in ("", "~", "null"):
            return [(str(node.value), node)]
        out = []
        for i, n in enumerate(self.seq(node, where)):
            v = self.scalar(n, f"{where}[{i}]")
            if v is not None:
                out.append((v, n))
        return out


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; raises PolicyError listing every problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError([f"{path}:1: file: cannot read: {exc}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise PolicyError([f"{path}:{line}: file: not UTF-8 text (byte offset {exc.start}: {exc.reason})"]) from None
    return parse_policy(text, str(path))


def parse_policy(text: str, path: str = "<policy>") -> Policy:
    """Validate policy YAML text (see docs/policy.md for the format)."""
    r = _Reader(path, text)
    try:
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml keeps marks
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        position = getattr(exc, "position", None)  # a ReaderError (e.g. a control character) has no mark
        line = mark.line + 1 if mark else text.count("\n", 0, position) + 1 if position is not None else 1
        r.add(line, "yaml", str(getattr(exc, "problem", None) or exc).splitlines()[0])
        raise PolicyError(r.problems) from None
    except UnicodeEncodeError as exc:  # a lone surrogate in text given as str: libyaml reads UTF-8
        r.add(text.count("\n", 0, exc.start) + 1, "yaml", f"character {exc.start} is not text ({exc.reason})")
        raise PolicyError(r.problems) from None
    if root is None:
        raise PolicyError([f"{path}:1: policy: the file is empty"])
    top = r.mapping(root, "policy", {"name", "levels", "caveats", "organizations", "zones", "assets", "agreements",
                                     "protection", "exceptions", "settings", "clearance", "response"})
    if top is None:
        raise PolicyError(r.problems)
    levels = _levels(r, top.get("levels"))

    def level(node: yaml.Node | None, where: str, default: Level | None = None) -> Level | None:
        if node is None and default is not None:
            return default
        name = r.scalar(node, where)
        if name is None:
            return None
        for lv in levels:
            if name.lower() == lv.name.lower() or name == lv.ar:
                return lv
        r.fail(node, where, f"unknown level {name!r} (levels: {', '.join(lv.name for lv in levels)})")
        return None

    orgs = _organizations(r, top.get("organizations"))
    caveats = _caveats(r, top.get("caveats"), orgs)
    zones, default_zone = _zones(r, top.get("zones"), orgs, level, levels)
    assets = _assets(r, top.get("assets"), level, caveats)
    agreements = _agreements(r, top.get("agreements"), orgs, level)
    profiles = _profiles(r, top.get("protection"), level)
    exceptions = _exceptions(r, top.get("exceptions"))
    settings = r.mapping(top["settings"], "settings", {"agreement_free_up_to", "share_max_level"}) \
        if "settings" in top else {}
    settings = settings or {}
    free = level(settings.get("agreement_free_up_to"), "settings.agreement_free_up_to", levels[0])
    share = level(settings.get("share_max_level"), "settings.share_max_level", levels[0])
    clear_default, users, disclose = _clearance(r, top.get("clearance"), level, levels)
    response = _response(r, top.get("response"))
    name_node = top.get("name")
    name = r.scalar(name_node, "name", required=False) or Path(path).stem
    if r.problems:
        raise PolicyError(r.problems)
    assert default_zone is not None and free and share and clear_default
    return Policy(name=name, levels=levels, caveats=caveats, organizations=orgs, zones=zones,
                  default_zone=default_zone, assets=assets, agreements=agreements, profiles=profiles,
                  exceptions=exceptions, agreement_free_up_to=free, share_max_level=share,
                  clearance_default=clear_default, clearance_users=users, disclose_withheld=disclose,
                  response=response, path=path)


def _levels(r: _Reader, node: yaml.Node | None) -> list[Level]:
    if node is None:
        return [Level(n, ar, i) for i, (n, ar) in enumerate(DEFAULT_LADDER)]
    out: list[Level] = []
    seen: set[str] = set()
    for i, n in enumerate(r.seq(node, "levels")):
        where = f"levels[{i}]"
        m = r.mapping(n, where, {"name", "ar"})
        if m is None:
            continue
        r.item_line = n.start_mark.line + 1
        name, ar = r.scalar(m.get("name"), f"{where}.name"), r.scalar(m.get("ar"), f"{where}.ar")
        if name is None or ar is None:
            continue
        if name.lower() in seen or ar in seen:
            r.fail(m["name"], f"{where}.name", f"level {name!r} defined twice")
            continue
        seen |= {name.lower(), ar}
        out.append(Level(name, ar, len(out)))
    if len(out) < 2:
        r.fail(node, "levels", "at least two levels are needed, lowest first")
        return out or [Level(n, ar, i) for i, (n, ar) in enumerate(DEFAULT_LADDER)]
    return out


def _organizations(r: _Reader, node: yaml.Node | None) -> dict[str, Organization]:
    out: dict[str, Organization] = {}
    for i, n in enumerate(r.seq(node, "organizations")):
        where = f"organizations[{i}]"
        m = r.mapping(n, where, {"id", "name", "ar"})
        if m is None:
            continue
        r.item_line = n.start_mark.line + 1
        oid = _ident(r, m.get("id"), f"{where}.id")
        name = r.scalar(m.get("name"), f"{where}.name")
        if oid is None or name is None:
            continue
        if oid in out:
            r.fail(m["id"], f"{where}.id", f"organization {oid!r} defined twice")
        out[oid] = Organization(oid, name, r.scalar(m.get("ar"), f"{where}.ar", required=False) or "")
    return out


def _caveats(r: _Reader, node: yaml.Node | None, orgs: dict[str, Organization]) -> dict[str, Caveat]:
    out: dict[str, Caveat] = {}
    for i, n in enumerate(r.seq(node, "caveats")):
        where = f"caveats[{i}]"
        m = r.mapping(n, where, {"name", "ar", "organizations"})
        if m is None:
            continue
        r.item_line = n.start_mark.line + 1
        name = _ident(r, m.get("name"), f"{where}.name")
        members = set()
        for o, on in r.strings(m.get("organizations"), f"{where}.organizations"):
            if o not in orgs:
                r.fail(on, f"{where}.organizations", f"unknown organization {o!r}")
            members.add(o)
        if not members:
            r.fail(n, f"{where}.organizations", "a caveat must name at least one organization")
        if name is not None:
            out[name] = Caveat(name, r.scalar(m.get("ar"), f"{where}.ar", required=False) or "", frozenset(members))
    return out


def _int(text: str, low: int, high: int) -> int | None:
    """`text` as an int in [low, high] if it is plain ASCII digits, else None (never a ValueError)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 18:  # int() of 5,000 digits raises
        return None
    value = int(text)
    return value if low <= value <= high else None


def _ident(r: _Reader, node: yaml.Node | None, where: str) -> str | None:
    v = r.scalar(node, where)
    if v is not None and not _ID_RE.match(v):
        r.fail(node, where, f"{v!r} is not a valid identifier (letters, digits, _ . : -)")
        return None
    return v


def _network(r: _Reader, text: str, node: yaml.Node, where: str) -> Any:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        r.fail(node, where, f"{text!r} is not a network: {exc}")
        return None


def _zones(r: _Reader, node: yaml.Node | None, orgs: dict[str, Organization], level: Any,
           levels: list[Level]) -> tuple[list[Zone], Zone | None]:
    zones: list[Zone] = []
    default: Zone | None = None
    ids: set[str] = set()
    owners: dict[Any, str] = {}
    for i, n in enumerate(r.seq(node, "zones")):
        where = f"zones[{i}]"
        m = r.mapping(n, where, {"id", "organization", "max_level", "floor", "cidrs", "vlans", "sensors", "default"})
        if m is None:
            continue
        r.item_line = n.start_mark.line + 1
        zid = _ident(r, m.get("id"), f"{where}.id")
        org = r.scalar(m.get("organization"), f"{where}.organization", required=False)
        if org is not None and org not in orgs:
            r.fail(m["organization"], f"{where}.organization", f"unknown organization {org!r}")
        max_level = level(m.get("max_level"), f"{where}.max_level")
        floor = level(m.get("floor"), f"{where}.floor", levels[0])
        if max_level and floor and floor.rank > max_level.rank:
            r.fail(m["floor"], f"{where}.floor", f"floor {floor.name} is above max_level {max_level.name}")
        cidrs = []
        for text, cn in r.strings(m.get("cidrs"), f"{where}.cidrs"):
            net = _network(r, text, cn, f"{where}.cidrs")
            if net is not None:
                if net in owners:
                    r.fail(cn, f"{where}.cidrs", f"{net} is already in zone {owners[net]!r}")
                owners[net] = zid or "?"
                cidrs.append(net)
        vlans = []
        for text, vn in r.strings(m.get("vlans"), f"{where}.vlans"):
            vid = _int(text, 1, 4094)
            v = str(vid)  # as events carry it: "0110" is VLAN 110
            if vid is None:
                r.fail(vn, f"{where}.vlans", f"{text!r} is not a VLAN id (1-4094)")
                continue
            if ("vlan", v) in owners:
                r.fail(vn, f"{where}.vlans", f"VLAN {v} is already in zone {owners[('vlan', v)]!r}")
            owners[("vlan", v)] = zid or "?"
            vlans.append(v)
        sensors = [s for s, _ in r.strings(m.get("sensors"), f"{where}.sensors")]
        is_default = m.get("default") is not None and r.scalar(m.get("default"), f"{where}.default") == "true"
        if zid is None or max_level is None or floor is None:
            continue
        if zid in ids:
            r.fail(m["id"], f"{where}.id", f"zone {zid!r} defined twice")
        ids.add(zid)
        zone = Zone(zid, org, max_level, floor, tuple(cidrs), tuple(vlans), tuple(sensors), n.start_mark.line + 1)
        if is_default:
            if default is not None:
                r.fail(m["default"], f"{where}.default", f"zone {default.id!r} is already the default zone")
            default = zone
        zones.append(zone)
    if default is None:
        r.fail(node, "zones", "one zone must be `default: true` (where unlisted addresses are, e.g. the internet)")
    return zones, default


def _assets(r: _Reader, node: yaml.Node | None, level: Any, caveats: dict[str, Caveat]) -> list[Asset]:
    out: list[Asset] = []
    ids: set[str] = set()
    for i, n in enumerate(r.seq(node, "assets")):
        where = f"assets[{i}]"
        m = r.mapping(n, where, {"id", "level", "caveats", "match", "description"})
        if m is None:
            continue
        r.item_line = n.start_mark.line + 1
        aid = _ident(r, m.get("id"), f"{where}.id")
        lv = level(m.get("level"), f"{where}.level")
        cav = []
        for c, cn in r.strings(m.get("caveats"), f"{where}.caveats"):
            if c not in caveats:
                r.fail(cn, f"{where}.caveats", f"unknown caveat {c!r}")
            cav.append(c)
        ips, endpoints, domains = [], [], []
        matches = r.strings(m.get("match"), f"{where}.match")
        if not matches:
            r.fail(n, f"{where}.match", "list at least one ip, ip:port or domain")
        for text, mn in matches:
            kind, value = _match(text)
            if kind == "ip":
                ips.append(value)
            elif kind == "endpoint":
                endpoints.append(value)
            elif kind == "domain":
                domains.append(value)
            else:
                r.fail(mn, f"{where}.match", f"{text!r} is not an ip, ip:port ([v6]:port) or domain name")
        if aid in ids:
            r.fail(m["id"], f"{where}.id", f"asset {aid!r} defined twice")
        if aid is None or lv is None:
            continue
        ids.add(aid)
        out.append(Asset(aid, lv, tuple(cav), tuple(ips), tuple(endpoints), tuple(domains), n.start_mark.line + 1))
    return out


def _match(text: str) -> tuple[str, Any]:
    """Classify an asset match: ('ip', '10.0.0.1'), ('endpoint', ('10.0.0.1', 443)), ('domain', 'a.gov'), ('bad', _)."""
    try:
        return "ip", str(ipaddress.ip_address(text))
    except ValueError:
        pass
    host, sep, port_text = text.rpartition(":")
    port = _int(port_text, 1, 65535) if sep else None
    if port is not None:
        try:
            return "endpoint", (str(ipaddress.ip_address(host.strip("[]"))), port)
        except ValueError:
            pass
    name = text.lower()
    if _DOMAIN_RE.match(name) and not name.replace(".", "").isdigit():
        return "domain", name.rstrip(".")
    return "bad", None


def _agreements(r: _Reader, node: yaml.Node | None, orgs: dict[str, Organization], level: Any) -> list[Agreement]:
    out = []
    for i, n in enumerate(r.seq(node, "agreements")):
        where = f"agreements[{i}]"
        m = r.mapping(n, where, {"between", "up_to", "reference"})
        if m is None:
            continue
        r.item_line = n.start_mark.line + 1
        parties = set()
        for o, on in r.strings(m.get("between"), f"{where}.between"):
            if o not in orgs:
                r.fail(on, f"{where}.between", f"unknown organization {o!r}")
            parties.add(o)
        if len(parties) < 2:
            r.fail(m.get("between") or n, f"{where}.between", "an agreement needs at least two organizations")
        up_to = level(m.get("up_to"), f"{where}.up_to")
        if up_to is not None:
            out.append(Agreement(frozenset(parties), up_to,
                                 r.scalar(m.get("reference"), f"{where}.reference", required=False) or ""))
    return out


def _profiles(r: _Reader, node: yaml.Node | None, level: Any) -> list[ProtectionProfile]:
    out = []
    for i, n in enumerate(r.seq(node, "protection")):
        where = f"protection[{i}]"
        m = r.mapping(n, where, {"name", "from_level", "allowed", "forbidden"})
        if m is None:
            continue
        r.item_line = n.start_mark.line + 1
        name = r.scalar(m.get("name"), f"{where}.name")
        lv = level(m.get("from_level"), f"{where}.from_level")
        allowed = []
        for text, cn in r.strings(m.get("allowed"), f"{where}.allowed"):
            mm = _CHANNEL_RE.match(text.strip().lower())
            if not mm or mm.group(1) not in ("tls", "ssh"):
                r.fail(cn, f"{where}.allowed", f"{text!r}: use tls, tls>=1.2 or ssh (the encrypted channels soc sees)")
                continue
            allowed.append(Channel(mm.group(1), tuple(int(x) for x in mm.group(2).split(".")) if mm.group(2) else None))
        if not allowed:
            r.fail(n, f"{where}.allowed", "list at least one approved channel")
        forbidden = {f.lower() for f, _ in r.strings(m.get("forbidden"), f"{where}.forbidden")}
        if name and lv:
            out.append(ProtectionProfile(name, lv, tuple(allowed), frozenset(forbidden)))
    return out


def _exceptions(r: _Reader, node: yaml.Node | None) -> list[PolicyException]:
    out = []
    for i, n in enumerate(r.seq(node, "exceptions")):
        where = f"exceptions[{i}]"
        m = r.mapping(n, where, {"id", "owner", "reason", "rules", "scope", "expires"})
        if m is None:
            continue
        r.item_line = n.start_mark.line + 1
        eid = _ident(r, m.get("id"), f"{where}.id")
        owner = r.scalar(m.get("owner"), f"{where}.owner")
        reason = r.scalar(m.get("reason"), f"{where}.reason")
        rules = set()
        for rule, rn in r.strings(m.get("rules"), f"{where}.rules"):
            if rule not in RULES:
                r.fail(rn, f"{where}.rules", f"unknown rule {rule!r} (rules: {', '.join(sorted(RULES))})")
            rules.add(rule)
        scope = r.mapping(m["scope"], f"{where}.scope", {"source", "destination", "ports"}) if "scope" in m else None
        scoped = scope is not None
        if scope is None:
            r.fail(m.get("scope") or n, f"{where}.scope", "required: source and/or destination networks, ports")
            scope = {}
        nets: dict[str, list] = {"source": [], "destination": []}
        for side in nets:
            for text, sn in r.strings(scope.get(side), f"{where}.scope.{side}"):
                net = _network(r, text if "/" in text else _host_net(text), sn, f"{where}.scope.{side}")
                if net is not None:
                    nets[side].append(net)
        ports = set()
        for p, pn in r.strings(scope.get("ports"), f"{where}.scope.ports"):
            port = _int(p, 1, 65535)
            if port is None:
                r.fail(pn, f"{where}.scope.ports", f"{p!r} is not a port")
            else:
                ports.add(port)
        if scoped and not (nets["source"] or nets["destination"]):  # `scope: {}` would exempt every flow
            r.fail(m["scope"], f"{where}.scope", "name a source or destination network: an exception must be narrow")
        expires = _datetime(r, m.get("expires"), f"{where}.expires")
        if eid and owner and reason and expires:
            out.append(PolicyException(eid, owner, reason, frozenset(rules), tuple(nets["source"]),
                                       tuple(nets["destination"]), frozenset(ports), expires, n.start_mark.line + 1))
    return out


def _host_net(text: str) -> str:
    return text + ("/128" if ":" in text else "/32")


def _datetime(r: _Reader, node: yaml.Node | None, where: str) -> datetime | None:
    text = r.scalar(node, where)
    if text is None:
        return None
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, 23, 59, 59, 999999, tzinfo=UTC)  # valid through that day
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    except ValueError:
        r.fail(node, where, f"{text!r} is not a date (YYYY-MM-DD) or ISO-8601 time")
        return None


def _clearance(r: _Reader, node: yaml.Node | None, level: Any, levels: list[Level]
               ) -> tuple[Level | None, dict, bool]:
    if node is None:
        return levels[0], {}, True
    m = r.mapping(node, "clearance", {"default", "users", "disclose_withheld"}) or {}
    default = level(m.get("default"), "clearance.default", levels[0])
    disclose = True
    if "disclose_withheld" in m:
        text = (r.scalar(m["disclose_withheld"], "clearance.disclose_withheld") or "").lower()
        if text not in ("true", "false", "yes", "no"):
            r.fail(m["disclose_withheld"], "clearance.disclose_withheld", f"expected true or false, got {text!r}")
        disclose = text in ("true", "yes")
    users: dict[str, Level] = {}
    if "users" in m:
        um = r.mapping(m["users"], "clearance.users") or {}
        for user, ln in um.items():
            lv = level(ln, f"clearance.users.{user}")
            if lv is not None:
                users[user] = lv
    return default, users, disclose


def _response(r: _Reader, node: yaml.Node | None) -> Response:
    """`response:` — the playbook rules the policy's owners set (docs/playbooks.md)."""
    if node is None:
        return Response()
    m = r.mapping(node, "response", {"two_person_rule", "approval_ttl", "protected_assets", "approval_impact"}) or {}

    def number(key: str, low: int, high: int) -> int | None:
        if key not in m:
            return None
        text = r.scalar(m[key], f"response.{key}") or ""
        if not (text.isascii() and text.isdigit() and low <= int(text) <= high):
            r.fail(m[key], f"response.{key}", f"expected a whole number from {low} to {high}, got {text!r}")
            return None
        return int(text)

    two = False
    if "two_person_rule" in m:
        text = (r.scalar(m["two_person_rule"], "response.two_person_rule") or "").lower()
        if text not in ("true", "false", "yes", "no"):
            r.fail(m["two_person_rule"], "response.two_person_rule", f"expected true or false, got {text!r}")
        two = text in ("true", "yes")
    ttl = number("approval_ttl", 0, 30 * 86400)
    impact = number("approval_impact", 0, 100)
    nets = []
    for i, (text, n) in enumerate(r.strings(m.get("protected_assets"), "response.protected_assets")):
        net = _network(r, text, n, f"response.protected_assets[{i}]")
        if net is not None:
            nets.append(net)
    return Response(two, 3600 if ttl is None else ttl, tuple(nets), impact)
