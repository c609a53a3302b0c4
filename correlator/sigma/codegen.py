"""Condition tree (``backend.Node``) → Python expression source: ``_Gen`` writes a rule's expression and names
its constants (``build_const`` materialises them), groups OR-ed plain values of one field into one set lookup,
prefix/suffix tuple or Aho-Corasick automaton, and classifies wildcard patterns (``pattern_shape``)."""

from __future__ import annotations

import re
from typing import Any

from sigma.exceptions import SigmaFeatureNotSupportedByBackendError
from sigma.types import TimestampPart

from correlator.sigma.backend import Node
from correlator.sigma.runtime import Contains, cidr_pred, cmp_pred, group_pred, re_pred, ts_pred
from correlator.sigma.safe_regex import safe_regex
from correlator.sigma.values import lower_value


def literal_parts(parts: tuple) -> list[str]:
    return [p for p in parts if p not in ("\0*", "\0?")]


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
        return re_pred(safe_regex(args[0], args[1]))
    if factory == "cidr_pred":
        return cidr_pred(args[0])
    if factory == "cmp_pred":
        return cmp_pred(args[0], args[1])
    if factory == "ts_pred":
        return ts_pred(TimestampPart[args[0]], args[1])
    if factory == "pat_pred":
        return _pattern_pred(args[0], args[1])
    if factory == "set":
        return frozenset(args[0])
    if factory == "tuple":
        return tuple(args[0])
    if factory == "ac":
        return Contains(args[0])
    if factory == "group_pred":
        return group_pred(args[0], args[1])
    raise ValueError(f"unknown constant factory {factory}")
