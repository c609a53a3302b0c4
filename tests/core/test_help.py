"""The CLI's own surface, walked from the Typer app: every group and command shows a real example in its --help
(the example parses with the command's own options and names files that exist in the repository), every command
takes --json, `soc version --json`, and `-v`/`-vv` (a counted flag that does what its help says)."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from importlib.metadata import version as installed
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from soc_cli.main import app

ROOT = Path(__file__).resolve().parents[2]
ROOT_CMD = typer.main.get_command(app)
OUTPUTS = {"output", "to"}  # Path options a command writes: they need not exist
runner = CliRunner()


def walk(cmd: Any = ROOT_CMD, path: tuple[str, ...] = ("soc",)) -> list[tuple[tuple[str, ...], Any]]:
    """(command path, command) for the root, every group and every command."""
    out = [(path, cmd)]
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        out += walk(sub, (*path, name))
    return out


COMMANDS = walk()


def examples(help_text: str) -> list[str]:
    """Each `Example: soc …` paragraph of a help text, its lines joined."""
    paragraphs = re.split(r"\n\s*\n", help_text)
    return [" ".join(p.split("Example:", 1)[1].split()) for p in paragraphs if p.strip().startswith("Example:")]


def parse(argv: list[str]) -> tuple[tuple[str, ...], Any, dict[str, Any]]:
    """Parse a command line as click would run it, without running it: (command path, command, its params)."""
    assert argv[0] == "soc", argv
    cmd, path, ctx, args = ROOT_CMD, ("soc",), None, argv[1:]
    while True:
        ctx = cmd.make_context(path[-1], args, parent=ctx)
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not rest:
            return path, cmd, ctx.params
        name, cmd, args = cmd.resolve_command(ctx, rest)
        path = (*path, name)


def test_the_walk_finds_the_cli() -> None:
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"soc", "soc rules list", "soc hunt", "soc demo", "soc version", "soc compliance validate"} <= names
    assert len(COMMANDS) >= 13 + 26


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_group_and_command_shows_a_real_example(path: tuple[str, ...], cmd: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # examples use the repository's paths, as README's do
    found = examples(cmd.help or "")
    assert found, f"{' '.join(path)} --help shows no 'Example: soc …'"
    for example in found:
        argv = [a for a in shlex.split(example) if a]
        try:
            got, target, params = parse(argv)
        except Exception as exc:  # noqa: BLE001 - click's UsageError / BadParameter: the example is wrong
            pytest.fail(f"{' '.join(path)}: example {example!r} does not parse: {exc}")
        assert got[: len(path)] == path, f"{' '.join(path)}: example {example!r} runs {' '.join(got)}"
        for name, value in params.items():
            values = value if isinstance(value, list | tuple) else [value]
            for v in values:
                if isinstance(v, Path) and name not in OUTPUTS and not v.is_absolute() and not str(v).startswith("~"):
                    assert (ROOT / v).exists(), f"{' '.join(path)}: example {example!r}: {v} is not in the repo"


# Commands that print no data to a pipe, and why (they still need --help with an example).
INTERACTIVE = {("soc", "triage"): "the interactive console (Textual): it prints no data to a pipe"}
LEAVES = [(p, c) for p, c in COMMANDS if not getattr(c, "commands", None)]


@pytest.mark.parametrize("path,cmd", [(p, c) for p, c in LEAVES if p not in INTERACTIVE],
                         ids=[" ".join(p) for p, c in LEAVES if p not in INTERACTIVE])
def test_every_command_takes_json(path: tuple[str, ...], cmd: Any) -> None:
    assert "--json" in {o for p in cmd.params for o in p.opts}, f"{' '.join(path)} has no --json"


def test_interactive_commands_are_the_declared_ones() -> None:
    assert set(INTERACTIVE) <= {p for p, _ in LEAVES}, "INTERACTIVE names a command that no longer exists"


def test_version_json() -> None:
    res = runner.invoke(app, ["version", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["package"]: r["version"] for r in map(json.loads, res.stdout.splitlines())}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert rows["soc"] == project["version"]
    assert rows["pysigma"] == installed("pysigma") and rows["scapy"] == installed("scapy")
    plain = runner.invoke(app, ["version"]).stdout.splitlines()
    assert plain == [f"{k} {v}" for k, v in rows.items()]


def test_verbose_is_a_counted_flag_that_says_what_it_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SOC_STORE", "SOC_CONFIG", "SOC_POLICY"):
        monkeypatch.delenv(var, raising=False)
    (row,) = [line for line in runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).stdout.splitlines()
              if "--verbose" in line]
    assert "<int>" not in row and "-vv" in row, row
    res = runner.invoke(app, ["-v", "1", "version"])
    assert res.exit_code == 2 and "No such command '1'" in res.output  # a count, not a value
    config, policy = tmp_path / "config.yaml", ROOT / "rules" / "policy" / "national-backbone.yml"
    config.write_text(f"policy: {policy}\n")
    res = runner.invoke(app, ["-v", "--config", str(config), "--store", "http://ana:s3cret@127.0.0.1:9", "version"])
    assert res.exit_code == 0
    assert res.stderr.splitlines() == [f"config: {config}", "store: http://ana:***@127.0.0.1:9", f"policy: {policy}"]


def test_double_verbose_shows_the_libraries_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # the handler -vv adds is dropped after the test
    monkeypatch.setattr(root, "level", root.level)
    args = ["--store", "http://127.0.0.1:9", "store", "status", "--json"]  # nothing listens on port 9 (discard)
    quiet = runner.invoke(app, ["-v", *args])
    assert quiet.exit_code == 1 and "elastic_transport" not in quiet.stderr
    loud = runner.invoke(app, ["-vv", *args])
    assert loud.exit_code == 1 and "elastic_transport.transport: GET http://127.0.0.1:9/" in loud.stderr
