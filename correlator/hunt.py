"""Retro-hunt: the same Sigma rules converted by pySigma backends and run against the store's events, and
correlation rules replayed over what their base rules matched.

- SQLite store: pySigma-backend-sqlite with soc's ECS pipeline; fields read from the flat event JSON
  (``json_extract(doc, '$."source.ip"')``) as text, string equality ``COLLATE NOCASE`` (Sigma is case-insensitive),
  ``REGEXP`` = Python's ``re.search`` run by ``safe_regex`` (RE2, or time-bounded: a stopped search is reported
  with the rule and event), keywords = ``soc_keyword`` (any value of the event, as the streaming engine).
- Elasticsearch store: pySigma-backend-elasticsearch's Lucene backend (``query_string``) with the same pipeline;
  case-insensitive values go to the lower-cased ``<field>.lc`` sub-field the store maps on every field,
  ``|re`` is translated to Lucene's whole-value regular expressions (``correlator.lucene_regex``), keywords search
  every ``*.lc`` field.
- Correlation rules: their base rules are hunted (also ``generate: false`` ones) and the matches are fed in event
  time order (ties: event id, then rule order) to the streaming ``CorrelationEngine``.
A list-valued field (``event.category``, ``related.ip``) matches when any element does, in the streaming engine,
in SQL (``json_each`` over the list) and in Elasticsearch.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sigma.backends.elasticsearch import LuceneBackend
from sigma.backends.sqlite import sqliteBackend
from sigma.conversion.base import TextQueryBackend
from sigma.exceptions import SigmaError, SigmaFeatureNotSupportedByBackendError
from sigma.types import SigmaCasedString, SigmaRegularExpression, SigmaString

from correlator.lucene_regex import Untranslatable, to_lucene
from correlator.query import Clause
from correlator.sigma.correlation import CorrelationEngine, event_time
from correlator.sigma.engine import RuleInfo
from correlator.sigma.loader import RuleFailure, RuleSet, error_line, failure_reason, load_placeholders, load_rules
from correlator.sigma.pipelines import build_pipeline
from correlator.sigma.safe_regex import RegexTimeout, safe_regex
from correlator.store.base import StoreError, StoreUnavailable


def _python_flags(r: SigmaRegularExpression) -> int:
    flags = 0
    for f in r.flags:
        flags |= SigmaRegularExpression.sigma_to_python_flags[f]
    return flags


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class StoreSQLiteBackend(sqliteBackend):
    """pySigma's SQLite backend reading fields out of soc's ``events.doc`` JSON; emits a WHERE expression.

    Fields are compared as text (``CAST(.. AS TEXT)``: Sigma's ``EventID: 4688`` matches a JSON 4688 or "4688",
    as the streaming matcher does), except in numeric comparisons (gt/gte/lt/lte), which see the JSON number.
    Keywords call ``soc_keyword(doc, pattern, mode)`` (registered by ``enable_functions``).
    """

    collate_nocase = True
    _numeric = False
    re_expression = "soc_regexp({field}, '{regex}', doc)"  # REGEXP with the event, to name it if stopped

    def escape_and_quote_field(self, field: str) -> str:
        path = f"json_extract(doc, {_json_path(field)})"
        return path if self._numeric else f"CAST({path} AS TEXT)"

    def convert_condition_field_compare_op_val(self, cond: Any, state: Any) -> Any:
        self._numeric = True
        try:
            return _any_element(cond.field, super().convert_condition_field_compare_op_val(cond, state))
        finally:
            self._numeric = False

    def convert_condition_field_eq_val(self, cond: Any, state: Any) -> Any:
        return _any_element(cond.field, super().convert_condition_field_eq_val(cond, state))

    def convert_condition_as_in_expression(self, cond: Any, state: Any) -> Any:
        return _any_element(cond.args[0].field, super().convert_condition_as_in_expression(cond, state))

    def finalize_query_default(self, rule: Any, query: str, index: int, state: Any) -> Any:
        return query

    def convert_condition_val_str(self, cond: Any, state: Any) -> str:
        return keyword_sql(cond.value)

    def convert_condition_val_num(self, cond: Any, state: Any) -> str:
        """A numeric keyword equals some value as text (the streaming engine: no implicit wildcards)."""
        return f"soc_keyword(doc, {_sql_str(re.escape(str(cond.value)))}, 'i')"

    def convert_condition_val_re(self, cond: Any, state: Any) -> str:
        r: SigmaRegularExpression = cond.value
        return f"soc_keyword(doc, {_sql_str(str(r.regexp))}, {_sql_str('r' + str(_python_flags(r)))})"


def _json_path(field: str) -> str:
    """The SQL literal of a flat field's JSON path in ``events.doc``."""
    return "'$.\"" + field.replace("'", "''").replace('"', '""') + "\"'"


def _any_element(field: str | None, expr: Any) -> Any:
    """A field condition that holds for a list-valued field (``event.type: [creation]``, ``related.ip``) when it
    holds for any element, as the streaming engine matches; a scalar (or absent) field is compared as before."""
    if not field or not isinstance(expr, str):
        return expr
    path = _json_path(field)
    ref = f"json_extract(doc, {path})"
    if ref not in expr:
        return expr
    each = expr.replace(f"CAST({ref} AS TEXT)", "CAST(value AS TEXT)").replace(ref, "value")
    return (f"(CASE WHEN json_type(doc, {path}) = 'array' THEN EXISTS (SELECT 1 FROM json_each(doc, {path}) "
            f"WHERE {each}) ELSE {expr} END)")


def keyword_sql(s: SigmaString) -> str:
    """Full-text search as the streaming engine does it: a plain keyword occurs inside some value of the event,
    one with wildcards matches a whole value; case-insensitive unless ``|cased``."""
    cased = isinstance(s, SigmaCasedString)
    pattern = str((s if cased else s.lower()).to_regex().regexp)
    if not s.contains_special():
        pattern = f".*{pattern}.*"
    return f"soc_keyword(doc, {_sql_str(pattern)}, {_sql_str('c' if cased else 'i')})"


class StoreLuceneBackend(LuceneBackend):
    """pySigma's Lucene backend for soc's Elasticsearch mapping, with the streaming engine's semantics.

    Strings, numbers and booleans match (lower-cased) the ``<field>.lc`` sub-field, the value as text folded by the
    ``soc_lowercase`` normalizer (``|cased`` strings match the field itself); ``|re`` becomes a Lucene regular
    expression on the field (``.lc`` with ``|i``) that matches the whole value; keywords search every ``*.lc``
    field. CIDR, gt/lt and exists use the typed field.
    """

    case_sensitive_match_expression = "{field}:{value}"
    _lc = False

    def escape_and_quote_field(self, field: str) -> str:
        return super().escape_and_quote_field(f"{field}.lc" if self._lc else field)

    def convert_value_str(self, s: SigmaString, state: Any) -> str:
        return super().convert_value_str(s.lower() if self._lc else s, state)

    def _caseless(self, convert: Any, cond: Any, state: Any) -> Any:
        self._lc = True
        try:
            return convert(cond, state)
        finally:
            self._lc = False

    def convert_condition_field_eq_val_str(self, cond: Any, state: Any) -> Any:
        return self._caseless(super().convert_condition_field_eq_val_str, cond, state)

    def convert_condition_field_eq_val_num(self, cond: Any, state: Any) -> Any:
        return self._caseless(super().convert_condition_field_eq_val_num, cond, state)

    def convert_condition_field_eq_val_bool(self, cond: Any, state: Any) -> Any:
        return self._caseless(super().convert_condition_field_eq_val_bool, cond, state)

    def decide_convert_condition_as_in_expression(self, cond: Any, state: Any) -> bool:
        return super().decide_convert_condition_as_in_expression(cond, state) and not any(
            isinstance(a.value, SigmaCasedString) for a in cond.args)

    def convert_condition_as_in_expression(self, cond: Any, state: Any) -> Any:
        return self._caseless(super().convert_condition_as_in_expression, cond, state)

    def convert_condition_field_eq_val_re(self, cond: Any, state: Any) -> Any:
        r: SigmaRegularExpression = cond.value
        flags = _python_flags(r)
        try:
            lucene = to_lucene(str(r.regexp), flags)
        except Untranslatable as e:
            raise SigmaFeatureNotSupportedByBackendError(f"|re {str(r.regexp)!r}: {e}") from None
        f = f"{cond.field}.lc" if flags & re.IGNORECASE else cond.field
        return f"{super().escape_and_quote_field(f)}:/{lucene}/"

    def convert_condition_val_str(self, cond: Any, state: Any) -> Any:
        s: SigmaString = cond.value
        if isinstance(s, SigmaCasedString):
            raise SigmaFeatureNotSupportedByBackendError("|cased keywords (Elasticsearch searches the .lc fields)")
        value = TextQueryBackend.convert_value_str(self, s.lower(), state)  # no phrase quotes in a wildcard term
        return "\\*.lc:" + (value if s.contains_special() else f"*{value}*")

    def convert_condition_val_num(self, cond: Any, state: Any) -> Any:
        return f"\\*.lc:{cond.value}"  # a whole value, as the streaming engine matches numeric keywords

    def convert_condition_val_re(self, cond: Any, state: Any) -> Any:
        raise SigmaFeatureNotSupportedByBackendError("regular-expression keywords (no field to search)")


STOPPED: list[str] = []  # searches the time bound stopped during the current hunt query (event id: pattern)


def sqlite_regexp(pattern: str | None, value: Any) -> bool:
    """SQLite REGEXP: ``value REGEXP pattern`` is ``re.search`` (Sigma's |re semantics), run by ``safe_regex``;
    a stopped search is no match."""
    return soc_regexp(value, pattern, None)


def soc_regexp(value: Any, pattern: str | None, doc: str | None) -> bool:
    """``soc_regexp(field, pattern, doc)``: REGEXP that names the event (``doc``) in ``STOPPED`` when the time
    bound stops the search (then: no match, and the hunt reports the rule)."""
    if pattern is None or value is None:
        return False
    try:
        return safe_regex(pattern).search(str(value))
    except RegexTimeout as e:
        STOPPED.append(f"event {_doc_id(doc)}: {e}")
        return False


def _doc_id(doc: str | None) -> str:
    try:
        return str(json.loads(doc).get("event.id", "?")) if doc else "?"
    except (ValueError, AttributeError):
        return "?"


@lru_cache(maxsize=4096)
def _keyword_regex(pattern: str, mode: str) -> Any:
    """Keyword test: ``r<flags>`` a bounded ``re.search``, else a full match (``.*`` around a plain keyword)."""
    if mode[0] == "r":
        return safe_regex(pattern, int(mode[1:])).search
    return safe_regex(r"\A(?:" + pattern + r")\Z", re.DOTALL).search


def _texts(value: Any) -> list[str]:
    """A value as the streaming engine's keyword search sees it (lists: their elements; objects: nothing)."""
    if value is None or isinstance(value, dict):
        return []
    if isinstance(value, list):
        return [t for x in value if not isinstance(x, list) for t in _texts(x)]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    return [value if isinstance(value, str) else str(value)]


def sqlite_keyword(doc: str | None, pattern: str, mode: str) -> bool:
    """``soc_keyword(doc, pattern, mode)``: some value of the JSON event matches ``pattern`` — mode ``i`` whole
    lower-cased value, ``c`` whole raw value, ``r<flags>`` ``re.search`` on the raw value."""
    if doc is None:
        return False
    test = _keyword_regex(pattern, mode)
    event = json.loads(doc)
    try:
        for v in event.values():
            for t in _texts(v):
                if test(t.lower() if mode == "i" else t):
                    return True
    except RegexTimeout as e:
        STOPPED.append(f"event {event.get('event.id', '?')}: {e}")
    return False


def enable_functions(db: Any) -> None:
    """Register REGEXP and soc_keyword on an sqlite3 connection (the SQLite store's ``db``)."""
    db.create_function("REGEXP", 2, sqlite_regexp, deterministic=True)
    db.create_function("soc_regexp", 3, soc_regexp, deterministic=True)
    db.create_function("soc_keyword", 3, sqlite_keyword, deterministic=True)


@dataclass
class HuntQuery:
    rule: RuleInfo
    query: str


@dataclass
class CorrelationHit:
    """A correlation rule that fired over the hunted events (what the streaming engine would have raised)."""

    rule: RuleInfo
    type: str
    group: dict[str, Any]
    count: int
    value: float
    first: str
    last: str
    event_ids: list[str]


@dataclass
class HuntResult:
    matches: list[tuple[RuleInfo, list[dict]]] = field(default_factory=list)  # output base rules, newest first
    correlations: list[CorrelationHit] = field(default_factory=list)  # in firing order
    failures: list[RuleFailure] = field(default_factory=list)
    queries: list[HuntQuery] = field(default_factory=list)  # what was run, for counting under other clauses


def _referenced(ruleset: RuleSet) -> set[str]:
    return {RuleInfo.of(ref.rule).id for c in ruleset.correlations for ref in c.rules or []
            if getattr(ref, "rule", None) is not None}


def convert(ruleset: RuleSet, language: str, placeholders: dict[str, list[str]] | None = None,
            referenced: set[str] | None = None) -> tuple[list[HuntQuery], list[RuleFailure]]:
    """Convert base rules for ``language`` ('sqlite' or 'lucene'): those that raise alerts, and those in
    ``referenced`` (ids correlation rules use, even with ``generate: false``). Failures carry file, line, reason."""
    pipeline = build_pipeline("ecs", placeholders)
    if language == "sqlite":
        backend: Any = StoreSQLiteBackend(pipeline, collect_errors=True)
    elif language == "lucene":
        backend = StoreLuceneBackend(pipeline, collect_errors=True)
    else:
        raise ValueError(f"no hunt backend for {language!r} (expected sqlite or lucene)")
    out: list[HuntQuery] = []
    failures: list[RuleFailure] = []
    for rule in ruleset.rules:
        info = RuleInfo.of(rule)
        if not info.output and info.id not in (referenced or ()):
            continue
        n = len(backend.errors)
        output, rule._output = rule._output, True  # pySigma converts only rules that output (generate: true)
        try:
            queries = backend.convert_rule(rule)
        except (SigmaError, NotImplementedError, ValueError, TypeError) as e:
            backend.errors.append((rule, e))
            queries = []
        finally:
            rule._output = output
        if backend.errors[n:] or not queries:
            err = backend.errors[n][1] if backend.errors[n:] else SigmaError("rule converted to nothing")
            failures.append(_failure(info, err))
            continue
        q = " OR ".join(f"({x})" for x in queries) if len(queries) > 1 else queries[0]
        out.append(HuntQuery(info, q))
    return out, failures


def _failure(info: RuleInfo, err: Exception, reason: str | None = None) -> RuleFailure:
    text = Path(info.path).read_text(encoding="utf-8") if info.path else ""
    line = error_line(Path(info.path), text, err) if info.path else 1
    return RuleFailure(info.path, line, reason or failure_reason(err), " ".join(str(err).split())[:300])


def hunt(store: Any, paths: list[str | Path], since: datetime | None = None, until: datetime | None = None,
         limit: int = 1000, clauses: tuple[Clause, ...] = ()) -> HuntResult:
    """Run every rule under ``paths`` against ``store`` over [since, until), on the events that also match
    ``clauses`` (the read gate passes the reader's clearance here, so correlations see only readable events).

    Base rules: up to ``limit`` matching events each, newest first. Correlation rules: every match of their base
    rules in the range, replayed in event-time order through the streaming ``CorrelationEngine``. A rule whose
    query the store refuses is a failure (reason ``store``); an unreachable store raises ``StoreUnavailable``."""
    rs = load_rules(paths)
    referenced = _referenced(rs)
    queries, failures = convert(rs, store.hunt_language, load_placeholders(paths), referenced)
    if store.hunt_language == "sqlite" and hasattr(store, "db"):
        enable_functions(store.db)
    result = HuntResult(failures=rs.failures + failures, queries=queries)
    found: dict[str, list[dict]] = {}
    for q in queries:
        STOPPED.clear()
        try:
            events = store.hunt(q.query, since, until, sys.maxsize if q.rule.id in referenced else limit, clauses)
        except StoreUnavailable:
            raise
        except StoreError as e:
            result.failures.append(_failure(q.rule, e, "store"))
            continue
        result.failures += [_failure(q.rule, SigmaError(f"rule {q.rule.id}, {why}; the rule's other events and "
                                                        "other rules were hunted"), "regex stopped")
                            for why in STOPPED[:100]]
        found[q.rule.id] = events
        if q.rule.output:
            result.matches.append((q.rule, events[:limit]))
    result.correlations = _correlate(rs, [q.rule.id for q in queries], found, result.failures)
    return result


def _correlate(rs: RuleSet, order: list[str], found: dict[str, list[dict]], failures: list[RuleFailure]
               ) -> list[CorrelationHit]:
    """Feed the base rules' matches, in event-time order, to the correlation rules whose base rules all ran."""
    usable = []
    for c in rs.correlations:
        missing = [RuleInfo.of(r.rule).id for r in c.rules or [] if RuleInfo.of(r.rule).id not in found]
        if missing:
            failures.append(_failure(RuleInfo.of(c), SigmaError(f"base rule(s) not hunted: {', '.join(missing)}"),
                                     "correlation"))
        else:
            usable.append(c)
    engine = CorrelationEngine(usable)
    failures += [_failure(RuleInfo.of(r), SigmaError(why), "correlation") for r, why in engine.failures]
    rank = {rid: i for i, rid in enumerate(order)}
    feed = sorted(((event_time(e), str(e.get("event.id", "")), rank[rid], rid, e)
                   for rid in engine.referenced() for e in found.get(rid, [])), key=lambda x: x[:3])
    infos = {id(c.rule): RuleInfo.of(c.rule) for c in engine.correlations}
    out = []
    for ts, _, _, rid, e in feed:
        for f in engine.feed(e, rid, ts):
            out.append(CorrelationHit(
                infos[id(f.rule)], f.rule.type.name.lower(), f.group, len(f.events), f.value,
                str(f.events[0].get("@timestamp", "")), str(f.events[-1].get("@timestamp", "")),
                [str(x.get("event.id", "")) for x in f.events]))
    return out
