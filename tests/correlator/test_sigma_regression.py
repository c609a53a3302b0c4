"""SigmaHQ's regression cases through `soc rules test`, with ECS and with Sigma/Sysmon-named events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from soc_cli.main import app
from tests.conftest import corpus_dir
from tests.correlator.conftest import regression_rows

ROWS = regression_rows(corpus_dir()) if (corpus_dir() / "sigma" / "regression" / "INDEX.tsv").is_file() else []
CASES = [(row, col) for row in ROWS for col in ("flat_ndjson", "ecs_ndjson")]


def test_corpus_has_forty_cases(sigma_dir: Path) -> None:
    assert len(regression_rows(sigma_dir.parent)) == 40


@pytest.mark.corpus
@pytest.mark.parametrize(("row", "column"), CASES, ids=[f"{Path(r['rule_path']).stem}-{c.split('_')[0]}"
                                                         for r, c in CASES])
def test_regression_case(sigma_dir: Path, row: dict[str, str], column: str) -> None:
    reg = sigma_dir / "regression"
    exact = int(row["verified_match_count"])
    runner = CliRunner()
    res = runner.invoke(app, ["rules", "test", str(reg / row["rule_path"]), "--events", str(reg / row[column]),
                              "--expect", str(exact), "--json"])
    assert res.exit_code == 0, res.output
    out = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(out) == 1
    assert out[0]["rule_id"] == row["rule_id"]
    assert out[0]["matches"] == exact >= int(row["expected_min_matches"])
    assert len(out[0]["event_ids"]) == exact


@pytest.mark.corpus
def test_regression_tests_path_is_honoured(sigma_dir: Path) -> None:
    """Without --events, the rule's own regression_tests_path (SigmaHQ info.yml) is run, both renderings."""
    row = next(r for r in regression_rows(sigma_dir.parent) if r["expected_match_count"])
    res = CliRunner().invoke(app, ["rules", "test", str(sigma_dir / "regression" / row["rule_path"]), "--json"])
    assert res.exit_code == 0, res.output
    cases = [json.loads(line) for line in res.stdout.splitlines()]
    assert {Path(c["events"]).name.split(".", 1)[1] for c in cases} == {"flat.ndjson", "ecs.ndjson"}
    assert all(c["passed"] and c["matches"] >= int(row["expected_match_count"]) for c in cases)


def test_expect_mismatch_fails(sigma_dir: Path) -> None:
    row = regression_rows(sigma_dir.parent)[0]
    reg = sigma_dir / "regression"
    res = CliRunner().invoke(app, ["rules", "test", str(reg / row["rule_path"]), "--events",
                                   str(reg / row["flat_ndjson"]), "--expect", "999"])
    assert res.exit_code == 1
    assert "expected 999" in res.output


def test_bad_events_file_names_file_and_line(tmp_path: Path, sigma_dir: Path) -> None:
    row = regression_rows(sigma_dir.parent)[0]
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"EventID": 1}\n{not json\n')
    res = CliRunner().invoke(app, ["rules", "test", str(sigma_dir / "regression" / row["rule_path"]),
                                   "--events", str(bad)])
    assert res.exit_code == 2
    assert f"{bad}:2" in res.output
