"""enrich: what the policy knows about the addresses of an alert (zone, organization, asset, label) and which
local threat lists ($SOC_HOME/threat-lists/*.txt: one address, network or domain per line, `#` comments) name them."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from correlator.policy.engine import PolicyEngine
from playbooks.actions import _common
from playbooks.actions.base import Action, ActionError, Context, Result, register

FIELDS = ("source.ip", "destination.ip")


def load_lists(folder: Path, ctx: Context | None = None) -> dict[str, tuple[list[Any], set[str]]]:
    """{list name: (networks, domains)} from every `*.txt` in `folder` (`ctx`: its deadline checked per list)."""
    lists: dict[str, tuple[list[Any], set[str]]] = {}
    for path in sorted(folder.glob("*.txt")):
        if ctx is not None:
            ctx.check(f"reading threat list {path.name}")
        nets, names = [], set()
        for n, raw in enumerate(path.read_text().splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                nets.append(ipaddress.ip_network(line, strict=False))
            except ValueError:
                if "/" in line or " " in line:
                    raise ActionError(f"{path}:{n}: {line!r} is neither an address, a network nor a domain") from None
                names.add(line.lower().rstrip("."))
        lists[path.stem] = (nets, names)
    return lists


def listed(value: str, lists: dict[str, tuple[list[Any], set[str]]]) -> list[str]:
    """The names of the lists that contain `value` (an address in a network, or a domain or a parent of it)."""
    try:
        ip = ipaddress.ip_address(value)
        return [name for name, (nets, _) in lists.items()
                if any(ip in net for net in nets if net.version == ip.version)]
    except ValueError:
        parts = value.lower().rstrip(".").split(".")
        suffixes = {".".join(parts[i:]) for i in range(len(parts))}
        return [name for name, (_, names) in lists.items() if names & suffixes]


@register
class Enrich(Action):
    name = "enrich"

    def _values(self, ctx: Context, args: dict[str, Any]) -> list[str]:
        if args.get("ip"):
            return [str(v) for v in (args["ip"] if isinstance(args["ip"], list) else [args["ip"]])]
        _, alerts = _common.alerts_of(ctx, *_common.subject(ctx, args))
        return list(dict.fromkeys(a[f] for a in alerts for f in FIELDS if isinstance(a.get(f), str)))

    def plan(self, ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
        return {"action": self.name, "addresses": self._values(ctx, args),
                "threat_lists": str(ctx.home / "threat-lists")}

    def run(self, ctx: Context, args: dict[str, Any]) -> Result:
        engine = PolicyEngine(ctx.policy)
        lists = load_lists(ctx.home / "threat-lists", ctx)
        out = []
        for value in self._values(ctx, args):
            ctx.check(f"enriching {value}")
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ActionError(f"enrich: {value!r} is not an IP address") from None
            zone = engine.zone_of(value)
            asset = engine.service(value, None, None)
            level = max(zone.floor, asset.level, key=lambda lv: lv.rank) if asset else zone.floor
            org = ctx.policy.organizations.get(zone.organization or "")
            out.append({"ip": value, "zone": zone.id, "organization": zone.organization,
                        "organization_name": org.name if org else None, "asset": asset.id if asset else None,
                        "label": level.name, "inside": engine.placed_inside(value),
                        "threat_lists": listed(value, lists)})
        return Result({"addresses": out})
