"""Fuzzing the classification-policy loader (`correlator.policy.load_policy`) and `soc policy validate`.

Properties: the loader returns a Policy or raises PolicyError, nothing else; every problem is one line
`file:line: field: reason` with a line inside the file; every injected error is reported at its own line (none lost
behind another); a valid file loads to the same policy however it is laid out; an alias bomb is refused or ignored
in bounded time and memory; the CLI exits 0 or 2, never with a traceback, and every stderr line is located.
"""

from __future__ import annotations

import re
import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from correlator.policy import Policy, PolicyError, load_policy, parse_policy
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

SHIPPED = Path(__file__).resolve().parents[2] / "rules" / "policy" / "national-backbone.yml"
TEXT = SHIPPED.read_text(encoding="utf-8")
TREE = yaml.safe_load(TEXT)
KEYS = ["name", "levels", "caveats", "organizations", "zones", "assets", "agreements", "protection", "exceptions",
        "settings", "clearance", "id", "ar", "organization", "max_level", "floor", "cidrs", "vlans", "sensors",
        "default", "level", "match", "between", "up_to", "from_level", "allowed", "forbidden", "owner", "reason",
        "rules", "scope", "source", "destination", "ports", "expires", "users"]
PROBLEM = re.compile(r"^(?P<file>.+?):(?P<line>[0-9]+): (?P<field>\S(?:(?!: ).)*): (?P<reason>\S.*)$")
HOSTILE = st.one_of(mutated_tree(TREE).map(dump).flatmap(damaged_text), damaged_text(TEXT), random_document(KEYS))
runner = CliRunner()


def check(text: str, path: str = "fz.yaml") -> Policy | None:
    """Parse; assert every problem is located inside the text. The Policy, or None when refused."""
    try:
        return parse_policy(text, path)
    except PolicyError as exc:
        assert exc.problems, "a PolicyError with no problem"
        for problem in exc.problems:
            assert_located(problem, path, yaml_lines(text))
        return None


def assert_located(problem: str, path: str, lines: int) -> None:
    m = PROBLEM.match(problem)
    assert m and m["file"] == path, f"not `{path}:line: field: reason`: {problem!r}"
    assert 1 <= int(m["line"]) <= lines, f"line outside the file ({lines} lines): {problem!r}"


@pytest.mark.fuzz
@given(HOSTILE)
def test_hostile_text_is_a_policy_or_located_problems(text: str) -> None:
    check(text)


@pytest.mark.fuzz
@given(damaged_bytes(TEXT))
def test_hostile_bytes_are_located(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fz.yaml"
        path.write_bytes(data)
        try:
            load_policy(path)
        except PolicyError as exc:
            for problem in exc.problems:
                assert_located(problem, str(path), yaml_lines(data))


@pytest.mark.fuzz
@given(st.sets(st.integers(0, len(TREE["assets"]) - 1), min_size=1, max_size=6), st.sampled_from(["cosmic", "ultra"]))
def test_every_injected_error_is_reported_at_its_line(bad: set[int], level: str) -> None:
    """Independent truth: the lines where we broke the policy. Each must be reported; nothing else may be."""
    tree = yaml.safe_load(TEXT)
    for i in bad:
        tree["assets"][i]["level"] = f"{level}{i}"
    text = dump(tree)
    lines = {text.splitlines().index(f"  level: {level}{i}") + 1: i for i in bad}
    with pytest.raises(PolicyError) as exc:
        parse_policy(text, "fz.yaml")
    ladder = "(levels: public, restricted, secret, top-secret)"
    assert sorted(exc.value.problems) == sorted(
        f"fz.yaml:{line}: assets[{i}].level: unknown level '{level}{i}' {ladder}" for line, i in lines.items())


@pytest.mark.fuzz
@given(st.permutations(list(TREE)), st.booleans())
def test_a_valid_policy_loads_the_same_however_laid_out(order: list[str], flow: bool) -> None:
    """Key order and block/flow style are layout: the loaded policy equals the shipped file's."""
    text = yaml.safe_dump({k: TREE[k] for k in order}, allow_unicode=True, sort_keys=False,
                          default_flow_style=flow, width=10_000)
    got, want = parse_policy(text, "fz.yaml"), load_policy(SHIPPED)
    for attr in ("name", "levels", "caveats", "organizations", "assets", "agreements", "profiles", "exceptions",
                 "agreement_free_up_to", "share_max_level", "clearance_default", "clearance_users"):
        if attr in ("assets", "exceptions"):  # their `line` is layout
            assert [x.id for x in getattr(got, attr)] == [x.id for x in getattr(want, attr)]
        else:
            assert getattr(got, attr) == getattr(want, attr), attr
    assert [(z.id, z.cidrs, z.vlans, z.max_level) for z in got.zones] == \
           [(z.id, z.cidrs, z.vlans, z.max_level) for z in want.zones]


@pytest.mark.fuzz
@given(st.integers(2, 12), st.integers(2, 12), st.sampled_from(["assets", "zones", "name", "key", "clearance"]))
def test_alias_bomb_is_bounded(width: int, depth: int, where: str) -> None:
    """Up to 12**12 leaves if anything expanded them: the loader must answer in well under a second and a few MB."""
    bomb = alias_bomb(width, depth)
    last = f"*b{depth - 1}"
    tail = {"key": f"? {last}\n: 1\n", "clearance": f"clearance:\n  users: {last}\n"}.get(where, f"{where}: {last}\n")
    tracemalloc.start()
    start = time.monotonic()
    try:
        check(bomb + tail)
    finally:
        elapsed, (_, peak) = time.monotonic() - start, tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < 2 and peak < 32 * 2**20, (elapsed, peak)


@pytest.mark.fuzz
@given(HOSTILE)
def test_cli_validate_exits_0_or_2_with_located_stderr(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fz.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        res = runner.invoke(app, ["policy", "validate", str(path)])
    assert res.exit_code in (0, 2) and (res.exception is None or isinstance(res.exception, SystemExit)), \
        (res.exit_code, res.exception)
    if res.exit_code == 2:
        lines = res.stderr.splitlines()
        assert lines, "exit 2 with nothing on stderr"
        for line in lines:
            assert_located(line, str(path), yaml_lines(text))
    else:
        assert res.stdout.startswith(f"{path}: valid policy ") and res.stderr == ""
