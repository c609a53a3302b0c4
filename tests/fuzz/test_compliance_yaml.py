"""Fuzzing the compliance-policy loader (Wazuh SCA syntax: `sensors.compliance.load_policy`) and
`soc compliance validate`.

Properties: the loader returns a Policy or raises its PolicyError, nothing else; the error names the file, a line
inside it and a field, on one line; a valid file loads to the same checks however it is laid out; an alias bomb is
refused in bounded time and memory; the CLI exits 0 or 2 without a traceback, prints each located error on stderr,
and a bad file never loses the results of the good files validated with it.
"""

from __future__ import annotations

import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from sensors.compliance import PolicyError, load_policy, parse_policy
from sensors.compliance.policy import Policy
from soc_cli.main import app
from tests.fuzz.yaml_mutations import (
    alias_bomb,
    damaged_bytes,
    damaged_text,
    dump,
    mutated_tree,
    random_document,
    yaml_lines,
)

SHIPPED = Path(__file__).resolve().parents[2] / "rules" / "compliance" / "national_baseline.yml"
TEXT = SHIPPED.read_text(encoding="utf-8")
TREE = yaml.safe_load(TEXT)
KEYS = ["policy", "requirements", "variables", "checks", "id", "file", "name", "description", "references",
        "regex_type", "title", "condition", "rules", "rationale", "remediation", "impact", "compliance", "severity",
        "$sshd_config", "$tls_endpoint", "cis", "nist_800_53"]
HOSTILE = st.one_of(mutated_tree(TREE).map(dump).flatmap(damaged_text), damaged_text(TEXT), random_document(KEYS))
runner = CliRunner()


def check(text: str, path: str = "fz.yml") -> Policy | None:
    """Parse; assert a refusal is located inside the text. The Policy, or None when refused."""
    try:
        return parse_policy(text, path)
    except PolicyError as exc:
        for problem in exc.problems:
            assert_located(problem, path, yaml_lines(text))
        return None


def assert_located(exc: PolicyError, path: str, lines: int) -> None:
    assert exc.file == path and 1 <= exc.line <= lines, f"line outside the file ({lines} lines): {exc}"
    assert exc.field and exc.message and "\n" not in str(exc), f"not one located line: {exc!r}"
    assert str(exc) == f"{path}:{exc.line}: {exc.field}: {exc.message}"


@pytest.mark.fuzz
@given(HOSTILE)
def test_hostile_text_is_a_policy_or_a_located_error(text: str) -> None:
    check(text)


@pytest.mark.fuzz
@given(damaged_bytes(TEXT))
def test_hostile_bytes_are_located(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fz.yml"
        path.write_bytes(data)
        try:
            load_policy(path)
        except PolicyError as exc:
            assert_located(exc, str(path), yaml_lines(data))


@pytest.mark.fuzz
@given(st.permutations(list(TREE)), st.booleans())
def test_a_valid_policy_loads_the_same_however_laid_out(order: list[str], flow: bool) -> None:
    text = yaml.dump({k: TREE[k] for k in order}, Dumper=yaml.CSafeDumper, allow_unicode=True, sort_keys=False,
                     default_flow_style=flow, width=10_000)
    got, want = parse_policy(text, "fz.yml"), load_policy(SHIPPED)
    assert (got.id, got.name, got.references, got.variables) == (want.id, want.name, want.references, want.variables)
    assert [(c.id, c.title, c.condition, c.severity, c.rules, c.compliance) for c in got.checks] == \
           [(c.id, c.title, c.condition, c.severity, c.rules, c.compliance) for c in want.checks]
    assert got.requirements.rules == want.requirements.rules


@pytest.mark.fuzz
@given(st.integers(2, 12), st.integers(2, 12), st.sampled_from(["variables", "checks", "references", "key"]))
def test_alias_bomb_is_bounded(width: int, depth: int, where: str) -> None:
    """Up to 12**12 leaves if expanded: refused (or harmless) in well under a second and a few MB."""
    last = f"*b{depth - 1}"
    bomb = alias_bomb(width, depth)
    in_vars = f"\nvariables:\n{alias_bomb(width, depth, '  ')}  $x: {last}\n"
    text = {"variables": TEXT.replace("\nvariables:\n", in_vars),
            "checks": bomb + TEXT.split("\nchecks:")[0] + f"\nchecks: {last}\n",
            "references": bomb + TEXT.replace("\n  references:\n", f"\n  references: {last}\n  xrefs:\n", 1),
            "key": TEXT + bomb + f"? {last}\n: 1\n"}[where]
    tracemalloc.start()
    start = time.monotonic()
    try:
        check(text)
    finally:
        elapsed, (_, peak) = time.monotonic() - start, tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < 2 and peak < 64 * 2**20, (elapsed, peak)


@pytest.mark.fuzz
@given(HOSTILE)
def test_cli_validate_keeps_good_files_and_locates_the_bad(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fz.yml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        res = runner.invoke(app, ["compliance", "validate", str(SHIPPED), str(path), str(SHIPPED)])
        try:
            load_policy(path)
            refusal = None
        except PolicyError as exc:
            refusal = exc
            assert_located(exc, str(path), yaml_lines(path.read_bytes()))
    assert res.exit_code in (0, 2) and (res.exception is None or isinstance(res.exception, SystemExit)), \
        (res.exit_code, res.exception)
    ok = f"ok {SHIPPED}: policy soc_national_baseline, {len(TREE['checks'])} checks"
    assert res.stdout.splitlines().count(ok) == 2, res.stdout  # the good files' results are not lost
    assert res.exit_code == (2 if refusal else 0)
    assert res.stderr.splitlines() == ([str(p) for p in refusal.problems] if refusal else [])  # located, verbatim
