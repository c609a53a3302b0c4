"""The read gate: the one place where a person's reads of the store are cleared, counted and audited.

Every command that shows stored events, alerts, hunt results, audit entries or anything derived from them reads
through a `Gate` (`docs/policy.md`, "Clearance"). The gate

- resolves the reader: an OS account mapped by the policy to the highest level it may read; a requested clearance
  may lower that, never raise it (a request above it is refused and audited);
- adds the clearance to every query, so nothing above it leaves the store (items without a label are public);
- counts what it withheld (disclosed to the reader only when the policy's `clearance.disclose_withheld` says so);
- appends a `read-classified` audit entry for every read that returned classified items.

The boundary itself is the store's: on SQLite the file's permissions, on Elasticsearch the document-level-security
roles of `soc policy es-roles`. The gate is the guard in front of them for people who use soc to read.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from correlator.policy.model import Level, Policy
from correlator.query import Clause, Clearance, Query, Range
from correlator.store.base import Store

DEMO_PURPOSE = "demo"  # a store `soc demo` created for its bundled synthetic capture


class ClearanceError(ValueError):
    """A requested clearance that is unknown or above what the policy allows the reader; the message says which."""


@dataclass(frozen=True)
class Reader:
    """Who reads, and up to which level."""

    user: str
    level: Level
    source: str  # where the level came from, for `soc policy whoami`

    @property
    def rank(self) -> int:
        return self.level.rank


def resolve_reader(policy: Policy, user: str, requested: str | None = None, source: str = "--clearance") -> Reader:
    """The reader `user` at the policy's level for them, or at `requested` when that is not higher.

    Raises ClearanceError for an unknown level or one above the user's mapping.
    """
    allowed = policy.clearance_of(user)
    where = (f"policy {policy.path}: clearance.users.{user}" if user in policy.clearance_users
             else f"policy {policy.path}: clearance.default")
    if requested is None or not str(requested).strip():
        return Reader(user, allowed, where)
    try:
        asked = policy.level(str(requested))
    except (KeyError, IndexError):
        raise ClearanceError(f"{source}: unknown clearance {requested!r} "
                             f"(levels: {', '.join(lv.name for lv in policy.levels)})") from None
    if asked.rank > allowed.rank:
        raise ClearanceError(f"{source}: clearance {asked.name!r} refused: {user!r} is cleared up to "
                             f"{allowed.name!r} ({where})")
    return Reader(user, asked, source)


@dataclass
class Read:
    """What a read returned, and how many items the gate withheld (`None` when the policy keeps that secret)."""

    items: list[dict[str, Any]]
    withheld: int | None = None
    count: int | None = None  # for counts: how many matched at the reader's clearance


@dataclass
class HuntRead:
    """A hunt through the gate: base-rule matches, correlations over readable events only, failures."""

    matches: list[tuple[Any, list[dict[str, Any]]]] = field(default_factory=list)
    correlations: list[Any] = field(default_factory=list)
    failures: list[Any] = field(default_factory=list)
    withheld: int | None = None


def _rank(item: dict[str, Any]) -> int:
    return int(item.get("gov.label.rank") or 0)


def _alert_order(a: dict[str, Any]) -> tuple:
    """The stores' alert order: riskiest, then newest, then by uuid."""
    return (-(a.get("soc.alert.risk_score") or 0), _Desc(a.get("@timestamp") or ""), a.get("soc.alert.uuid") or "")


class _Desc(str):
    """A string that sorts in reverse."""

    def __lt__(self, other: str) -> bool:
        return str.__gt__(self, other)


class _Above(Exception):
    """An alert turned out to be above the reader's clearance inside a change."""


class Gate:
    """Reads of `store` by `reader` under `policy`. Build it with `open_gate`."""

    def __init__(self, store: Store, reader: Reader, policy: Policy) -> None:
        self.store, self.reader, self.policy = store, reader, policy
        self.clearance = Clearance(reader.rank)
        self._above = Range("gov.label.rank", gt=reader.rank)

    # -- events and alerts -----------------------------------------------------------------------------------------

    def search_events(self, q: Query, limit: int = 100, what: str = "") -> Read:
        items = self.store.search_events(self._cleared(q), limit)
        return self._account("events", items, lambda: self.store.count_events(self._withheld(q)), what or _describe(q))

    def count_events(self, q: Query, what: str = "") -> Read:
        read = self._account("events", [], lambda: self.store.count_events(self._withheld(q)), what or _describe(q))
        read.count = self.store.count_events(self._cleared(q))
        return read

    def search_alerts(self, q: Query, limit: int = 100, what: str = "") -> Read:
        items = self.store.search_alerts(self._cleared(q), limit)
        return self._account("alerts", items, lambda: self._withheld_alerts([q]),
                             what or _describe(q))

    def search_events_any(self, queries: Sequence[Query], limit: int = 100, what: str = "") -> Read:
        """Events matching any of `queries` (a pivot over several hosts), each once, newest first; the withheld
        count is of distinct events too."""
        found: dict[str, dict[str, Any]] = {}
        for q in queries:
            found |= {e["event.id"]: e for e in self.store.search_events(self._cleared(q), limit)}
        items = sorted(found.values(), key=lambda e: (_Desc(e["@timestamp"]), e["event.id"]))[:limit]
        return self._account("events", items, lambda: len({
            e["event.id"] for q in queries for e in self.store.search_events(self._withheld(q), sys.maxsize)}),
            what or " | ".join(map(_describe, queries)))

    def get_alert(self, uuid: str) -> Read:
        """One alert by id: `items` holds it when it exists and the reader may see it."""
        found = self.store.get_alert(uuid)
        return self.filter("alerts", [found] if found else [], f"alert {uuid}")

    def search_alerts_any(self, q: Query, any_of: Sequence[Sequence[Sequence[Clause]]] = (), limit: int = 100,
                          what: str = "") -> Read:
        """Alerts matching `q` and, for each group of `any_of`, one of its alternatives (clauses AND-ed): OR within a
        group, AND across groups (`--status open,acknowledged --ip X`). Riskiest then newest first, each alert once;
        the withheld count counts each alert once too."""
        combos = [replace(q, clauses=(*q.clauses, *(c for alt in combo for c in alt)))
                  for combo in itertools.product(*any_of)]
        found: dict[str, dict[str, Any]] = {}
        for qq in combos:
            for a in self.store.search_alerts(self._cleared(qq), limit):
                found.setdefault(a["soc.alert.uuid"], a)
        items = sorted(found.values(), key=_alert_order)[:limit]
        return self._account("alerts", items, lambda: self._withheld_alerts(combos),
                             what or " | ".join(map(_describe, combos)))

    def alert_fields(self, q: Query, any_of: Sequence[Sequence[Sequence[Clause]]], fields: Sequence[str],
                     what: str) -> Read:
        """`fields` of every alert `search_alerts_any` would match (no limit, no order): what counting needs.
        Withheld counted and classified reads audited as for whole alerts."""
        combos = [replace(q, clauses=(*q.clauses, *(c for alt in combo for c in alt)))
                  for combo in itertools.product(*any_of)]
        keep = list(dict.fromkeys(("soc.alert.uuid", "gov.label.rank", *fields)))
        items = self.store.alert_fields([self._cleared(qq) for qq in combos], keep)
        return self._account("alerts", items, lambda: self._withheld_alerts(combos), what)

    def _withheld_alerts(self, combos: Sequence[Query]) -> int:
        return self.store.count_alerts_any([self._withheld(qq) for qq in combos])

    def count_alerts(self, q: Query, what: str = "") -> Read:
        """How many alerts match `q` at the reader's clearance (`count`), and how many were withheld."""
        read = self._account("alerts", [], lambda: self.store.count_alerts(self._withheld(q)), what or _describe(q))
        read.count = self.store.count_alerts(self._cleared(q))
        return read

    def alert_ids(self, q: Query) -> set[str]:
        """The ids of the alerts matching `q` that the reader may see (no content: nothing to audit)."""
        return {a["soc.alert.uuid"] for a in self.store.alert_fields([self._cleared(q)], ["soc.alert.uuid"])}

    def modify_alert(self, uuid: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any] | None:
        """Change one alert atomically (Store.modify_alert) if the reader may see it; None when it does not exist
        or is above the reader's clearance (the caller read it through `get_alert` or a search first)."""
        def cleared(doc: dict[str, Any]) -> dict[str, Any]:
            if _rank(doc) > self.reader.rank:
                raise _Above
            return change(doc)

        try:
            return self.store.modify_alert(uuid, cleared)
        except _Above:
            return None

    def filter(self, kind: str, items: Sequence[dict[str, Any]], what: str) -> Read:
        """Items read by other means (by id, from a file the store produced): keep those the reader may see."""
        kept = [it for it in items if _rank(it) <= self.reader.rank]
        return self._account(kind, kept, lambda: len(items) - len(kept), what)

    # -- incidents (correlator.incidents) --------------------------------------------------------------------------

    def search_incidents(self, q: Query, limit: int = 100, what: str = "") -> Read:
        items = self.store.search_incidents(self._cleared(q), limit)
        return self._account("incidents", items,
                             lambda: len(self.store.search_incidents(self._withheld(q), sys.maxsize)),
                             what or _describe(q))

    def get_incident(self, number: int) -> Read:
        """One incident by number: `items` holds it when it exists and the reader may see it."""
        found = self.store.get_incident(number)
        return self.filter("incidents", [found] if found else [], f"incident {number}")

    # -- hunting ----------------------------------------------------------------------------------------------------

    def hunt(self, paths: Sequence[str | Path], since: datetime | None, until: datetime | None,
             limit: int = 1000) -> HuntRead:
        """Sigma rules over the events the reader may read; correlations are replayed over those events only."""
        from correlator.hunt import hunt

        res = hunt(self.store, list(paths), since, until, limit, (self.clearance,))
        output = [q for q in res.queries if q.rule.output]
        matched = [e for _, events in res.matches for e in events]
        read = self._account("events", matched, lambda: sum(
            len(self.store.hunt(q.query, since, until, sys.maxsize, (self._above,))) for q in output),
            f"hunt {', '.join(str(p) for p in paths)}")
        return HuntRead(res.matches, res.correlations, res.failures, read.withheld)

    # -- audit log and status ----------------------------------------------------------------------------------------

    def audit_entries(self) -> Read:
        """Audit entries, except those about reads of items above the reader's clearance."""
        entries = self.store.audit_entries()
        kept = [e for e in entries if int((e.get("details") or {}).get("max_rank") or 0) <= self.reader.rank]
        return Read(kept, len(entries) - len(kept) if self.policy.disclose_withheld else None)

    def status(self) -> dict[str, Any]:
        """The store's health, with event and alert counts at the reader's clearance."""
        info = self.store.status()
        if "events" in info:
            info["events"] = self.store.count_events(Query((self.clearance,)))
        if "alerts" in info:
            info["alerts"] = len(self.store.search_alerts(Query((self.clearance,)), sys.maxsize))
        if self.reader.rank < self.policy.top.rank:
            info.pop("first_event", None), info.pop("last_event", None)
        return info

    # -- internals -------------------------------------------------------------------------------------------------

    def _cleared(self, q: Query) -> Query:
        return replace(q, clauses=(*q.clauses, self.clearance))

    def _withheld(self, q: Query) -> Query:
        return replace(q, clauses=(*q.clauses, self._above))

    def _account(self, kind: str, items: list[dict[str, Any]], withheld: Any, what: str) -> Read:
        """Count the withheld items (only when the reader is below the top level) and audit classified reads."""
        n = withheld() if self.reader.rank < self.policy.top.rank else 0
        classified = [it for it in items if _rank(it) > 0]
        if classified:
            ids = [it.get("event.id") or it.get("soc.alert.uuid") or it.get("soc.incident.id") for it in classified]
            self.store.audit("read-classified", {
                "what": kind, "query": what, "clearance": self.reader.rank, "items": len(classified),
                "max_rank": max(map(_rank, classified)), "ids": ids[:100], "withheld": n},
                actor=self.reader.user)
        return Read(items, n if self.policy.disclose_withheld else None)


def open_gate(store: Store, policy: Policy, user: str, requested: str | None = None,
              source: str = "--clearance") -> Gate:
    """The gate for `user` reading `store`; a refused clearance is audited, then raised as ClearanceError.

    A store that `soc demo` created for its synthetic capture (purpose `demo`) is readable at the policy's top
    level unless a lower clearance is requested: it holds nothing but the bundled sample.
    """
    try:
        reader = resolve_reader(policy, user, requested, source)
    except ClearanceError as exc:
        store.audit("clearance-refused", {"requested": str(requested), "source": source, "reason": str(exc)},
                    actor=user)
        raise
    if store.purpose() == DEMO_PURPOSE and (requested is None or not str(requested).strip()):
        reader = Reader(user, policy.top, f"{store.uri}: a demo store (synthetic data only)")
    return Gate(store, reader, policy)


def _describe(q: Query) -> str:
    return " ".join(repr(c) for c in q.clauses) + (f" since={q.since}" if q.since else "") + \
        (f" until={q.until}" if q.until else "")
