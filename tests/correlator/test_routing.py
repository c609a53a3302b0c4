"""Routing of ``|re`` rules by their required literals (correlator.sigma.engine.regex_literals) is exact: every
string in which a regex finds a match contains one of the literals (lower-cased). Checked with strings that
Hypothesis generates from each of SigmaHQ's own regular expressions (the generator knows nothing of soc), plus the
Unicode case-folding corners that make a naive extraction wrong."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from correlator.sigma.engine import Matcher, compile_rules, regex_literals
from correlator.sigma.loader import load_rules

EXAMPLES = int(os.environ.get("SOC_ROUTING_EXAMPLES", "25"))  # strings per SigmaHQ regex


@pytest.fixture(scope="module")
def sigmahq_regexes(sigma_dir: Path) -> list[tuple[str, int]]:
    compiled, _ = compile_rules(load_rules([sigma_dir / "rules-tree"]), "ecs")
    return sorted({args for factory, args in compiled.consts.values() if factory == "re_pred"})


def test_literals_of_known_patterns() -> None:
    assert regex_literals(r"ipconfig\s+/all|netsh\s+interface show interface") == [
        "interface show interface", "ipconfig"]
    assert regex_literals(r"\.dat,#1") == [".dat,#1"]
    assert regex_literals(r"(abc|de)+xyz") == ["xyz"]
    assert regex_literals(r"x{0,3}ABC") == ["abc"]
    assert regex_literals(r"a?|b") is None  # the empty string matches: nothing is required
    assert regex_literals(r"^\w+$") is None
    assert regex_literals(r"(") is None  # invalid: no routing (the rule itself reports the error)
    # case-insensitive: 'ſ' matches s and 'ı' matches i, but str.lower() keeps them -> those letters end a literal
    assert regex_literals(r"mimikatz", re.IGNORECASE) == ["katz"]
    assert regex_literals(r"(?i)pass") == ["pa"]
    assert regex_literals(r"(?ai)pass") == ["pass"]  # ASCII-only folding is safe


@pytest.mark.parametrize("pattern,flags,text", [
    ("pass", re.IGNORECASE, "paſs"), ("admin", re.IGNORECASE, "adm\u0130n"), ("kill", re.IGNORECASE, "\u212aill"),
    ("Invoke-Expression", 0, "xInvoke-Expressiony"), ("ΑΣ", 0, "ΑΣΒ"),
])
def test_unicode_corners(pattern: str, flags: int, text: str) -> None:
    assert re.search(pattern, text, flags)
    lits = regex_literals(pattern, flags)
    assert lits is None or any(x in text.lower() for x in lits)


def _check(rx: re.Pattern[str], lits: list[str]):
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.from_regex(rx))
    def check(s: str) -> None:
        if rx.search(s):
            assert any(x in s.lower() for x in lits), (rx.pattern, s, lits)

    return check


def test_every_sigmahq_regex_routes_exactly(sigmahq_regexes: list[tuple[str, int]]) -> None:
    tested = 0
    for pattern, flags in sigmahq_regexes:
        lits = regex_literals(pattern, flags)
        if lits is None:
            continue
        try:
            _check(re.compile(pattern, flags), lits)()
        except InvalidArgument:  # a construct Hypothesis cannot generate strings for
            continue
        tested += 1
    with_literals = sum(regex_literals(p, f) is not None for p, f in sigmahq_regexes)
    assert len(sigmahq_regexes) > 100 and tested > 0.9 * with_literals, (len(sigmahq_regexes), with_literals, tested)


def test_regex_rules_route_without_changing_results() -> None:
    """A regex rule's routing on hand-made events: matches only through its literals, same as trying every rule."""
    from sigma.collection import SigmaCollection

    from correlator.sigma.loader import RuleSet

    rule = """
title: regex routed
id: 6f1f7a35-0d5c-4b8e-9a53-5c1c7b2f4d10
logsource: {product: windows, category: process_creation}
detection:
    sel:
        CommandLine|re: 'net\\s+(user|group)\\s+/add'
    condition: sel
"""
    rs = RuleSet(rules=list(SigmaCollection.from_yaml(rule).rules))
    compiled, failures = compile_rules(rs, "native")
    assert failures == [] and compiled.anchors[0] == [("s", "CommandLine", "/add")]
    m = Matcher(compiled)
    for cmd, want in [("NET  USER /add x", []), ("net user /add x", [0]), ("net group  /add", [0]), ("net /add", [])]:
        e = {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "CommandLine": cmd}
        assert m.match(e) == m.match_all(e) == want, cmd
