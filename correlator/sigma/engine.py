"""Streaming Sigma matcher: rules compiled once into Python functions, events routed by literal indexes.

Routing: for each rule the compiler picks, from its condition tree, the cheapest set of *anchors* such that the
rule can only match an event that hits one of them: an exact value of a field (hash lookup), a literal that must
occur inside a field (one Aho-Corasick automaton per field), or merely the presence of a field. Logsource
conditions the pipelines add (``EventID``/``Channel``, ``event.dataset``) are anchors like any other, but common
ones cost more, so a rule is indexed by its rarest literal. Rules without any anchor (only negations, keywords)
are tried on every event. Cost per event is then the fields it carries plus the few candidate rules it hits.
"""

from __future__ import annotations

import copy
import marshal
import re
import re._constants as _sre
import re._parser as _sre_parser
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ahocorasick
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule

from correlator.sigma.backend import Node, PythonBackend
from correlator.sigma.codegen import _Gen, build_const, literal_parts
from correlator.sigma.loader import RuleFailure, RuleSet, error_line, failure_reason, rule_path
from correlator.sigma.pipelines import build_pipeline
from correlator.sigma.runtime import RUNTIME
from correlator.sigma.safe_regex import RegexTimeout
from correlator.sigma.values import Lowered
from correlator.storm import DEFAULT as DEFAULT_STORM
from correlator.storm import StormSpec, storm_spec

# Which producers (ECS event.module) carry a Sigma logsource product's events.
PRODUCT_MODULES: dict[str, tuple[str, ...]] = {
    "windows": ("windows", "sysmon", "security", "powershell", "system", "winlog", "wineventlog"),
    "linux": ("linux", "auditd", "system", "syslog", "journald"),
    "zeek": ("zeek", "soc"),
    "cisco": ("cisco", "cisco_ios", "cisco_asa", "cisco_ftd"),
}


@dataclass
class RuleInfo:
    """What alerts and the CLI need to know about a compiled rule."""

    id: str
    title: str
    name: str | None = None
    description: str = ""
    level: str = "medium"
    status: str = ""
    tags: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    falsepositives: list[str] = field(default_factory=list)
    logsource: dict[str, str] = field(default_factory=dict)
    path: str = ""
    output: bool = True  # False: only feeds correlation rules (generate: false)
    tests_path: str | None = None  # the rule's regression_tests_path (SigmaHQ convention)
    indicators: bool = True  # `soc_indicators: false`: the alert's observables are not indicators to share
    alert_fields: tuple[str, ...] = ()  # `soc_alert_fields`: copied into the alert and its reason, kept current
    storm: StormSpec | None = DEFAULT_STORM  # `soc_storm`: when its keys explode, fold them (correlator.storm)

    @classmethod
    def of(cls, r: SigmaRule | SigmaCorrelationRule) -> RuleInfo:
        ls = getattr(r, "logsource", None)
        return cls(
            id=str(r.id or r.name or r.title),
            title=r.title,
            name=r.name,
            description=r.description or "",
            level=r.level.name.lower() if r.level else "medium",
            status=r.status.name.lower() if r.status else "",
            tags=[str(t) for t in r.tags or []],
            references=list(r.references or []),
            falsepositives=list(r.falsepositives or []),
            logsource={k: v for k in ("product", "category", "service") if (v := getattr(ls, k, None))},
            path=rule_path(r),
            output=bool(getattr(r, "_output", True)),
            tests_path=(getattr(r, "custom_attributes", None) or {}).get("regression_tests_path"),
            indicators=(getattr(r, "custom_attributes", None) or {}).get("soc_indicators", True) is not False,
            storm=storm_spec(getattr(r, "custom_attributes", None)),
            alert_fields=tuple(str(f) for f in (getattr(r, "custom_attributes", None) or {}).get("soc_alert_fields")
                               or ()),
        )


TEXT = "\0text"  # pseudo-field of keyword anchors: every value of the event, lower-cased (``Lowered.text()``)


def _leaf_key(n: Node) -> tuple | None:
    """Prefilter key a leaf offers: ('x', field, value) exact, ('s', field, literal) substring, ('h', field).
    An uncased keyword offers its longest literal as a substring of the event's text (it matches only where the
    literal is inside some value; cased keywords and keyword regexes test raw values and offer nothing)."""
    kind, f = n[0], n[1] if len(n) > 1 else None
    if f is None:
        if kind == "str" and not n[3] and (lits := literal_parts(n[2])):
            lit = max(lits, key=len).lower()
            return ("s", TEXT, lit) if "\n" not in lit else None
        return None
    if kind in ("null", "not", "and", "or"):
        return None
    if kind == "str":
        parts = n[2]
        lits = literal_parts(parts)
        if len(parts) == 1 and lits:
            return ("x", f, parts[0].lower())
        if lits:
            return ("s", f, max(lits, key=len).lower())
        return ("h", f)
    if kind == "fieldref":
        return ("h", f)
    return ("h", f)


def regex_literals(pattern: str, flags: int = 0) -> list[str] | None:
    """Lower-case ASCII literals of which at least one occurs in every string the regex finds a match in
    (None when no such set is known). They route a ``|re`` rule like a substring: the regex runs only on
    events whose field holds one of them. Derived from Python's own regex parser, so it is exact or absent."""
    try:
        tree = _sre_parser.parse(pattern, flags)
    except (re.error, RecursionError, OverflowError):
        return None
    # Case-insensitive Unicode regexes also match 'ſ' for s and 'ı'/'İ' for i, which str.lower() does not turn
    # into 's'/'i': those letters then end a literal (kept exact, not guessed).
    gflags = tree.state.flags
    icase = bool(gflags & re.IGNORECASE or _INLINE_I.search(pattern)) and not gflags & re.ASCII
    return _seq_literals(list(tree), "si" if icase else "")


_INLINE_I = re.compile(r"\(\?[a-zA-Z-]*i")


def _seq_literals(items: list, unsafe: str) -> list[str] | None:
    """Best requirement of a sequence: its longest literal run, or a required group's / branch's literal set."""
    best: list[str] | None = None
    run: list[str] = []

    def consider(cand: list[str] | None) -> None:
        nonlocal best
        if cand and (best is None or _req_cost(cand) < _req_cost(best)):
            best = cand

    for op, av in items:
        if op is _sre.LITERAL and av < 128 and (c := chr(av).lower()) not in unsafe:
            run.append(c)
            continue
        consider(["".join(run)] if run else None)
        run = []
        if op is _sre.SUBPATTERN:
            consider(_seq_literals(list(av[3]), unsafe))
        elif op is _sre.BRANCH:
            alts = [_seq_literals(list(b), unsafe) for b in av[1]]
            if all(alts):
                consider(sorted({x for a in alts for x in a}))  # type: ignore[union-attr]
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT) and av[0] >= 1:
            consider(_seq_literals(list(av[2]), unsafe))
    consider(["".join(run)] if run else None)
    return best


def _req_cost(lits: list[str]) -> float:
    return sum(20.0 / len(x) for x in lits)


def _leaves(n: Node, out: set) -> None:
    if n[0] in ("and", "or"):
        for c in n[1]:
            _leaves(c, out)
    elif n[0] != "not":
        k = _leaf_key(n)
        if k is not None:
            out.add(k)


def _anchors(n: Node, freq: Counter) -> tuple[float, list[tuple]] | None:
    """Cheapest anchor set that every match of ``n`` hits, or None."""
    kind = n[0]
    if kind == "and":
        best = None
        for c in n[1]:
            a = _anchors(c, freq)
            if a is not None and (best is None or a[0] < best[0]):
                best = a
        return best
    if kind == "or":
        total, keys = 0.0, []
        for c in n[1]:
            a = _anchors(c, freq)
            if a is None:
                return None
            total += a[0]
            keys.extend(a[1])
        return total, keys
    if kind == "not":
        return None
    if kind == "re" and n[1] is not None and (lits := regex_literals(n[2], n[3])):
        keys = [("s", n[1], x) for x in lits]
        return sum(anchor_cost(k, freq) for k in keys), keys
    k = _leaf_key(n)
    if k is None:
        return None
    return anchor_cost(k, freq), [k]


# Fields whose values name an event's source or type rather than its content: the logsource conditions the
# pipelines add and ECS's low-cardinality categorisation fields. Almost every event of a kind carries the same value.
SOURCE_FIELDS = frozenset({
    "Channel", "EventID", "Provider_Name", "winlog.channel", "winlog.provider_name", "event.code", "event.dataset",
    "event.module", "event.provider", "event.category", "event.type", "event.kind", "event.outcome",
    "network.transport", "network.protocol", "network.direction", "dns.type", "http.request.method",
})


TEXT_COST = 300.0


def anchor_cost(k: tuple, freq: Counter) -> float:
    """Estimated hit rate of an anchor. Exact values: how many rules test them, and much more for values that
    classify events rather than describe them (``EventID: 1``, ``event.dataset: soc.dns``, ``tcp``), which are
    on most events of their kind. Substrings: short ASCII literals hit often, long or non-ASCII ones (emoji,
    homoglyphs) rarely. Field presence: almost always."""
    if k[0] == "x":
        common = k[1] in SOURCE_FIELDS or len(k[2]) <= 3
        return float(freq[k]) + (40.0 if common else 0.0)
    if k[1] == TEXT:  # plus the cost of building the event's text, worth it only over very common anchors
        return TEXT_COST + anchor_cost(("s", "", k[2]), freq)
    if k[0] == "s":
        if not k[2].isascii():  # emoji, homoglyphs: rare in logs whatever their length
            return 0.2 * freq[k] + 0.5
        return 0.2 * freq[k] + 60.0 / max(len(k[2]), 1) ** 2
    return 500.0 + freq[k]


@dataclass
class Compiled:
    """Everything needed to rebuild a Matcher without pySigma (the compiled cache stores this)."""

    schema: str
    infos: list[RuleInfo]
    source: str
    consts: dict[str, tuple[str, tuple]]
    anchors: list[list[tuple] | None]
    code: bytes = b""  # marshal of the compiled module


@dataclass(frozen=True)
class RegexStop:
    """A rule whose ``|re`` search was stopped by the time bound on one event (that rule: no match)."""

    rule: int  # index into Matcher.infos
    event: dict[str, Any]
    message: str


STOPS_KEPT = 100  # stopped searches kept per matcher (all are counted)


class Matcher:
    """Matches flat events against compiled rules; ``match(event)`` returns indexes into ``infos``.

    A rule whose regex search is stopped (``RegexTimeout``) does not match that event and is recorded in
    ``stopped`` (first ``STOPS_KEPT``; ``stopped_total`` counts all); every other rule still meets the event."""

    def __init__(self, c: Compiled) -> None:
        self.compiled = c
        self.infos = c.infos
        self.funcs = _functions(c)
        self.stopped: list[RegexStop] = []
        self.stopped_total = 0
        exact: dict[str, dict[str, list[int]]] = {}
        substr: dict[str, dict[str, list[int]]] = {}
        has: dict[str, list[int]] = {}
        always: list[int] = []
        text: list[tuple[str, int]] = []
        for i, keys in enumerate(c.anchors):
            if keys is None:
                always.append(i)
                continue
            for k in set(keys):
                if k[1] == TEXT:
                    text.append((k[2], i))
                elif k[0] == "x":
                    exact.setdefault(k[1], {}).setdefault(k[2], []).append(i)
                elif k[0] == "s":
                    substr.setdefault(k[1], {}).setdefault(k[2], []).append(i)
                else:
                    has.setdefault(k[1], []).append(i)
        self.always = always
        # Unanchored rules (keywords, pure negations) are routed by logsource product (else service) against the
        # event's producer (event.module): a Cisco or Apache keyword rule is not tried on soc sensor events.
        # Events without event.module (e.g. raw EVTX renderings) still meet every rule.
        source = [info.logsource.get("product") or info.logsource.get("service") for info in c.infos]
        self.always_any = tuple(i for i in always if not source[i])
        self.always_by_module: dict[str, tuple[int, ...]] = {}
        for i in always:
            product = source[i]
            if product:
                for module in _modules(product):
                    self.always_by_module[module] = (*self.always_by_module.get(module, ()), i)
        # Keyword anchors: one automaton over the event's text per producer, holding the rules for that
        # producer's product (as above) and those without one; events without event.module meet them all.
        self.text_all = _automaton(text)
        self.text_any = _automaton([(lit, i) for lit, i in text if not source[i]])
        self.text_by_module: dict[str, Any] = {}
        for module in {m for lit, i in text if source[i] for m in _modules(source[i])}:
            self.text_by_module[module] = _automaton(
                [(lit, i) for lit, i in text if not source[i] or module in _modules(source[i])])
        self.exact = {f: {v: tuple(ids) for v, ids in d.items()} for f, d in exact.items()}
        self.has = {f: tuple(ids) for f, ids in has.items()}
        self.automata = {f: _automaton([(lit, i) for lit, ids in d.items() for i in ids]) for f, d in substr.items()}
        self.indexed = set(self.exact) | set(self.has) | set(self.automata)
        self.index = {f: (self.has.get(f), self.exact.get(f), self.automata.get(f)) for f in self.indexed}
        self.parents: dict[str, list[str]] = {}
        for f in self.indexed:
            for i, ch in enumerate(f):
                if ch == ".":
                    self.parents.setdefault(f[:i], []).append(f)

    def __getstate__(self) -> dict[str, Any]:
        """The built routing (indexes, automata) without the rule functions: the compiled cache stores it, so a
        load skips rebuilding the automata (0.2 s of 0.37 s for SigmaHQ's 3,752 rules)."""
        state = self.__dict__.copy()
        del state["funcs"]
        state["stopped"], state["stopped_total"] = [], 0
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.funcs = _functions(self.compiled)

    def __len__(self) -> int:
        return len(self.funcs)

    def candidates(self, e: dict[str, Any], lo: Lowered) -> set[int]:
        """Rules whose anchors the event hits (plus the unanchored ones). The hot path: one dict lookup per
        event field, lower-casing only indexed fields (cached in ``lo`` for the rule functions)."""
        module = e.get("event.module")
        if module is None or type(module) is not str:
            cands: set[int] = set(self.always)
            text = self.text_all
        else:
            module = module.lower()
            cands = set(self.always_any)
            cands.update(self.always_by_module.get(module, ()))
            text = self.text_by_module.get(module, self.text_any)
        if text is not None:
            for _, ids in text.iter(lo.text()):
                cands.update(ids)
        index = self.index
        for k in index.keys() & e.keys():  # set intersection in C: only the event's indexed fields
            raw = e[k]
            if type(raw) is str:  # the common case, without building a tuple of values
                v = lo[k] = raw.lower()
                has, exact, automaton = index[k]
                if has:
                    cands.update(has)
                if exact is not None and (ids := exact.get(v)):
                    cands.update(ids)
                if automaton is not None:
                    for _, ids in automaton.iter(v):
                        cands.update(ids)
                continue
            v = lo[k]  # numbers, booleans, lists: lower-cased string forms
            if v is not None:
                self._hit(k, v, cands)
        if self.parents:
            for k in self.parents.keys() & e.keys():  # object arrays: their indexed sub-fields (dns.answers.data)
                if type(e[k]) is list:
                    for f in self.parents[k]:
                        v = lo[f]
                        if v is not None:
                            self._hit(f, v, cands)
        return cands

    def _hit(self, k: str, v: Any, cands: set[int]) -> None:
        vals = v if type(v) is tuple else (v,)
        has, exact, automaton = self.index[k]
        if has:
            cands.update(has)
        if exact is not None:
            for x in vals:
                ids = exact.get(x)
                if ids:
                    cands.update(ids)
        if automaton is not None:
            for x in vals:
                for _, ids in automaton.iter(x):
                    cands.update(ids)

    def match(self, e: dict[str, Any]) -> list[int]:
        """Indexes of the rules that match event ``e`` (ascending)."""
        lo = Lowered(e)
        funcs = self.funcs
        cands = self.candidates(e, lo)
        try:
            return sorted(i for i in cands if funcs[i](e, lo))
        except RegexTimeout:  # rare: redo rule by rule (a stopped search re-raises at once on the same text)
            return self._guarded(e, lo, sorted(cands))

    def _guarded(self, e: dict[str, Any], lo: Lowered, rules: Any) -> list[int]:
        out = []
        for i in rules:
            try:
                if self.funcs[i](e, lo):
                    out.append(i)
            except RegexTimeout as exc:
                self.stopped_total += 1
                if len(self.stopped) < STOPS_KEPT:
                    self.stopped.append(RegexStop(i, e, str(exc)))
        return out

    def match_all(self, e: dict[str, Any]) -> list[int]:
        """Reference path without the prefilter: every rule tried (used by tests to check the routing)."""
        return self._guarded(e, Lowered(e), range(len(self.funcs)))


def stop_failures(m: Matcher, event_id: Callable[[dict[str, Any]], str]) -> list[RuleFailure]:
    """The matcher's stopped regex searches as located failures (rule file and line, event id, pattern)."""
    out = []
    for s in m.stopped:
        info = m.infos[s.rule]
        try:
            text = Path(info.path).read_text(encoding="utf-8") if info.path else ""
        except (OSError, UnicodeDecodeError):
            text = ""
        line = error_line(Path(info.path), text, ValueError(s.message))
        out.append(RuleFailure(info.path, line, "regex stopped",
                               f"rule {info.id}, event {event_id(s.event)}: {s.message}; other rules matched"))
    if m.stopped_total > len(m.stopped):
        out.append(RuleFailure("", 0, "regex stopped", f"{m.stopped_total - len(m.stopped)} more stopped searches"))
    return out


def _modules(product: str) -> tuple[str, ...]:
    """The event.module values of a Sigma logsource product's producers."""
    return PRODUCT_MODULES.get(product.lower(), (product.lower(),))


def _functions(c: Compiled) -> list[Callable[..., Any]]:
    """The rule functions ``m0``, ``m1``, … of the generated module, with its constants and runtime helpers."""
    ns: dict[str, Any] = dict(RUNTIME)
    ns.update({name: build_const(f, args) for name, (f, args) in c.consts.items()})
    code = marshal.loads(c.code) if c.code else compile(c.source, f"<sigma:{c.schema}>", "exec")
    exec(code, ns)  # noqa: S102 - code generated by PythonBackend
    return [ns[f"m{i}"] for i in range(len(c.infos))]


def _automaton(pairs: list[tuple[str, int]]) -> Any:
    """Aho-Corasick automaton: literal -> tuple of rule indexes (None when there are no literals)."""
    if not pairs:
        return None
    by_lit: dict[str, list[int]] = {}
    for lit, i in pairs:
        by_lit.setdefault(lit, []).append(i)
    a = ahocorasick.Automaton()
    for lit, ids in by_lit.items():
        a.add_word(lit, tuple(ids))
    a.make_automaton()
    return a


def compile_rules(
    ruleset: RuleSet,
    schema: str = "ecs",
    placeholders: dict[str, list[str]] | None = None,
    copy_rules: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Compiled, list[RuleFailure]]:
    """Convert the ruleset's base rules with the PythonBackend through the schema's pipeline.

    ``copy_rules``: convert deep copies (pipelines mutate rules; needed to compile one RuleSet for two schemas).
    """
    backend = PythonBackend(build_pipeline(schema, placeholders), collect_errors=True)
    backend.init_processing_pipeline()
    failures: list[RuleFailure] = []
    infos: list[RuleInfo] = []
    trees: list[Node] = []
    for n, rule in enumerate(ruleset.rules, 1):
        if progress is not None and (n % 100 == 0 or n == len(ruleset.rules)):
            progress(n, len(ruleset.rules))
        r = copy.deepcopy(rule) if copy_rules else rule
        n_err = len(backend.errors)
        try:
            backend.convert_rule(r)
            storm_spec(getattr(r, "custom_attributes", None))  # a bad soc_storm is this rule's failure
            queries = r.get_conversion_result() if not backend.errors[n_err:] else None
        except (SigmaError, ValueError, TypeError, NotImplementedError, KeyError) as e:
            backend.errors.append((r, e))  # type: ignore[arg-type]
            queries = None
        if not queries:
            err = backend.errors[n_err][1] if backend.errors[n_err:] else SigmaError("rule converted to nothing")
            path = rule_path(r)
            try:
                text = Path(path).read_text(encoding="utf-8") if path else ""
            except (OSError, UnicodeDecodeError):
                text = ""
            failures.append(RuleFailure(path, error_line(path, text, err), failure_reason(err), str(err)[:300]))
            continue
        infos.append(RuleInfo.of(r))
        trees.append(queries[0] if len(queries) == 1 else ("or", list(queries)))
    freq: Counter = Counter()
    for t in trees:
        keys: set = set()
        _leaves(t, keys)
        freq.update(keys)
    anchors = []
    for t in trees:
        a = _anchors(t, freq)
        anchors.append(None if a is None else a[1])
    g = _Gen()
    src = "".join(f"def m{i}(e, l):\n    return {g.expr(t)}\n" for i, t in enumerate(trees))
    code = marshal.dumps(compile(src, f"<sigma:{schema}>", "exec"))
    return Compiled(schema, infos, src, g.consts, anchors, code), failures
