"""Incidents: alerts grouped for handling, numbered 1, 2, … in the store, read and changed through the gate.

An incident is a flat document (`soc.incident.*`): title, status (`open`, `closed`), assignee, the alert ids it
groups, a severity (the highest of its alerts), a classification (`gov.label.rank`/`level`: the highest of its
alerts, so the gate withholds it like an alert), tasks (a checklist), observables (IPs, domains and hashes of its
alerts and their events) and a timeline of everything that happened to it. Every change is one atomic
`Store.update_incident` (concurrent changes are re-applied, never lost) and one audit entry by the reader.

Only what the reader may see can be grouped or changed: alerts and incidents above the reader's clearance are
withheld (the gate counts them) and an incident the reader cannot see cannot be changed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from correlator.events import to_utc_iso
from correlator.gate import Gate, Read
from correlator.query import Query, Term
from correlator.triage import CLOSE_REASONS, Change, Outcome, change_alerts

SEVERITIES = ("low", "medium", "high", "critical")
STATUSES = ("open", "closed")
# Observables: (type, fields of an alert or of its events that hold one)
OBSERVABLE_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ip", ("source.ip", "destination.ip", "related.ip", "client.ip", "server.ip", "dns.resolved_ip")),
    ("domain", ("dns.question.name", "url.domain", "tls.client.server_name", "destination.domain")),
    ("hash", ("file.hash.md5", "file.hash.sha1", "file.hash.sha256", "process.hash.sha256", "tls.client.ja3",
              "tls.client.ja4", "tls.server.ja3s", "hassh", "ssh.client.hassh")),
)
P = "soc.incident."


class IncidentError(ValueError):
    """A request that cannot be done (unknown or withheld incident or alert, closed incident, unknown task);
    `read` is the gate's read that found nothing, so the caller can say what was withheld."""

    def __init__(self, message: str, read: Read | None = None, kind: str = "incidents") -> None:
        super().__init__(message)
        self.read, self.kind = read, kind


def _now() -> str:
    return to_utc_iso(datetime.now(UTC))


def _entry(actor: str, action: str, detail: str) -> dict[str, Any]:
    return {"@timestamp": _now(), "actor": actor, "action": action, "detail": detail}


def _rank(item: dict[str, Any]) -> int:
    return int(item.get("gov.label.rank") or 0)


# -- reading -------------------------------------------------------------------------------------------------------


def select_alerts(gate: Gate, ids: Sequence[str] = (), where: Query | None = None) -> Read:
    """The alerts named by id, or matching `where`, that the reader may see (`withheld` counts the others).

    An id that is unknown or withheld raises IncidentError naming it (the two are not told apart)."""
    if where is not None:
        return gate.search_alerts(where, sys.maxsize)
    alerts, missing, withheld = [], [], None
    for uuid in dict.fromkeys(ids):
        read = gate.get_alert(uuid)
        if read.withheld is not None:
            withheld = (withheld or 0) + read.withheld
        (alerts.extend(read.items) if read.items else missing.append(uuid))
    if missing:
        raise IncidentError(f"no alert {', '.join(missing)} (unknown, or above your clearance)",
                            Read([], withheld), "alerts")
    return Read(alerts, withheld)


def get(gate: Gate, number: int) -> dict[str, Any]:
    """The incident, when it exists and the reader may see it; IncidentError otherwise (the two are not told apart)."""
    read = gate.get_incident(number)
    if not read.items:
        raise IncidentError(f"no incident {number} (unknown, or above your clearance)", read)
    return read.items[0]


def search(gate: Gate, status: str | None = None, assignee: str | None = None, limit: int = 100) -> Read:
    """Incidents the reader may see, newest first (status `open`/`closed` or all, an assignee)."""
    clauses = [Term(P + "status", status)] if status else []
    if assignee:
        clauses.append(Term(P + "assignee", assignee))
    return gate.search_incidents(Query(tuple(clauses)), limit)


def alerts_of(gate: Gate, incident: dict[str, Any]) -> Read:
    """The incident's alerts the reader may see (all of them, unless their labels changed since they were added)."""
    found = [a for uuid in incident.get(P + "alerts", []) if (a := gate.store.get_alert(uuid)) is not None]
    return gate.filter("alerts", found, f"alerts of incident {incident[P + 'id']}")


def shareable_observables(gate: Gate, incident: dict[str, Any]) -> list[dict[str, Any]]:
    """The incident's observables, each with `shareable`: outside every government zone and asset by the policy
    (correlator.policy.sharing decides, as `soc share export` does)."""
    from correlator.policy.engine import PolicyEngine
    from correlator.policy.sharing import Sharer

    sharer = Sharer(PolicyEngine(gate.policy), "amber", gate.policy.top)
    return [o | {"shareable": sharer.shareable(o["value"], o["type"])} for o in incident.get(P + "observables", [])]


def observables(gate: Gate, alerts: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """IPs, domains and hashes of the alerts and of their events (read through the gate), each once, in order."""
    docs = list(alerts)
    ancestors = list(dict.fromkeys(eid for a in docs for eid in a.get("soc.alert.ancestors", [])))
    if ancestors:  # one read: one audit entry, one withheld count
        docs.extend(gate.search_events_any([Query((Term("event.id", eid),)) for eid in ancestors], len(ancestors),
                                           f"observables: the events of {len(docs)} alert(s)").items)
    seen: dict[tuple[str, str], None] = {}
    for doc in docs:
        for kind, fields in OBSERVABLE_FIELDS:
            for f in fields:
                value = doc.get(f)
                for v in value if isinstance(value, list) else [value]:
                    if isinstance(v, str) and v:
                        seen[(kind, v)] = None
    return [{"type": k, "value": v} for k, v in seen]


# -- changing ------------------------------------------------------------------------------------------------------


def _grouped(doc: dict[str, Any], alerts: Sequence[dict[str, Any]], obs: Sequence[dict[str, str]]) -> dict[str, Any]:
    """`doc` with the alerts added: their ids, the highest severity and label, the observables merged."""
    ids = list(doc.get(P + "alerts", []))
    ids += [a["soc.alert.uuid"] for a in alerts if a["soc.alert.uuid"] not in ids]
    severities = [doc.get(P + "severity"), *(a.get("soc.alert.severity") for a in alerts)]
    known = [SEVERITIES.index(s) for s in severities if s in SEVERITIES]
    out = doc | {P + "alerts": ids, P + "severity": SEVERITIES[max(known)] if known else None}
    top = max(alerts, key=_rank, default=None)
    if top is not None and _rank(top) > _rank(out):
        out["gov.label.rank"], out["gov.label.level"] = _rank(top), top.get("gov.label.level")
    have = {(o["type"], o["value"]) for o in doc.get(P + "observables", [])}
    out[P + "observables"] = [*doc.get(P + "observables", []),
                              *(o for o in obs if (o["type"], o["value"]) not in have)]
    return out


def _audit(gate: Gate, action: str, doc: dict[str, Any], **details: Any) -> None:
    gate.store.audit(action, {"incident": doc[P + "id"], "max_rank": _rank(doc), **details}, actor=gate.reader.user)


def create(gate: Gate, title: str, alerts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A new open incident grouping `alerts` (from `select_alerts`); audited as `incident-create`."""
    if not title.strip():
        raise IncidentError("an incident needs a title")
    if not alerts:
        raise IncidentError("no alerts to group (none matched, or all are above your clearance)")
    user, now = gate.reader.user, _now()
    doc = {"@timestamp": now, P + "title": title, P + "status": "open", P + "assignee": None, P + "alerts": [],
           P + "tasks": [], P + "observables": [], P + "updated": now,
           P + "timeline": [_entry(user, "created", title), _entry(user, "alerts-added", _ids(alerts))]}
    doc = gate.store.create_incident(_grouped(doc, alerts, observables(gate, alerts)))
    _audit(gate, "incident-create", doc, title=title, alerts=doc[P + "alerts"][:100])
    return doc


def _change(gate: Gate, number: int, action: str, change: Callable[[dict[str, Any]], dict[str, Any]],
            detail: str, open_only: bool = True, **audit: Any) -> dict[str, Any]:
    """Apply `change` to a visible incident atomically, add a timeline entry, audit it."""
    get(gate, number)  # visible to the reader, or IncidentError

    def apply(doc: dict[str, Any]) -> dict[str, Any]:
        if open_only and doc.get(P + "status") == "closed":
            raise IncidentError(f"incident {number} is closed")
        new = change(doc)
        return new | {P + "updated": _now(),
                      P + "timeline": [*doc.get(P + "timeline", []), _entry(gate.reader.user, action, detail)]}

    doc = gate.store.update_incident(number, apply)
    _audit(gate, f"incident-{action}", doc, **audit)
    return doc


def _ids(alerts: Sequence[dict[str, Any]]) -> str:
    return f"{len(alerts)} alert(s): " + ", ".join(a["soc.alert.uuid"] for a in alerts[:20]) + \
        (" …" if len(alerts) > 20 else "")


def add(gate: Gate, number: int, alerts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Group more alerts into incident `number`; severity, label and observables follow."""
    if not alerts:
        raise IncidentError("no alerts to add (none matched, or all are above your clearance)")
    obs = observables(gate, alerts)
    return _change(gate, number, "alerts-added", lambda d: _grouped(d, alerts, obs), _ids(alerts),
                   alerts=[a["soc.alert.uuid"] for a in alerts][:100])


def assign(gate: Gate, number: int, user: str) -> dict[str, Any]:
    """Assign the incident to `user`."""
    return _change(gate, number, "assigned", lambda d: d | {P + "assignee": user}, user, assignee=user)


def close(gate: Gate, number: int, reason: str, comment: str = "",
          close_alerts: bool = False) -> tuple[dict[str, Any], Outcome | None]:
    """Close the incident with a reason (CLOSE_REASONS) and an optional comment; with `close_alerts`, also close its
    open alerts with the same reason (correlator.triage: each alert's own workflow, history and audit)."""
    if reason not in CLOSE_REASONS:
        raise IncidentError(f"--reason {reason!r}: one of {', '.join(CLOSE_REASONS)}")
    detail = reason + (f": {comment}" if comment else "")
    doc = _change(gate, number, "closed", lambda d: d | {P + "status": "closed", P + "close_reason": reason,
                                                          P + "close_comment": comment, P + "closed_at": _now()},
                  detail, reason=reason)
    if not close_alerts:
        return doc, None
    still = [a["soc.alert.uuid"] for a in alerts_of(gate, doc).items if a.get("soc.alert.workflow_status") != "closed"]
    change = Change("close", gate.reader.user, _now(), reason, f"incident {number}" + (f": {comment}" if comment
                                                                                         else ""))
    return doc, change_alerts(gate, change, still) if still else Outcome()


def add_task(gate: Gate, number: int, text: str) -> dict[str, Any]:
    """Add a task (numbered 1, 2, … within the incident)."""
    if not text.strip():
        raise IncidentError("a task needs a text")

    def change(d: dict[str, Any]) -> dict[str, Any]:
        tasks = d.get(P + "tasks", [])
        task = {"id": max((t["id"] for t in tasks), default=0) + 1, "text": text, "done": False}
        return d | {P + "tasks": [*tasks, task]}

    return _change(gate, number, "task-added", change, text)


def done_task(gate: Gate, number: int, task: int) -> dict[str, Any]:
    """Mark task `task` done."""
    if not any(t["id"] == task for t in get(gate, number).get(P + "tasks", [])):
        raise IncidentError(f"incident {number} has no task {task}")

    def change(d: dict[str, Any]) -> dict[str, Any]:
        return d | {P + "tasks": [t | {"done": True, "done_by": gate.reader.user} if t["id"] == task else t
                                  for t in d.get(P + "tasks", [])]}

    return _change(gate, number, "task-done", change, str(task), task=task)
