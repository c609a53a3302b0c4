"""evidence.pcap: the packets of the alert's (or incident's) flows, cut by correlator.evidence into args.output
(default $SOC_HOME/playbooks/<run>/<step>.pcap) with its `<out>.json` manifest, which names the label: the highest
of the alert's and the run's. Re-running writes the same bytes (idempotent)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from correlator.evidence import EvidenceError, extract
from playbooks.actions import _common
from playbooks.actions.base import Action, ActionError, Context, Result, TimedOut, register


def cut(ctx: Context, alert: str | None, incident: int | None, out: Path) -> dict[str, Any]:
    """Extract into `out`; the manifest's label raised to the run's. Returns the manifest. The step's deadline is
    checked while the captures are read: past it, TimedOut and no file is left."""
    ctx.check("before reading the captures")
    try:
        result = extract(ctx.gate, out, alert, incident, lambda: ctx.check("reading the captures"))
    except EvidenceError as exc:
        raise ActionError(f"evidence.pcap: {exc}") from None
    lab = _common.label(ctx, {"gov.label.rank": result.rank})
    result.rank, result.level = lab["gov.label.rank"], lab["gov.label.level"]
    manifest = result.manifest()
    try:
        ctx.check("packets cut, manifest not written")
    except TimedOut:
        out.unlink(missing_ok=True)
        Path(f"{out}.json").unlink(missing_ok=True)
        raise
    Path(f"{out}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


@register
class EvidencePcap(Action):
    name = "evidence.pcap"

    def plan(self, ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
        alert, incident = _common.subject(ctx, args)
        return {"action": self.name, "alert": alert, "incident": incident,
                "output": str(_common.output_path(ctx, args, ".pcap"))}

    def run(self, ctx: Context, args: dict[str, Any]) -> Result:
        alert, incident = _common.subject(ctx, args)
        out = _common.writable(_common.output_path(ctx, args, ".pcap"))
        m = cut(ctx, alert, incident, out)
        return Result({"output": str(out), "manifest": f"{out}.json", "packets": m["packets"], "sha256": m["sha256"],
                       "gov.label.rank": m["rank"], "gov.label.level": m["level"]})
