"""Load Sigma rules through pySigma, keeping every failure with its file, line and reason."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError, SigmaRuleLocation
from sigma.rule import SigmaRule


@dataclass(frozen=True)
class RuleFailure:
    """A rule that did not load or compile."""

    path: str
    line: int
    reason: str  # short class of the failure (counted by `soc rules list`)
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}: {self.message}"


@dataclass
class RuleSet:
    """Loaded rules (base and correlation) and the files that failed."""

    rules: list[SigmaRule] = field(default_factory=list)
    correlations: list[SigmaCorrelationRule] = field(default_factory=list)
    failures: list[RuleFailure] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def failure_counts(self) -> Counter[str]:
        return Counter(f.reason for f in self.failures)


def rule_files(paths: list[str | Path]) -> list[Path]:
    """Every ``*.yml``/``*.yaml`` file under the given files or directories, sorted; missing paths raise."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(x for x in p.rglob("*") if x.suffix in (".yml", ".yaml") and x.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such rule file or directory")
    return out


def error_line(path: Path, text: str, err: BaseException) -> int:
    """Best line for an error: the one pySigma/YAML names, else the line of the detection item it mentions."""
    src = getattr(err, "source", None)
    if isinstance(src, SigmaRuleLocation) and src.line:
        return src.line
    mark = getattr(err, "problem_mark", None)
    if mark is not None:
        return mark.line + 1
    lines = text.splitlines()
    for token in re.findall(r"'([^']{3,})'", str(err)):
        for i, ln in enumerate(lines, 1):
            if token in ln:
                return i
    for i, ln in enumerate(lines, 1):
        if ln.startswith("detection:"):
            return i
    return 1


def failure_reason(err: BaseException) -> str:
    """A stable, countable reason: the exception class, refined for unsupported features."""
    name = type(err).__name__
    msg = str(err)
    if "placeholder" in msg.lower():
        return "unconfigured placeholder"
    if isinstance(err, yaml.YAMLError):
        return "YAML syntax"
    return name.removeprefix("Sigma").removesuffix("Error") or name


def load_rules(paths: list[str | Path]) -> RuleSet:
    """Parse every rule file under ``paths`` (per file, errors collected) and resolve correlation references."""
    rs = RuleSet()
    collections: list[SigmaCollection] = []
    for path in rule_files(paths):
        rs.files.append(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            rs.failures.append(RuleFailure(str(path), 1, "unreadable", str(e)))
            continue
        try:
            col = SigmaCollection.from_yaml(text, collect_errors=True, source=SigmaRuleLocation(path))
        except (yaml.YAMLError, SigmaError) as e:
            rs.failures.append(RuleFailure(str(path), error_line(path, text, e), failure_reason(e), _msg(e)))
            continue
        good = []
        for r in col.rules:
            if r.errors:
                e = r.errors[0]
                rs.failures.append(RuleFailure(str(path), error_line(path, text, e), failure_reason(e), _msg(e)))
            else:
                good.append(r)
        collections.append(SigmaCollection(good))
    merged = SigmaCollection.merge(collections) if collections else SigmaCollection([])
    try:
        merged.resolve_rule_references()
    except SigmaError as e:  # a correlation rule names a rule that is not there
        src = getattr(e, "source", None)
        p = str(src.path) if isinstance(src, SigmaRuleLocation) else "?"
        rs.failures.append(RuleFailure(p, getattr(src, "line", None) or 1, failure_reason(e), _msg(e)))
        merged = SigmaCollection([r for r in merged.rules if not isinstance(r, SigmaCorrelationRule)])
    for r in merged.rules:
        (rs.correlations if isinstance(r, SigmaCorrelationRule) else rs.rules).append(r)
    return rs


def _msg(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]


def rule_path(rule: Any) -> str:
    src = getattr(rule, "source", None)
    return str(src.path) if isinstance(src, SigmaRuleLocation) else ""
