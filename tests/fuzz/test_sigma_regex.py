"""Differential fuzz of Sigma ``|re`` matching: ``SafeRegex`` (RE2 path or bounded fallback) answers exactly as
Python's ``re.search`` on every SigmaHQ and shipped pattern and on constructs whose syntax differs between the two."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from correlator.sigma.safe_regex import SafeRegex
from tests.correlator.test_rule_hardening import TRICKY, shipped_and_sigmahq_patterns


@pytest.fixture(scope="module")
def patterns(corpus: Path) -> list[tuple[str, int]]:
    return shipped_and_sigmahq_patterns(corpus / "sigma" / "rules-tree") + TRICKY


TEXT = st.text(st.sampled_from(list("aAbBcdkKsSxX0129 _-.\\/:@=\n\t\x0b\x1c") + ["\u212a", "\u017f", "\u0130",
                                                                                  "é", "٣", "\u00a0"]), max_size=40)


@pytest.mark.fuzz
@given(data=st.data())
def test_safe_regex_agrees_with_python_re(patterns: list[tuple[str, int]], data: st.DataObject) -> None:
    """Differential: RE2 path or fallback, the answer is Python's ``re.search`` on texts built from the pattern's
    own characters, newlines and non-ASCII look-alikes."""
    pattern, flags = data.draw(st.sampled_from(patterns))
    own = st.text(st.sampled_from(sorted(set(pattern)) or ["a"]), max_size=30)
    text = data.draw(st.lists(st.one_of(own, TEXT), max_size=4).map("".join))
    assert SafeRegex(pattern, flags).search(text) == (re.search(pattern, text, flags) is not None), (pattern, text)


