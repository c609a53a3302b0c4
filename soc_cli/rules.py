"""soc rules: list, validate, test, convert Sigma rules and show ATT&CK coverage."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from correlator.alerts import techniques
from correlator.sigma import SHIPPED_RULES
from correlator.sigma.loader import RuleFailure
from soc_cli.common import ExitCode, JsonOpt, console, die, err_console, make_progress, print_ndjson

app = typer.Typer(help="Sigma rules: list, validate, test against events, convert, ATT&CK coverage.\n\n"
                       "Example: soc rules validate rules/sigma/",
                  no_args_is_help=True)

PathsArg = Annotated[list[Path] | None, typer.Argument(
    help=f"Rule files or directories (default: soc's shipped rules, {SHIPPED_RULES}).", show_default=False)]
TARGETS = ("lucene", "esql", "eql", "sqlite")


def _paths(paths: list[Path] | None) -> list[Path]:
    out = paths or [SHIPPED_RULES]
    for p in out:
        if not p.exists():
            die(f"{p}: no such rule file or directory")
    return out


def _report_failures(failures: list[RuleFailure], as_json: bool) -> None:
    for f in failures:
        if as_json:
            print_ndjson({"kind": "failure", "path": f.path, "line": f.line, "reason": f.reason, "message": f.message})
        else:
            err_console.print(f"{f.path}:{f.line}: [yellow]{f.reason}[/]: {f.message}", highlight=False,
                              soft_wrap=True)


def _engine(paths: list[Path]) -> Any:
    from correlator.sigma.detector import SigmaEngine
    from correlator.sigma.loader import load_placeholders

    try:
        with make_progress(None, "Loading rules") as bar:
            return SigmaEngine.load(paths, "ecs", load_placeholders(paths), cache=True,
                                    progress=lambda stage, done, total: bar.update(done, stage, total))
    except (FileNotFoundError, ValueError) as e:
        die(str(e))


@app.command("list")
def list_rules(paths: PathsArg = None, as_json: JsonOpt = False,
               limit: Annotated[int, typer.Option(help="Rules shown in the table (0 = all).")] = 50) -> None:
    """List the loaded rules that raise alerts and the unsupported ones, with counts by reason (exit 1 if any rule
    is unsupported). "loaded" counts every rule document, including base rules that only feed a correlation.

    Example: soc rules list rules/sigma/network --limit 0
    """
    ps = _paths(paths)
    eng = _engine(ps)
    corr = [_corr_info(c) for c in eng.correlations]
    rules = [i for i in eng.infos if i.output] + corr
    loaded = len(eng.infos) + len(corr)
    feeding = loaded - len(rules)
    reasons = Counter(f.reason for f in eng.failures)
    if as_json:
        for i in rules:
            print_ndjson({"kind": "rule", "rule_id": i.id, "title": i.title, "level": i.level, "status": i.status,
                          "logsource": i.logsource, "path": i.path, "tags": i.tags})
        _report_failures(eng.failures, True)
        print_ndjson({"kind": "summary", "files": eng.files, "loaded": loaded, "alerting": len(rules),
                      "feeding_correlations": feeding, "correlations": len(corr), "unsupported": len(eng.failures),
                      "by_reason": dict(reasons)})
    else:
        t = Table(title=f"Sigma rules ({loaded} loaded)",
                  caption=f"{len(rules)} raise alerts" + (f"; {feeding} only feed correlations" if feeding else ""))
        for col in ("id", "title", "level", "logsource"):
            t.add_column(col, overflow="fold")
        for i in rules[: limit or None]:
            t.add_row(i.id, i.title, i.level, "/".join(i.logsource.get(k, "-") for k in ("product", "category",
                                                                                          "service")))
        console.print(t)
        if limit and len(rules) > limit:
            console.print(f"… {len(rules) - limit} more (use --limit 0 or --json)")
        _report_failures(eng.failures, False)
        console.print(f"files {eng.files}: loaded {loaded} (correlations {len(corr)}), "
                      f"unsupported {len(eng.failures)}" + (f" by reason: {dict(reasons)}" if reasons else ""))
    raise typer.Exit(ExitCode.FAILURE if eng.failures else ExitCode.OK)


def _corr_info(rule: Any) -> Any:
    from correlator.sigma.engine import RuleInfo

    return RuleInfo.of(rule)


@app.command()
def validate(paths: PathsArg = None, as_json: JsonOpt = False) -> None:
    """Validate rules: load errors, conditions (syntax, undefined selections), pySigma's installed validators and
    risky ``|re`` patterns, each reported per file as file:line. Exit 1 on any error or high-severity issue (CI).

    Example: soc rules validate rules/sigma/
    """
    from sigma.plugins import InstalledSigmaPlugins
    from sigma.validation import SigmaValidator
    from sigma.validators.base import SigmaValidationIssueSeverity as Sev

    from correlator.sigma.checks import condition_failure, regex_warnings
    from correlator.sigma.loader import load_rules, rule_path

    ps = _paths(paths)
    rs = load_rules(ps)
    validators = dict(InstalledSigmaPlugins.autodiscover().validators)
    for name, dataset, attr in (("attacktag", "mitre_attack", "mitre_attack_tactics"),
                                ("d3_fendtag", "mitre_d3fend", "mitre_d3fend_tactics")):
        if name in validators and not _reference_data(dataset, attr):
            del validators[name]
            err_console.print(f"warning: {dataset} reference data not available offline (pySigma downloads and "
                              f"caches it); the {name} check is skipped", highlight=False, soft_wrap=True)
    validator = SigmaValidator(validators.values())
    failures = list(rs.failures)
    warnings: list[RuleFailure] = []
    issues: list[Any] = []
    for r in rs.rules + rs.correlations:
        bad = condition_failure(r)
        if bad is not None:
            failures.append(bad)
            continue
        warnings += regex_warnings(r)
        try:
            issues += validator.validate_rule(r)
        except Exception as e:  # noqa: BLE001 - a validator crashing on one rule is that rule's error, not the run's
            failures.append(RuleFailure(rule_path(r), 1, "validator", " ".join(str(e).split())[:300]))
    issues += validator.finalize()
    _report_failures(failures, as_json)
    for w in warnings:
        if as_json:
            print_ndjson({"kind": "warning", "path": w.path, "line": w.line, "reason": w.reason, "message": w.message})
        else:
            err_console.print(f"{w.path}:{w.line}: [yellow]warning[/]: {w.message}", highlight=False, soft_wrap=True)
    errors = len(failures)
    for issue in issues:
        sev = issue.severity.name.lower()
        errors += issue.severity == Sev.HIGH
        for r in issue.rules or [None]:
            path = rule_path(r) if r is not None else ""
            if as_json:
                print_ndjson({"kind": "issue", "severity": sev, "issue": type(issue).__name__,
                              "description": issue.description, "path": path,
                              "rule_id": str(getattr(r, "id", "") or "")})
            else:
                err_console.print(f"{path}: [{'red' if sev == 'high' else 'yellow'}]{sev}[/] "
                                  f"{type(issue).__name__}: {issue.description}", highlight=False)
    n = len(rs.rules) + len(rs.correlations)
    if as_json:
        print_ndjson({"kind": "summary", "rules": n, "load_errors": len(failures), "issues": len(issues),
                      "warnings": len(warnings), "errors": errors})
    else:
        console.print(f"{n} rules, {len(failures)} rule errors, {len(issues)} validator issues, "
                      f"{len(warnings)} regex warnings")
    raise typer.Exit(ExitCode.FAILURE if errors else ExitCode.OK)


@app.command()
def test(
    paths: Annotated[list[Path], typer.Argument(help="Rule files or directories.")],
    events: Annotated[list[Path] | None, typer.Option("--events", "-e", help=(
        "NDJSON events (ECS or the rule's own Sigma/Sysmon names: detected per event). Repeatable. "
        "Without it, each rule's regression_tests_path cases are run."))] = None,
    expect: Annotated[int | None, typer.Option(help="Exact total number of matches expected.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the streaming engine over events: matches per rule (exit 1 when --expect or a regression case fails).

    Example: soc rules test rules/sigma/network/net_icmp_tunnel.yml --events
    rules/sigma/tests/net_icmp_tunnel/positive.ndjson --expect 2
    """
    from correlator.sigma.testing import EventFileError, run_rules

    ps = _paths(paths)
    if not events:
        _regression(ps, as_json)
        return
    for f in events:
        if not f.is_file():
            die(f"{f}: no such events file")
    try:
        results, failures = run_rules(ps, events)
    except EventFileError as e:
        die(str(e))
    except (FileNotFoundError, ValueError) as e:
        die(str(e))
    _report_failures(failures, False)
    total = sum(r.matches for r in results)
    if as_json:
        for r in results:
            print_ndjson(r.as_dict())
    else:
        t = Table(title="Rule matches")
        for col in ("rule", "title", "matches"):
            t.add_column(col, overflow="fold")
        for r in results:
            t.add_row(r.rule_id, r.title, str(r.matches))
        console.print(t)
        console.print(f"{total} matches over {len(results)} rules")
    ok = (expect is None or total == expect) and not failures
    if expect is not None and total != expect:
        err_console.print(f"expected {expect} matches, got {total}")
    raise typer.Exit(ExitCode.OK if ok else ExitCode.FAILURE)


def _regression(paths: list[Path], as_json: bool) -> None:
    import yaml

    from correlator.sigma.loader import rule_files
    from correlator.sigma.testing import passes, regression_cases, run_rules

    failed = ran = 0
    for f in rule_files(paths):
        try:
            docs = [d for d in yaml.safe_load_all(f.read_text(encoding="utf-8")) if isinstance(d, dict)]
        except yaml.YAMLError as e:
            err_console.print(f"{f}: invalid YAML: {e}")
            failed += 1
            continue
        tests_path = next((d["regression_tests_path"] for d in docs if d.get("regression_tests_path")), None)
        if not tests_path:
            continue
        try:
            cases = regression_cases(f, tests_path)
        except (FileNotFoundError, OSError, yaml.YAMLError, KeyError) as e:
            err_console.print(str(e))
            failed += 1
            continue
        for case in cases:
            results, failures = run_rules([f], [case.events])
            n = sum(r.matches for r in results)
            ok = passes(n, case.expected) and not failures
            ran += 1
            failed += not ok
            if as_json:
                print_ndjson({"path": str(f), "case": case.name, "events": str(case.events), "matches": n,
                              "expected": case.expected, "passed": ok})
            else:
                mark = "[green]PASS[/]" if ok else "[red]FAIL[/]"
                console.print(f"{mark} {f} · {case.name}: {n} matches (expected "
                              f"{'exactly 0' if case.expected == 0 else f'≥ {case.expected}'})", highlight=False)
            _report_failures(failures, False)
    if not as_json:
        console.print(f"{ran} regression cases, {failed} failed")
    if ran == 0 and not failed:
        die("no rule under the given paths has a regression_tests_path; pass --events FILE", ExitCode.USAGE)
    raise typer.Exit(ExitCode.FAILURE if failed else ExitCode.OK)


def _reference_data(module: str, attr: str) -> bool:
    """True when pySigma's MITRE reference data loads (from its cache or the network)."""
    import importlib

    try:
        getattr(importlib.import_module(f"sigma.data.{module}"), attr)
    except Exception:  # noqa: BLE001 - URLError, cache errors: the data is simply unavailable
        return False
    return True


SQLITE_TABLE = "logs"


def convert_rules(paths: list[Path], target: str) -> tuple[list[dict[str, Any]], list[RuleFailure]]:
    """Convert rules with a pySigma backend through soc's ECS pipeline; one dict per query."""
    from sigma.backends.elasticsearch import EqlBackend, ESQLBackend, LuceneBackend
    from sigma.backends.sqlite import sqliteBackend
    from sigma.collection import SigmaCollection

    from correlator.sigma.engine import RuleInfo
    from correlator.sigma.loader import error_line, failure_reason, load_placeholders, load_rules
    from correlator.sigma.pipelines import build_pipeline

    backends = {"lucene": LuceneBackend, "esql": ESQLBackend, "eql": EqlBackend, "sqlite": sqliteBackend}
    # sqlite: pySigma's SQLite statements over a `logs` table with one column per ECS field (as Zircolite builds
    # it), correlations included; `soc hunt` runs rules on soc's own store.
    options = {"table": SQLITE_TABLE, "timestamp_field": "@timestamp"} if target == "sqlite" else {}
    rs = load_rules(paths)
    backend = backends[target](build_pipeline("ecs", load_placeholders(paths)), collect_errors=True, **options)
    out: list[dict[str, Any]] = []
    failures = list(rs.failures)
    # correlation groups are converted on copies: pipelines mutate rules and base rules are converted on their own
    groups = [copy.deepcopy([*(ref.rule for ref in c.rules or []), c]) for c in rs.correlations]

    def collect(rule: Any, fmt: Any, index: int, cond: Any, result: Any) -> Any:
        if result is not None:
            info = RuleInfo.of(rule)
            out.append({"rule_id": info.id, "title": info.title, "path": info.path, "target": target,
                        "query": result})
        return result

    def fail(rule: Any, err: BaseException) -> None:
        info = RuleInfo.of(rule)
        text = Path(info.path).read_text(encoding="utf-8") if info.path else ""
        failures.append(RuleFailure(info.path, error_line(Path(info.path), text, err), failure_reason(err),
                                    " ".join(str(err).split())[:300]))

    backend.init_processing_pipeline()
    for rule in rs.rules:
        if not getattr(rule, "_output", True):
            continue  # feeds a correlation rule only
        n = len(backend.errors)
        try:
            for i, q in enumerate(backend.convert_rule(rule)):
                collect(rule, None, i, None, q)
        except Exception as e:  # noqa: BLE001 - one rule's backend failure is reported, the rest go on
            fail(rule, e)
        for r, err in backend.errors[n:]:
            fail(r, err)
    for group in groups:
        n = len(backend.errors)
        try:
            backend.convert(SigmaCollection(group, resolve_references=False), callback=collect)
        except Exception as e:  # noqa: BLE001 - e.g. "Backend does not support correlation rules"
            fail(group[-1], e)
        for r, err in backend.errors[n:]:
            fail(r, err)
    return out, failures


@app.command()
def convert(
    paths: PathsArg = None,
    target: Annotated[str, typer.Option("--target", "-t", help=f"Query language: {', '.join(TARGETS)}; "
                                        "or 'coverage' (same as `soc rules coverage`).")] = "lucene",
    as_json: JsonOpt = False,
) -> None:
    """Convert rules to a query language with pySigma backends (ECS field names, as soc stores events).

    lucene/esql/eql: queries for Elasticsearch (correlations in esql and eql). sqlite: pySigma's SQLite statements
    over a `logs` table with one column per ECS field and `@timestamp` (Zircolite's layout), correlations included.

    Example: soc rules convert rules/sigma/ --target esql
    """
    if target == "coverage":
        coverage(paths, as_json)
        return
    if target not in TARGETS:
        die(f"--target {target}: expected one of {', '.join(TARGETS)} or coverage")
    out, failures = convert_rules(_paths(paths), target)
    for q in out:
        if as_json:
            print_ndjson(q)
        else:
            typer.echo(f"# {q['title']} ({q['rule_id']})\n{q['query']}")
    _report_failures(failures, as_json)
    raise typer.Exit(ExitCode.FAILURE if failures else ExitCode.OK)


@app.command()
def coverage(paths: PathsArg = None, as_json: JsonOpt = False) -> None:
    """ATT&CK techniques covered by the loaded rules (from their attack.tXXXX tags).

    Example: soc rules coverage rules/sigma/ --json
    """
    eng = _engine(_paths(paths))
    by_tech: dict[str, list[str]] = {}
    for i in [x for x in eng.infos if x.output] + [_corr_info(c) for c in eng.correlations]:
        for t in techniques(i.tags):
            by_tech.setdefault(t, []).append(i.title)
    if as_json:
        for t in sorted(by_tech):
            print_ndjson({"technique": t, "rules": len(by_tech[t]), "titles": by_tech[t][:20]})
        return
    table = Table(title=f"ATT&CK coverage: {len(by_tech)} techniques")
    table.add_column("technique")
    table.add_column("rules", justify="right")
    table.add_column("examples", overflow="fold")
    for t in sorted(by_tech):
        table.add_row(t, str(len(by_tech[t])), "; ".join(by_tech[t][:3]))
    console.print(table)
