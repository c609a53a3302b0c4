"""Load Sigma rules through pySigma, keeping every failure with its file, line and reason."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaConditionError, SigmaError, SigmaRuleLocation
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


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # same resolver as pySigma's yaml.safe_load
SKIP_DIRS = {"tests", "regression_data"}  # rule test data beside rules, not rules
PLACEHOLDERS_FILE = "_placeholders.yml"


def _is_rule_file(x: Path, root: Path) -> bool:
    rel = x.relative_to(root).parts
    return (x.suffix in (".yml", ".yaml") and not x.name.startswith("_") and x.is_file()
            and not any(part in SKIP_DIRS or part.startswith(".") for part in rel[:-1]))


def rule_files(paths: list[str | Path]) -> list[Path]:
    """Rule files (``*.yml``/``*.yaml``) under the given files or directories, sorted; missing paths raise.

    In directories, files starting with ``_`` (e.g. ``_placeholders.yml``) and directories named ``tests`` or
    ``regression_data`` are not rules and are skipped; a file named explicitly is always taken.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(x for x in p.rglob("*") if _is_rule_file(x, p)))
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
    if isinstance(err, SigmaConditionError):  # the rule's condition line
        for i, ln in enumerate(lines, 1):
            if ln.lstrip().startswith("condition:"):
                return i
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


def load_rules(paths: list[str | Path], progress: Callable[[int, int], None] | None = None) -> RuleSet:
    """Parse every rule file under ``paths`` (per file, errors collected) and resolve correlation references."""
    rs = RuleSet()
    collections: list[SigmaCollection] = []
    files = rule_files(paths)
    for n, path in enumerate(files, 1):
        rs.files.append(path)
        if progress is not None and (n % 100 == 0 or n == len(files)):
            progress(n, len(files))
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            rs.failures.append(RuleFailure(str(path), 1, "unreadable", str(e)))
            continue
        try:
            docs = list(yaml.load_all(text, Loader=_YAML_LOADER))  # libyaml: 10x pySigma's pure-Python parse
            notmap = [d for d in docs if not isinstance(d, dict)]
            if notmap:
                raise SigmaError(f"a YAML document is a {type(notmap[0]).__name__}, not a rule mapping")
            col = SigmaCollection.from_dicts(docs, collect_errors=True, source=SigmaRuleLocation(path),
                                             resolve_references=False)
        except Exception as e:  # noqa: BLE001 - pySigma assumes well-formed structures (AttributeError,
            # UnboundLocalError on a correlation without condition, ...): any exception is that file's located error
            rs.failures.append(RuleFailure(str(path), error_line(path, text, e), failure_reason(e), _msg(e)))
            continue
        good = []
        for r in col.rules:
            if r.errors:
                e = r.errors[0]
                rs.failures.append(RuleFailure(str(path), error_line(path, text, e), failure_reason(e), _msg(e)))
            else:
                good.append(r)
        collections.append(SigmaCollection(good, resolve_references=False))
    merged = SigmaCollection.merge(collections, resolve_references=False) if collections else SigmaCollection([])
    bad = []
    for r in merged.rules:  # a correlation rule naming a rule that is not there fails alone
        if isinstance(r, SigmaCorrelationRule):
            try:
                r.resolve_rule_references(merged)
            except SigmaError as e:
                p = rule_path(r)
                text = Path(p).read_text(encoding="utf-8") if p else ""
                rs.failures.append(RuleFailure(p, error_line(Path(p), text, e), failure_reason(e), _msg(e)))
                bad.append(r)
    if bad:
        merged = SigmaCollection([r for r in merged.rules if all(r is not b for b in bad)], resolve_references=False)
    merged.resolve_rule_references()
    for r in merged.rules:
        (rs.correlations if isinstance(r, SigmaCorrelationRule) else rs.rules).append(r)
    return rs


def load_placeholders(paths: list[str | Path]) -> dict[str, list[str]]:
    """Placeholder values for ``|expand``: the nearest ``_placeholders.yml`` in or above each path, merged."""
    out: dict[str, list[str]] = {}
    dirs: dict[str, Path] = {}  # a folder as named -> resolved (2,858 named rule files share ~40 folders)
    found: dict[Path, Path | None] = {}  # resolved folder -> its nearest placeholders file
    read: set[Path] = set()
    for p in map(Path, paths):
        if p.is_dir():
            d = p.resolve()
        elif p.is_symlink():  # its target's folder
            d = p.resolve().parent
        else:
            parent = os.path.dirname(os.path.abspath(p))
            d = dirs.get(parent) or dirs.setdefault(parent, Path(parent).resolve())
        if d not in found:
            found[d] = next((f for cand in (d, *d.parents) if (f := cand / PLACEHOLDERS_FILE).is_file()), None)
        f = found[d]
        if f is None or f in read:  # read once: its values are merged already
            continue
        read.add(f)
        try:
            data = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{f}: {e}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{f}:1: expected a mapping of placeholder name to list of values")
        for k, v in data.items():
            out.setdefault(str(k), [str(x) for x in (v if isinstance(v, list) else [v])])
    return out


def _msg(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]


def rule_path(rule: Any) -> str:
    src = getattr(rule, "source", None)
    return str(src.path) if isinstance(src, SigmaRuleLocation) else ""
