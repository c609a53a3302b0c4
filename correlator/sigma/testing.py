"""Run rules over event files (``soc rules test``): per-rule match counts, schema auto-detection, regression tests.

Events may carry ECS names (nested or flat dotted JSON: soc, Winlogbeat) or the rule's own Sigma/Sysmon names
(flattened EVTX). Each event is classified on its own: it is ECS when it has ``@timestamp`` or any dotted key, else
native; rules are compiled for each schema that occurs, through that schema's pipeline.
A base rule counts one match per matching event; a correlation rule one match per firing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from correlator.events import event_id, flatten
from correlator.sigma.correlation import CorrelationEngine
from correlator.sigma.detector import SigmaEngine
from correlator.sigma.engine import RuleInfo, stop_failures
from correlator.sigma.loader import RuleSet, load_placeholders, load_rules


class EventFileError(ValueError):
    """An events file that cannot be read: names the file and line."""


def read_events(path: str | Path) -> Iterator[dict[str, Any]]:
    """Flat events from an NDJSON file (nested objects flattened); bad lines raise with file:line."""
    p = Path(path)
    try:
        fh = p.open(encoding="utf-8")
    except OSError as e:
        raise EventFileError(f"{p}: {e.strerror or e}") from None
    with fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as e:
                raise EventFileError(f"{p}:{n}: not JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(doc, dict):
                raise EventFileError(f"{p}:{n}: expected a JSON object, got {type(doc).__name__}")
            if line.find("{", line.find("{") + 1) == -1:  # one brace: no nested object, flat already
                yield doc
            else:
                yield flatten(doc) if any(isinstance(v, dict) and v for v in doc.values()) else doc


def schema_of(e: dict[str, Any]) -> str:
    """'ecs' for events with ``@timestamp`` or dotted keys, else 'native' (Sigma/Sysmon field names)."""
    if "@timestamp" in e:
        return "ecs"
    return "ecs" if "." in "".join(e) else "native"  # some key is dotted (one C-level scan of the keys)


def _eid(e: dict[str, Any]) -> str:
    v = e.get("event.id") or e.get("EventRecordID") or e.get("winlog.record_id")
    return str(v) if v is not None else event_id(e)


@dataclass
class RuleResult:
    """One rule's outcome over an events stream (the ``--json`` object of ``soc rules test``)."""

    rule_id: str
    title: str
    path: str
    matches: int = 0
    event_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"rule_id": self.rule_id, "title": self.title, "path": self.path, "matches": self.matches,
                "event_ids": self.event_ids}


class RuleRunner:
    """Matches events with rules compiled per schema on demand, correlations included."""

    def __init__(self, ruleset: RuleSet | None, placeholders: dict[str, list[str]] | None = None,
                 cached: tuple[list[str | Path], str, SigmaEngine] | None = None) -> None:
        """From a parsed ``ruleset``, or (``cached``: paths, schema, engine) from the compiled cache: the rules under
        those paths, already compiled for that schema; other schemas are then compiled (or read) from the cache
        too, no rule being parsed when the cache holds them."""
        self.ruleset = ruleset
        self.placeholders = placeholders
        self.engines: dict[str, SigmaEngine] = {}
        self.paths = cached[0] if cached else None
        if cached:
            self.engines[cached[1]] = cached[2]
        self.correlation = CorrelationEngine(cached[2].correlations if cached else ruleset.correlations)
        self.results: dict[str, RuleResult] = {}
        for c in self.correlation.correlations:
            info = RuleInfo.of(c.rule)
            self.results[info.id] = RuleResult(info.id, info.title, info.path)
        self.corr_ids = {id(c.rule): RuleInfo.of(c.rule).id for c in self.correlation.correlations}
        self._listed: dict[str, bool] = {}  # schemas whose rules are in ``results``

    def engine(self, schema: str) -> SigmaEngine:
        eng = self.engines.get(schema)
        if eng is None or not self._listed.get(schema):
            if eng is None and self.paths is not None:
                eng = SigmaEngine.load(self.paths, schema, self.placeholders, cache=True)
            elif eng is None:
                eng = SigmaEngine.from_ruleset(self.ruleset, schema, self.placeholders, copy_rules=True)
            self.engines[schema] = eng
            self._listed[schema] = True
            for info in eng.infos:
                if info.output:
                    self.results.setdefault(info.id, RuleResult(info.id, info.title, info.path))
        return eng

    def feed(self, events: Iterable[dict[str, Any]]) -> None:
        referenced = self.correlation.referenced()
        matchers: dict[str, Any] = {}
        for e in events:
            schema = schema_of(e)
            m = matchers.get(schema)
            if m is None:
                m = matchers[schema] = self.engine(schema).matcher
            for i in m.match(e):
                info = m.infos[i]
                if info.output:
                    r = self.results[info.id]
                    r.matches += 1
                    r.event_ids.append(_eid(e))
                if info.id in referenced:
                    for f in self.correlation.feed(e, info.id):
                        r = self.results[self.corr_ids[id(f.rule)]]
                        r.matches += 1
                        r.event_ids.extend(_eid(x) for x in f.events)

    def failures(self) -> list[Any]:
        out = list(self.ruleset.failures) if self.ruleset is not None else []
        seen = {(f.path, f.reason) for f in out}
        for eng in self.engines.values():
            new = [f for f in eng.failures if (f.path, f.reason) not in seen]
            seen.update((f.path, f.reason) for f in new)
            out.extend(new)
            out.extend(stop_failures(eng.matcher, _eid))
        return out


def run_rules(rule_paths: list[str | Path], event_files: list[str | Path]) -> tuple[list[RuleResult], list[Any]]:
    """Every output rule under ``rule_paths`` with its matches over the event files, and the load failures.

    A correlation rule in a named file may reference rules in sibling files: then the file's directory is loaded
    for context and only the named files' rules are reported.
    """
    placeholders = load_placeholders(rule_paths)
    schema = _first_schema(event_files)
    engine = SigmaEngine.load(rule_paths, schema, placeholders, cache=True)  # the compiled cache, as the sensor
    if not any(f.reason == "RuleNotFound" for f in engine.failures):
        runner = RuleRunner(None, placeholders, cached=(list(rule_paths), schema, engine))
        for f in event_files:
            runner.feed(read_events(f))
        runner.engine(schema)
        return sorted(runner.results.values(), key=lambda r: (r.path, r.title)), runner.failures()
    rs = load_rules(rule_paths)
    only: set[str] | None = None
    if any(f.reason == "RuleNotFound" for f in rs.failures):
        files = [Path(p) for p in rule_paths if Path(p).is_file()]
        if files:
            only = {str(f) for f in rs.files}
            context = sorted({str(f.parent) for f in files} | {str(p) for p in rule_paths if Path(p).is_dir()})
            rs = load_rules(context)
            rs.failures = [f for f in rs.failures if f.path in only]
    runner = RuleRunner(rs, load_placeholders(rule_paths))
    for f in event_files:
        runner.feed(read_events(f))
    for schema in ("ecs",) if not runner.engines else ():
        runner.engine(schema)  # no events: still compile so failures are reported
    results = [r for r in runner.results.values() if only is None or r.path in only]
    failures = [f for f in runner.failures() if only is None or f.path in only]
    return sorted(results, key=lambda r: (r.path, r.title)), failures


def _first_schema(event_files: list[str | Path]) -> str:
    """The schema of the first event of the first file that has one ('ecs' when none does or it is unreadable:
    reading it again reports the error)."""
    for f in event_files:
        try:
            for e in read_events(f):
                return schema_of(e)
        except EventFileError:
            break
    return "ecs"


@dataclass
class RegressionCase:
    """One entry of a rule's regression_tests_path info file."""

    rule_file: Path
    name: str
    events: Path
    expected: int  # minimum, except 0 (a negative sample), which is exact


def regression_cases(rule_file: Path, tests_path: str) -> list[RegressionCase]:
    """Resolve ``regression_tests_path`` (relative to the rule's directory or an ancestor) into runnable cases.

    SigmaHQ's info.yml names EVTX files; the NDJSON renderings beside them (``.flat.ndjson``, ``.ecs.ndjson``)
    are used, each as a case of its own.
    """
    base = next((d for d in rule_file.resolve().parents if (d / tests_path).is_file()), None)
    if base is None:
        raise FileNotFoundError(f"{rule_file}: regression_tests_path {tests_path} not found beside the rule")
    info = yaml.safe_load((base / tests_path).read_text(encoding="utf-8")) or {}
    cases = []
    for t in info.get("regression_tests_info") or []:
        p = base / t["path"]
        expected = int(t.get("match_count", 1))
        if p.suffix == ".evtx":
            renderings = [p.with_suffix(s) for s in (".flat.ndjson", ".ecs.ndjson")]
            found = [r for r in renderings if r.is_file()]
            if not found:
                raise FileNotFoundError(f"{p}: no NDJSON rendering (.flat.ndjson / .ecs.ndjson) beside the EVTX")
            cases.extend(RegressionCase(rule_file, f"{t.get('name', '')} [{r.name}]", r, expected) for r in found)
        else:
            cases.append(RegressionCase(rule_file, t.get("name", p.name), p, expected))
    return cases


def passes(matches: int, expected: int) -> bool:
    return matches == 0 if expected == 0 else matches >= expected
