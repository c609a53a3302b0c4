"""Helpers the actions share: the alert or incident a step is about, labels on files, secrets (no action here)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from correlator import incidents
from playbooks.actions.base import ActionError, Context


def subject(ctx: Context, args: dict[str, Any]) -> tuple[str | None, int | None]:
    """(alert id, incident number) from the step's args, else the run's variables (`alert`, `incident`)."""
    alert = args.get("alert") or ctx.variables.get("alert")
    incident = args.get("incident") or ctx.variables.get("incident")
    if not alert and not incident:
        raise ActionError("no alert or incident: give args.alert or args.incident (or run the playbook on one)")
    try:
        return (str(alert) if alert else None), (int(incident) if incident and not alert else None)
    except (TypeError, ValueError):
        raise ActionError(f"incident {incident!r}: not a number") from None


def alerts_of(ctx: Context, alert: str | None, incident: int | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the alert or incident document, its alerts), read through the caller's gate; ActionError if not visible."""
    if alert is not None:
        read = ctx.gate.get_alert(alert)
        if not read.items:
            raise ActionError(f"no alert {alert} (unknown, or above the runner's clearance)")
        return read.items[0], read.items
    try:
        doc = incidents.get(ctx.gate, int(incident or 0))
    except incidents.IncidentError as exc:
        raise ActionError(str(exc)) from None
    return doc, incidents.alerts_of(ctx.gate, doc).items


def label(ctx: Context, *docs: dict[str, Any]) -> dict[str, Any]:
    """The label an output carries: the highest rank of the run's (`ctx.label_rank`) and the documents'."""
    rank = max([ctx.label_rank, *(int(d.get("gov.label.rank") or 0) for d in docs)])
    levels = ctx.policy.levels
    return {"gov.label.rank": rank, "gov.label.level": levels[min(rank, len(levels) - 1)].name}


def write_label(path: Path, lab: dict[str, Any]) -> Path:
    """`<path>.label.json`: the label a file output carries, next to it."""
    side = Path(f"{path}.label.json")
    side.write_text(json.dumps(lab | {"file": path.name}, sort_keys=True) + "\n")
    return side


def output_path(ctx: Context, args: dict[str, Any], suffix: str) -> Path:
    """args.output, else $SOC_HOME/playbooks/<run>/<step><suffix>; nothing is created (`plan` uses it too)."""
    if args.get("output"):
        return Path(args["output"])
    return ctx.home / "playbooks" / ctx.run_id / f"{ctx.step_id}{suffix}"


def writable(path: Path) -> Path:
    """`path` with its folder created (0700): only `run` calls this, never `plan`."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def secret(ctx: Context, env: str, file: str) -> str | None:
    """A secret from the environment variable `env`, else $SOC_HOME/secrets/`file`, which must be mode 0600 (or
    stricter) and owned by the runner; None when neither exists. Never logged, never in outputs."""
    if os.environ.get(env):
        return os.environ[env]
    path = ctx.home / "secrets" / file
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if stat.S_IMODE(st.st_mode) & 0o077 or st.st_uid != os.geteuid():
        raise ActionError(f"{path}: a secret file must be mode 0600 and owned by the runner "
                          f"(it is {stat.S_IMODE(st.st_mode):04o}, uid {st.st_uid}); chmod 600 {path}")
    return path.read_text().strip()


def done_marker(ctx: Context, kind: str) -> Path:
    """Where a step records that its side effect (a message sent) happened, so a resumed run does not repeat it."""
    path = ctx.home / "playbooks" / ctx.run_id / f"{ctx.step_id}.{kind}.done"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
