"""share.stix: a STIX 2.1 bundle of the alert's (or incident's) shareable indicators (correlator.policy.sharing:
TLP 2.0 and national-classification markings, nothing inside government), capped by the lowest of the policy's
share_max_level, args.max_level and the runner's clearance. Written to args.output with `<out>.label.json`."""

from __future__ import annotations

import json
import uuid
from typing import Any

from correlator.policy.engine import PolicyEngine
from correlator.policy.model import Level
from playbooks.actions import _common
from playbooks.actions.base import Action, ActionError, Context, Result, register

TLPS = ("clear", "green", "amber", "amber+strict", "red")


def cap(ctx: Context, args: dict[str, Any]) -> Level:
    """The shareable maximum: the policy's, lowered by args.max_level and the runner's clearance."""
    levels = [ctx.policy.share_max_level, ctx.gate.reader.level]
    if args.get("max_level"):
        try:
            levels.append(ctx.policy.level(str(args["max_level"])))
        except KeyError:
            raise ActionError(f"share.stix: unknown level {args['max_level']!r}") from None
    return min(levels, key=lambda lv: lv.rank)


def bundle(ctx: Context, args: dict[str, Any], alerts: list[dict[str, Any]]) -> tuple[str, int, list[str]]:
    """(the bundle's JSON, indicators, what was left out and why)."""
    from correlator.policy.sharing import NAMESPACE, Sharer  # stix2 loads in 0.15 s: only when sharing

    tlp = str(args.get("tlp") or "amber").lower()
    if tlp not in TLPS:
        raise ActionError(f"share.stix: args.tlp {tlp!r}: one of {', '.join(TLPS)}")
    result = Sharer(PolicyEngine(ctx.policy), tlp, cap(ctx, args)).build(alerts)
    doc = json.loads(result.bundle.serialize())
    # the same alerts give the same bundle, byte for byte (stix2 draws a random bundle id)
    doc["id"] = f"bundle--{uuid.uuid5(NAMESPACE, '|'.join(sorted(o['id'] for o in doc['objects'])))}"
    return json.dumps(doc, indent=2, sort_keys=True), result.indicators, result.left_out


@register
class ShareStix(Action):
    name = "share.stix"

    def plan(self, ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
        alert, incident = _common.subject(ctx, args)
        return {"action": self.name, "alert": alert, "incident": incident, "tlp": args.get("tlp") or "amber",
                "cap": cap(ctx, args).name, "output": str(_common.output_path(ctx, args, ".stix.json"))}

    def run(self, ctx: Context, args: dict[str, Any]) -> Result:
        doc, alerts = _common.alerts_of(ctx, *_common.subject(ctx, args))
        ctx.check("alerts read, indicators not built")
        text, n, left_out = bundle(ctx, args, alerts)
        ctx.check("indicators built, bundle not written")
        out = _common.writable(_common.output_path(ctx, args, ".stix.json"))
        out.write_text(text + "\n")
        lab = _common.label(ctx, *[a for a in alerts if int(a.get("gov.label.rank") or 0) <= cap(ctx, args).rank])
        _common.write_label(out, lab)
        ctx.store.audit("share-export", {"output": str(out), "tlp": args.get("tlp") or "amber", "indicators": n,
                                         "alerts": len(alerts), "run": ctx.run_id, "max_rank": lab["gov.label.rank"]},
                        actor=ctx.actor)
        return Result({"output": str(out), "indicators": n, "left_out": left_out, **lab})
