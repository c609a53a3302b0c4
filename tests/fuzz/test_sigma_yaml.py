"""Fuzz: random and mutated Sigma YAML beside an intact shipped rule. Loading, validating and compiling never raise;
every failure names the bad file and a line inside it; the intact rule still loads and matches its positive
sample (the count its regression info states)."""

from __future__ import annotations

import shutil

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from correlator.sigma import SHIPPED_RULES
from correlator.sigma.checks import condition_failure, regex_warnings
from correlator.sigma.detector import SigmaEngine
from correlator.sigma.loader import load_placeholders, load_rules
from correlator.sigma.testing import read_events

SHIPPED = sorted((SHIPPED_RULES / "network").glob("*.yml"))
TEXTS = [p.read_text(encoding="utf-8") for p in SHIPPED]
INTACT = SHIPPED_RULES / "network" / "net_http_cleartext_credentials.yml"
POSITIVE = SHIPPED_RULES / "tests" / "net_http_cleartext_credentials" / "positive.ndjson"
EXPECTED = next(t["match_count"] for t in yaml.safe_load(
    (POSITIVE.parent / "info.yml").read_text(encoding="utf-8"))["regression_tests_info"] if "positive" in t["path"])
TOKENS = ["selection and (", "not", "filter_nope", "1 of sel*", "all of them", "|re: '(a+)+$'", "|re: '(?<=x)y'",
          "|re: '['", "|cidr: 10.0.0.0/33", "|contains|all:", "- ", ": ", "{", "[", "'", '"', "&a", "*a", "!!binary",
          "\t", "\x00", "é", "%placeholder%", "|expand: '%nope%'", "condition:", "detection:", "null", "~", "\n"]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A shipped rule with line-level mutations (drop, duplicate, swap, token insertions, truncation), or noise."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=300))
    lines = draw(st.sampled_from(TEXTS)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["drop", "dup", "token", "swap", "cut", "indent"]))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "token":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.sampled_from(TOKENS)) + lines[i][at:]
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "cut":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
            del lines[i + 1:]
        else:
            lines[i] = " " * draw(st.integers(1, 6)) + lines[i]
    return "\n".join(lines) + "\n"


@pytest.mark.fuzz
@given(text=mutated())
def test_mutated_rule_beside_intact_one(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    d = tmp_path_factory.mktemp("rules")
    shutil.copy(SHIPPED_RULES / "_placeholders.yml", d)
    bad = d / "zz_mutated.yml"
    bad.write_text(text, encoding="utf-8", errors="surrogatepass")
    good = d / INTACT.name
    shutil.copy(INTACT, good)
    rs = load_rules([d])
    checked = [condition_failure(r) for r in rs.rules + rs.correlations]
    warnings = [w for r in rs.rules for w in regex_warnings(r)]
    eng = SigmaEngine.from_ruleset(rs, "ecs", load_placeholders([d]))
    n_lines = max(1, len(text.splitlines()))
    for f in [*eng.failures, *(c for c in checked if c is not None), *warnings]:
        assert f.path == str(bad), f  # the intact rule never fails
        assert 1 <= f.line <= n_lines + 1, f
        assert f.reason and f.message
    ids = {i for i, info in enumerate(eng.infos) if info.path == str(good)}
    assert len(ids) == 1
    matched = sum(bool(ids & set(eng.matcher.match(e))) for e in read_events(POSITIVE))
    assert matched >= EXPECTED
