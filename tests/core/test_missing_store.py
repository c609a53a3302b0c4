"""A read never creates a store: every command with --store that is not a writer, pointed at a SQLite store that does
not exist (or an empty file an older soc left), exits 1 with one line naming the path and creates nothing. Writers
still create the store. The list of commands comes from the Typer app, so a new reading command is held to it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from correlator.store import open_store
from soc_cli.main import app
from tests.policy.test_clearance import READS, _store_commands

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
WRITERS = {"store init", "store replay", "events ingest", "sensor pcap", "sensor live", "logs ingest",
           "compliance scan", "demo", "integrity baseline"}
EXTRA_READS = {"audit verify": [["audit", "verify"]], "audit anchor": [["audit", "anchor"]], "triage": [["triage"]],
               "store prune": [["store", "prune", "--older-than", "90d"]],
               "integrity scan": [["integrity", "scan", "--policy",
                                   str(ROOT / "rules" / "integrity" / "example-watch.yml"), "--root", "RULES"]],
               "integrity web": [["integrity", "web", "--url", "http://127.0.0.1:9/", "--check"]]}


def _reads() -> list[tuple[str, list[str]]]:
    """(command, argv) for every command with --store that is not a writer; argv as the red team calls it."""
    calls = READS | EXTRA_READS
    names = sorted(set(_store_commands()) - WRITERS)
    assert set(names) <= set(calls), f"give these reading commands an invocation: {sorted(set(names) - set(calls))}"
    return [(name, argv) for name in names for argv in calls[name][:1]]


def _argv(argv: list[str], tmp: Path) -> list[str]:
    """The red team's call with its placeholders filled; its `--store COPY` (a copy of the red team's store) dropped,
    so the test names the store."""
    subst = {"ALERT": "no-such-alert", "RULES": str(ROOT / "rules" / "sigma"), "OUT": str(tmp / "out.json")}
    out: list[str] = []
    for a in argv:
        if a == "COPY" and out and out[-1] == "--store":
            out.pop()
            continue
        out.append(subst.get(a, a))
    return out


def _one_line_naming(stderr: str, path: Path) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert f"no soc store at {path} (soc store init creates it)" in lines[0], stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("name, argv", _reads(), ids=[n for n, _ in _reads()])
def test_a_read_on_a_missing_store_exits_1_and_creates_nothing(soc_env, tmp_path, name, argv):
    folder = tmp_path / "stores"
    folder.mkdir()
    db = folder / "soc.db"
    res = runner.invoke(app, [*_argv(argv, tmp_path), "--store", f"sqlite://{db}"], env={"SOC_STORE": None})
    assert res.exit_code == 1, (res.stdout, res.stderr)
    _one_line_naming(res.stderr, db)
    assert list(folder.iterdir()) == [], "a read created files"
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("name, argv", _reads()[:3], ids=[n for n, _ in _reads()[:3]])
def test_a_read_on_the_missing_default_store_creates_no_data_directory(soc_env, tmp_path, name, argv):
    home = soc_env / "home"
    res = runner.invoke(app, _argv(argv, tmp_path), env={"SOC_STORE": None})
    assert res.exit_code == 1, (res.stdout, res.stderr)
    _one_line_naming(res.stderr, home / "soc.db")
    assert not home.exists()


def test_an_empty_file_is_no_store_and_stays_untouched(soc_env, tmp_path):
    db = tmp_path / "empty.db"
    db.write_bytes(b"")
    res = runner.invoke(app, ["store", "status", "--store", f"sqlite://{db}"])
    assert res.exit_code == 1
    _one_line_naming(res.stderr, db)
    assert db.stat().st_size == 0


def test_writers_still_create_the_store(soc_env, tmp_path):
    ndjson = tmp_path / "e.ndjson"
    ndjson.write_text('{"@timestamp":"2024-05-01T10:00:00Z","event":{"kind":"event"},"message":"hello"}\n')
    pcap = ROOT / "rules" / "samples" / "demo-ministry.pcap"
    for argv, db in ((["store", "init"], tmp_path / "init.db"),
                     (["events", "ingest", str(ndjson)], tmp_path / "ingest.db"),
                     (["sensor", "pcap", str(pcap)], tmp_path / "pcap.db")):
        res = runner.invoke(app, [*argv, "--store", f"sqlite://{db}"])
        assert res.exit_code == 0, (argv, res.stderr)
        store = open_store(f"sqlite://{db}", create=False)  # a soc store now: the read opens it
        assert store.status()["healthy"]
        store.close()
    assert runner.invoke(app, ["store", "status", "--store", f"sqlite://{tmp_path / 'ingest.db'}"]).exit_code == 0
