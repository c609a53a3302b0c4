"""The watch policy (YAML): what to watch, which attributes, ignore patterns, labels, change windows, web pages.

Every problem is located: `file:line: field: message` (sensors.compliance.policy.PolicyError, all problems listed).
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from sensors.compliance.policy import PolicyError

ATTRIBUTES = ("sha256", "size", "mode", "owner", "group", "mtime", "inode", "link")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TOP = {"policy", "watch", "ignore", "change_windows", "web"}
_WATCH = {"path", "attributes", "ignore", "label", "tags"}
_WEB = {"dynamic", "known_domains", "label"}
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True, slots=True)
class Ignore:
    """Glob patterns matched against a path relative to its watch root and against its base name."""

    patterns: tuple[str, ...] = ()
    regex: re.Pattern[str] | None = None

    @classmethod
    def of(cls, patterns: tuple[str, ...]) -> Ignore:
        rx = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)) if patterns else None
        return cls(patterns, rx)

    def match(self, rel: str, name: str) -> bool:
        return self.regex is not None and (self.regex.match(rel) is not None or self.regex.match(name) is not None)


@dataclass(frozen=True, slots=True)
class Watch:
    path: str
    attributes: frozenset[str]
    ignore: Ignore
    label: str | None = None
    tags: tuple[str, ...] = ()
    line: int = 0


@dataclass(frozen=True, slots=True)
class ChangeWindow:
    days: frozenset[int]
    start: int  # minutes after midnight UTC, inclusive
    end: int  # exclusive; end <= start spans midnight

    def contains(self, when: datetime) -> bool:
        minute = when.hour * 60 + when.minute
        if self.start < self.end:
            return when.weekday() in self.days and self.start <= minute < self.end
        day = when.weekday() if minute >= self.start else (when.weekday() - 1) % 7
        return day in self.days and (minute >= self.start or minute < self.end)


@dataclass(frozen=True, slots=True)
class WebPolicy:
    dynamic: tuple[str, ...] = ()  # CSS selectors of regions that change by design (news ticker, counters)
    known_domains: tuple[str, ...] = ()  # links, frames and scripts to these (and their subdomains) are expected
    label: str | None = None


@dataclass(frozen=True, slots=True)
class WatchPolicy:
    id: str
    name: str
    path: str
    digest: str  # SHA-256 of the policy text: a baseline is compared only under the policy it was taken with
    watches: tuple[Watch, ...]
    change_windows: tuple[ChangeWindow, ...] = ()
    web: WebPolicy = field(default_factory=WebPolicy)

    def in_change_window(self, when: datetime) -> bool:
        return any(w.contains(when) for w in self.change_windows)


def load_watch_policy(path: str | Path, levels: dict[str, int] | None = None) -> WatchPolicy:
    """Read and validate a watch policy; `levels` (name -> rank) checks labels. Raises PolicyError (all problems)."""
    text = Path(path).read_text(encoding="utf-8")
    return parse_watch_policy(text, str(path), levels)


def parse_watch_policy(text: str, path: str = "<policy>", levels: dict[str, int] | None = None) -> WatchPolicy:
    problems: list[PolicyError] = []

    def fail(node: yaml.Node | None, name: str, message: str) -> None:
        problems.append(PolicyError(path, node.start_mark.line + 1 if node is not None else 1, name, message))

    try:
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PolicyError(path, mark.line + 1 if mark else 1, "yaml",
                          str(getattr(exc, "problem", None) or exc).splitlines()[0]) from None
    if not isinstance(root, yaml.MappingNode):
        raise PolicyError(path, 1, "policy", "must be a mapping with policy: and watch:")
    top = _mapping(root, "", _TOP, fail)
    meta = _mapping(top.get("policy"), "policy", {"id", "name"}, fail) if "policy" in top else {}
    if "policy" not in top:
        fail(root, "policy", "missing (policy: {id: ..., name: ...})")
    pid = _string(meta.get("id"), "policy.id", fail) if "id" in meta else None
    if "id" not in meta and "policy" in top:
        fail(top["policy"], "policy.id", "missing")
    if pid is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", pid):
        fail(meta["id"], "policy.id", "letters, digits, '.', '_' and '-' only (it names the stored baseline)")
        pid = None
    name = _string(meta.get("name"), "policy.name", fail) if "name" in meta else pid
    global_ignore = _patterns(top.get("ignore"), "ignore", fail)

    def label_of(node: yaml.Node | None, where: str) -> str | None:
        if node is None:
            return None
        value = _string(node, where, fail)
        if value is not None and levels is not None and value not in levels:
            fail(node, where, f"unknown classification level {value!r} (known: {', '.join(levels)})")
            return None
        return value

    watches: list[Watch] = []
    if "watch" not in top:
        fail(root, "watch", "missing: a list of {path, attributes, ignore, label, tags}")
    elif not isinstance(top["watch"], yaml.SequenceNode) or not top["watch"].value:
        fail(top["watch"], "watch", "must be a non-empty list of {path, attributes, ignore, label, tags}")
    else:
        seen: dict[str, int] = {}
        for i, node in enumerate(top["watch"].value):
            where = f"watch[{i}]"
            item = _mapping(node, where, _WATCH, fail)
            wpath = _string(item.get("path"), f"{where}.path", fail) if "path" in item else None
            if "path" not in item:
                fail(node, f"{where}.path", "missing")
            if wpath is not None:
                if not wpath.startswith("/"):
                    fail(item["path"], f"{where}.path", f"{wpath!r} must be absolute (as seen from --root)")
                    wpath = None
                else:
                    wpath = str(PurePosixPath(wpath)) if wpath != "/" else "/"
                    if wpath in seen:
                        fail(item["path"], f"{where}.path", f"{wpath} is already watched at line {seen[wpath]}")
                        wpath = None
                    else:
                        seen[wpath] = item["path"].start_mark.line + 1
            attrs = frozenset(ATTRIBUTES)
            if "attributes" in item:
                names = _strings(item["attributes"], f"{where}.attributes", fail)
                bad = [a for a in names if a not in ATTRIBUTES]
                if bad:
                    fail(item["attributes"], f"{where}.attributes",
                         f"unknown attribute(s) {', '.join(bad)} (known: {', '.join(ATTRIBUTES)})")
                elif not names:
                    fail(item["attributes"], f"{where}.attributes", "must name at least one attribute")
                attrs = frozenset(a for a in names if a in ATTRIBUTES) or attrs
            ignore = global_ignore + _patterns(item.get("ignore"), f"{where}.ignore", fail)
            tags = tuple(_strings(item["tags"], f"{where}.tags", fail)) if "tags" in item else ()
            label = label_of(item.get("label"), f"{where}.label")
            if wpath is not None:
                watches.append(Watch(wpath, attrs, Ignore.of(ignore), label, tags, node.start_mark.line + 1))
    windows = _windows(top.get("change_windows"), fail)
    web = WebPolicy()
    if "web" in top:
        w = _mapping(top["web"], "web", _WEB, fail)
        web = WebPolicy(tuple(_strings(w["dynamic"], "web.dynamic", fail)) if "dynamic" in w else (),
                        tuple(d.lower().strip(".") for d in _strings(w["known_domains"], "web.known_domains", fail))
                        if "known_domains" in w else (),
                        label_of(w.get("label"), "web.label"))
        for sel in web.dynamic:
            try:
                import soupsieve

                soupsieve.compile(sel)
            except Exception as exc:  # soupsieve.SelectorSyntaxError and friends
                fail(w["dynamic"], "web.dynamic", f"{sel!r} is not a CSS selector: {str(exc).splitlines()[0]}")
    if problems:
        problems.sort(key=lambda p: p.line)
        first = problems[0]
        raise PolicyError(first.file, first.line, first.field, first.message, problems)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return WatchPolicy(pid or "", name or pid or "", path, digest, tuple(watches), windows, web)


def _mapping(node: yaml.Node | None, where: str, known: set[str], fail: Any) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        fail(node, where or "policy", "must be a mapping")
        return {}
    out: dict[str, yaml.Node] = {}
    for k, v in node.value:
        key = str(k.value) if isinstance(k, yaml.ScalarNode) else "?"
        name = f"{where}.{key}" if where else key
        if key not in known:
            fail(k, name, f"unknown key (known: {', '.join(sorted(known))})")
        elif key in out:
            fail(k, name, f"already set at line {out[key].start_mark.line + 1}")
        else:
            out[key] = v
    return out


def _string(node: yaml.Node | None, where: str, fail: Any) -> str | None:
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":str") and str(node.value).strip():
        return str(node.value)
    fail(node, where, "must be a non-empty string")
    return None


def _strings(node: yaml.Node | None, where: str, fail: Any) -> list[str]:
    if isinstance(node, yaml.ScalarNode):
        value = _string(node, where, fail)
        return [value] if value else []
    if not isinstance(node, yaml.SequenceNode):
        fail(node, where, "must be a string or a list of strings")
        return []
    return [v for i, n in enumerate(node.value) if (v := _string(n, f"{where}[{i}]", fail)) is not None]


def _patterns(node: yaml.Node | None, where: str, fail: Any) -> tuple[str, ...]:
    return tuple(_strings(node, where, fail)) if node is not None else ()


def _windows(node: yaml.Node | None, fail: Any) -> tuple[ChangeWindow, ...]:
    if node is None:
        return ()
    if not isinstance(node, yaml.SequenceNode):
        fail(node, "change_windows", "must be a list of {days, from, to} (UTC)")
        return ()
    out = []
    for i, item in enumerate(node.value):
        where = f"change_windows[{i}]"
        m = _mapping(item, where, {"days", "from", "to"}, fail)
        days = frozenset(range(7))
        if "days" in m:
            names = [d.lower() for d in _strings(m["days"], f"{where}.days", fail)]
            bad = [d for d in names if d not in DAYS]
            if bad:
                fail(m["days"], f"{where}.days", f"unknown day(s) {', '.join(bad)} (known: {', '.join(DAYS)})")
            days = frozenset(DAYS.index(d) for d in names if d in DAYS)
        bounds = []
        for key in ("from", "to"):
            if key not in m:
                fail(item, f"{where}.{key}", "missing (HH:MM, UTC)")
                continue
            value = _string(m[key], f"{where}.{key}", fail)
            hit = _HHMM.match(value or "")
            if value is not None and not hit:
                fail(m[key], f"{where}.{key}", f"{value!r} is not HH:MM (00:00-23:59, UTC)")
            elif hit:
                bounds.append(int(hit.group(1)) * 60 + int(hit.group(2)))
        if len(bounds) == 2:
            out.append(ChangeWindow(days, bounds[0], bounds[1]))
    return tuple(out)
