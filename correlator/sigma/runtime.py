"""What the generated matcher code calls at match time: ``RUNTIME`` (the module globals it is compiled against) and
the predicates that ``codegen.build_const`` builds for its constants (regular expressions, CIDR, comparisons,
timestamp parts, Aho-Corasick groups)."""

from __future__ import annotations

import re
from datetime import datetime
from ipaddress import ip_address, ip_network
from typing import Any

import ahocorasick
from sigma.types import TimestampPart

from correlator.sigma.safe_regex import SafeRegex
from correlator.sigma.values import Lowered, field_value, lower_value


def _any(pred: Any, v: Any) -> bool:
    """Apply ``pred`` to a raw value, or to any element of a list; absent/null never matches."""
    if v is None:
        return False
    if type(v) is list or type(v) is tuple:
        return any(x is not None and pred(x) for x in v)
    return bool(pred(v))


def re_pred(rx: SafeRegex) -> Any:
    search = rx.search  # RE2 where exact, else time-bounded Python re (raises RegexTimeout)
    return lambda x: search(x if type(x) is str else lower_value(x) if type(x) is bool else str(x))


def _num(x: Any) -> float | None:
    if type(x) is bool:
        return None
    if type(x) in (int, float):
        return x
    try:
        return float(str(x).strip())
    except ValueError:
        try:
            return int(str(x).strip(), 0)
        except ValueError:
            return None


def cmp_pred(op: str, number: float) -> Any:
    ops = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__, "!=": float.__ne__}
    f = ops[op]

    def pred(x: Any) -> bool:
        n = _num(x)
        return n is not None and f(float(n), float(number))

    return pred


def cidr_pred(net: str) -> Any:
    network = ip_network(net, strict=False)

    def pred(x: Any) -> bool:
        try:
            return ip_address(str(x).strip()) in network
        except ValueError:
            return False

    return pred


_TS_PART = {
    TimestampPart.MINUTE: lambda d: d.minute,
    TimestampPart.HOUR: lambda d: d.hour,
    TimestampPart.DAY: lambda d: d.day,
    TimestampPart.WEEK: lambda d: d.isocalendar()[1],
    TimestampPart.MONTH: lambda d: d.month,
    TimestampPart.YEAR: lambda d: d.year,
}


def ts_pred(part: TimestampPart, number: int) -> Any:
    get = _TS_PART[part]

    def pred(x: Any) -> bool:
        try:
            d = datetime.fromtimestamp(x) if type(x) in (int, float) else datetime.fromisoformat(str(x))
        except (ValueError, OSError):
            return False
        return get(d) == number

    return pred


def _fieldref(lo: Lowered, a: str, b: str, mode: str) -> bool:
    """Field-to-field comparison (case-insensitive): equal, or a starts/ends with b."""
    va, vb = lo[a], lo[b]
    if va is None or vb is None:
        return False
    xs = va if type(va) is tuple else (va,)
    ys = vb if type(vb) is tuple else (vb,)
    if mode == "eq":
        return any(x == y for x in xs for y in ys)
    if mode == "start":
        return any(x.startswith(y) for x in xs for y in ys)
    if mode == "end":
        return any(x.endswith(y) for x in xs for y in ys)
    return any(y in x for x in xs for y in ys)


def _keyword(lo: Lowered, pred: Any) -> bool:
    """Full-text search: any value of any field."""
    for k in lo.e:
        v = lo[k]
        if v is None:
            continue
        if type(v) is tuple:
            if any(pred(x) for x in v):
                return True
        elif pred(v):
            return True
    return False


def _keyword_raw(e: dict[str, Any], pred: Any) -> bool:
    """Full-text search on raw values (cased strings, regular expressions)."""
    return any(_any(pred, v) for v in e.values())


def _t_start(v: tuple[str, ...], prefix: str | tuple[str, ...]) -> bool:
    return any(x.startswith(prefix) for x in v)


def _t_end(v: tuple[str, ...], suffix: str | tuple[str, ...]) -> bool:
    return any(x.endswith(suffix) for x in v)


def _t_in(v: tuple[str, ...], lit: str) -> bool:
    return any(lit in x for x in v)


def _t_match(rx: re.Pattern[str], v: tuple[str, ...]) -> bool:
    return any(rx.match(x) is not None for x in v)


def _t_ac(ac: Any, v: tuple[str, ...]) -> bool:
    return any(ac.find(x) for x in v)


RUNTIME: dict[str, Any] = {
    "_t_start": _t_start,
    "_t_end": _t_end,
    "_t_in": _t_in,
    "_t_match": _t_match,
    "_t_ac": _t_ac,
    "_any": _any,
    "_fv": field_value,
    "_fieldref": _fieldref,
    "_keyword": _keyword,
    "_keyword_raw": _keyword_raw,
}


class Contains:
    """Any of many literals inside a string, one Aho-Corasick pass (pyahocorasick)."""

    __slots__ = ("a",)

    def __init__(self, lits: tuple[str, ...]) -> None:
        self.a = ahocorasick.Automaton()
        for w in lits:
            self.a.add_word(w, w)
        self.a.make_automaton()

    def find(self, s: str) -> bool:
        for _ in self.a.iter(s):
            return True
        return False


def group_pred(shape: str, lits: tuple[str, ...]) -> Any:
    if shape == "eq":
        vals = frozenset(lits)
        return vals.__contains__
    if shape == "start":
        return lambda x: x.startswith(lits)
    if shape == "end":
        return lambda x: x.endswith(lits)
    return Contains(lits).find


