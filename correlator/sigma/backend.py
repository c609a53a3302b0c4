"""A pySigma backend whose target language is Python: each rule condition becomes one Python function.

Conversion produces a small tree (``Node``) per condition (``finalize_query`` simplifies it); the engine
(``correlator.sigma.engine.compile_rules``) turns each rule's tree into Python source ``def m<i>(e, l): return ...``
with ``codegen._Gen`` and takes its prefilter anchors from the same tree. The generated code runs against
``runtime.RUNTIME`` and reads the event through ``values.Lowered``.

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

from typing import Any, ClassVar

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
)

Node = tuple  # ("and", [..]) ("or", [..]) ("not", n) ("str", field, parts, cased) ("re", field, pattern, flags) ...

_CMP = {
    SigmaCompareExpression.CompareOperators.LT: "<",
    SigmaCompareExpression.CompareOperators.LTE: "<=",
    SigmaCompareExpression.CompareOperators.GT: ">",
    SigmaCompareExpression.CompareOperators.GTE: ">=",
    SigmaCompareExpression.CompareOperators.NEQ: "!=",
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


