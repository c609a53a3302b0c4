"""contain.block_ip / contain.unblock_ip: an address in the nftables set `inet soc` `blocked` (IPv6: `blocked6`),
dropped in both directions on input, forward and output, with an optional expiry (nft's own element timeout).

`plan` shows the exact `nft` commands; they run only when the run executes (`ctx.execute`). Both are idempotent
(adding an element that is there, or deleting one that is not, is success). `args.netns` runs them inside a network
namespace (`ip netns exec NAME nft …`). The block records its inverse (the unblock), the unblock the block.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from typing import Any

from correlator.query import QueryError
from correlator.triage import parse_duration
from playbooks.actions.base import Action, ActionError, Context, Result, register

TABLE = "inet soc"
# Loaded once, when the table is missing: the sets and the chains that drop what they hold.
RULESET = """table inet soc {
  set blocked { type ipv4_addr; flags timeout; }
  set blocked6 { type ipv6_addr; flags timeout; }
  chain input { type filter hook input priority filter - 10; policy accept;
    ip saddr @blocked drop; ip6 saddr @blocked6 drop; }
  chain forward { type filter hook forward priority filter - 10; policy accept;
    ip saddr @blocked drop; ip daddr @blocked drop; ip6 saddr @blocked6 drop; ip6 daddr @blocked6 drop; }
  chain output { type filter hook output priority filter - 10; policy accept;
    ip daddr @blocked drop; ip6 daddr @blocked6 drop; }
}
"""


def target(args: dict[str, Any]) -> tuple[str, str, str | None]:
    """(address, set name, netns) from args.ip / args.netns; ActionError for anything but one IP address."""
    raw = str(args.get("ip") or "").strip()
    try:
        ip = ipaddress.ip_address(raw)
    except ValueError:
        raise ActionError(f"contain: args.ip {raw!r} is not an IP address") from None
    return str(ip), "blocked" if ip.version == 4 else "blocked6", args.get("netns") or None


def prefix(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns, "nft"] if netns else ["nft"]


def nft(netns: str | None, *argv: str, stdin: str | None = None, ok_missing: bool = False,
        timeout: float = 30.0) -> bool:
    """Run one nft command (killed after `timeout` s); False when `ok_missing` and nft said the object is not
    there; ActionError otherwise."""
    if shutil.which("nft") is None:
        raise ActionError("contain: `nft` not found (apt-get install nftables)")
    cmd = [*prefix(netns), *argv]
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ActionError(f"contain: `{' '.join(cmd)}` timed out after {timeout:g} s (killed)") from None
    if proc.returncode == 0:
        return True
    if ok_missing and ("No such file or directory" in proc.stderr or "does not exist" in proc.stderr):
        return False
    raise ActionError(f"contain: `{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()}")


def table_exists(netns: str | None, timeout: float = 30.0) -> bool:
    return nft(netns, "list", "table", *TABLE.split(), ok_missing=True, timeout=timeout)


def element(ip: str, timeout: int | None = None) -> str:
    return "{ " + ip + (f" timeout {timeout}s" if timeout else "") + " }"


def _timeout(args: dict[str, Any]) -> int | None:
    if not args.get("timeout"):
        return None
    try:
        return int(parse_duration(str(args["timeout"])).total_seconds())
    except QueryError:
        raise ActionError(f"contain: args.timeout {args['timeout']!r}: expected a duration such as 30m, 24h or 7d") \
            from None


@register
class BlockIp(Action):
    name = "contain.block_ip"
    destructive = True

    def commands(self, args: dict[str, Any]) -> list[list[str]]:
        ip, set_name, netns = target(args)
        return [[*prefix(netns), "-f", "-"],  # only when `list table inet soc` fails: RULESET on stdin
                [*prefix(netns), "add", "element", *TABLE.split(), set_name, element(ip, _timeout(args))]]

    def plan(self, ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
        cmds = self.commands(args)
        return {"action": self.name, "commands": [" ".join(c) for c in cmds], "ruleset_if_missing": RULESET,
                "inverse": self.inverse(args)}

    def inverse(self, args: dict[str, Any]) -> dict[str, Any]:
        ip, _, netns = target(args)
        return {"action": UnblockIp.name, "args": {"ip": ip, **({"netns": netns} if netns else {})}}

    def run(self, ctx: Context, args: dict[str, Any]) -> Result:
        ip, set_name, netns = target(args)
        timeout = _timeout(args)
        if not ctx.execute:
            return Result({"planned": True, **self.plan(ctx, args)})
        if not table_exists(netns, ctx.remaining(30)):
            nft(netns, "-f", "-", stdin=RULESET, timeout=ctx.remaining(30))
        nft(netns, "add", "element", *TABLE.split(), set_name, element(ip, timeout), timeout=ctx.remaining(30))
        return Result({"blocked": ip, "set": f"{TABLE} {set_name}", "timeout_s": timeout, "netns": netns},
                      self.inverse(args))


@register
class UnblockIp(Action):
    name = "contain.unblock_ip"

    def plan(self, ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
        ip, set_name, netns = target(args)
        return {"action": self.name,
                "commands": [" ".join([*prefix(netns), "delete", "element", *TABLE.split(), set_name, element(ip)])],
                "inverse": {"action": BlockIp.name, "args": dict(args)}}

    def run(self, ctx: Context, args: dict[str, Any]) -> Result:
        ip, set_name, netns = target(args)
        if not ctx.execute:
            return Result({"planned": True, **self.plan(ctx, args)})
        removed = table_exists(netns, ctx.remaining(30)) and nft(
            netns, "delete", "element", *TABLE.split(), set_name, element(ip), ok_missing=True,
            timeout=ctx.remaining(30))
        return Result({"unblocked": ip, "was_blocked": bool(removed), "netns": netns},
                      {"action": BlockIp.name, "args": dict(args)})
