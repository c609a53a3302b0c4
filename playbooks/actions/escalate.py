"""escalate: the national-CERT package of an alert or incident: one zip holding the alert or incident
(`subject.json`), its alerts, the packet evidence (`evidence.pcap` and its manifest, when packets are on file), the
STIX bundle (`indicators.stix.json`) and `manifest.json` naming every member with its SHA-256 and the label (the
highest of the inputs and the run's). The zip is deterministic (fixed member order and times): re-running writes
the same bytes."""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from playbooks.actions import _common
from playbooks.actions.base import Action, ActionError, Context, Result, TimedOut, register
from playbooks.actions.evidence_pcap import cut
from playbooks.actions.share_stix import bundle

EPOCH = (1980, 1, 1, 0, 0, 0)


@register
class Escalate(Action):
    name = "escalate"

    def plan(self, ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
        alert, incident = _common.subject(ctx, args)
        return {"action": self.name, "alert": alert, "incident": incident, "to": args.get("to") or "national-cert",
                "output": str(_common.output_path(ctx, args, ".escalation.zip")),
                "members": ["subject.json", "alerts.json", "evidence.pcap", "evidence.pcap.json",
                            "indicators.stix.json", "manifest.json"]}

    def run(self, ctx: Context, args: dict[str, Any]) -> Result:
        alert, incident = _common.subject(ctx, args)
        doc, alerts = _common.alerts_of(ctx, alert, incident)
        out = _common.writable(_common.output_path(ctx, args, ".escalation.zip"))
        members: dict[str, bytes] = {"subject.json": _dump(doc), "alerts.json": _dump(alerts)}
        problems: list[str] = []
        with tempfile.TemporaryDirectory() as tmp:
            pcap = Path(tmp) / "evidence.pcap"
            try:
                evidence = cut(ctx, alert, incident, pcap)
                members["evidence.pcap"] = pcap.read_bytes()
                members["evidence.pcap.json"] = _dump(evidence | {"output": "evidence.pcap"})
            except TimedOut:
                raise
            except ActionError as exc:
                problems.append(str(exc))
        ctx.check("evidence cut, indicators not built")
        text, n, left_out = bundle(ctx, args, alerts)
        ctx.check("indicators built, package not written")
        members["indicators.stix.json"] = text.encode() + b"\n"
        lab = _common.label(ctx, doc, *alerts)
        manifest = {"package": "soc national-CERT escalation", "to": args.get("to") or "national-cert",
                    "run": ctx.run_id, "step": ctx.step_id, "alert": alert, "incident": incident, **lab,
                    "indicators": n, "left_out": left_out, "problems": problems,
                    "files": [{"name": k, "bytes": len(v), "sha256": hashlib.sha256(v).hexdigest()}
                              for k, v in members.items()]}
        members["manifest.json"] = _dump(manifest)
        part = out.with_name(out.name + ".part")
        try:
            with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as zf:
                for name, data in members.items():
                    ctx.check(f"writing the package: {name}")
                    zf.writestr(zipfile.ZipInfo(name, EPOCH), data, zipfile.ZIP_DEFLATED)
        except BaseException:
            part.unlink(missing_ok=True)  # no partial package
            raise
        part.replace(out)
        _common.write_label(out, lab)
        digest = hashlib.sha256(out.read_bytes()).hexdigest()
        ctx.store.audit("escalate", {"output": str(out), "sha256": digest, "alert": alert, "incident": incident,
                                     "run": ctx.run_id, "max_rank": lab["gov.label.rank"]}, actor=ctx.actor)
        return Result({"output": str(out), "sha256": digest, "files": [f["name"] for f in manifest["files"]],
                       "problems": problems, **lab})


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True, default=str).encode() + b"\n"
