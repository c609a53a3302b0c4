"""Wazuh/OSSEC regex dialects (OS_Regex, OS_Match) translated to Python `re` patterns.

OS_Regex (`r:` and `n:` in SCA rules, the default `regex_type: osregex`): case-insensitive;
`\\w` = [A-Za-z0-9@_-], `\\d`, `\\s` = ASCII space only, `\\t` = tab, `\\p` = punctuation, `\\W \\D \\S` their
complements, `\\.` = any character, `+`/`*` quantify the preceding backslash class, `^` / `$` anchor where a
(sub-)pattern starts / ends (literal elsewhere), a top-level `|` separates alternatives, `(`...`)` capture (used by
`n:`), and `\\$ \\( \\) \\\\ \\| \\<` are literals. Every other character is literal (a bare `.` matches a dot).
Python's backtracking matches a superset of OS_Regex's greedy engine with its few saved backtrack points only in
contrived patterns such as `\\p*\\d*:` (documented in docs/compliance.md).

OS_Match (sregex, used for `d:` file names without `r:`): literal substring match, case-insensitive, with `^`, `$`
and `|`.
"""

from __future__ import annotations

import re
from functools import lru_cache

_PUNCT = re.escape("()*+,-.:;<=>?[]!\"'#$%&|{}")
_CLASSES = {
    "w": r"[A-Za-z0-9@_\-]",
    "W": r"[^A-Za-z0-9@_\-]",
    "d": r"[0-9]",
    "D": r"[^0-9]",
    "s": r" ",
    "S": r"[^ ]",
    "t": r"\t",
    "p": f"[{_PUNCT}]",
    ".": r"(?s:.)",
}
_LITERAL_ESCAPES = set("()\\$|<")


class RegexError(ValueError):
    """A pattern the dialect cannot express (message names the problem)."""


def _translate_osregex(pattern: str) -> str:
    out: list[str] = []
    i, n, depth = 0, len(pattern), 0
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise RegexError(f"trailing backslash in {pattern!r}")
            nxt = pattern[i + 1]
            i += 2
            if nxt in _CLASSES:
                out.append(_CLASSES[nxt])
                if i < n and pattern[i] in "+*":
                    out.append(pattern[i])
                    i += 1
            elif nxt in _LITERAL_ESCAPES:
                out.append(re.escape(nxt))
            else:  # Wazuh fails to compile it and the minterm then silently never matches
                raise RegexError(f"'\\{nxt}' is not an OS_Regex escape (valid: \\d \\w \\s \\t \\p \\D \\W \\S "
                                 f"\\. and \\( \\) \\\\ \\$ \\| \\<) in {pattern!r}")
            continue
        if ch == "(":
            depth += 1
            if depth > 1:
                raise RegexError(f"OS_Regex allows one level of parentheses: {pattern!r}")
            out.append("(")
        elif ch == ")":
            if depth == 0:
                raise RegexError(f"unbalanced ')' in {pattern!r}")
            depth -= 1
            out.append(")")
        elif ch == "|":
            if depth:
                raise RegexError(f"alternation inside a group is not OS_Regex syntax: {pattern!r}")
            out.append("|")
        elif ch == "^" and (i == 0 or (pattern[i - 1] == "|" and depth == 0)):
            out.append("^")  # an anchor only where a (sub-)pattern begins; elsewhere a literal caret
        elif ch == "$" and depth == 0 and (i + 1 == n or pattern[i + 1] == "|"):
            out.append("$")  # an anchor only where a (sub-)pattern ends
        else:
            out.append(re.escape(ch))
        i += 1
    if depth:
        raise RegexError(f"unbalanced '(' in {pattern!r}")
    return "".join(out)


@lru_cache(maxsize=4096)
def compile_osregex(pattern: str) -> re.Pattern[str]:
    """Compile an OS_Regex pattern (case-insensitive, like Wazuh's default)."""
    try:
        return re.compile(_translate_osregex(pattern), re.IGNORECASE)
    except re.error as exc:  # pragma: no cover - translation emits valid regexes
        raise RegexError(f"{pattern!r}: {exc}") from exc


@lru_cache(maxsize=4096)
def compile_pcre(pattern: str) -> re.Pattern[str]:
    """Compile a `regex_type: pcre2` pattern with Python's `re` (PCRE-compatible for the syntax policies use)."""
    try:
        return re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:  # `a{99999999999}`, 2,000 nested groups
        raise RegexError(f"{pattern!r}: {exc or type(exc).__name__}") from exc


@lru_cache(maxsize=4096)
def compile_osmatch(pattern: str) -> re.Pattern[str]:
    """Compile an OS_Match (sregex) pattern: literal alternatives with optional ^/$ anchors."""
    alts = []
    for alt in pattern.split("|"):
        head = "^" if alt.startswith("^") else ""
        tail = "$" if alt.endswith("$") and len(alt) > len(head) else ""
        core = alt[len(head): len(alt) - len(tail)]
        alts.append(head + re.escape(core) + tail)
    return re.compile("|".join(alts), re.IGNORECASE)


def compile_regex(pattern: str, regex_type: str = "osregex") -> re.Pattern[str]:
    """Compile for the policy's regex engine (`osregex` or `pcre2`)."""
    return compile_pcre(pattern) if regex_type == "pcre2" else compile_osregex(pattern)
