"""Retro-hunt: the same Sigma rules converted by pySigma backends and run against the store's events.

- SQLite store: pySigma-backend-sqlite with soc's ECS pipeline; fields read from the flat event JSON
  (``json_extract(doc, '$."source.ip"')``) as text, string equality ``COLLATE NOCASE`` (Sigma is case-insensitive),
  NOT folded to two-valued logic by the backend, ``REGEXP`` provided by Python's ``re`` (search semantics).
- Elasticsearch store: pySigma-backend-elasticsearch's Lucene backend (``query_string``) with the same pipeline.
Correlation rules and keyword (field-less) rules are not hunted; they are reported with that reason. A list-valued
field (``event.category``, ``related.ip``) is JSON text to SQL: the streaming engine matches any element, SQL
does not (documented difference).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sigma.backends.elasticsearch import LuceneBackend
from sigma.backends.sqlite import sqliteBackend
from sigma.exceptions import SigmaError

from correlator.sigma.engine import RuleInfo
from correlator.sigma.loader import RuleFailure, RuleSet, error_line, failure_reason, load_placeholders, load_rules
from correlator.sigma.pipelines import build_pipeline


class StoreSQLiteBackend(sqliteBackend):
    """pySigma's SQLite backend reading fields out of soc's ``events.doc`` JSON; emits a WHERE expression.

    Fields are compared as text (``CAST(.. AS TEXT)``: Sigma's ``EventID: 4688`` matches a JSON 4688 or "4688",
    as the streaming matcher does), except in numeric comparisons (gt/gte/lt/lte), which see the JSON number.
    """

    collate_nocase = True
    _numeric = False

    def escape_and_quote_field(self, field: str) -> str:
        path = "json_extract(doc, '$.\"" + field.replace("'", "''").replace('"', '""') + "\"')"
        return path if self._numeric else f"CAST({path} AS TEXT)"

    def convert_condition_field_compare_op_val(self, cond: Any, state: Any) -> Any:
        self._numeric = True
        try:
            return super().convert_condition_field_compare_op_val(cond, state)
        finally:
            self._numeric = False

    def finalize_query_default(self, rule: Any, query: str, index: int, state: Any) -> Any:
        return query


@lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def sqlite_regexp(pattern: str | None, value: Any) -> bool:
    """SQLite REGEXP: ``value REGEXP pattern`` is ``re.search`` (Sigma's |re semantics)."""
    if pattern is None or value is None:
        return False
    return _regex(pattern).search(str(value)) is not None


def enable_regexp(db: Any) -> None:
    """Register REGEXP on an sqlite3 connection (the SQLite store's ``db``)."""
    db.create_function("REGEXP", 2, sqlite_regexp, deterministic=True)


@dataclass
class HuntQuery:
    rule: RuleInfo
    query: str


def convert(ruleset: RuleSet, language: str, placeholders: dict[str, list[str]] | None = None
            ) -> tuple[list[HuntQuery], list[RuleFailure]]:
    """Convert base rules for ``language`` ('sqlite' or 'lucene'); failures carry file, line and reason."""
    pipeline = build_pipeline("ecs", placeholders)
    if language == "sqlite":
        backend: Any = StoreSQLiteBackend(pipeline, collect_errors=True)
    elif language == "lucene":
        backend = LuceneBackend(pipeline, collect_errors=True)
    else:
        raise ValueError(f"no hunt backend for {language!r} (expected sqlite or lucene)")
    out: list[HuntQuery] = []
    failures: list[RuleFailure] = []
    for rule in ruleset.rules:
        info = RuleInfo.of(rule)
        if not info.output:
            continue
        n = len(backend.errors)
        try:
            queries = backend.convert_rule(rule)
        except (SigmaError, NotImplementedError, ValueError, TypeError) as e:
            backend.errors.append((rule, e))
            queries = []
        if backend.errors[n:] or not queries:
            err = backend.errors[n][1] if backend.errors[n:] else SigmaError("rule converted to nothing")
            text = Path(info.path).read_text(encoding="utf-8") if info.path else ""
            failures.append(RuleFailure(info.path, error_line(Path(info.path), text, err), failure_reason(err),
                                        " ".join(str(err).split())[:300]))
            continue
        q = " OR ".join(f"({x})" for x in queries) if len(queries) > 1 else queries[0]
        out.append(HuntQuery(info, q))
    for c in ruleset.correlations:
        info = RuleInfo.of(c)
        failures.append(RuleFailure(info.path, 1, "correlation", "correlation rules run in the streaming engine only"))
    return out, failures


def hunt(store: Any, paths: list[str | Path], since: datetime | None = None, until: datetime | None = None,
         limit: int = 1000) -> tuple[list[tuple[RuleInfo, list[dict]]], list[RuleFailure]]:
    """Run every rule under ``paths`` against ``store``; returns (rule, matching events) and conversion failures."""
    rs = load_rules(paths)
    queries, failures = convert(rs, store.hunt_language, load_placeholders(paths))
    if store.hunt_language == "sqlite" and hasattr(store, "db"):
        enable_regexp(store.db)
    results = [(q.rule, store.hunt(q.query, since, until, limit)) for q in queries]
    return results, rs.failures + failures
