"""The common query model for searching events and alerts, and a parser for its small query language.

Syntax (terms are AND-ed)::

    field:value          exact value (any element of a list field)
    field:"two words"    exact value with spaces
    field:pre*           prefix
    field:*.example      wildcard: `*` anywhere stands for any run of characters (`*exfil*`, `a*.gov.*`);
                         string values only, case-sensitive like an exact value; `?` in a pattern is an error
    field:10.0.0.0/8     CIDR, when the value is a network
    field:>=1024         numeric range (>, >=, <, <=)
    field:[1 TO 1024]    inclusive numeric range
    word                 free text: every word must be a token of some string value of the document
                         (tokens: runs of letters and digits, case-insensitive)
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Term:
    field: str
    value: str | int | float | bool


@dataclass(frozen=True)
class Prefix:
    field: str
    prefix: str


@dataclass(frozen=True)
class Wildcard:
    """String values matching `pattern`, where each `*` stands for any run of characters (possibly empty) and every
    other character stands for itself (case-sensitive)."""

    field: str
    pattern: str


@dataclass(frozen=True)
class Cidr:
    field: str
    network: IPNetwork


@dataclass(frozen=True)
class Range:
    field: str
    gte: float | None = None
    lte: float | None = None
    gt: float | None = None
    lt: float | None = None


@dataclass(frozen=True)
class Text:
    words: tuple[str, ...]


@dataclass(frozen=True)
class Clearance:
    """Only items whose `gov.label.rank` is at most `max_rank`; unlabelled items count as rank 0 (public)."""

    max_rank: int


Clause = Term | Prefix | Wildcard | Cidr | Range | Text | Clearance


@dataclass(frozen=True)
class Query:
    clauses: tuple[Clause, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    extra: dict = field(default_factory=dict, compare=False)


class QueryError(ValueError):
    """A query string that cannot be parsed; the message says where."""


_SPLIT_RE = re.compile(r'\S+:\[[^\]]*\]|\S*"[^"]*"\S*|\S+')
_TOKEN_RE = re.compile(r"[^\W_]+", re.UNICODE)
_RANGE_RE = re.compile(r"^\[\s*(\S+)\s+TO\s+(\S+)\s*\]$", re.IGNORECASE)
_CMP_RE = re.compile(r"^(>=|<=|>|<)(.+)$")
_DURATION_RE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def tokens(text: str) -> list[str]:
    """Split text into lower-case tokens of letters and digits (the free-text rule both stores apply)."""
    return [t.lower() for t in _TOKEN_RE.findall(text)]


def searchable_text(event: dict) -> str:
    """The text free-text search sees: every string value of the event (and of its lists), space-joined."""
    parts: list[str] = []
    for value in event.values():
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            parts.extend(v for v in value if isinstance(v, str))
    return " ".join(parts)


INT64 = range(-(2**63), 2**63)  # what the stores hold as integers


def _number(text: str, where: str) -> float:
    try:
        n = float(text)
    except ValueError:
        raise QueryError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(n):
        raise QueryError(f"{where}: {text!r} is not a finite number")
    return n


def _scalar(text: str) -> str | int | float:
    """A value as typed: an integer the stores can hold, a decimal, else text (digits beyond 64 bits stay text)."""
    if re.fullmatch(r"-?\d+", text):
        n = int(text)
        return n if n in INT64 else text
    if re.fullmatch(r"-?\d+\.\d+", text):
        return float(text)
    return text


def _clause(token: str, position: int, raw: str = "", offset: int = 0) -> Clause:
    """One query term (quotes removed); `position` is its ordinal, `raw` its text as written and `offset` where that
    starts in the query (0-based), for error messages."""
    where = f"query term {position} ({token!r})"
    name, sep, value = token.partition(":")
    if not sep or not name or value.startswith("//"):
        words = tuple(tokens(token))
        if not words:
            raise QueryError(f"{where}: no searchable word")
        return Text(words)
    if value == "":
        raise QueryError(f"{where}: empty value for field {name!r}")
    if m := _RANGE_RE.match(value):
        low, high = m.groups()
        return Range(name, gte=None if low == "*" else _number(low, where),
                     lte=None if high == "*" else _number(high, where))
    if m := _CMP_RE.match(value):
        op, num = m.group(1), _number(m.group(2), where)
        return Range(name, **{{">=": "gte", "<=": "lte", ">": "gt", "<": "lt"}[op]: num})
    if "/" in value:
        try:
            return Cidr(name, ipaddress.ip_network(value, strict=False))
        except ValueError:
            pass
    if "*" in value:
        if "?" in value:
            raw = raw or token
            raise QueryError(f"{where}, character {offset + raw.index('?', raw.index(':')) + 1}: "
                             "'?' is not a wildcard here; use '*' (any run of characters)")
        if "*" not in value[:-1]:
            return Prefix(name, value[:-1])
        return Wildcard(name, value)
    return Term(name, _scalar(value))


def parse_query(text: str | None, since: datetime | None = None, until: datetime | None = None) -> Query:
    """Parse the query language (see module docstring) into a `Query`."""
    text = text or ""
    if text.count('"') % 2:
        raise QueryError(f"query {text!r}: unbalanced double quote")
    found = list(_SPLIT_RE.finditer(text))
    return Query(tuple(_clause(m.group().replace('"', ""), i + 1, m.group(), m.start()) for i, m in enumerate(found)),
                 since, until)


def parse_time(text: str | None, now: datetime | None = None) -> datetime | None:
    """Parse `--since/--until`: ISO-8601, epoch seconds, or a duration back from now (`15m`, `24h`, `7d`)."""
    if not text:
        return None
    now = now or datetime.now(UTC)
    try:
        if m := _DURATION_RE.match(text.strip()):
            return now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return datetime.fromtimestamp(float(text), UTC)
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):  # OverflowError/OSError: beyond the years datetime can hold
        raise QueryError(f"time {text!r}: use ISO-8601 (2024-05-01T10:00:00Z), epoch seconds, or 15m/24h/7d") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
