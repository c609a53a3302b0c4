"""The compiled-rule cache holds the built matcher (routing, automata) and gives the cold load's answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from correlator.sigma import SHIPPED_RULES
from correlator.sigma.detector import SigmaEngine


@pytest.mark.corpus
def test_cached_matcher_matches_as_the_cold_one(corpus: Path, tmp_path: Path) -> None:
    tree = corpus / "sigma" / "rules-tree" / "rules" / "windows" / "process_creation"
    paths = [SHIPPED_RULES, tree]
    events = [json.loads(line) for p in sorted((corpus / "sigma" / "regression").rglob("*.flat.ndjson"))
              for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    cold = SigmaEngine.load(paths, "native", cache=tmp_path)
    warm = SigmaEngine.load(paths, "native", cache=tmp_path)
    assert not cold.from_cache and warm.from_cache
    assert [i.id for i in warm.infos] == [i.id for i in cold.infos] and len(cold.infos) > 1000
    assert [c.id for c in warm.correlations] == [c.id for c in cold.correlations] and cold.correlations
    assert warm.failures == cold.failures
    expected = [sorted(cold.matcher.match(e)) for e in events]
    assert sum(map(len, expected)) > 10  # the regression events hit their rules
    assert [sorted(warm.matcher.match(e)) for e in events] == expected
    assert warm.matcher.stopped == [] and warm.matcher.stopped_total == 0
