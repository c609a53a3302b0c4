"""Streaming and retro-hunting agree: on the same stored events, every rule both can run matches the same events
(pySigma's SQLite backend over the store's JSON vs the compiled Python matcher). Also the hunt CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from correlator.events import normalize
from correlator.hunt import convert, enable_regexp
from correlator.sigma import SHIPPED_RULES
from correlator.sigma.engine import Matcher, compile_rules
from correlator.sigma.loader import load_placeholders, load_rules
from correlator.sigma.testing import read_events
from soc_cli.main import app
from tests.correlator.conftest import regression_rows


@pytest.fixture(scope="module")
def setup(sigma_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from correlator.store import open_store

    reg = sigma_dir / "regression"
    rows = regression_rows(sigma_dir.parent)
    rule_paths = [SHIPPED_RULES] + [reg / r["rule_path"] for r in rows]
    events = [normalize(e) for f in sorted((SHIPPED_RULES / "tests").rglob("*.ndjson")) for e in read_events(f)]
    events += [normalize(e) for r in rows for e in read_events(reg / r["ecs_ndjson"])]
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('hunt') / 'soc.db'}")
    store.init()
    store.write_events(events)
    yield store, rule_paths, events
    store.close()


def test_streaming_and_hunting_agree(setup) -> None:
    store, rule_paths, events = setup
    placeholders = load_placeholders([SHIPPED_RULES])
    queries, failures = convert(load_rules(rule_paths), "sqlite", placeholders)
    assert {f.reason for f in failures} == {"correlation"}  # every base rule converts
    compiled, cfail = compile_rules(load_rules(rule_paths), "ecs", placeholders)
    assert cfail == []
    m = Matcher(compiled)
    streamed: dict[str, set[str]] = {i.id: set() for i in m.infos}
    for e in events:
        for i in m.match(e):
            streamed[m.infos[i].id].add(e["event.id"])
    enable_regexp(store.db)
    compared = nonzero = 0
    for q in queries:
        hunted = {e["event.id"] for e in store.hunt(q.query, None, None, limit=100_000)}
        assert hunted == streamed[q.rule.id], (q.rule.title, q.query)
        compared += 1
        nonzero += bool(hunted)
    assert compared >= 48 and nonzero >= 45  # 40 SigmaHQ regression rules + soc's single-event rules


def test_hunt_cli(setup, soc_env: Path) -> None:
    store, _, _ = setup
    rule = SHIPPED_RULES / "network" / "net_icmp_tunnel.yml"
    res = CliRunner().invoke(app, ["hunt", str(rule), "--store", store.uri, "--json"])
    assert res.exit_code == 0, res.output
    hits = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(hits) == 2 and all(h["soc"]["hunt"]["title"].startswith("ICMP Tunnelling") for h in hits)
    res = CliRunner().invoke(app, ["hunt", str(rule), "--store", store.uri, "--json", "--until", "2000-01-01"])
    assert res.exit_code == 0 and res.stdout == ""
    res = CliRunner().invoke(app, ["hunt", str(rule.with_name("missing.yml")), "--store", store.uri])
    assert res.exit_code == 2
