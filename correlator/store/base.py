"""The store interface every backend implements, and its errors."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from correlator.query import Clause, Query

if TYPE_CHECKING:
    from correlator.audit import Anchors, Chain


class StoreError(Exception):
    """The store cannot be used as asked (bad URI, not a soc store, newer schema). Nothing was written."""


class StoreMissing(StoreError):
    """A read found no store where the URI points (opening for a read never creates one)."""

    @classmethod
    def at(cls, path: Path) -> StoreMissing:
        shown = "/" + str(path).lstrip("/") if path.is_absolute() else path  # sqlite:////x names /x
        return cls(f"no soc store at {shown} (soc store init creates it)")


class StoreUnavailable(StoreError):
    """The store cannot be reached right now; callers spool and retry later."""


class StoreRejected(StoreError):
    """The store refused some documents outright (e.g. a field mapping conflict) and wrote the others.

    `new` counts the documents newly written; `problems` names each refused one and why.
    """

    def __init__(self, message: str, new: int, problems: list[str]) -> None:
        super().__init__(message)
        self.new = new
        self.problems = problems


_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_retention(text: str) -> timedelta:
    """A retention or age such as `90d`, `12h`, `2w` (s, m, h, d, w); ValueError names what is expected."""
    m = _DURATION.fullmatch(text.strip())
    if not m or int(m[1]) <= 0:
        raise ValueError(f"{text!r} is not a duration such as 90d, 12h or 2w")
    return timedelta(seconds=int(m[1]) * _UNITS[m[2]])


class Store(ABC):
    """A place events, alerts and the audit log live. See docs/architecture.md for the contract."""

    uri: str
    hunt_language: str

    @abstractmethod
    def init(self) -> None:
        """Create schema, templates and policies; idempotent."""

    @abstractmethod
    def write_events(self, events: Sequence[dict[str, Any]]) -> int:
        """Write normalized flat events, idempotent by `event.id`; return how many were new."""

    @abstractmethod
    def write_alerts(self, alerts: Sequence[dict[str, Any]]) -> None:
        """Insert or replace alerts by `soc.alert.uuid`."""

    @abstractmethod
    def search_events(self, q: Query, limit: int = 100) -> list[dict[str, Any]]:
        """Events matching `q`, newest first (ties by `event.id`), as flat dicts."""

    @abstractmethod
    def count_events(self, q: Query) -> int:
        """How many events match `q`."""

    @abstractmethod
    def search_alerts(self, q: Query, limit: int = 100) -> list[dict[str, Any]]:
        """Alerts matching `q`, riskiest then newest first, as flat dicts."""

    @abstractmethod
    def get_alert(self, uuid: str) -> dict[str, Any] | None:
        """One alert by uuid, or None."""

    @abstractmethod
    def count_alerts(self, q: Query) -> int:
        """How many alerts match `q`."""

    def alert_fields(self, queries: Sequence[Query], fields: Sequence[str]) -> list[dict[str, Any]]:
        """Only `fields` (those present) of each alert matching any of `queries`, each alert once: what counting
        needs without reading whole documents. This default reads the documents; a backend may project."""
        seen: dict[str, dict[str, Any]] = {}
        for q in queries:
            for a in self.search_alerts(q, 2**62):
                seen.setdefault(a["soc.alert.uuid"], {f: a[f] for f in fields if a.get(f) is not None})
        return list(seen.values())

    def count_alerts_any(self, queries: Sequence[Query]) -> int:
        """How many alerts match any of `queries` (each alert once)."""
        return len(self.alert_fields(queries, ["soc.alert.uuid"]))

    @abstractmethod
    def update_alert(self, uuid: str, fields: dict[str, Any]) -> None:
        """Merge `fields` into an alert (workflow status, assignee, notes)."""

    @abstractmethod
    def modify_alert(self, uuid: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any] | None:
        """Atomically replace an alert by `change(alert)` and return the new alert (None: no such alert).

        Concurrent changes never overwrite each other: `change` runs on the current document and may run again
        after a conflict, so it must depend on its argument only; an exception it raises aborts (nothing written).
        """

    @abstractmethod
    def put_record(self, kind: str, record_id: str, doc: dict[str, Any]) -> None:
        """Insert or replace a small document of `kind` (suppressions, …) under `record_id`."""

    @abstractmethod
    def records(self, kind: str, limit: int | None = None, descending: bool = False) -> list[dict[str, Any]]:
        """Documents of `kind` in id order (`descending`: highest id first, so ids that sort by time, like playbook
        runs', list newest first); at most `limit` (None: every one, read a page at a time)."""

    @abstractmethod
    def get_record(self, kind: str, record_id: str) -> dict[str, Any] | None:
        """One document of `kind` by id, or None."""

    @abstractmethod
    def modify_record(self, kind: str, record_id: str,
                      change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any] | None:
        """Atomically replace a record by `change(record)` and return it (None: no such record). Concurrent changes
        never overwrite each other: `change` may run again on the newer document; an exception it raises aborts
        (nothing written)."""

    @abstractmethod
    def create_incident(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Store a new incident under the next sequential `soc.incident.id` (1, 2, …); return it with its number."""

    @abstractmethod
    def get_incident(self, number: int) -> dict[str, Any] | None:
        """One incident by number, or None."""

    @abstractmethod
    def update_incident(self, number: int, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """Replace the incident by `change(current)` atomically (a concurrent change is re-applied, never lost);
        return the new document. StoreError when there is no such incident."""

    @abstractmethod
    def search_incidents(self, q: Query, limit: int = 100) -> list[dict[str, Any]]:
        """Incidents matching `q`, highest number (newest) first, as flat dicts."""

    @abstractmethod
    def hunt(self, query: str, since: datetime | None, until: datetime | None, limit: int = 1000,
             clauses: tuple[Clause, ...] = ()) -> list[dict]:
        """Events matching a backend-native query (`hunt_language`) and `clauses`, newest first."""

    @abstractmethod
    def audit(self, action: str, details: dict[str, Any], actor: str | None = None) -> None:
        """Append to the keyed, hash-chained audit log and anchor the new head (correlator.audit.Chain)."""

    @abstractmethod
    def audit_entries(self) -> list[dict[str, Any]]:
        """Every audit entry in order: seq, ts, actor, action, details, prev_hash, hash."""

    @abstractmethod
    def audit_verify(self, anchors: Iterable[Anchors] = ()) -> list[str]:
        """Check the audit chain, its head and every anchored head (the anchor file's and `anchors`'); return the
        problems found (empty when intact), each naming the entry. AuditKeyError: keyed, and the key is missing."""

    @property
    def audit_name(self) -> str:
        """This store's name in audit anchors: its URI without credentials."""
        return self.uri

    @cached_property
    def audit_chain(self) -> Chain:
        """Seals, anchors and verifies this store's audit entries (key and anchor file resolved once)."""
        from correlator.audit import Chain

        return Chain(self.audit_name)

    @abstractmethod
    def status(self) -> dict[str, Any]:
        """Health, counts and versions."""

    def prune(self, before: datetime) -> int:
        """Delete the events whose @timestamp is before `before` (retention), audited; return how many. A backend
        whose server applies retention itself (Elasticsearch ILM: the URI's `retention=`) raises StoreError."""
        raise StoreError(f"{self.uri}: this store's retention is applied by the server (retention= in the store URI); "
                         "soc store prune applies to SQLite stores")

    def purpose(self) -> str | None:
        """What the store was created for, when not ordinary events (`demo` for `soc demo`'s own store)."""
        return None

    def set_purpose(self, purpose: str) -> None:
        """Record what the store is for (only backends that keep metadata: SQLite)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no purpose")

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release connections."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
