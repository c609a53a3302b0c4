"""Pivots: from an alert, an address or an incident to the traffic around it, in time order, through the gate.

- `around(gate, alert_id, window)`: events of the alert's group key (its addresses as `related.ip`, other key
  fields as they are) from `window` before the alert's first event to `window` after its last.
- `timeline(gate, ips | incident, since, until)`: flows, DNS, HTTP, TLS, SSH events (with the policy's decision on
  each: `gov.policy.decision`, `gov.label.level`) and the alerts of those addresses, oldest first. For an incident:
  the addresses of its alerts, by default from 15 minutes before its first alert to 15 minutes after its last.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from correlator import incidents
from correlator.gate import Gate, Read
from correlator.query import Query, Term

DEFAULT_WINDOW = timedelta(minutes=15)
TICK = timedelta(microseconds=1)  # `until` is exclusive: one tick past the last moment kept


class PivotError(ValueError):
    """The pivot cannot be made (unknown or withheld alert or incident, nothing to pivot on); `read` is the gate's
    read that found nothing, so the caller can say what was withheld."""

    def __init__(self, message: str, read: Read | None = None, kind: str = "alerts") -> None:
        super().__init__(message)
        self.read, self.kind = read, kind


def _time(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def alert_span(alert: dict[str, Any]) -> tuple[datetime, datetime]:
    """The alert's first and last event times (its suppression window, else its timestamp)."""
    start = alert.get("soc.alert.suppression.start") or alert["@timestamp"]
    end = alert.get("soc.alert.suppression.end") or alert["@timestamp"]
    return _time(start), _time(end)


def key_clauses(alert: dict[str, Any]) -> list[Term]:
    """One clause per value of the alert's group key: addresses as `related.ip` (either side of a flow)."""
    terms = alert.get("soc.alert.suppression.terms") or []
    out: dict[Term, None] = {}
    for t in terms:
        values = t["value"] if isinstance(t["value"], list) else [t["value"]]
        for v in values:
            out[Term("related.ip" if t["field"].endswith(".ip") else t["field"], v)] = None
    return list(out)


def around(gate: Gate, alert_id: str, window: timedelta = DEFAULT_WINDOW, limit: int = 100) -> tuple[dict, Read]:
    """The alert and the events of its group key within `window` of it (newest first, as `events search`)."""
    read = gate.get_alert(alert_id)
    if not read.items:
        raise PivotError(f"no alert {alert_id} (unknown, or above your clearance)", read)
    alert = read.items[0]
    clauses = key_clauses(alert)
    if not clauses:
        raise PivotError(f"alert {alert_id} has no group key to pivot on")
    start, end = alert_span(alert)
    queries = [Query((c,), start - window, end + window + TICK) for c in clauses]
    return alert, gate.search_events_any(queries, limit, f"around alert {alert_id} ±{window}")


@dataclass
class Timeline:
    """Events and alerts in time order (oldest first), and what the gate withheld of each."""

    items: list[dict[str, Any]]
    events: Read  # the gate's reads (their `withheld` counts)
    alerts: Read
    since: datetime | None
    until: datetime | None
    ips: list[str]


def timeline(gate: Gate, ips: list[str] | None = None, incident: int | None = None, since: datetime | None = None,
             until: datetime | None = None, limit: int = 1000) -> Timeline:
    """Events and alerts of the addresses (or of an incident's alerts' addresses) between `since` and `until`:
    the newest `limit` of them, oldest first."""
    ips = list(dict.fromkeys(ips or []))
    if incident is not None:
        try:
            doc = incidents.get(gate, incident)
        except incidents.IncidentError as exc:
            raise PivotError(str(exc), exc.read, "incidents") from None
        alerts = incidents.alerts_of(gate, doc).items
        ips = list(dict.fromkeys([*ips, *(v for a in alerts for f in ("source.ip", "destination.ip")
                                          if isinstance(v := a.get(f), str))]))
        if alerts and since is None:
            since = min(alert_span(a)[0] for a in alerts) - DEFAULT_WINDOW
        if alerts and until is None:
            until = max(alert_span(a)[1] for a in alerts) + DEFAULT_WINDOW + TICK
    if not ips:
        raise PivotError("no address to build a timeline for")
    events = gate.search_events_any([Query((Term("related.ip", ip),), since, until) for ip in ips], limit,
                                    f"timeline {' '.join(ips)}")
    alerts_read = gate.search_alerts_any(Query((), since, until),
                                         [[(Term(f, ip),) for ip in ips for f in ("source.ip", "destination.ip")]],
                                         limit, f"timeline {' '.join(ips)}")
    items = sorted([*events.items, *alerts_read.items],
                   key=lambda it: (it["@timestamp"], it.get("event.id") or it.get("soc.alert.uuid") or ""))[-limit:]
    return Timeline(items, events, alerts_read, since, until, ips)


def summary(item: dict[str, Any]) -> str:
    """One line about an event or alert for a timeline row: what happened, and the policy's decision."""
    ds = item.get("event.dataset")
    if "soc.alert.uuid" in item:
        text = f"ALERT {item.get('soc.alert.rule.name')} ({item.get('soc.alert.severity')})"
    elif ds == "soc.flow" or item.get("event.category") == ["network"] and "network.packets" in item:
        text = (f"{item.get('network.transport')} {item.get('network.protocol') or ''} {item.get('soc.flow.state')} "
                f"{item.get('network.packets')} pkts {item.get('network.bytes')} B").replace("  ", " ")
    elif ds == "soc.dns":
        answers = item.get("dns.resolved_ip") or []
        text = f"{item.get('dns.question.name')} {item.get('dns.question.type') or ''}" + \
            (f" → {', '.join(answers[:3])}" if answers else "")
    elif ds == "soc.http":
        text = f"{item.get('http.request.method') or ''} {item.get('url.original') or ''} " \
               f"{item.get('http.response.status_code') or ''}".strip()
    elif ds == "soc.tls":
        text = f"TLS {item.get('tls.version') or ''} SNI {item.get('tls.client.server_name') or '-'}"
    elif ds == "soc.icmp":
        text = f"ICMP type {item.get('soc.icmp.type')} code {item.get('soc.icmp.code')}, " \
               f"{item.get('soc.icmp.payload_bytes')} B payload"
    elif ds == "soc.ssh":
        text = " / ".join(str(item[k]) for k in ("soc.ssh.client.banner", "soc.ssh.server.banner") if item.get(k))
    else:
        text = str(item.get("message") or item.get("event.action") or "")
    decision = item.get("gov.policy.decision")
    return text + (f" [policy: {decision}]" if decision else "")
