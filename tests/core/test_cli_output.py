"""Machine-readable output is never wrapped: errors stay `file:line: reason` on one line whatever their length."""

from __future__ import annotations

from typer.testing import CliRunner

from soc_cli.main import app


def test_long_errors_are_one_line_when_stderr_is_not_a_terminal(soc_env, tmp_path):
    deep = tmp_path / ("a-rather-long-folder-name-" * 6) / "events.ndjson"
    deep.parent.mkdir(parents=True)
    deep.write_text('{"@timestamp": "2026-11-02T09:00:01Z"}\nnot json at all\n')
    res = CliRunner().invoke(app, ["events", "ingest", str(deep), "--no-rules"])
    located = [line for line in res.stderr.splitlines() if f"{deep}:2:" in line]
    assert res.exit_code == 1 and len(located) == 1, res.stderr
    assert len(located[0]) > 200  # longer than any terminal default, and still one line
