"""Sigma ``|re`` (Python ``re.search``) as a Lucene regular expression, which must match the whole value.

The pattern is parsed by Python's own regex parser (``re._parser``) and re-emitted in Lucene's syntax:
- search semantics: ``.*`` before and after, unless the pattern is anchored there (``^``/``\\A``/``$``/``\\Z``,
  also inside a leading or trailing group such as ``(^|\\.)``, distributed over its alternatives);
- ``.`` without ``|s`` excludes the newline; ``$`` allows one final newline; ``|m`` makes ``^``/``$`` line anchors;
- ``|i`` (or ``(?i)``) spells every letter in both cases;
- ``\\d``, ``\\w``, ``\\s`` are their ASCII classes (Python's also take non-ASCII digits, letters and spaces);
- every other character is escaped, so Lucene's operators (``@ & ~ < > #``) are literals.
Constructs Lucene cannot express — look-around, back-references, ``\\b``/``\\B``, anchors inside the pattern, atomic
groups, possessive repeats, conditionals — raise ``Untranslatable`` with the reason.
"""

from __future__ import annotations

import re
from re import _constants as C  # noqa: N812 - the stdlib's own opcode names
from re import _parser as P  # noqa: N812

LEAD = {C.AT_BEGINNING, C.AT_BEGINNING_STRING}
TRAIL = {C.AT_END, C.AT_END_STRING}
ATOMS = (C.LITERAL, C.NOT_LITERAL, C.IN, C.ANY, C.CATEGORY)  # emitted as one character or class
CATEGORY = {
    C.CATEGORY_DIGIT: (False, "0-9"), C.CATEGORY_NOT_DIGIT: (True, "0-9"),
    C.CATEGORY_WORD: (False, "0-9A-Za-z_"), C.CATEGORY_NOT_WORD: (True, "0-9A-Za-z_"),
    C.CATEGORY_SPACE: (False, " \t\n\r\f\v"), C.CATEGORY_NOT_SPACE: (True, " \t\n\r\f\v"),
}


class Untranslatable(ValueError):
    """The regular expression has no faithful Lucene equivalent."""


def _esc(ch: str) -> str:
    return ch if ch.isalnum() or ch == "\n" else "\\" + ch


def _cases(ch: str) -> set[str]:
    return {x for x in (ch, ch.lower(), ch.upper()) if len(x) == 1}


class _Emitter:
    def __init__(self, flags: int) -> None:
        self.flags = flags

    @property
    def icase(self) -> bool:
        return bool(self.flags & re.IGNORECASE)

    def search(self, items: list) -> str:
        """Lucene regex matching a whole value that contains a match of ``items`` (Python search semantics)."""
        items = list(items)
        pre, suf = ".*", ".*"
        if items and (alts := self._anchored_group(items[0])):
            return "(" + "|".join(self.search(a + items[1:]) for a in alts) + ")"
        if len(items) > 1 and (alts := self._anchored_group(items[-1])):
            return "(" + "|".join(self.search(items[:-1] + a) for a in alts) + ")"
        if items and items[0][0] is C.AT and items[0][1] in LEAD:
            at = items.pop(0)[1]
            pre = "(.*\n)?" if at is C.AT_BEGINNING and self.flags & re.MULTILINE else ""
        if items and items[-1][0] is C.AT and items[-1][1] in TRAIL:
            at = items.pop()[1]
            suf = "" if at is C.AT_END_STRING else "(\n.*)?" if self.flags & re.MULTILINE else "(\n)?"
        return pre + self.seq(items) + suf

    def _anchored_group(self, item: tuple) -> list[list] | None:
        """The alternatives of a plain group or alternation holding an anchor, to distribute over; else None."""
        op, av = item
        if op is C.SUBPATTERN and not av[1] and not av[2]:
            body = list(av[3])
            alts = [list(b) for b in body[0][1][1]] if len(body) == 1 and body[0][0] is C.BRANCH else [body]
        elif op is C.BRANCH:
            alts = [list(b) for b in av[1]]
        else:
            return None
        return alts if any(_has_anchor(a) for a in alts) else None

    def seq(self, items: list) -> str:
        return "".join(self.item(op, av) for op, av in items)

    def item(self, op: object, av: object) -> str:  # noqa: C901, PLR0911, PLR0912 - one case per opcode
        if op is C.LITERAL:
            return self.literal(chr(av))  # type: ignore[arg-type]
        if op is C.NOT_LITERAL:
            chars = _cases(chr(av)) if self.icase else {chr(av)}  # type: ignore[arg-type]
            return "[^" + "".join(_esc(c) for c in sorted(chars)) + "]"
        if op is C.ANY:
            return "." if self.flags & re.DOTALL else "[^\n]"
        if op is C.IN:
            return self.klass(av)  # type: ignore[arg-type]
        if op is C.BRANCH:
            return "(" + "|".join(self.seq(b) for b in av[1]) + ")"  # type: ignore[index]
        if op is C.SUBPATTERN:
            _, add, drop, body = av  # type: ignore[misc]
            saved = self.flags
            self.flags = (self.flags | add) & ~drop
            try:
                return "(" + self.seq(body) + ")"
            finally:
                self.flags = saved
        if op in (C.MAX_REPEAT, C.MIN_REPEAT):  # laziness changes which match is found, not whether one is
            lo, hi, body = av  # type: ignore[misc]
            inner = self.seq(body)
            if not (len(body) == 1 and body[0][0] in ATOMS):
                inner = f"({inner})"
            if (lo, hi) == (0, C.MAXREPEAT):
                return inner + "*"
            if (lo, hi) == (1, C.MAXREPEAT):
                return inner + "+"
            if (lo, hi) == (0, 1):
                return inner + "?"
            return inner + (f"{{{lo},}}" if hi is C.MAXREPEAT else f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}")
        if op is C.CATEGORY:
            return self.klass([(C.CATEGORY, av)])
        if op is C.AT:
            what = {C.AT_BOUNDARY: "word boundary \\b", C.AT_NON_BOUNDARY: "\\B"}.get(av, "anchor inside the pattern")
            raise Untranslatable(f"{what} (Lucene's regular expressions have no anchors)")
        names = {C.ASSERT: "look-ahead/behind", C.ASSERT_NOT: "negative look-ahead/behind",
                 C.GROUPREF: "back-reference", C.GROUPREF_EXISTS: "conditional group"}
        raise Untranslatable(f"{names.get(op, str(op).lower())} (not in Lucene's regular expressions)")

    def literal(self, ch: str) -> str:
        chars = _cases(ch) if self.icase else {ch}
        if len(chars) == 1:
            return _esc(ch)
        return "[" + "".join(_esc(c) for c in sorted(chars)) + "]"

    def klass(self, items: list) -> str:
        """A character class: positive members in one Lucene class, negated categories as alternatives."""
        negate = bool(items) and items[0][0] is C.NEGATE
        members, negated = [], []
        for op, av in items[negate:]:
            if op is C.LITERAL:
                chars = _cases(chr(av)) if self.icase else {chr(av)}
                members += [_esc(c) for c in sorted(chars)]
            elif op is C.RANGE:
                lo, hi = av
                members.append(f"{_esc(chr(lo))}-{_esc(chr(hi))}")
                if self.icase:
                    members += _case_ranges(lo, hi)
            elif op is C.CATEGORY:
                neg, spec = CATEGORY.get(av, (None, ""))
                if neg is None:
                    raise Untranslatable(f"character category {str(av).lower()}")
                (negated if neg else members).append("".join(_esc(c) if c != "-" else c for c in spec))
            else:
                raise Untranslatable(f"{str(op).lower()} in a character class")
        if negate:
            if negated:
                raise Untranslatable("a negated class holding a negated category such as [^\\W]")
            return "[^" + "".join(members) + "]"
        parts = (["[" + "".join(members) + "]"] if members else []) + ["[^" + n + "]" for n in negated]
        return parts[0] if len(parts) == 1 else "(" + "|".join(parts) + ")"


def _case_ranges(lo: int, hi: int) -> list[str]:
    """The other-case counterparts of the ASCII letters in [lo, hi] (Python's IGNORECASE on a range)."""
    out = []
    for a, b, shift in ((ord("a"), ord("z"), -32), (ord("A"), ord("Z"), 32)):
        s, e = max(lo, a), min(hi, b)
        if s <= e:
            out.append(f"{chr(s + shift)}-{chr(e + shift)}")
    return out


def _has_anchor(items: list) -> bool:
    for op, av in items:
        if op is C.AT:
            return True
        if op is C.SUBPATTERN and _has_anchor(av[3]):
            return True
        if op is C.BRANCH and any(_has_anchor(b) for b in av[1]):
            return True
    return False


def to_lucene(pattern: str, flags: int = 0) -> str:
    """Lucene regex (whole-value) equivalent to ``re.search(pattern, value, flags)``; raises Untranslatable."""
    try:
        parsed = P.parse(pattern, flags)
    except re.error as e:
        raise Untranslatable(f"invalid regular expression: {e}") from None
    em = _Emitter(parsed.state.flags)
    return em.search(list(parsed))
