"""Issue 10 §3, Sigma: a catastrophic regex cannot stall `soc rules test` / `soc hunt` (reported, other rules still
match), the RE2 path agrees with Python's re, and `soc rules validate` gives every file its own located result."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from correlator.events import normalize
from correlator.sigma import SHIPPED_RULES
from correlator.sigma.loader import load_rules
from correlator.sigma.safe_regex import RegexTimeout, SafeRegex
from correlator.store.sqlite import SQLiteStore
from soc_cli.main import app

SOC = str(Path(sys.executable).with_name("soc"))
RULE = """title: {title}
id: {id}
status: test
description: hardening test rule
author: t
date: 2026-01-01
logsource:
    category: proxy
detection:
    selection:
        {item}
    condition: {condition}
level: low
"""
EVIL = RULE.format(title="Evil regex", id="11111111-1111-4111-8111-111111111111",
                   item="url.original|re: '(a+)+$'", condition="selection")
GOOD = RULE.format(title="Good contains", id="22222222-2222-4222-8222-222222222222",
                   item="url.original|contains: 'aaa'", condition="selection")
BASE = {"@timestamp": "2026-11-02T09:00:01Z", "event.category": ["network", "web"], "event.dataset": "soc.http",
        "event.module": "soc"}
# ev-ascii takes the RE2 path (linear: no match at once); ev-utf8 is not ASCII: Python's re, stopped by the bound.
EVENTS = [BASE | {"event.id": "ev-ascii", "url.original": "a" * 30 + "!"},
          BASE | {"event.id": "ev-utf8", "url.original": "a" * 30 + "é!"}]


def _rules(tmp_path: Path, **files: str) -> Path:
    d = tmp_path / "rules"
    d.mkdir(exist_ok=True)
    for name, text in files.items():
        (d / f"{name}.yml").write_text(text, encoding="utf-8")
    return d


def _run(*args: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    t = time.monotonic()
    res = subprocess.run([SOC, *args], capture_output=True, text=True, timeout=60, env=env)
    return res, time.monotonic() - t


@pytest.fixture
def env(soc_env: Path) -> dict[str, str]:
    return {**os.environ, "XDG_CACHE_HOME": str(soc_env / "cache"), "COLUMNS": "300"}


def _line(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


def test_rules_test_stops_catastrophic_regex(tmp_path: Path, env: dict[str, str]) -> None:
    rules = _rules(tmp_path, proxy_evil_regex=EVIL, proxy_good_contains=GOOD)
    events = tmp_path / "events.ndjson"
    events.write_text("".join(json.dumps(e) + "\n" for e in EVENTS), encoding="utf-8")
    res, secs = _run("rules", "test", str(rules), "-e", str(events), "--json", env=env)
    assert secs < 15, f"took {secs:.1f} s"
    assert res.returncode == 1, res.stderr
    out = {r["rule_id"]: r for r in map(json.loads, res.stdout.splitlines())}
    # the good rule meets both events (its literal is in both values), the evil one none (Python's re: no match)
    assert out["22222222-2222-4222-8222-222222222222"]["event_ids"] == ["ev-ascii", "ev-utf8"]
    assert out["11111111-1111-4111-8111-111111111111"]["matches"] == 0
    line = _line(EVIL, "|re")
    assert f"proxy_evil_regex.yml:{line}: regex stopped: rule 11111111-1111-4111-8111-111111111111, event ev-utf8" \
        in res.stderr
    assert "ev-ascii" not in res.stderr  # the ASCII event never needed the bound


def test_hunt_stops_catastrophic_regex(tmp_path: Path, env: dict[str, str]) -> None:
    rules = _rules(tmp_path, proxy_evil_regex=EVIL, proxy_good_contains=GOOD)
    db = tmp_path / "hunt.db"
    store = SQLiteStore(db)
    store.init()
    store.write_events([normalize(dict(e)) for e in EVENTS])
    store.close()
    res, secs = _run("hunt", str(rules), "--store", f"sqlite:{db}", "--json", env=env)
    assert secs < 15, f"took {secs:.1f} s"
    assert res.returncode == 1, res.stderr
    hits = [json.loads(x) for x in res.stdout.splitlines()]
    assert sorted(h["event"]["id"] for h in hits if h["soc"]["hunt"]["rule_id"].startswith("2222")) == [
        "ev-ascii", "ev-utf8"]
    assert not [h for h in hits if h["soc"]["hunt"]["rule_id"].startswith("1111")]
    assert f"proxy_evil_regex.yml:{_line(EVIL, '|re')}: regex stopped" in res.stderr
    assert "event ev-utf8" in res.stderr


def shipped_and_sigmahq_patterns(extra: Path | None) -> list[tuple[str, int]]:
    from correlator.sigma.checks import _regexes

    out = set()
    for root in [SHIPPED_RULES, *([extra] if extra else [])]:
        for r in load_rules([root]).rules:
            out.update(_regexes(r.detection.detections.values()))
    return sorted(out)


# Constructs whose meaning differs between Python's re and RE2 if passed through verbatim.
TRICKY = [(r"abc$", 0), (r"^x", re.M), (r"x$", re.M), (r"a{,3}b", 0), (r"\d+", 0), (r"\w\b", 0), (r"\s", 0),
          (r"k", re.I), ("\u212a", re.I), ("\u0130", re.I), (r"[^a-z]", re.I), (r"\Aa\Z", 0), (r"(?i)S", 0),
          (r"(a|ab)(c|bcd)(d*)", 0), (r"a.c", 0), (r"a.c", re.S), (r"(?x) a b # c", 0), (r"[\d_-]", 0)]


@pytest.fixture(scope="module")
def patterns(corpus: Path) -> list[tuple[str, int]]:
    return shipped_and_sigmahq_patterns(corpus / "sigma" / "rules-tree") + TRICKY


def test_every_sigmahq_regex_takes_re2(patterns: list[tuple[str, int]]) -> None:
    fallback = [(p, SafeRegex(p, f).re2_reason) for p, f in patterns if SafeRegex(p, f).re2_reason]
    assert len(patterns) > 150 and not fallback


def test_fallback_is_bounded_and_reported() -> None:
    rx = SafeRegex(r"(a+)+$")
    t = time.monotonic()
    assert rx.search("a" * 5000 + "!") is False  # ASCII: RE2, linear
    with pytest.raises(RegexTimeout, match=r"\(a\+\)\+\$"):
        rx.search("a" * 40 + "é!")
    with pytest.raises(RegexTimeout):  # the same text again: stopped at once
        rx.search("a" * 40 + "é!")
    assert time.monotonic() - t < 2
    assert SafeRegex(r"(a)\1").re2_reason == "back-reference"
    assert SafeRegex(r"(a)\1").search("xaay") is True


NOPE = RULE.format(title="Unknown selection", id="33333333-3333-4333-8333-333333333333",
                   item="url.original|contains: 'x'", condition="selection and filter_nope")
PAREN = RULE.format(title="Open paren", id="44444444-4444-4444-8444-444444444444",
                    item="url.original|contains: 'x'", condition="selection and (")


def test_validate_locates_condition_errors_per_file(tmp_path: Path, soc_env: Path) -> None:
    rules = _rules(tmp_path, proxy_unknown_selection=NOPE, proxy_open_paren=PAREN, proxy_good_contains=GOOD)
    res = CliRunner().invoke(app, ["rules", "validate", str(rules), "--json"])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert res.exit_code == 1
    rows = [json.loads(x) for x in res.output.splitlines() if x.startswith("{")]
    failures = {Path(r["path"]).name: r for r in rows if r["kind"] == "failure"}
    cond = _line(NOPE, "condition:")
    assert failures["proxy_unknown_selection.yml"]["line"] == cond
    assert "filter_nope" in failures["proxy_unknown_selection.yml"]["message"]
    assert failures["proxy_open_paren.yml"]["line"] == cond
    assert "proxy_good_contains.yml" not in failures
    assert rows[-1] == rows[-1] | {"kind": "summary", "rules": 3, "load_errors": 2}


def test_validate_warns_nested_quantifiers(tmp_path: Path, soc_env: Path) -> None:
    rules = _rules(tmp_path, proxy_evil_regex=EVIL)
    res = CliRunner().invoke(app, ["rules", "validate", str(rules), "--json"])
    rows = [json.loads(x) for x in res.output.splitlines() if x.startswith("{")]
    warn = [r for r in rows if r["kind"] == "warning"]
    assert [(Path(w["path"]).name, w["line"]) for w in warn] == [("proxy_evil_regex.yml", _line(EVIL, "|re"))]
    assert "nested unbounded repeats" in warn[0]["message"]
    assert res.exit_code == 0  # a warning, not an error


def test_rules_test_and_hunt_run_the_rest(tmp_path: Path, env: dict[str, str]) -> None:
    rules = _rules(tmp_path, proxy_unknown_selection=NOPE, proxy_open_paren=PAREN, proxy_good_contains=GOOD)
    events = tmp_path / "events.ndjson"
    events.write_text(json.dumps(EVENTS[0]) + "\n", encoding="utf-8")
    res, _ = _run("rules", "test", str(rules), "-e", str(events), "--json", env=env)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    out = {r["rule_id"]: r["matches"] for r in map(json.loads, res.stdout.splitlines())}
    assert out == {"22222222-2222-4222-8222-222222222222": 1}
    cond = _line(NOPE, "condition:")
    for name in ("proxy_unknown_selection", "proxy_open_paren"):
        assert f"{name}.yml:{cond}: Condition" in res.stderr
    db = tmp_path / "h.db"
    store = SQLiteStore(db)
    store.init()
    store.write_events([normalize(dict(EVENTS[0]))])
    store.close()
    res, _ = _run("hunt", str(rules), "--store", f"sqlite:{db}", "--json", env=env)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert [json.loads(x)["soc"]["hunt"]["rule_id"] for x in res.stdout.splitlines()] == [
        "22222222-2222-4222-8222-222222222222"]
    for name in ("proxy_unknown_selection", "proxy_open_paren"):
        assert f"{name}.yml:{cond}: Condition" in res.stderr
