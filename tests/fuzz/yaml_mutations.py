"""Hypothesis strategies for hostile YAML: structural mutations of a shipped file, text and byte damage, alias bombs,
deep nesting and random documents. Used by the policy and compliance fuzz tests."""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml
from hypothesis import strategies as st

HUGE = "9" * 5000  # int() of more than 4,300 digits raises ValueError
NAMES = ["cosmic", "TOP-SECRET", "سري", "moi", "nope", "internet", "$sshd_config", "$nope", "all", "any", "none",
         "critical", "urgent", "pcre2", "osregex", "protection", "teleport", "true", "false", "~", "null", "", " ",
         "10.0.0.0/33", "10.1.0.1/16", "::/0", "fd00::/129", "10.1.0.10:99999", "[::1]:443", "*.gov.example",
         "0", "-1", "4095", "²", "٣", HUGE, "0x" + "f" * 4000, "1e400", "-1e18", ".nan", "2027-02-30", "2025-12-31",
         "tls>=1.", "tls>=1.3", "tls>=1." + HUGE, "ssh", "rot13", "f:/etc/passwd", "f:/a -> r:(", "c:id",
         "f:$nope", "tls:10.1.2.3:443", "f:/a -> n:^x(\\d+) compare <= " + HUGE, "f:/a -> r:a{99999999999999999999}",
         "[/x]", "a\nb", "\t", "\x00", "\ufeff", "\u2028", "x" * 10_000]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=10**30, max_value=10**60),
                    st.floats(), st.text(max_size=40), st.sampled_from(NAMES), st.dates(), st.binary(max_size=8))
VALUES = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
    st.one_of(st.text(max_size=12), st.sampled_from(NAMES), st.integers()), kids, max_size=4), max_leaves=12)
GARBAGE = list(":-[]{}&*!|>'\"%@`#,?\t\n \\") + ["\x00", "\x07", "\x85", "\ufeff", "\u2028", "\ud800", "&a ", "*a",
                                                  "*nope", "!!binary ", "!!int ", "!!timestamp ", "<<: ", "--- ",
                                                  "...", "%YAML 1.1\n", "? ", "!!python/object:os.system "]


def yaml_lines(text: str | bytes) -> int:
    """How many lines YAML sees: \\r, \\x85, U+2028 and U+2029 break lines too (so libyaml's marks count them)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return len(_BREAK.findall(text)) + 1


_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def alias_bomb(width: int, depth: int, indent: str = "") -> str:
    """Anchors `b0`..`b{depth-1}`, each a list of `width` aliases of the previous: width**depth leaves."""
    lines = []
    for i in range(depth):
        items = [f"*b{i - 1}"] * width if i else ["lol"] * width
        lines.append(f"{indent}x{i}: &b{i} [{', '.join(items)}]\n")
    return "".join(lines)


def paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key/index path in a loaded YAML tree (the root is `()`)."""
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += paths(v, (*prefix, i))
    return out


def _parent(tree: Any, path: tuple) -> Any:
    for step in path[:-1]:
        tree = tree[step]
    return tree


@st.composite
def mutated_tree(draw: st.DrawFn, base: Any) -> Any:
    """The base tree with 1-4 structural edits: drop, duplicate, retype a value, rename a key, nest deeper."""
    tree = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(paths(tree)))
        op = draw(st.sampled_from(["drop", "duplicate", "retype", "rename", "nest", "name"]))
        if not path:
            if op == "retype":
                tree = draw(VALUES)
            continue
        parent, last = _parent(tree, path), path[-1]
        if op == "drop":
            del parent[last]
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(last, copy.deepcopy(parent[last]))
        elif op == "rename" and isinstance(parent, dict):
            new = draw(st.one_of(st.sampled_from(NAMES), st.text(max_size=10), st.integers()))
            parent[new] = parent.pop(last)
        elif op == "nest":
            value = parent[last]
            for _ in range(draw(st.integers(1, 40))):
                value = [value]
            parent[last] = value
        elif op == "name":
            parent[last] = draw(st.sampled_from(NAMES))
        else:
            parent[last] = draw(VALUES)
    return tree


def dump(tree: Any) -> str:
    return yaml.dump(tree, Dumper=yaml.CSafeDumper, allow_unicode=True, sort_keys=False, width=10_000)


@st.composite
def damaged_text(draw: st.DrawFn, text: str) -> str:
    """The text with 0-3 edits: tabs, duplicated or dropped lines, syntax garbage, anchors and aliases, an alias
    bomb, deep nesting, truncation."""
    for _ in range(draw(st.integers(0, 3))):
        lines = text.splitlines(keepends=True) or [""]
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["tab", "dupline", "dropline", "garbage", "anchor", "bomb", "bombkey", "deep",
                                   "truncate", "splice"]))
        if op == "tab":
            lines[i] = "\t" + lines[i]
        elif op == "dupline":
            lines.insert(i, lines[i])
        elif op == "dropline":
            del lines[i]
        elif op == "garbage":
            pos = draw(st.integers(0, len(lines[i])))
            junk = "".join(draw(st.lists(st.sampled_from(GARBAGE), min_size=1, max_size=4)))
            lines[i] = lines[i][:pos] + junk + lines[i][pos:]
        elif op == "anchor":  # anchor a value, then alias it (or an undefined / recursive anchor) elsewhere
            head, sep, tail = lines[i].partition(": ")
            if sep:
                lines[i] = f"{head}: &a {tail}" if draw(st.booleans()) else f"{head}: &a [*a]\n"
                j = draw(st.integers(0, len(lines) - 1))
                h2, sep2, _ = lines[j].partition(": ")
                if sep2:
                    lines[j] = f"{h2}: *{draw(st.sampled_from(['a', 'nope']))}\n"
        elif op == "bomb":  # a billion laughs: 9**9 leaves if expanded
            head, sep, _ = lines[i].partition(":")
            lines.insert(0, alias_bomb(9, 9))
            if sep:
                lines[i + 1] = f"{head}: *b8\n"
        elif op == "bombkey":
            lines.insert(0, alias_bomb(9, 9))
            lines.append("? *b8\n: 1\n")
        elif op == "deep":
            n = draw(st.sampled_from([50, 70, 999, 1001, 10_000]))
            head, sep, _ = lines[i].partition(":")
            lines[i] = f"{head if sep else 'x'}: {'[' * n}{']' * n}\n"
        elif op == "truncate":
            return "".join(lines)[: draw(st.integers(0, len(text)))]
        else:
            lines[i] = draw(st.text(max_size=30)) + "\n"
        text = "".join(lines)
    return text


@st.composite
def damaged_bytes(draw: st.DrawFn, text: str) -> bytes:
    """The text as bytes, damaged: invalid UTF-8 inserted, another encoding, a BOM, or binary garbage."""
    data = text.encode("utf-8")
    op = draw(st.sampled_from(["insert", "latin1", "utf16", "bom", "garbage", "empty"]))
    if op == "insert":
        pos = draw(st.integers(0, len(data)))
        return data[:pos] + draw(st.binary(min_size=1, max_size=8)) + data[pos:]
    if op == "latin1":
        return text.encode("latin-1", "replace")
    if op == "utf16":
        return text.encode("utf-16")
    if op == "bom":
        return b"\xef\xbb\xbf" + data
    if op == "garbage":
        return draw(st.binary(max_size=300))
    return b""


def random_document(keys: list[str]) -> st.SearchStrategy[str]:
    """Random YAML documents whose mappings mostly use the format's own field names (to reach the validator)."""
    key = st.one_of(st.sampled_from(keys), st.sampled_from(NAMES), st.text(max_size=8))
    tree = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(key, kids, max_size=5),
                        max_leaves=25)
    soup = st.lists(st.sampled_from(GARBAGE + list("abc019")), max_size=40).map("".join)
    return st.one_of(st.dictionaries(st.sampled_from(keys), tree, max_size=len(keys)).map(dump), tree.map(dump),
                     soup, st.text(max_size=80))
