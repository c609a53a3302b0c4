"""A pySigma backend whose target language is Python: each rule condition becomes one Python function.

Conversion produces a small tree (``Node``) per condition (``finalize_query`` simplifies it); the engine
(``correlator.sigma.engine.compile_rules``) turns each rule's tree into Python source ``def m<i>(e, l): return ...``
with ``_Gen`` and takes its prefilter anchors from the same tree.

Matching contract for the generated code:
- ``e`` is the flat event (dotted keys); ``l`` is a ``Lowered`` view of it: ``l[field]`` is the value as a
  lower-case string, a tuple of them for lists, or ``None`` when absent/null.
- Strings match case-insensitively unless ``|cased``; ``*``/``?`` are wildcards (pySigma already resolved
  escapes); ``|re`` is ``re.search`` on the raw string, case-sensitive unless ``|i`` (run by
  ``safe_regex``: linear-time RE2, or Python's re under a time bound that raises ``RegexTimeout``); a list-valued field
  matches if any element does; an absent field matches nothing (so ``not x`` holds for it).
- Keyword (field-less) values are full-text search over every value of the event: a plain keyword matches where
  it occurs inside a value, one with wildcards as written.
"""

from __future__ import annotations

import re
from datetime import datetime
from ipaddress import ip_address, ip_network
from typing import Any, ClassVar

import ahocorasick
from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.conversion.base import Backend
from sigma.conversion.state import ConversionState
from sigma.exceptions import SigmaFeatureNotSupportedByBackendError
from sigma.rule import SigmaRule
from sigma.types import (
    Placeholder,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaFieldReference,
    SigmaRegularExpression,
    SigmaString,
    SigmaTimestampPart,
    SpecialChars,
    TimestampPart,
)

from correlator.sigma.safe_regex import SafeRegex, safe_regex

Node = tuple  # ("and", [..]) ("or", [..]) ("not", n) ("str", field, parts, cased) ("re", field, pattern, flags) ...

_CMP = {
    SigmaCompareExpression.CompareOperators.LT: "<",
    SigmaCompareExpression.CompareOperators.LTE: "<=",
    SigmaCompareExpression.CompareOperators.GT: ">",
    SigmaCompareExpression.CompareOperators.GTE: ">=",
    SigmaCompareExpression.CompareOperators.NEQ: "!=",
}


class Lowered(dict):
    """Lazy lower-case view of an event: ``l[k]`` is computed on first use (None when absent)."""

    __slots__ = ("e", "_text")

    def __init__(self, e: dict[str, Any]) -> None:
        super().__init__()
        self.e = e
        self._text: str | None = None

    def text(self) -> str:
        """Every value of the event, lower-cased and joined by newlines (keyword search in one pass)."""
        if self._text is None:
            parts: list[str] = []
            for v in self.e.values():
                t = type(v)
                if t is str:
                    parts.append(v)
                elif t is list or t is tuple:
                    lv = lower_value(v)
                    if lv:
                        parts.extend(lv)
                elif v is not None and t is not dict:
                    parts.append(lower_value(v))
            self._text = "\n".join(parts).lower()
        return self._text

    def __missing__(self, k: str) -> str | tuple[str, ...] | None:
        e = self.e
        v = lower_value(e[k] if k in e else field_value(e, k))
        self[k] = v
        return v


def field_value(e: dict[str, Any], k: str) -> Any:
    """Value of dotted field ``k``: the flat key, else the sub-field of a list of objects (``dns.answers.data``
    from ``dns.answers: [{"data": ..}]``, as Elasticsearch flattens object arrays). None when absent."""
    v = e.get(k)
    if v is not None or "." not in k:
        return v
    i = k.rfind(".")
    while i > 0:
        parent = e.get(k[:i])
        if type(parent) is list:
            sub = k[i + 1:].split(".")
            out = []
            for item in parent:
                for part in sub:
                    item = item.get(part) if type(item) is dict else None
                out.extend(item if type(item) is list else [] if item is None else [item])
            return out or None
        i = k.rfind(".", 0, i)
    return None


def lower_value(v: Any) -> str | tuple[str, ...] | None:
    """Lower-case string form of a value as rules compare it (bools as true/false, lists as tuples)."""
    if v is None:
        return None
    t = type(v)
    if t is str:
        return v.lower()
    if t is bool:
        return "true" if v else "false"
    if t is list or t is tuple:
        try:
            return tuple(map(str.lower, v))  # all strings: the common case, in C
        except TypeError:
            return tuple(x for x in map(lower_value, v) if type(x) is str)
    if t is dict:  # an object is no value to compare (its sub-fields are, via field_value)
        return None
    return str(v).lower()


def _any(pred: Any, v: Any) -> bool:
    """Apply ``pred`` to a raw value, or to any element of a list; absent/null never matches."""
    if v is None:
        return False
    if type(v) is list or type(v) is tuple:
        return any(x is not None and pred(x) for x in v)
    return bool(pred(v))


def _re_pred(rx: SafeRegex) -> Any:
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


def _cmp_pred(op: str, number: float) -> Any:
    ops = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__, "!=": float.__ne__}
    f = ops[op]

    def pred(x: Any) -> bool:
        n = _num(x)
        return n is not None and f(float(n), float(number))

    return pred


def _cidr_pred(net: str) -> Any:
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


def _ts_pred(part: TimestampPart, number: int) -> Any:
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


def string_parts(s: SigmaString) -> tuple:
    """SigmaString as a tuple of literal str parts and '*' / '?' wildcard markers (None for placeholders)."""
    out: list[Any] = []
    for p in s.s:
        if isinstance(p, str):
            if out and isinstance(out[-1], str) and out[-1] not in ("\0*", "\0?"):
                out[-1] += p
            else:
                out.append(p)
        elif p is SpecialChars.WILDCARD_MULTI:
            out.append("\0*")
        elif p is SpecialChars.WILDCARD_SINGLE:
            out.append("\0?")
        elif isinstance(p, Placeholder):
            raise SigmaFeatureNotSupportedByBackendError(
                f"placeholder %{p.name}% has no value (configure it under 'placeholders')"
            )
    return tuple(out)


def literal_parts(parts: tuple) -> list[str]:
    return [p for p in parts if p not in ("\0*", "\0?")]


class PythonBackend(Backend):
    """pySigma backend: Sigma rule → Python matcher source."""

    name: ClassVar[str] = "soc python"
    formats: ClassVar[dict[str, str]] = {"default": "condition trees (engine.compile_rules generates the code)"}
    requires_pipeline: ClassVar[bool] = False

    # --- boolean structure -------------------------------------------------------------------------------
    def convert_condition_as_in_expression(self, cond: Any, state: ConversionState) -> Node:  # pragma: no cover
        raise NotImplementedError

    def convert_condition_or(self, cond: ConditionOR, state: ConversionState) -> Node:
        return ("or", [self.convert_condition(a, state) for a in cond.args])

    def convert_condition_and(self, cond: ConditionAND, state: ConversionState) -> Node:
        return ("and", [self.convert_condition(a, state) for a in cond.args])

    def convert_condition_not(self, cond: ConditionNOT, state: ConversionState) -> Node:
        return ("not", self.convert_condition(cond.args[0], state))

    # --- field = value ----------------------------------------------------------------------------------
    def convert_condition_field_eq_val_str(self, cond: ConditionFieldEqualsValueExpression, state: Any) -> Node:
        return ("str", cond.field, string_parts(cond.value), False)

    def convert_condition_field_eq_val_str_case_sensitive(self, cond: Any, state: Any) -> Node:
        return ("str", cond.field, string_parts(cond.value), True)

    def convert_condition_field_eq_val_num(self, cond: Any, state: Any) -> Node:
        return ("str", cond.field, (str(cond.value.number).lower(),), False)

    def convert_condition_field_eq_val_timestamp_part(self, cond: Any, state: Any) -> Node:
        v: SigmaTimestampPart = cond.value
        return ("ts", cond.field, v.timestamp_part, v.number)

    def convert_condition_field_eq_val_bool(self, cond: Any, state: Any) -> Node:
        return ("str", cond.field, ("true" if cond.value.boolean else "false",), False)

    def convert_condition_field_eq_val_re(self, cond: Any, state: Any) -> Node:
        r: SigmaRegularExpression = cond.value
        flags = 0
        for f in r.flags:
            flags |= SigmaRegularExpression.sigma_to_python_flags[f]
        return ("re", cond.field, str(r.regexp), flags)

    def convert_condition_field_eq_val_cidr(self, cond: Any, state: Any) -> Node:
        c: SigmaCIDRExpression = cond.value
        return ("cidr", cond.field, str(c.network))

    def convert_condition_field_compare_op_val(self, cond: Any, state: Any) -> Node:
        c: SigmaCompareExpression = cond.value
        return ("cmp", cond.field, _CMP[c.op], c.number.number)

    def convert_condition_field_eq_field(self, cond: Any, state: Any) -> Node:
        r: SigmaFieldReference = cond.value
        mode = {(False, False): "eq", (True, False): "start", (False, True): "end", (True, True): "in"}
        return ("fieldref", cond.field, r.field, mode[(r.starts_with, r.ends_with)])

    def convert_condition_field_eq_val_null(self, cond: Any, state: Any) -> Node:
        return ("null", cond.field)

    def convert_condition_field_exists(self, cond: Any, state: Any) -> Node:
        return ("exists", cond.field)

    def convert_condition_field_not_exists(self, cond: Any, state: Any) -> Node:
        return ("not", ("exists", cond.field))

    def convert_condition_field_eq_query_expr(self, cond: Any, state: Any) -> Node:
        raise SigmaFeatureNotSupportedByBackendError("query expressions (SIEM-specific lists) are not supported")

    # --- keywords ---------------------------------------------------------------------------------------
    def convert_condition_val_str(self, cond: ConditionValueExpression, state: Any) -> Node:
        """Keywords are full-text search: a plain keyword matches where it occurs inside a value; one with
        wildcards is anchored as written."""
        parts = string_parts(cond.value)
        if parts and all(p not in ("\0*", "\0?") for p in parts):
            parts = ("\0*", *parts, "\0*")
        return ("str", None, parts, isinstance(cond.value, SigmaCasedString))

    def convert_condition_val_num(self, cond: Any, state: Any) -> Node:
        return ("str", None, (str(cond.value.number).lower(),), False)

    def convert_condition_val_re(self, cond: Any, state: Any) -> Node:
        r: SigmaRegularExpression = cond.value
        flags = 0
        for f in r.flags:
            flags |= SigmaRegularExpression.sigma_to_python_flags[f]
        return ("re", None, str(r.regexp), flags)

    def convert_condition_query_expr(self, cond: Any, state: Any) -> Node:
        raise SigmaFeatureNotSupportedByBackendError("query expressions (SIEM-specific lists) are not supported")

    # --- correlations run in correlator.sigma.correlation on matched events, not as generated code -------
    def _correlation(self, *args: Any, **kwargs: Any) -> Any:
        raise SigmaFeatureNotSupportedByBackendError("correlation rules run in correlator.sigma.correlation")

    convert_correlation_event_count_rule = _correlation
    convert_correlation_value_count_rule = _correlation
    convert_correlation_temporal_rule = _correlation
    convert_correlation_temporal_ordered_rule = _correlation
    convert_correlation_extended_temporal_rule = _correlation
    convert_correlation_extended_temporal_ordered_rule = _correlation
    convert_correlation_value_sum_rule = _correlation
    convert_correlation_value_avg_rule = _correlation
    convert_correlation_value_percentile_rule = _correlation
    convert_correlation_value_median_rule = _correlation

    # --- finalization -----------------------------------------------------------------------------------
    finalize_correlation_subqueries = True

    def finalize_query(self, rule: SigmaRule, query: Node, index: int, state: Any, output_format: str) -> Any:
        return simplify(query)

    def finalize_output_default(self, queries: list[Any]) -> list[Any]:
        return queries


def simplify(n: Node) -> Node:
    """Flatten nested and/or nodes and drop single-child groups."""
    if n[0] in ("and", "or"):
        kids: list[Node] = []
        for k in (simplify(c) for c in n[1]):
            if k[0] == n[0]:
                kids.extend(k[1])
            else:
                kids.append(k)
        return kids[0] if len(kids) == 1 else (n[0], kids)
    if n[0] == "not":
        return ("not", simplify(n[1]))
    return n


def pattern_regex(parts: tuple, cased: bool) -> str:
    """Regex source for a wildcard pattern (full match, dot matches newline)."""
    body = "".join(".*" if p == "\0*" else "." if p == "\0?" else re.escape(p if cased else p.lower()) for p in parts)
    return "(?s:" + body + r")\Z"


class _Gen:
    def __init__(self) -> None:
        self.consts: dict[str, tuple[str, tuple]] = {}
        self.keys: dict[tuple, str] = {}

    def const(self, factory: str, *args: Any) -> str:
        key = (factory, args)
        name = self.keys.get(key)
        if name is None:
            name = self.keys[key] = f"C{len(self.keys)}"
            self.consts[name] = (factory, args)
        return name

    def expr(self, n: Node) -> str:
        kind = n[0]
        if kind == "and":
            return "(" + " and ".join(self.expr(c) for c in n[1]) + ")" if n[1] else "True"
        if kind == "or":
            return "(" + " or ".join(self.or_parts(n[1])) + ")" if n[1] else "False"
        if kind == "not":
            return "(not " + self.expr(n[1]) + ")"
        if kind == "str":
            return self.str_expr(n[1], n[2], n[3])
        f = n[1]
        if kind == "re":
            p = self.const("re_pred", n[2], n[3])
            return f"_keyword_raw(e, {p})" if f is None else f"_any({p}, _fv(e, {f!r}))"
        if kind == "cidr":
            return f"_any({self.const('cidr_pred', n[2])}, _fv(e, {f!r}))"
        if kind == "cmp":
            return f"_any({self.const('cmp_pred', n[2], n[3])}, _fv(e, {f!r}))"
        if kind == "ts":
            return f"_any({self.const('ts_pred', n[2].name, n[3])}, _fv(e, {f!r}))"
        if kind == "fieldref":
            return f"_fieldref(l, {f!r}, {n[2]!r}, {n[3]!r})"
        if kind == "null":
            return f"(l[{f!r}] is None)"
        if kind == "exists":
            return f"(_fv(e, {f!r}) is not None)"
        raise SigmaFeatureNotSupportedByBackendError(f"condition node {kind}")  # pragma: no cover

    def str_pred(self, parts: tuple, cased: bool, var: str) -> str:
        """Python expression testing string variable ``var`` against a wildcard pattern."""
        if not cased:
            parts = _lower_parts(parts)
        kind, lit = pattern_shape(parts)
        if kind == "any":
            return "True"
        if kind == "regex":
            return f"{self.const('regex', pattern_regex(parts, cased), 0)}.match({var}) is not None"
        return {"eq": "{v} == {l}", "end": "{v}.endswith({l})", "start": "{v}.startswith({l})",
                "contains": "{l} in {v}"}[kind].format(v=var, l=repr(lit))

    def tuple_pred(self, parts: tuple) -> str:
        """Python expression testing tuple ``v`` of lower-case strings (any element) against a pattern; runtime
        helpers instead of generator expressions keep the generated module small and quick to compile."""
        parts = _lower_parts(parts)
        kind, lit = pattern_shape(parts)
        if kind == "any":
            return "bool(v)"
        if kind == "regex":
            return f"_t_match({self.const('regex', pattern_regex(parts, False), 0)}, v)"
        return {"eq": "{l} in v", "end": "_t_end(v, {l})", "start": "_t_start(v, {l})",
                "contains": "_t_in(v, {l})"}[kind].format(l=repr(lit))

    def or_parts(self, kids: list[Node]) -> list[str]:
        """OR children; many plain values of one field become one set lookup, prefix/suffix tuple or
        Aho-Corasick automaton (SigmaHQ lists of hundreds of values cost one pass, not hundreds)."""
        groups: dict[tuple, list[str]] = {}
        rest: list[Node] = []
        for c in kids:
            shape = _shape(c)
            if shape is None:
                rest.append(c)
            else:
                groups.setdefault((c[1], shape[0]), []).append(shape[1])
        out = []
        for (f, shape), lits in groups.items():
            if len(lits) < (2 if shape == "eq" else GROUP_MIN):  # two values already pay as a set lookup
                rest.extend(("str", f, _parts(shape, lit), False) for lit in lits)
                continue
            out.append(self.group_expr(f, shape, lits))
        return out + [self.expr(c) for c in rest]

    def group_expr(self, f: str | None, shape: str, lits: list[str]) -> str:
        uniq = tuple(sorted(set(lits)))
        if f is None:
            if shape == "contains" and not any("\n" in x for x in uniq):  # one automaton pass over all values
                return f"{self.const('ac', uniq)}.find(l.text())"
            return f"_keyword(l, {self.const('group_pred', shape, uniq)})"
        c = self.const({"eq": "set", "start": "tuple", "end": "tuple", "contains": "ac"}[shape], uniq)
        test = {"eq": f"v in {c}", "start": f"v.startswith({c})", "end": f"v.endswith({c})",
                "contains": f"{c}.find(v)"}[shape]
        many = {"eq": f"not {c}.isdisjoint(v)", "start": f"_t_start(v, {c})", "end": f"_t_end(v, {c})",
                "contains": f"_t_ac({c}, v)"}[shape]
        return f"(type(v := l[{f!r}]) is str and {test} or type(v) is tuple and {many})"

    def str_expr(self, f: str | None, parts: tuple, cased: bool) -> str:
        if cased:  # compare the raw string
            p = self.const("pat_pred", parts, True)
            return f"_keyword_raw(e, {p})" if f is None else f"_any({p}, _fv(e, {f!r}))"
        if f is None:
            return f"_keyword(l, {self.const('pat_pred', parts, False)})"
        t = self.str_pred(parts, False, "v")
        if t == "True":
            return f"(l[{f!r}] is not None)"
        return f"(type(v := l[{f!r}]) is str and {t} or type(v) is tuple and {self.tuple_pred(parts)})"


GROUP_MIN = 4  # OR-ed plain values of one field from which a set / automaton pays


def pattern_shape(parts: tuple) -> tuple[str, str]:
    """How a wildcard pattern tests a value: ('eq'|'start'|'end'|'contains', its literal), ('any', '') for only
    ``*`` wildcards, ('regex', '') for anything else."""
    lit = len(literal_parts(parts)) > 0
    if not parts:
        return "eq", ""
    if len(parts) == 1 and lit:
        return "eq", parts[0]
    if all(p == "\0*" for p in parts):
        return "any", ""
    if len(parts) == 2 and parts[0] == "\0*" and lit:
        return "end", parts[1]
    if len(parts) == 2 and parts[1] == "\0*" and lit:
        return "start", parts[0]
    if len(parts) == 3 and parts[0] == parts[2] == "\0*" and lit:
        return "contains", parts[1]
    return "regex", ""


def _lower_parts(parts: tuple) -> tuple:
    return tuple(p if p in ("\0*", "\0?") else p.lower() for p in parts)


def _shape(n: Node) -> tuple[str, str] | None:
    """('eq'|'start'|'end'|'contains', lower-case literal) for a simple uncased string leaf, else None."""
    if n[0] != "str" or n[3] or not n[2]:
        return None
    kind, lit = pattern_shape(_lower_parts(n[2]))
    return None if kind in ("any", "regex") else (kind, lit)


def _parts(shape: str, lit: str) -> tuple:
    return {"eq": (lit,), "start": (lit, "\0*"), "end": ("\0*", lit), "contains": ("\0*", lit, "\0*")}[shape]


class _Contains:
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


def _group_pred(shape: str, lits: tuple[str, ...]) -> Any:
    if shape == "eq":
        vals = frozenset(lits)
        return vals.__contains__
    if shape == "start":
        return lambda x: x.startswith(lits)
    if shape == "end":
        return lambda x: x.endswith(lits)
    return _Contains(lits).find


def _pattern_pred(parts: tuple, cased: bool) -> Any:
    """Predicate on one value for a wildcard pattern (uncased: the value is already lower-case)."""
    g = _Gen()
    expr = g.str_pred(parts, cased, "x")
    ns: dict[str, Any] = {n: build_const(f, a) for n, (f, a) in g.consts.items()}
    test = eval(compile(f"lambda x: {expr}", "<sigma-pattern>", "eval"), ns)  # noqa: S307 - generated code
    if not cased:
        return test
    return lambda x: test(x if type(x) is str else str(lower_value(x) if type(x) is bool else x))


def build_const(factory: str, args: tuple) -> Any:
    """Materialize a constant the generated code refers to (compiled regex, predicate)."""
    if factory == "regex":
        return re.compile(args[0], args[1])
    if factory == "re_pred":
        return _re_pred(safe_regex(args[0], args[1]))
    if factory == "cidr_pred":
        return _cidr_pred(args[0])
    if factory == "cmp_pred":
        return _cmp_pred(args[0], args[1])
    if factory == "ts_pred":
        return _ts_pred(TimestampPart[args[0]], args[1])
    if factory == "pat_pred":
        return _pattern_pred(args[0], args[1])
    if factory == "set":
        return frozenset(args[0])
    if factory == "tuple":
        return tuple(args[0])
    if factory == "ac":
        return _Contains(args[0])
    if factory == "group_pred":
        return _group_pred(args[0], args[1])
    raise ValueError(f"unknown constant factory {factory}")
