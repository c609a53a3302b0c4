"""What the hunt agreement tests share: the rules and events (SigmaHQ regression cases, soc's shipped rules and
their samples, keyword rules), and the streaming engine's answers to compare hunting with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from correlator.events import normalize
from correlator.hunt import HuntResult
from correlator.sigma import SHIPPED_RULES
from correlator.sigma.correlation import CorrelationEngine, event_time
from correlator.sigma.detector import SigmaEngine
from correlator.sigma.engine import RuleInfo
from correlator.sigma.loader import load_placeholders, load_rules
from correlator.sigma.testing import read_events
from tests.correlator.conftest import regression_rows

KEYWORD_RULES = Path(__file__).parent / "data" / "keyword_rules"


def corpus(sigma_dir: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    """Rule paths and normalized events: shipped rules + samples, keyword rules + events, 40 regression cases."""
    reg = sigma_dir / "regression"
    rows = regression_rows(sigma_dir.parent)
    rule_paths = [SHIPPED_RULES, KEYWORD_RULES] + [reg / r["rule_path"] for r in rows]
    files = sorted((SHIPPED_RULES / "tests").rglob("*.ndjson")) + sorted((KEYWORD_RULES / "tests").rglob("*.ndjson"))
    events = [normalize(e) for f in files for e in read_events(f)]
    events += [normalize(e) for r in rows for e in read_events(reg / r["ecs_ndjson"])]
    return rule_paths, events


def placeholders() -> dict[str, list[str]]:
    return load_placeholders([SHIPPED_RULES])


def streamed(rule_paths: list[Path], events: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Per base rule id, the ids of the events the streaming matcher matches."""
    engine = SigmaEngine.from_ruleset(load_rules(rule_paths), "ecs", placeholders())
    assert engine.failures == []
    m = engine.matcher
    out: dict[str, set[str]] = {i.id: set() for i in m.infos}
    for e in events:
        for i in m.match(e):
            out[m.infos[i].id].add(e["event.id"])
    return out


def streamed_correlations(rule_paths: list[Path], events: list[dict[str, Any]]) -> list[tuple]:
    """(rule id, group, event ids) of every correlation firing when the events stream in event-time order."""
    engine = SigmaEngine.from_ruleset(load_rules(rule_paths), "ecs", placeholders())
    corr = CorrelationEngine(engine.correlations)
    assert corr.failures == []
    out = []
    for e in sorted(events, key=lambda e: (event_time(e), e["event.id"])):
        for i in engine.matcher.match(e):
            for f in corr.feed(e, engine.infos[i].id, event_time(e)):
                out.append((RuleInfo.of(f.rule).id, f.group, [x["event.id"] for x in f.events]))
    return out


def hunted_correlations(result: HuntResult) -> list[tuple]:
    return [(c.rule.id, c.group, c.event_ids) for c in result.correlations]
