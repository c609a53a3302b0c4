"""Sigma ``|re`` matching that no pattern can stall: RE2 (linear time) with Python's exact semantics.

A pattern is parsed by Python's own parser (``re._parser``) and re-emitted for RE2 (google-re2) with every
character class spelled out as the ASCII characters Python's ``re`` itself says it matches (computed by compiling
the class alone), repeats as non-capturing groups and anchors as RE2's. Only ``search`` success is asked, so
greedy/lazy and capture groups do not matter. For an ASCII text that is exactly ``re.search``.

Everything else runs on Python's ``re`` under a time bound (``FALLBACK_SECONDS``, a SIGALRM interval timer that
``re`` polls): non-ASCII texts, a non-multiline ``$`` before a final newline, and patterns RE2 cannot express
(back-references, look-around, atomic groups, possessive repeats, repeats over 1000). A search stopped by the
bound raises ``RegexTimeout``; callers report the rule and event and treat it as no match.
"""

from __future__ import annotations

import re
import signal
import threading
from functools import lru_cache
from re import _compiler as _sre_compiler
from re import _constants as C  # noqa: N812 - the stdlib's own opcode names
from re import _parser as P  # noqa: N812

import re2

FALLBACK_SECONDS = 0.25  # budget of one Python-re search the RE2 path cannot take
RE2_MAX_REPEAT = 1000  # RE2 rejects larger counted repeats
_ASCII = [chr(i) for i in range(128)]
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.never_capture = True
_UNANCHORED = re2._re2.RE2.Anchor.UNANCHORED


class RegexTimeout(Exception):
    """A regular-expression search stopped by the time bound."""

    def __init__(self, pattern: str, seconds: float) -> None:
        super().__init__(f"|re {pattern!r} stopped after {seconds:g} s (catastrophic backtracking?)")
        self.pattern = pattern


class Untranslatable(ValueError):
    """The pattern has no RE2 equivalent (the reason says which construct)."""


def _cls(chars: list[str]) -> str:
    """RE2 class of exactly these ASCII characters (an empty one never matches)."""
    if not chars:
        return r"[^\x00-\x{10FFFF}]"
    codes = sorted(ord(c) for c in chars)
    out, i = [], 0
    while i < len(codes):
        j = i
        while j + 1 < len(codes) and codes[j + 1] == codes[j] + 1:
            j += 1
        out.append(f"\\x{{{codes[i]:x}}}" + (f"-\\x{{{codes[j]:x}}}" if j > i else ""))
        i = j + 1
    return "[" + "".join(out) + "]"


@lru_cache(maxsize=4096)
def _atom_class(atom: tuple, flags: int) -> str:
    """The ASCII characters one single-character item (literal, set, category, ``.``) matches, by Python's re."""
    sp = P.SubPattern(P.State(), [(atom[0], _thaw(atom[1]))])
    sp.state.flags = flags
    rx = _sre_compiler.compile(sp, flags)
    return _cls([c for c in _ASCII if rx.match(c)])


def _freeze(av: object) -> object:
    return tuple(_freeze(x) for x in av) if isinstance(av, list | tuple) else av


def _thaw(av: object) -> object:
    return [_thaw(x) for x in av] if isinstance(av, tuple) else av


class _Emitter:
    """Python regex parse tree → RE2 syntax (exact on ASCII texts)."""

    def __init__(self) -> None:
        self.eol = False  # a non-multiline '$': also matches before a final newline (RE2's does not)

    def seq(self, items: P.SubPattern | list, flags: int) -> str:
        return "".join(self.item(op, av, flags) for op, av in items)

    def item(self, op: object, av: object, flags: int) -> str:  # noqa: C901 - one branch per opcode
        if op in (C.LITERAL, C.NOT_LITERAL, C.ANY, C.IN):
            return _atom_class((op, _freeze(av)), flags)
        if op is C.SUBPATTERN:
            _, add, rem, sub = av
            return "(?:" + self.seq(sub, (flags | add) & ~rem) + ")"
        if op is C.BRANCH:
            return "(?:" + "|".join(self.seq(b, flags) for b in av[1]) + ")"
        if op in (C.MAX_REPEAT, C.MIN_REPEAT):
            lo, hi, sub = av
            if lo > RE2_MAX_REPEAT or (hi is not C.MAXREPEAT and hi > RE2_MAX_REPEAT):
                raise Untranslatable(f"repeat count over {RE2_MAX_REPEAT}")
            body = "(?:" + self.seq(sub, flags) + ")"
            if hi is C.MAXREPEAT:
                return body + ("*" if lo == 0 else "+" if lo == 1 else f"{{{lo},}}")
            return body + f"{{{lo},{hi}}}"
        if op is C.AT:
            multi = bool(flags & re.MULTILINE)
            if av is C.AT_BEGINNING:
                return "(?m:^)" if multi else r"\A"
            if av is C.AT_BEGINNING_STRING:
                return r"\A"
            if av is C.AT_END:
                if multi:
                    return "(?m:$)"
                self.eol = True
                return r"\z"
            if av is C.AT_END_STRING:
                return r"\z"
            if av is C.AT_BOUNDARY:
                return r"\b"
            if av is C.AT_NON_BOUNDARY:
                return r"\B"
        names = {C.GROUPREF: "back-reference", C.GROUPREF_EXISTS: "conditional group", C.ASSERT: "look-around",
                 C.ASSERT_NOT: "look-around", C.ATOMIC_GROUP: "atomic group", C.POSSESSIVE_REPEAT: "possessive repeat"}
        raise Untranslatable(names.get(op, str(op)))


def to_re2(pattern: str, flags: int = 0) -> tuple[str, bool]:
    """RE2 source equivalent to ``re.search(pattern, text, flags)`` on ASCII texts, and whether it has a
    non-multiline ``$`` (then a text ending in a newline needs Python's re). Raises ``re.error`` for an invalid
    pattern, ``Untranslatable`` for one RE2 cannot express."""
    tree = P.parse(pattern, flags)
    em = _Emitter()
    return em.seq(tree, tree.state.flags), em.eol


class SafeRegex:
    """``search(text)``: ``re.search(pattern, text, flags) is not None`` in linear time (RE2) where exact, else
    Python's re bounded by ``FALLBACK_SECONDS`` (``RegexTimeout``). ``re2_reason`` says why RE2 cannot take the
    pattern (None when it can)."""

    __slots__ = ("pattern", "flags", "rx", "match2", "eol", "re2_reason", "search", "stopped_on")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self.pattern, self.flags = pattern, flags
        self.rx = re.compile(pattern, flags)  # invalid patterns raise re.error here, as before
        self.match2 = None
        self.eol = False
        self.re2_reason: str | None = None
        self.stopped_on: str | None = None  # the last text the bound stopped: asked again, stopped at once
        try:
            src, self.eol = to_re2(pattern, flags)
            self.match2 = re2._re2.RE2(src.encode(), _RE2_OPTIONS).Match
        except (Untranslatable, re2.error, RecursionError) as e:
            self.re2_reason = str(e) or type(e).__name__
        self.search = self._search if self.match2 is not None else self._bounded

    def _search(self, text: str) -> bool:
        if text.isascii() and not (self.eol and text.endswith("\n")):
            b = text.encode()
            return self.match2(_UNANCHORED, b, 0, len(b))[0][0] >= 0
        return self._bounded(text)

    def _bounded(self, text: str) -> bool:
        if text == self.stopped_on:
            raise RegexTimeout(self.pattern, FALLBACK_SECONDS)
        try:
            return bounded_search(self.rx, text)
        except RegexTimeout:
            self.stopped_on = text
            raise


class _Alarm(BaseException):
    """Raised by the interval timer inside a Python-re search (a BaseException: no ``except Exception`` eats it)."""


def _on_alarm(signum: int, frame: object) -> None:
    raise _Alarm


def bounded_search(rx: re.Pattern[str], text: str, seconds: float = FALLBACK_SECONDS) -> bool:
    """``rx.search(text) is not None``, stopped after ``seconds`` (``RegexTimeout``). Python's re polls for
    signals while it backtracks; the timer needs the main thread, elsewhere the search is refused (stopped)."""
    if threading.current_thread() is not threading.main_thread():
        raise RegexTimeout(rx.pattern, 0)
    old = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return rx.search(text) is not None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Alarm:
        raise RegexTimeout(rx.pattern, seconds) from None
    finally:
        signal.signal(signal.SIGALRM, old)


@lru_cache(maxsize=4096)
def safe_regex(pattern: str, flags: int = 0) -> SafeRegex:
    """The shared compiled ``SafeRegex`` of a pattern (rules repeat patterns; hunts call per row)."""
    return SafeRegex(pattern, flags)


_NESTED = (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT)


def regex_warning(pattern: str, flags: int = 0) -> str | None:
    """Why a pattern may be slow (nested unbounded repeats, which backtrack exponentially in Python's re) or
    runs without RE2's linear-time guarantee; None for a pattern RE2 takes with no such nesting."""
    try:
        tree = P.parse(pattern, flags)
    except (re.error, RecursionError, OverflowError):
        return None  # invalid: pySigma reports it
    if _nested_repeat(list(tree), False):
        what = "nested unbounded repeats (catastrophic backtracking in Python's re)"
        return what + ("" if safe_regex(pattern, flags).re2_reason is None else "; not expressible in RE2")
    reason = safe_regex(pattern, flags).re2_reason
    return None if reason is None else f"not expressible in RE2 ({reason}): runs on Python's re, time-bounded"


def _nested_repeat(items: list, inside: bool) -> bool:
    for op, av in items:
        if op in _NESTED:
            variable = av[1] is C.MAXREPEAT or av[1] > av[0]
            if variable and inside:
                return True
            if _nested_repeat(list(av[2]), inside or (variable and (av[1] is C.MAXREPEAT or av[1] > 1))):
                return True
        elif op is C.SUBPATTERN:
            if _nested_repeat(list(av[3]), inside):
                return True
        elif op is C.BRANCH:
            if any(_nested_repeat(list(b), inside) for b in av[1]):
                return True
        elif op in (C.ASSERT, C.ASSERT_NOT):
            if _nested_repeat(list(av[1]), inside):
                return True
        elif op is C.ATOMIC_GROUP and _nested_repeat(list(av), inside):
            return True
    return False
