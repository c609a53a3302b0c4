"""Static checks of loaded Sigma rules beyond pySigma's validators (``soc rules validate``): conditions that do
not parse or name a detection that is not there, and ``|re`` patterns that may backtrack or lack RE2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sigma.exceptions import SigmaError
from sigma.types import SigmaRegularExpression

from correlator.sigma.loader import RuleFailure, error_line, failure_reason, rule_path
from correlator.sigma.safe_regex import regex_warning


def _text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8") if path else ""
    except (OSError, UnicodeDecodeError):
        return ""


def condition_failure(rule: Any) -> RuleFailure | None:
    """The located error of a base rule's condition (syntax, or a detection it names that is not defined)."""
    detection = getattr(rule, "detection", None)
    if detection is None:
        return None
    try:
        for cond in detection.parsed_condition:
            cond.parse()  # resolves identifiers: an unknown selection raises here
    except (SigmaError, ValueError, TypeError, RecursionError) as e:
        path = rule_path(rule)
        return RuleFailure(path, error_line(Path(path), _text(path), e), failure_reason(e), " ".join(str(e).split()))
    return None


def regex_warnings(rule: Any) -> list[RuleFailure]:
    """A warning (file:line) per ``|re`` value that has nested unbounded repeats or that RE2 cannot express."""
    detection = getattr(rule, "detection", None)
    if detection is None:
        return []
    path = rule_path(rule)
    lines = _text(path).splitlines()
    out = []
    for pattern, flags in _regexes(detection.detections.values()):
        why = regex_warning(pattern, flags)
        if why:
            line = next((i for i, ln in enumerate(lines, 1) if "|re" in ln or pattern in ln), 1)
            line = next((i for i, ln in enumerate(lines, 1) if pattern in ln), line)
            out.append(RuleFailure(path, line, "regex", f"|re {pattern!r}: {why}"))
    return out


def _regexes(items: Any) -> Any:
    for item in items:
        sub = getattr(item, "detection_items", None)
        if sub is not None:
            yield from _regexes(sub)
            continue
        for v in getattr(item, "value", None) or []:
            if isinstance(v, SigmaRegularExpression):
                flags = 0
                for f in v.flags:
                    flags |= SigmaRegularExpression.sigma_to_python_flags[f]
                yield str(v.regexp), flags
