"""Streaming and retro-hunting agree: on the same stored events, every rule both can run matches the same events
(pySigma's SQLite backend over the store's JSON vs the compiled Python matcher), keyword rules included, and
correlation rules hunted over a time range fire exactly as the streaming engine does. Also the hunt CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from correlator.hunt import convert, enable_functions, hunt
from correlator.sigma import SHIPPED_RULES
from correlator.sigma.loader import load_rules
from soc_cli.main import app
from tests.correlator.hunt_cases import (
    KEYWORD_RULES,
    corpus,
    hunted_correlations,
    placeholders,
    streamed,
    streamed_correlations,
)


@pytest.fixture(scope="module")
def setup(sigma_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from correlator.store import open_store

    rule_paths, events = corpus(sigma_dir)
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('hunt') / 'soc.db'}")
    store.init()
    store.write_events(events)
    yield store, rule_paths, events
    store.close()


def test_streaming_and_hunting_agree(setup) -> None:
    store, rule_paths, events = setup
    queries, failures = convert(load_rules(rule_paths), "sqlite", placeholders())
    assert failures == []  # every base rule converts, keyword rules included
    want = streamed(rule_paths, events)
    enable_functions(store.db)
    compared = nonzero = keyword = 0
    for q in queries:
        hunted = {e["event.id"] for e in store.hunt(q.query, None, None, limit=100_000)}
        assert hunted == want[q.rule.id], (q.rule.title, q.query)
        compared += 1
        nonzero += bool(hunted)
        keyword += "soc_keyword(" in q.query
    assert compared >= 51 and nonzero >= 48 and keyword == 3  # 40 SigmaHQ + soc's single-event + 3 keyword rules


def test_keyword_rules_match_any_value_as_the_streaming_engine_does(setup) -> None:
    store, _, events = setup
    res = hunt(store, [KEYWORD_RULES])
    assert res.failures == []
    by_title = {i.title.removeprefix("Hunt Test - "): {e.get("host.name") or e.get("source.ip") for e in ev}
                for i, ev in res.matches}
    # independent truth, read off the events by hand: case-insensitive, inside values and list elements,
    # wildcards anchored (evil.exe.bak is no match), a number equals a whole value (144440 holds 4444: no match)
    assert by_title == {"Plain Keywords Anywhere In The Event": {"ws-1", "ws-2", "ws-3"},
                        "Wildcard Keyword Matches A Whole Value": {"ws-4", "ws-5"},
                        "Numeric Keyword With A Field Selection": {"10.0.0.7"}}


def test_correlations_agree_with_streaming(setup) -> None:
    store, _, events = setup
    network = SHIPPED_RULES / "network"
    res = hunt(store, [network])
    assert res.failures == []
    want = streamed_correlations([network], events)
    assert hunted_correlations(res) == want
    assert len({rule for rule, _, _ in want}) >= 6  # every shipped correlation rule fires on its samples
    first = res.correlations[0]
    assert first.count == len(first.event_ids) and first.first <= first.last


def test_correlations_respect_the_time_range(setup) -> None:
    store, _, events = setup
    network = SHIPPED_RULES / "network"
    full = hunt(store, [network]).correlations
    cut = max(full, key=lambda c: c.last)  # a range ending just before one firing's last event
    from correlator.query import parse_time

    until = parse_time(cut.last)
    kept = [e for e in events if e["@timestamp"] < cut.last]
    res = hunt(store, [network], until=until)
    assert hunted_correlations(res) == streamed_correlations([network], kept)
    assert (cut.rule.id, cut.group, cut.event_ids) not in hunted_correlations(res)


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


def test_hunt_cli_prints_correlations(setup, soc_env: Path) -> None:
    store, _, events = setup
    rule = SHIPPED_RULES / "network" / "net_flow_ssh_brute_force.yml"
    res = CliRunner().invoke(app, ["hunt", str(rule), "--store", store.uri, "--json"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x)["soc"]["hunt"] for x in res.stdout.splitlines()]
    fired = [x for x in lines if "correlation" in x]
    want = streamed_correlations([rule], events)
    assert [(x["rule_id"], x["group"], x["event_ids"]) for x in fired] == want and want
    assert all(x["correlation"] == "event_count" and x["count"] == len(x["event_ids"]) and x["first"] <= x["last"]
               for x in fired)
    table = CliRunner().invoke(app, ["hunt", str(rule), "--store", store.uri])
    assert table.exit_code == 0 and "Correlations" in table.stdout
