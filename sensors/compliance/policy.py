"""Load and validate SCA-format policies; every error names file, line and field."""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sensors.compliance.rules import (
    Rule,
    RuleSyntaxError,
    check_tls_target,
    parse_rule,
    substitute,
    variables_in,
)

SEVERITIES = ("low", "medium", "high", "critical")
CONDITIONS = ("all", "any", "none")
REGEX_TYPES = ("osregex", "pcre2")
MAX_DEPTH = 64  # a policy nests about 8 deep; deeper only to exhaust the constructor's recursion
MAX_NODES = 100_000  # values after alias expansion: an alias bomb ("billion laughs") stops here
MAX_CHECK_ID = 2**31 - 1  # Wazuh keeps check ids in a C int
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")  # what YAML (and so libyaml's marks) counts as a line break
_POLICY_KEYS = {"id": True, "file": False, "name": True, "description": True, "references": False,
                "regex_type": False}
_REQ_KEYS = {"title": True, "description": False, "condition": True, "rules": True}
_CHECK_KEYS = {"id": True, "title": True, "description": False, "rationale": False, "remediation": False,
               "impact": False, "references": False, "compliance": False, "condition": True, "rules": True,
               "regex_type": False, "severity": False}


class PolicyError(ValueError):
    """Invalid policy: `file:line: field: message` of its first problem; `problems` lists every one found."""

    def __init__(self, file: str, line: int, field: str, message: str,
                 problems: list[PolicyError] | None = None) -> None:
        self.file, self.line, self.field, self.message = file, line, field, message
        self.problems: list[PolicyError] = problems or [self]
        super().__init__(f"{file}:{line}: {field}: {message}")


class _Skip(Exception):  # noqa: N818 - not an error: the part's problems are recorded, the next part is read
    """Abandon one part of the policy (a check, a variable) whose problems are already recorded."""


@dataclass(frozen=True, slots=True)
class Check:
    id: int
    title: str
    condition: str
    rules: tuple[Rule, ...]
    severity: str = "medium"
    description: str = ""
    rationale: str = ""
    remediation: str = ""
    impact: str = ""
    references: tuple[str, ...] = ()
    compliance: dict[str, list[str]] = field(default_factory=dict)
    line: int = 0


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    name: str
    description: str
    path: str
    checks: tuple[Check, ...]
    requirements: Check | None = None
    references: tuple[str, ...] = ()
    variables: dict[str, str] = field(default_factory=dict)


class _Lines(dict):
    """A mapping that remembers the line of each key's value (and its own)."""

    line = 0
    lines: dict[Any, int]


class _LinedList(list):
    line = 0
    lines: list[int]


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml: C speed, nesting capped at parse
    def construct_object(self, node, deep=False):  # noqa: D102 - yaml hook
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:  # 2024-02-30, 5,000 digits, `!!int ""` (IndexError), `!!timestamp x` (AttributeError)
            if not isinstance(node, yaml.ScalarNode) and not isinstance(exc, ValueError | OverflowError):
                raise
            reason = f"bad {node.tag.rsplit(':', 1)[-1]} value: {exc or type(exc).__name__}"
            raise yaml.constructor.ConstructorError(None, None, reason, node.start_mark) from None

    def construct_mapping(self, node, deep=False):  # noqa: D102 - yaml hook
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(None, None, "a key must be a plain value, not a list or "
                                                        "mapping", key_node.start_mark) from None
            if key in seen:  # PyYAML would silently keep the last one
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        mapping = _Lines(super().construct_mapping(node, deep=True))
        mapping.line = node.start_mark.line + 1
        mapping.lines = {self.construct_object(k, deep=True): v.start_mark.line + 1 for k, v in node.value}
        return mapping

    def construct_sequence(self, node, deep=False):  # noqa: D102 - yaml hook
        seq = _LinedList(super().construct_sequence(node, deep=True))
        seq.line = node.start_mark.line + 1
        seq.lines = [item.start_mark.line + 1 for item in node.value]
        return seq


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_sequence)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return node.value if isinstance(node, yaml.SequenceNode) else []


def _check_shape(ctx: _Ctx, root: yaml.Node) -> None:
    """Refuse, located, a tree nested deeper than MAX_DEPTH, larger than MAX_NODES once aliases are expanded, or
    containing itself; linear in the distinct nodes, so an alias bomb costs nothing to detect."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_: set[int] = set()  # entered, not finished: the ancestors of the node being visited
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key, line = id(node), node.start_mark.line + 1
        if finished:
            open_.discard(key)
            kids = _children(node)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            if depth[key] > MAX_DEPTH:
                raise ctx.fail(line, "<yaml>", f"nested deeper than {MAX_DEPTH} levels")
            if size[key] > MAX_NODES:
                raise ctx.fail(line, "<yaml>", f"aliases expand this value to more than {MAX_NODES} nodes "
                                               "(an alias bomb?)")
        elif key in open_:
            raise ctx.fail(line, "<yaml>", "recursive alias: a value that contains itself")
        elif key not in size:
            open_.add(key)
            stack.append((node, True))
            stack.extend((k, False) for k in _children(node))


def one_line(text: str) -> str:
    """`text` with each unprintable character (line breaks, controls) escaped as in a repr: one located line."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _text(value: Any) -> str | None:
    """A scalar as policy text (a YAML number is taken as written); None for anything else."""
    if isinstance(value, str | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() <= 64:
        return str(value)  # str() of a 5,000-digit int raises ValueError
    return None


class _Ctx:
    def __init__(self, file: str, text: str = "") -> None:
        self.file = file
        self.last_line = len(_LINE_BREAK.findall(text)) + 1  # libyaml marks end of input one line past the last
        self.problems: list[PolicyError] = []

    def fail(self, line: int, fld: str, message: str) -> PolicyError:
        return PolicyError(self.file, min(line, self.last_line), one_line(fld), one_line(message))

    def note(self, line: int, fld: str, message: str) -> None:
        """Record a problem and read on."""
        self.problems.append(self.fail(line, fld, message))

    @contextmanager
    def part(self) -> Iterator[None]:
        """Read one part (a field, a rule, a check): its first problem is recorded, then the next part is read."""
        try:
            yield
        except PolicyError as exc:
            self.problems.append(exc)
        except _Skip:
            pass

    def error(self) -> PolicyError:
        """Every recorded problem, in the order found; the first one names the error."""
        first = self.problems[0]
        return PolicyError(first.file, first.line, first.field, first.message, list(self.problems))

    def mapping(self, value: Any, line: int, fld: str, spec: dict[str, bool]) -> _Lines:
        """`value` as a mapping; each unknown field and each missing required field is recorded."""
        if not isinstance(value, dict):
            raise self.fail(line, fld, f"must be a mapping, got {type(value).__name__}")
        for key in value:
            if key not in spec:
                self.note(value.lines.get(key, value.line), f"{fld}.{key}",
                          f"unknown field (allowed: {', '.join(spec)})")
        for key, required in spec.items():
            if required and key not in value:
                self.note(value.line, f"{fld}.{key}", "required field is missing")
        return value

    def string(self, m: _Lines, key: str, fld: str, default: str = "") -> str:
        if key not in m or m[key] is None:
            return default
        text = _text(m[key])
        if text is None:
            raise self.fail(m.lines[key], f"{fld}.{key}", f"must be a string, got {type(m[key]).__name__}")
        return text

    def strings(self, m: _Lines, key: str, fld: str) -> tuple[str, ...]:
        if key not in m or m[key] is None:
            return ()
        value = m[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(m.lines[key], f"{fld}.{key}", "must be a list of strings")
        return tuple(value)

    def choice(self, m: _Lines, key: str, fld: str, allowed: tuple[str, ...], default: str) -> str:
        value = self.string(m, key, fld, default)
        if value not in allowed:
            raise self.fail(m.lines[key], f"{fld}.{key}", f"{value!r} is not one of {', '.join(allowed)}")
        return value


def load_policy(path: str | Path, overrides: dict[str, str] | None = None) -> Policy:
    """Read and validate a policy file. Raises PolicyError (file, line, field) or OSError.

    `overrides` replaces the values of policy variables (`{"$tls_endpoint": "127.0.0.1:8443"}`).
    """
    path = str(path)
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PolicyError(path, line, "<file>", f"not UTF-8 text (byte {exc.start})") from exc
    return parse_policy(text, path, overrides)


def parse_policy(text: str, file: str = "<policy>", overrides: dict[str, str] | None = None) -> Policy:
    """Validate SCA policy text; raises PolicyError naming every problem (`problems`; YAML errors stop at one)."""
    ctx = _Ctx(file, text)
    try:
        loader = _Loader(text)
    except UnicodeEncodeError as exc:  # a lone surrogate in text given as str: libyaml reads UTF-8
        raise ctx.fail(text.count("\n", 0, exc.start) + 1, "<yaml>",
                       f"character {exc.start} is not text ({exc.reason})") from exc
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_shape(ctx, node)
        doc = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = str(exc.problem or exc).splitlines()[0]
        if exc.context and exc.context_mark:  # "second occurrence" means little without "duplicate anchor"
            reason += f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise ctx.fail(mark.line + 1 if mark else 1, "<yaml>", reason) from exc
    except yaml.YAMLError as exc:  # a ReaderError (e.g. a control character) has a position, no mark
        position = getattr(exc, "position", None)
        line = text.count("\n", 0, position) + 1 if position is not None else 1
        raise ctx.fail(line, "<yaml>", str(exc).splitlines()[0]) from exc
    finally:
        loader.dispose()
    policy = None
    with ctx.part():
        policy = _read(ctx, doc, file, overrides)
    if ctx.problems or policy is None:
        raise ctx.error()
    return policy


def _read(ctx: _Ctx, doc: Any, file: str, overrides: dict[str, str] | None) -> Policy:
    """The policy from its YAML tree; each problem recorded in `ctx` (the caller raises them together)."""
    top = ctx.mapping(doc, 1, "<document>", {"policy": True, "requirements": False, "variables": False,
                                              "checks": True})
    head = _Lines()
    head.line, head.lines = 1, {}
    if "policy" in top:
        with ctx.part():
            head = ctx.mapping(top["policy"], top.lines["policy"], "policy", _POLICY_KEYS)
    regex_type = "osregex"
    with ctx.part():
        regex_type = ctx.choice(head, "regex_type", "policy", REGEX_TYPES, "osregex")

    variables: dict[str, str] = {}
    if top.get("variables") is not None:
        raw = top["variables"]
        if not isinstance(raw, dict):
            ctx.note(top.lines["variables"], "variables", "must be a mapping of $name: value")
            raw = {}
        for name, value in raw.items():
            if not isinstance(name, str) or not name.startswith("$"):
                ctx.note(raw.lines[name], f"variables.{name}", "variable names start with '$'")
                continue
            variables[name] = ""  # defined even when its value is bad: one problem, not one per use
            items = [_text(v) for v in value] if isinstance(value, list) else [_text(value)]
            if None in items:
                ctx.note(raw.lines[name], f"variables.{name}", "value must be a string or a list of strings")
                continue
            variables[name] = ",".join(items)
    for name, value in (overrides or {}).items():
        if not name.startswith("$"):
            ctx.note(0, f"variables.{name}", "override names start with '$'")
            continue
        variables[name] = value

    requirements = None
    if top.get("requirements") is not None:
        with ctx.part():
            req = ctx.mapping(top["requirements"], top.lines["requirements"], "requirements", _REQ_KEYS)
            requirements = _check(ctx, req, "requirements", regex_type, variables, requirement=True)

    raw_checks = top.get("checks")
    if "checks" in top and (not isinstance(raw_checks, list) or not raw_checks):
        ctx.note(top.lines["checks"], "checks", "must be a non-empty list")
    checks, seen = [], {}
    for i, raw in enumerate(raw_checks if isinstance(raw_checks, list) else []):
        fld = f"checks[{i}]"
        with ctx.part():
            before = len(ctx.problems)
            m = ctx.mapping(raw, raw_checks.lines[i], fld, _CHECK_KEYS)
            check = _check(ctx, m, fld, regex_type, variables)
            if check.id in seen:
                first = seen[check.id]
                ctx.note(m.lines["id"], f"{fld}.id", f"duplicate check id {check.id} (first at line {first})")
            elif check.id:
                seen[check.id] = m.lines["id"]
            if len(ctx.problems) > before:
                raise _Skip
            checks.append(check)

    strings = {}
    for key in ("id", "name", "description"):
        with ctx.part():
            strings[key] = ctx.string(head, key, "policy")
    references: tuple[str, ...] = ()
    with ctx.part():
        references = ctx.strings(head, "references", "policy")
    if ctx.problems:
        raise _Skip
    return Policy(
        id=strings["id"],
        name=strings["name"],
        description=strings["description"],
        path=file,
        checks=tuple(checks),
        requirements=requirements,
        references=references,
        variables=variables,
    )


def _check(ctx: _Ctx, m: _Lines, fld: str, regex_type: str, variables: dict[str, str],
           requirement: bool = False) -> Check:
    """One check (or the requirements block) as far as it reads; each problem is recorded in `ctx`."""
    check_id = 0
    if not requirement and "id" in m:
        raw_id = m["id"]
        if isinstance(raw_id, bool) or not isinstance(raw_id, int) or not 0 < raw_id <= MAX_CHECK_ID:
            shown = reprlib.repr(raw_id) if _text(raw_id) else type(raw_id).__name__
            ctx.note(m.lines["id"], f"{fld}.id", f"must be a positive integer up to {MAX_CHECK_ID}, got {shown}")
        else:
            check_id = raw_id  # 0 (no id) otherwise: never compared for duplicates
    title = ""
    with ctx.part():
        title = ctx.string(m, "title", fld)
        if "title" in m and not title.strip():
            raise ctx.fail(m.lines.get("title", m.line), f"{fld}.title", "must not be empty")
    if m.get("condition") in ("all required", "any required"):  # deprecated Wazuh spellings
        m["condition"] = m["condition"].split()[0]
    condition = "all"
    with ctx.part():
        condition = ctx.choice(m, "condition", fld, CONDITIONS, "all")
    with ctx.part():
        regex_type = ctx.choice(m, "regex_type", fld, REGEX_TYPES, regex_type)
    raw_rules = m.get("rules")
    if "rules" in m and (not isinstance(raw_rules, list) or not raw_rules):
        ctx.note(m.lines["rules"], f"{fld}.rules", "must be a non-empty list of rule strings")
    rules = []
    for j, text in enumerate(raw_rules if isinstance(raw_rules, list) else []):
        with ctx.part():
            rules.append(_rule(ctx, text, raw_rules.lines[j], f"{fld}.rules[{j}]", regex_type, variables))
    compliance: dict[str, list[str]] = {}
    with ctx.part():
        raw = m.get("compliance")
        for item in [] if raw is None else raw if isinstance(raw, list) else [raw]:
            for key, ids in item.items() if isinstance(item, dict) else [(None, None)]:
                texts = [_text(i) for i in (ids if isinstance(ids, list) else [ids])]
                if _text(key) is None or None in texts:
                    raise ctx.fail(m.lines["compliance"], f"{fld}.compliance",
                                   "must be a list of {framework: [ids]} mappings")
                compliance.setdefault(_text(key), []).extend(texts)
    fields: dict[str, Any] = {"severity": "medium", "references": ()}
    with ctx.part():
        fields["severity"] = ctx.choice(m, "severity", fld, SEVERITIES, "medium")
    for key in ("description", "rationale", "remediation", "impact"):
        with ctx.part():
            fields[key] = ctx.string(m, key, fld)
    with ctx.part():
        fields["references"] = ctx.strings(m, "references", fld)
    return Check(id=check_id, title=title, condition=condition, rules=tuple(rules), compliance=compliance,
                 line=m.line, **fields)


def _rule(ctx: _Ctx, text: Any, line: int, fld: str, regex_type: str, variables: dict[str, str]) -> Rule:
    """One rule string, parsed, its variables substituted; raises PolicyError."""
    if not isinstance(text, str):
        raise ctx.fail(line, fld, f"must be a string, got {type(text).__name__}")
    try:
        rule = parse_rule(text, regex_type)
    except RuleSyntaxError as exc:
        raise ctx.fail(line, fld, str(exc)) from exc
    for var in variables_in(rule.location) if rule.type != "c" else ():  # shell `$x` stays the shell's
        if not any(var.startswith(name) for name in variables):
            raise ctx.fail(line, fld, f"undefined variable {var}")
    rule = rule.with_location(substitute(rule.location, variables))
    if rule.type == "tls":
        try:
            check_tls_target(rule.location)
        except RuleSyntaxError as exc:
            raise ctx.fail(line, fld, str(exc)) from exc
    return rule
