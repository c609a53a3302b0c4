"""soc policy: validate, show and explain the classification policy; generate Elasticsearch clearance roles."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from correlator.policy import Policy, PolicyEngine, PolicyError, load_policy
from soc_cli.common import (
    ClearanceOpt,
    ExitCode,
    JsonOpt,
    PolicyOpt,
    active_policy,
    console,
    die,
    err_console,
    print_ndjson,
    whoami,
)

app = typer.Typer(help="The information-classification policy: validate, show, explain a flow, ES roles.\n\n"
                       "Example: soc policy explain --src 10.1.0.80 --dst 198.51.100.23:443",
                  no_args_is_help=True)

@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="Policy YAML file.")],
    json_out: JsonOpt = False,
) -> None:
    """Validate a policy file: every problem as `file:line: field: reason` on stderr (exit 2).

    Example: soc policy validate rules/policy/national-backbone.yml
    """
    try:
        p = load_policy(file)
    except PolicyError as exc:
        for problem in exc.problems:
            err_console.print(problem, highlight=False, markup=False, emoji=False, soft_wrap=True)  # not :100: → 💯
            if json_out:
                print_ndjson({"valid": False, "problem": problem})
        raise typer.Exit(ExitCode.USAGE) from None
    counts = {"levels": len(p.levels), "organizations": len(p.organizations), "zones": len(p.zones),
              "assets": len(p.assets), "agreements": len(p.agreements), "protection": len(p.profiles),
              "exceptions": len(p.exceptions)}
    if json_out:
        print_ndjson({"valid": True, "file": str(file), "name": p.name} | counts)
    else:
        console.print(f"{file}: valid policy {p.name!r}: " + ", ".join(f"{v} {k}" for k, v in counts.items()),
                      markup=False, emoji=False, highlight=False, soft_wrap=True)  # file text: no markup, no emoji


@app.command()
def show(policy: PolicyOpt = None, json_out: JsonOpt = False) -> None:
    """Show the policy in force: levels, zones, agreements, protection profiles, exceptions (expired marked).

    Example: soc policy show --policy rules/policy/national-backbone.yml --json
    """
    p = active_policy(policy)
    now = datetime.now(UTC)
    rows: list[tuple[str, dict[str, Any]]] = []
    rows += [("level", {"rank": lv.rank, "name": lv.name, "ar": lv.ar}) for lv in p.levels]
    rows += [("organization", {"id": o.id, "name": o.name, "ar": o.ar}) for o in p.organizations.values()]
    rows += [("zone", {"id": z.id, "organization": z.organization, "max_level": z.max_level.name,
                       "floor": z.floor.name, "cidrs": [str(n) for n in z.cidrs], "vlans": list(z.vlans),
                       "sensors": list(z.sensors), "default": z is p.default_zone}) for z in p.zones]
    rows += [("asset", {"id": a.id, "level": a.level.name, "caveats": list(a.caveats),
                        "match": list(a.ips) + [f"{i}:{port}" for i, port in a.endpoints] + list(a.domains)})
             for a in p.assets]
    rows += [("agreement", {"between": sorted(a.parties), "up_to": a.up_to.name, "reference": a.reference})
             for a in p.agreements]
    rows += [("protection", {"name": f.name, "from_level": f.from_level.name,
                             "allowed": [c.protocol + (">=" + ".".join(map(str, c.min_version)) if c.min_version
                                                       else "") for c in f.allowed],
                             "forbidden": sorted(f.forbidden)}) for f in p.profiles]
    rows += [("exception", {"id": x.id, "owner": x.owner, "reason": x.reason, "rules": sorted(x.rules),
                            "expires": x.expires.isoformat(), "expired": x.expires < now}) for x in p.exceptions]
    if json_out:
        for kind, row in rows:
            print_ndjson({"kind": kind} | row)
        return
    console.print(f"[bold]{p.name}[/] ({p.path}); share up to {p.share_max_level.name}; "
                  f"no agreement needed up to {p.agreement_free_up_to.name}")
    for kind in dict.fromkeys(k for k, _ in rows):
        items = [r for k, r in rows if k == kind]
        table = Table(title=f"{kind}s ({len(items)})", title_justify="left")
        for col in items[0]:
            table.add_column(col, overflow="fold")
        for r in items[:200]:
            table.add_row(*(", ".join(map(str, v)) if isinstance(v, list) else str(v) for v in r.values()))
        console.print(table)
        if len(items) > 200:
            console.print(f"… {len(items) - 200} more {kind}s (use --json)")


def _endpoint(text: str) -> tuple[str, int | None]:
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and (text.count(":") == 1 or host.startswith("[")):
        return host.strip("[]"), int(port)
    return text.strip("[]"), None


@app.command()
def explain(
    src: Annotated[str, typer.Option("--src", help="Source (client) IP.")],
    dst: Annotated[str, typer.Option("--dst", help="Destination IP or IP:PORT ([v6]:port).")],
    sni: Annotated[str | None, typer.Option("--sni", help="TLS server name or HTTP host.")] = None,
    protocol: Annotated[str | None, typer.Option(help="Channel seen: tls, ssh, http, ftp, telnet, smb1...")] = None,
    tls_version: Annotated[str | None, typer.Option(help="TLS version for --protocol tls (e.g. 1.2).")] = None,
    at: Annotated[str | None, typer.Option(help="Time of the flow (ISO-8601; default now) for exception expiry.")]
    = None,
    policy: PolicyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Explain the policy's decision for a flow: zones, labels, the rules applied, the decision and why.

    Example: soc policy explain --src 10.10.3.3 --dst 10.1.0.10:443 --protocol tls --tls-version 1.3
    """
    import ipaddress

    dst_ip, port = _endpoint(dst)
    for name, ip in (("--src", src), ("--dst", dst_ip)):
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            die(f"{name}: {ip!r} is not an IP address")
    engine = PolicyEngine(active_policy(policy))
    out = engine.explain(src, dst_ip, port, sni, protocol, tls_version, at)
    if json_out:
        print_ndjson(out)
        return
    decision = out["gov.policy.decision"]
    colour = {"allow": "green", "excepted": "yellow"}.get(decision, "red")
    console.print(f"[bold]{src} -> {dst}[/]{f' ({sni})' if sni else ''}: [bold {colour}]{decision.upper()}[/]")
    console.print(f"  source      {out['gov.source.zone']} ({out.get('gov.source.organization', 'no organization')}),"
                  f" accredited {out['gov.source.level']}")
    console.print(f"  destination {out['gov.destination.zone']} "
                  f"({out.get('gov.destination.organization', 'no organization')}), accredited "
                  f"{out['gov.destination.level']}")
    console.print(f"  service     {out.get('gov.service.id', '(unknown)')}: {out['gov.service.level']}")
    console.print(f"  label       {out['gov.label.level']} / {out['gov.label.ar']}"
                  + (f" caveats {', '.join(out['gov.label.caveats'])}" if out.get("gov.label.caveats") else ""))
    for why in out["why"]:
        console.print(f"  rule        {why}", highlight=False)
    for rule, reason in zip(out.get("gov.policy.violations", []), out.get("gov.policy.reasons", []), strict=True):
        console.print(f"  [red]violation[/]   {rule}: {reason}", highlight=False)
    if out.get("gov.policy.exception"):
        console.print(f"  exception   {', '.join(out['gov.policy.exception'])}")


def es_roles(policy: Policy, indices: list[str]) -> dict[str, dict[str, Any]]:
    """One Elasticsearch role per level: read on soc indices with document-level security by `gov.label.rank`."""
    roles = {}
    for lv in policy.levels:
        dls = {"bool": {"should": [{"range": {"gov.label.rank": {"lte": lv.rank}}},
                                   {"bool": {"must_not": {"exists": {"field": "gov.label.rank"}}}}],
                        "minimum_should_match": 1}}
        roles[f"soc_clearance_{lv.name.replace('-', '_')}"] = {
            "description": f"soc readers cleared up to {lv.name} ({lv.ar}), policy {policy.name}",
            "indices": [{"names": indices, "privileges": ["read", "view_index_metadata"],
                         "query": json.dumps(dls, separators=(",", ":"))}],
            "metadata": {"soc_policy": policy.name, "soc_clearance_rank": lv.rank, "soc_clearance": lv.name},
        }
    return roles


@app.command("es-roles")
def es_roles_cmd(
    policy: PolicyOpt = None,
    index: Annotated[list[str] | None, typer.Option(help="Index patterns the roles may read.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Generate Elasticsearch roles (one per level) whose document-level security hides items above clearance.

    Load each with `PUT _security/role/<name>`; map users to roles with role mappings.

    Example: soc policy es-roles --index 'logs-soc.events-*' --json
    """
    roles = es_roles(active_policy(policy), index or ["logs-soc.events-*", "soc-alerts-*"])
    if json_out:
        for name, body in roles.items():
            print_ndjson({"name": name, "role": body})
        return
    console.print_json(json.dumps(roles, ensure_ascii=False))


@app.command("whoami")
def whoami_cmd(clearance: ClearanceOpt = None, json_out: JsonOpt = False) -> None:
    """Show who you are to soc (your OS account), the level you read at, and where it comes from.

    Example: soc policy whoami --clearance public --json
    """
    r = whoami(clearance)
    out = {"user": r.user, "clearance": r.level.name, "ar": r.level.ar, "rank": r.rank, "source": r.source}
    print_ndjson(out) if json_out else console.print(
        f"{r.user}: cleared up to {r.level.name} ({r.level.ar}, rank {r.rank}) from {r.source}")
