"""Triage: the alert workflow, its history and timers, the analysts' queue and statistics, and suppressions.

Statuses: open → acknowledged → in-progress → closed; a closed alert can be reopened. Every change (a status
transition, an assignment, a note) is checked against the alert's current status inside the store's atomic
read-modify-write (`Store.modify_alert`), appended to the alert's `soc.alert.history` (at, by, action, from, to,
reason, comment) and to the audit log. Every read goes through the gate, so nobody changes an alert above their
clearance. Timers run from `soc.alert.created` (when the alert was first stored): time to acknowledge is the first
move out of `open` (ack, start or close), time to close the last close.

Suppressions are scoped to a rule and a key (`source.ip:203.0.113.7`), expire, and are kept in the store as
records of kind `suppression`. Alerts they match are not listed while they hold but are counted per suppression:
`suppression_counts` is the one place those counts come from, so every listing shows the same numbers.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from correlator.events import to_utc_iso
from correlator.gate import Gate, Read
from correlator.query import Cidr, Clause, Prefix, Query, QueryError, Term, Wildcard, parse_query

STATUSES = ("open", "acknowledged", "in-progress", "closed")
OPEN = STATUSES[:3]  # the default queue: everything not closed
CLOSE_REASONS = ("true-positive", "false-positive", "benign-positive", "duplicate", "other")
# action -> (statuses it applies to, status it leads to)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "ack": (("open",), "acknowledged"),
    "start": (("open", "acknowledged"), "in-progress"),
    "close": (("open", "acknowledged", "in-progress"), "closed"),
    "reopen": (("closed",), "open"),
}
ACTIONS = (*TRANSITIONS, "assign", "note")
SEVERITIES = ("low", "medium", "high", "critical")
STATS_BY = {
    "day": lambda a: [str(created_at(a))[:10]],
    "rule": lambda a: [a.get("soc.alert.rule.name") or a.get("soc.alert.rule.uuid") or "-"],
    "severity": lambda a: [a.get("soc.alert.severity") or "-"],
    "organization": lambda a: sorted({a[f] for f in ("gov.source.organization", "gov.destination.organization")
                                      if a.get(f)}) or ["-"],
    "assignee": lambda a: list(a.get("soc.alert.assignees") or []) or ["unassigned"],
    "status": lambda a: [status_of(a)],
}
# the alert fields each STATS_BY key reads (counting projects only these: Store.alert_fields)
KEY_FIELDS = {"day": ("soc.alert.created", "soc.alert.suppression.start", "@timestamp"),
              "rule": ("soc.alert.rule.name", "soc.alert.rule.uuid"), "severity": ("soc.alert.severity",),
              "organization": ("gov.source.organization", "gov.destination.organization"),
              "assignee": ("soc.alert.assignees",), "status": ("soc.alert.workflow_status",)}
TALLY_FIELDS = ("soc.alert.workflow_status", "soc.alert.time_to_ack", "soc.alert.time_to_close",
                "soc.alert.suppression.docs_count", "soc.alert.risk_score")
SUPPRESSION = "suppression"  # the store's record kind
# Short names an analyst may use in an alert query (--where): `rule.name:"Port Scan*"`, `status:open`.
ALIASES = {"rule.name": "soc.alert.rule.name", "rule.id": "soc.alert.rule.uuid", "rule.uuid": "soc.alert.rule.uuid",
           "status": "soc.alert.workflow_status", "severity": "soc.alert.severity", "assignee": "soc.alert.assignees",
           "risk": "soc.alert.risk_score"}
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class Refused(Exception):
    """A change that does not apply to the alert as it is now; the message says why."""


@dataclass(frozen=True)
class Change:
    """One analyst action: `action` (ack, start, close, reopen, assign, note) by `actor` at `at` (ISO UTC)."""

    action: str
    actor: str
    at: str
    reason: str | None = None  # close: one of CLOSE_REASONS
    comment: str | None = None  # close/any: free text; note: the note
    assignee: str | None = None  # assign


def now_iso() -> str:
    return to_utc_iso(datetime.now(UTC))


def status_of(alert: dict[str, Any]) -> str:
    return alert.get("soc.alert.workflow_status") or "open"


def created_at(alert: dict[str, Any]) -> str:
    """When the alert's timers start: first stored (`soc.alert.created`), else its window start."""
    return (alert.get("soc.alert.created") or alert.get("soc.alert.suppression.start") or alert.get("@timestamp")
            or "")


def _seconds(start: str, end: str) -> float:
    delta = datetime.fromisoformat(end.replace("Z", "+00:00")) - datetime.fromisoformat(start.replace("Z", "+00:00"))
    return max(0.0, round(delta.total_seconds(), 3))


def alert_query(text: str | None, since: datetime | None = None, until: datetime | None = None) -> Query:
    """A soc query over alerts, with the short names of ALIASES (`rule.name` is the alert's rule name)."""
    q = parse_query(text or "", since, until)
    return Query(tuple(replace(c, field=ALIASES[c.field]) if getattr(c, "field", None) in ALIASES else c
                       for c in q.clauses), q.since, q.until)


def check(change: Change) -> None:
    """Refuse a malformed change before anything is read (an unknown action or close reason, a note without text)."""
    if change.action not in ACTIONS:
        raise Refused(f"unknown action {change.action!r} (one of {', '.join(ACTIONS)})")
    if change.action == "close" and change.reason not in CLOSE_REASONS:
        raise Refused(f"close needs a reason: one of {', '.join(CLOSE_REASONS)}")
    if change.action != "close" and change.reason is not None:
        raise Refused(f"{change.action}: only close takes a reason")
    if change.action == "note" and not (change.comment or "").strip():
        raise Refused("note: the text is empty")
    if change.action == "assign" and not (change.assignee or "").strip():
        raise Refused("assign: no user given")


def apply(alert: dict[str, Any], change: Change) -> dict[str, Any]:
    """The alert after `change` (a new dict), its history entry appended and its timers set; Refused when the
    change does not apply to the alert's current status or assignment."""
    check(change)
    a = dict(alert)
    before = status_of(a)
    entry: dict[str, Any] = {"at": change.at, "by": change.actor, "action": change.action, "from": before,
                             "to": before}
    if change.action in TRANSITIONS:
        allowed, after = TRANSITIONS[change.action]
        if before not in allowed:
            last = next((h for h in reversed(a.get("soc.alert.history") or []) if h.get("to") == before), None)
            since = f" ({last['action']} by {last['by']} at {last['at']})" if last else ""
            raise Refused(f"{change.action}: the alert is {before}{since}; {change.action} applies to "
                          f"{' or '.join(allowed)} alerts")
        entry["to"] = a["soc.alert.workflow_status"] = after
        created = created_at(a)
        if before == "open" and after != "open" and "soc.alert.acknowledged_at" not in a:
            a["soc.alert.acknowledged_at"] = change.at
            a["soc.alert.time_to_ack"] = _seconds(created, change.at)
        if after == "closed":
            a["soc.alert.closed_at"] = change.at
            a["soc.alert.time_to_close"] = _seconds(created, change.at)
            a["soc.alert.workflow_reason"] = change.reason
            if change.comment:
                a["soc.alert.workflow_comment"] = change.comment
            else:
                a.pop("soc.alert.workflow_comment", None)
        if change.action == "reopen":
            for f in ("soc.alert.closed_at", "soc.alert.time_to_close", "soc.alert.workflow_reason",
                      "soc.alert.workflow_comment"):
                a.pop(f, None)
    elif change.action == "assign":
        user = change.assignee.strip()
        current = list(a.get("soc.alert.assignees") or [])
        if current == [user]:
            raise Refused(f"assign: the alert is already assigned to {user}")
        entry["from"], entry["to"] = ",".join(current) or None, user
        a["soc.alert.assignees"] = [user]
    else:  # note
        a["soc.alert.notes"] = [*(a.get("soc.alert.notes") or []),
                                {"at": change.at, "by": change.actor, "text": change.comment}]
    if change.reason:
        entry["reason"] = change.reason
    if change.comment:
        entry["comment"] = change.comment
    a["soc.alert.history"] = [*(a.get("soc.alert.history") or []), entry]
    a["soc.alert.workflow_updated_at"] = change.at
    return a


# --- changing alerts through the gate ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a (bulk) change did: the alerts changed (as now stored), those refused and why."""

    changed: list[dict[str, Any]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    withheld: int | None = None
    matched: int = 0


def targets(gate: Gate, ids: Sequence[str] = (), where: str | None = None,
            statuses: Sequence[str] = ()) -> tuple[list[str], list[tuple[str, str]], int | None]:
    """The alert ids a change applies to: the given ids the reader may see (others refused as unknown: an alert
    above the reader's clearance is indistinguishable from none) and those matching `where` / `statuses`."""
    found: list[str] = []
    refused: list[tuple[str, str]] = []
    withheld = 0
    for uuid in dict.fromkeys(ids):
        read = gate.get_alert(uuid)
        withheld += read.withheld or 0
        if read.items:
            found.append(uuid)
        else:
            refused.append((uuid, f"no alert with id {uuid}"))
    if where is not None or (statuses and not ids):
        q = alert_query(where)
        read = gate.search_alerts_any(q, [[(Term("soc.alert.workflow_status", s),) for s in statuses]] if statuses
                                      else [], sys.maxsize, f"alerts where {where!r} status={','.join(statuses)}")
        withheld += read.withheld or 0
        found.extend(a["soc.alert.uuid"] for a in read.items if a["soc.alert.uuid"] not in found)
    return found, refused, (withheld if gate.policy.disclose_withheld else None)


def change_alerts(gate: Gate, change: Change, ids: Sequence[str] = (), where: str | None = None,
                  statuses: Sequence[str] = ()) -> Outcome:
    """Apply `change` to each target alert (see `targets`) atomically, each change audited as `alert-<action>`.
    An alert whose status does not allow the change is refused with the reason; the others still change."""
    check(change)
    uuids, refused, withheld = targets(gate, ids, where, statuses)
    out = Outcome(refused=refused, withheld=withheld, matched=len(uuids))
    for uuid in uuids:
        try:
            new = gate.modify_alert(uuid, lambda a: apply(a, change))
        except Refused as exc:
            out.refused.append((uuid, str(exc)))
            continue
        if new is None:  # removed, or relabelled above the reader, since it was read
            out.refused.append((uuid, f"no alert with id {uuid}"))
            continue
        last = new["soc.alert.history"][-1]
        gate.store.audit(f"alert-{change.action}", {
            "alert": uuid, **{k: last[k] for k in ("from", "to", "reason", "comment") if last.get(k) is not None},
            "max_rank": int(new.get("gov.label.rank") or 0)}, actor=change.actor)
        out.changed.append(new)
    return out


# --- suppressions -----------------------------------------------------------------------------------------------


@dataclass
class Suppression:
    """Alerts of `rule` matching `where` (a key: source.ip:X) are not listed until `until`."""

    id: str
    rule: str  # rule uuid
    rule_name: str
    where: str
    until: str
    reason: str
    by: str
    at: str
    rank: int = 0  # the highest label of the alerts it matched when created (who may see it)
    removed_at: str | None = None
    removed_by: str | None = None

    def active(self, now: str) -> bool:
        return self.removed_at is None and now < self.until

    def query(self) -> Query:
        return Query((Term("soc.alert.rule.uuid", self.rule), *key_clauses(self.where)))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"gov.label.rank": self.rank}


def key_clauses(where: str) -> tuple[Clause, ...]:
    """A suppression key: field:value clauses (`source.ip:203.0.113.7`, a CIDR, a prefix*), `field=value` too."""
    text = re.sub(r"(?<![\w.@])([\w.@]+)=", r"\1:", where)
    clauses = parse_query(text).clauses
    if not clauses:
        raise QueryError(f"--where {where!r}: a suppression needs a key such as source.ip:203.0.113.7")
    for c in clauses:
        if not isinstance(c, Term | Cidr | Prefix | Wildcard):
            raise QueryError(f"--where {where!r}: a key is field:value, a CIDR or a prefix*, not {c!r}")
    return clauses


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `24h`, `7d`, `2w`."""
    m = _DURATION.match(text.strip())
    if not m or int(m.group(1)) <= 0:
        raise QueryError(f"--for {text!r}: expected a duration such as 30m, 24h or 7d")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def suppressions(gate: Gate) -> list[Suppression]:
    """Every suppression in the store, active or not (not filtered by clearance: see `visible_suppressions`)."""
    return [Suppression(**{k: v for k, v in r.items() if k in Suppression.__dataclass_fields__})
            for r in gate.store.records(SUPPRESSION)]


def suppress(gate: Gate, rule: str, where: str, duration: str, reason: str, actor: str,
             now: str | None = None) -> Suppression:
    """Create a suppression of `rule` (its uuid or name, as the reader's alerts carry it) for the key `where`."""
    if not reason.strip():
        raise QueryError("--reason: say why the alerts are suppressed")
    clauses = key_clauses(where)
    now = now or now_iso()
    until = to_utc_iso(datetime.fromisoformat(now.replace("Z", "+00:00")) + parse_duration(duration))
    rule_id, rule_name = _resolve_rule(gate, rule)
    matched = gate.search_alerts(Query((Term("soc.alert.rule.uuid", rule_id), *clauses)), sys.maxsize,
                                 f"suppress {rule} {where}")
    rank = max((int(a.get("gov.label.rank") or 0) for a in matched.items), default=0)
    sid = hashlib.sha256(f"{rule_id}\0{where}\0{now}".encode()).hexdigest()[:12]
    sup = Suppression(sid, rule_id, rule_name, where, until, reason.strip(), actor, now, rank)
    gate.store.put_record(SUPPRESSION, sid, sup.as_dict())
    gate.store.audit("alert-suppress", {"suppression": sid, "rule": rule_id, "where": where, "until": until,
                                        "reason": sup.reason, "max_rank": rank}, actor=actor)
    return sup


def unsuppress(gate: Gate, sid: str, actor: str, now: str | None = None) -> Suppression:
    """End a suppression now (it stays listed with who ended it); ValueError when the reader has no such one."""
    found = [s for s in suppressions(gate) if s.id == sid and s.rank <= gate.reader.rank]
    if not found:
        raise ValueError(f"no suppression with id {sid}")
    sup = found[0]
    if sup.removed_at:
        raise ValueError(f"suppression {sid} was already removed by {sup.removed_by} at {sup.removed_at}")
    sup.removed_at, sup.removed_by = now or now_iso(), actor
    gate.store.put_record(SUPPRESSION, sid, sup.as_dict())
    gate.store.audit("alert-unsuppress", {"suppression": sid, "rule": sup.rule, "where": sup.where,
                                          "max_rank": sup.rank}, actor=actor)
    return sup


def _resolve_rule(gate: Gate, rule: str) -> tuple[str, str]:
    """A rule's uuid and name from the reader's alerts, by uuid or by exact name."""
    for f in ("soc.alert.rule.uuid", "soc.alert.rule.name"):
        hit = gate.store.search_alerts(Query((Term(f, rule), gate.clearance)), 1)
        if hit:
            return hit[0]["soc.alert.rule.uuid"], hit[0].get("soc.alert.rule.name") or rule
    raise QueryError(f"--rule {rule!r}: no alert of that rule (give a rule uuid or name from `soc alerts list`)")


@dataclass
class SuppressionCount:
    """One active suppression and what it hides from the reader: alerts and the events folded into them."""

    suppression: Suppression
    alerts: int
    events: int


@dataclass
class Suppressed:
    """Active suppressions the reader may see with their counts, the alerts hidden by those above the reader's
    clearance (counted, not named) and every hidden alert id."""

    counts: list[SuppressionCount]
    hidden_by_withheld: int
    ids: set[str]

    @property
    def total(self) -> int:
        return len(self.ids)


def suppression_counts(gate: Gate, now: str | None = None) -> Suppressed:
    """The one source of suppressed counts: for each active suppression, the reader's alerts it hides."""
    now = now or now_iso()
    counts, ids, by_withheld = [], set(), set()
    for sup in suppressions(gate):
        if not sup.active(now):
            continue
        hidden = gate.store.alert_fields([Query((*sup.query().clauses, gate.clearance))],
                                         ["soc.alert.uuid", "soc.alert.suppression.docs_count"])
        got = {a["soc.alert.uuid"] for a in hidden}
        ids |= got
        if sup.rank > gate.reader.rank:
            by_withheld |= got
            continue
        events = sum(int(a.get("soc.alert.suppression.docs_count") or 1) for a in hidden)
        counts.append(SuppressionCount(sup, len(got), events))
    return Suppressed(counts, len(by_withheld), ids)


def visible_suppressions(gate: Gate, include_inactive: bool = False, now: str | None = None) -> Read:
    """The suppressions the reader may see (through the gate: withheld counted, classified ones audited)."""
    now = now or now_iso()
    items = [s.as_dict() for s in suppressions(gate) if include_inactive or s.active(now)]
    return gate.filter("suppressions", items, "alerts suppressions")


# --- the queue and statistics -----------------------------------------------------------------------------------


@dataclass
class Filters:
    """`soc alerts list` filters; each is AND-ed with the others, alternatives within one are OR-ed."""

    statuses: Sequence[str] = OPEN
    min_severity: str | None = None
    assignee: str | None = None
    rule: str | None = None
    ip: str | None = None
    org: str | None = None
    zone: str | None = None
    where: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def query(self) -> tuple[Query, list[list[tuple[Clause, ...]]]]:
        """The AND-ed query and the OR groups for Gate.search_alerts_any."""
        q = alert_query(self.where, self.since, self.until)
        clauses: list[Clause] = list(q.clauses)
        groups: list[list[tuple[Clause, ...]]] = []
        if self.statuses and set(self.statuses) != set(STATUSES):
            groups.append([(Term("soc.alert.workflow_status", s),) for s in self.statuses])
        if self.min_severity:
            groups.append([(Term("soc.alert.severity", s),) for s in SEVERITIES[SEVERITIES.index(self.min_severity):]])
        if self.assignee:
            clauses.append(Term("soc.alert.assignees", self.assignee))
        if self.rule:
            groups.append([(Wildcard("soc.alert.rule.name", self.rule),)] if "*" in self.rule else
                          [(Term("soc.alert.rule.uuid", self.rule),), (Term("soc.alert.rule.name", self.rule),)])
        if self.ip:
            clauses.append(Cidr("related.ip", _network(self.ip)) if "/" in self.ip else Term("related.ip", self.ip))
        for value, name in ((self.org, "organization"), (self.zone, "zone")):
            if value:
                groups.append([(Term(f"gov.source.{name}", value),), (Term(f"gov.destination.{name}", value),)])
        return Query(tuple(clauses), q.since, q.until), groups


def _network(text: str) -> Any:
    import ipaddress

    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise QueryError(f"--ip {text!r}: not an address or CIDR") from None


@dataclass
class Queue:
    """A page of the queue, how many were withheld and what suppressions hide."""

    items: list[dict[str, Any]]
    withheld: int | None
    suppressed: Suppressed


def queue(gate: Gate, filters: Filters, limit: int = 100, now: str | None = None) -> Queue:
    """Alerts matching `filters`, riskiest then newest first, without those an active suppression hides."""
    sup = suppression_counts(gate, now)
    q, groups = filters.query()
    most = min(limit + sup.total, sys.maxsize)  # enough even if every suppressed alert sorts first
    size = min(2 * limit, most)  # usually enough: read more only when suppressed alerts fill the page
    while True:
        read = gate.search_alerts_any(q, groups, size, "alerts list")
        items = [a for a in read.items if a["soc.alert.uuid"] not in sup.ids]
        if len(items) >= limit or len(read.items) < size or size >= most:
            return Queue(items[:limit], read.withheld, sup)
        size = min(size * 8, most)


def field_values(alert: dict[str, Any], name: str) -> list[Any]:
    """The values an alert groups under for `--group-by` (`rule` is the rule name; lists give each element)."""
    if name in STATS_BY:
        return STATS_BY[name](alert)
    v = alert.get(name)
    if v is None:
        return ["-"]
    return list(dict.fromkeys(map(str, v))) if isinstance(v, list) else [v]


def group(items: Iterable[dict[str, Any]], by: str) -> list[dict[str, Any]]:
    """Counts per value of `by`: alerts, events folded into them, the highest risk; most alerts first."""
    rows: dict[Any, dict[str, Any]] = {}
    for a in items:
        for v in field_values(a, by):
            r = rows.setdefault(v, {by: v, "alerts": 0, "events": 0, "max_risk": 0})
            r["alerts"] += 1
            r["events"] += int(a.get("soc.alert.suppression.docs_count") or 1)
            r["max_risk"] = max(r["max_risk"], a.get("soc.alert.risk_score") or 0)
    return sorted(rows.values(), key=lambda r: (-r["alerts"], str(r[by])))


def stats(gate: Gate, by: str, filters: Filters, now: str | None = None) -> tuple[list[dict[str, Any]], Queue]:
    """Per value of `by` (day, rule, severity, organization, assignee, status): alerts by status, suppressed,
    MTTA and MTTR (mean seconds to acknowledge / to close, over the alerts that were); a last row `all`."""
    if by not in STATS_BY:
        raise QueryError(f"--by {by!r}: one of {', '.join(STATS_BY)}")
    sup = suppression_counts(gate, now)
    q, groups = filters.query()
    read = gate.alert_fields(q, groups, (*TALLY_FIELDS, *KEY_FIELDS[by]), f"alerts stats by {by}")
    return tally(read.items, by, sup.ids), Queue(read.items, read.withheld, sup)


def tally(alerts: Iterable[dict[str, Any]], by: str, suppressed: set[str]) -> list[dict[str, Any]]:
    """The rows of `stats` over alerts already read (a report tallies one read several ways)."""
    acc: dict[str, dict[str, Any]] = defaultdict(lambda: {"alerts": 0, "suppressed": 0, **dict.fromkeys(STATUSES, 0),
                                                           "tta": [], "ttc": []})
    for a in alerts:
        for key in [*field_values(a, by), None]:
            r = acc[key]
            if a["soc.alert.uuid"] in suppressed:
                r["suppressed"] += 1
                continue
            r["alerts"] += 1
            r[status_of(a)] = r.get(status_of(a), 0) + 1
            if a.get("soc.alert.time_to_ack") is not None:
                r["tta"].append(a["soc.alert.time_to_ack"])
            if status_of(a) == "closed" and a.get("soc.alert.time_to_close") is not None:
                r["ttc"].append(a["soc.alert.time_to_close"])
    rows = []
    for key in sorted((k for k in acc if k is not None), key=str) + [None]:
        r = acc[key]
        tta, ttc = r.pop("tta"), r.pop("ttc")
        rows.append({by: "all" if key is None else key, **r,
                     "mtta_s": round(sum(tta) / len(tta), 3) if tta else None, "acknowledged_n": len(tta),
                     "mttr_s": round(sum(ttc) / len(ttc), 3) if ttc else None, "closed_n": len(ttc)})
    return rows


def human(seconds: float | None) -> str:
    """`1h02m`, `3m05s`, `2d04h`; `-` for none."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d{h:02d}h"
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{s:02d}s" if m else f"{s}s"


def grouped(gate: Gate, filters: Filters, by: str, now: str | None = None) -> tuple[list[dict[str, Any]], Queue]:
    """`alerts list --group-by`: counts per value of `by` over the queue (see `group`), reading only the fields
    counting needs (Gate.alert_fields)."""
    sup = suppression_counts(gate, now)
    q, groups = filters.query()
    read = gate.alert_fields(q, groups, (*TALLY_FIELDS, *KEY_FIELDS.get(by, (by,))), f"alerts list by {by}")
    items = [a for a in read.items if a["soc.alert.uuid"] not in sup.ids]
    return group(items, by), Queue(items, read.withheld, sup)
