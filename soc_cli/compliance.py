"""soc compliance: scan hosts against SCA-format policies, validate policies, roll scores up by organization."""

from __future__ import annotations

import socket
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from correlator.pipeline import Pipeline
from correlator.query import Query, QueryError, Term, parse_time
from correlator.store import StoreUnavailable
from sensors.compliance import PolicyError, Scanner, load_policy
from sensors.compliance.events import DATASET, StateChangeDetector, to_events
from sensors.compliance.policy import SEVERITIES
from sensors.compliance.report import evidence_lines, rollup, summary, to_html, to_markdown
from sensors.compliance.scanner import FAILED, PASSED
from soc_cli.common import (
    ClearanceOpt,
    ExitCode,
    JsonOpt,
    StoreOpt,
    console,
    die,
    err_console,
    get_store,
    make_progress,
    open_reader,
    print_event,
    print_ndjson,
    say_withheld,
    warn,
)

app = typer.Typer(help="Compliance scans: SCA-format policies checked read-only against a host or a mounted tree."
                       "\n\nExample: soc compliance validate rules/compliance/national_baseline.yml",
                  no_args_is_help=True)

BASELINE = Path(__file__).resolve().parent.parent / "rules" / "compliance" / "national_baseline.yml"
_STYLE = {PASSED: "green", FAILED: "red", "not applicable": "dim", "error": "yellow"}


class Format(StrEnum):
    md = "md"
    html = "html"


class Severity(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


class By(StrEnum):
    org = "org"
    host = "host"


def _load(path: Path, overrides: dict[str, str] | None = None):
    try:
        return load_policy(path, overrides)
    except PolicyError as exc:
        for problem in exc.problems:
            err_console.print(str(problem), highlight=False, markup=False, emoji=False, soft_wrap=True)
        die(f"policy {path} is invalid ({len(exc.problems)} problem(s))")
    except OSError as exc:
        die(f"{path}: cannot read policy: {exc.strerror or exc}")


def _previous(store, host: str, policy_id: str) -> tuple[dict[int, str], str | None]:
    """Check results of the latest stored scan of this host and policy (empty when none or unreachable)."""
    q = Query((Term("event.dataset", DATASET), Term("host.name", host), Term("soc.compliance.policy.id", policy_id)))
    try:
        events = store.search_events(q, limit=20000)
    except StoreUnavailable as exc:
        warn(f"store unavailable, state changes not compared: {exc}")
        return {}, None
    if not events:
        return {}, None
    latest = max(events, key=lambda e: (e["@timestamp"], e["soc.compliance.scan.id"]))["soc.compliance.scan.id"]
    return ({e["soc.compliance.check.id"]: e["soc.compliance.check.result"] for e in events
             if e["soc.compliance.scan.id"] == latest}, latest)


@app.command()
def scan(
    policy: Annotated[Path, typer.Option("--policy", "-p", help="Policy file (SCA YAML). Default: national baseline.")]
    = BASELINE,
    root: Annotated[Path, typer.Option("--root", help="Scan this tree as if it were / (mounted image, fixture).")]
    = Path("/"),
    org: Annotated[str | None, typer.Option("--org", help="Organization (ministry) the host belongs to.")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Host name (default: this host, or the root's name).")]
    = None,
    json_out: JsonOpt = False,
    fmt: Annotated[Format | None, typer.Option("--format", help="Write a report: md or html.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Report file (default: stdout).")] = None,
    fail_on: Annotated[Severity, typer.Option("--fail-on", help="Exit 1 if a check at/above this severity failed.")]
    = Severity.low,
    allow_commands: Annotated[bool, typer.Option("--allow-commands", help="Run `c:` command rules (live host).")]
    = False,
    probe_tls: Annotated[bool | None, typer.Option("--probe-tls/--no-probe-tls",
                                                   help="Probe 127.0.0.1 TLS services (default: only without --root).")]
    = None,
    var: Annotated[list[str] | None, typer.Option("--var", help="Override a policy variable: '$name=value'.")]
    = None,
    no_store: Annotated[bool, typer.Option("--no-store", help="Do not record results in the store.")] = False,
    store: StoreOpt = None,
) -> None:
    """Scan a host (or --root tree) read-only; store results as `compliance.check` state events.

    Example: soc compliance scan --policy rules/compliance/national_baseline.yml --root / --org MinFin --host web01
    --format md -o web01.md
    """
    if json_out and fmt:
        die("--json and --format are exclusive")
    if output and not fmt:
        die("--output needs --format md|html")
    if not root.is_dir():
        die(f"{root}: --root is not a directory")
    overrides = {}
    for item in var or []:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("$"):
            die(f"--var {item!r}: expected '$name=value'")
        overrides[name] = value
    pol = _load(policy, overrides)
    live = str(root.resolve()) == "/"
    host = host or (socket.gethostname() if live else root.resolve().name)
    scanner = Scanner(str(root), allow_commands=allow_commands, probe_tls=probe_tls)
    with make_progress(len(pol.checks), f"Scanning {host}", enabled=not json_out) as bar:
        result = scanner.scan(pol, on_check=lambda _c: bar.advance())
    events = to_events(result, host, org)
    if not result.requirements_met:
        warn(result.requirements_reason)

    partial = False
    if not no_store:
        st = get_store(store, create=True)
        try:
            previous, prev_scan = _previous(st, host, pol.id)
            detector = StateChangeDetector(previous, prev_scan)
            stats = Pipeline(st, detectors=[detector]).run(events)
            partial = stats.spooled or bool(stats.rejected)
            for err in stats.errors[:5]:
                warn(err)
            if not json_out and not (fmt and not output):
                console.print(f"stored {stats.written} results ({stats.duplicates} already stored), "
                              f"{stats.alerts} state-change alerts", highlight=False)
        finally:
            st.close()

    if json_out:
        for ev in events:
            print_event(ev)
    elif fmt:
        text = to_markdown(result, host, org) if fmt is Format.md else to_html(result, host, org)
        if output:
            output.write_text(text, encoding="utf-8")
        else:
            typer.echo(text, nl=False)
    else:
        _print_table(result, host, org)
    threshold = SEVERITIES.index(fail_on.value)
    if any(r.status == FAILED and SEVERITIES.index(r.check.severity) >= threshold for r in result.results):
        raise typer.Exit(ExitCode.FAILURE)
    if partial:
        raise typer.Exit(ExitCode.PARTIAL)


def _print_table(result, host: str, org: str | None) -> None:
    table = Table(title=f"{result.policy.name} — {host}" + (f" ({org})" if org else ""))
    for col in ("ID", "Severity", "Result", "Check"):
        table.add_column(col)
    table.add_column("Reason / evidence", overflow="fold")
    for r in result.results:
        style = _STYLE.get(r.status, "")
        why = "\n".join(([r.reason] if r.reason else []) + evidence_lines(r))  # file text: never markup
        table.add_row(str(r.check.id), r.check.severity, f"[{style}]{r.status}[/]", r.check.title, Text(why))
    console.print(table)
    s = summary(result, host, org)
    score = "n/a" if s["score"] is None else f"{s['score']}%"
    console.print(f"score {score}: {s['passed']} passed, {s['failed']} failed, {s['not_applicable']} not "
                  f"applicable, {s['error']} errors", highlight=False)


@app.command()
def validate(
    policies: Annotated[list[Path], typer.Argument(help="Policy files to check.")],
    json_out: JsonOpt = False,
) -> None:
    """Check policy files: every problem of each as `file:line: field: reason` on stderr (exit 2 if any is invalid).

    With --json, one line per file: `ok`, and for an invalid one its `problems` (line, field, message).

    Example: soc compliance validate rules/compliance/national_baseline.yml
    """
    bad = 0
    for path in policies:
        row: dict = {"file": str(path), "ok": False}
        try:
            pol = load_policy(path)
            row.update(ok=True, policy=pol.id, checks=len(pol.checks))
            text = f"ok {path}: policy {pol.id}, {len(pol.checks)} checks"
        except PolicyError as exc:
            row["problems"] = [{"line": p.line, "field": p.field, "message": p.message} for p in exc.problems]
            text = "\n".join(str(p) for p in exc.problems)
        except OSError as exc:
            row["problems"] = [{"line": 0, "field": "", "message": f"cannot read: {exc.strerror or exc}"}]
            text = f"{path}: cannot read: {exc.strerror or exc}"
        bad += not row["ok"]
        if json_out:
            print_ndjson(row)
        if not json_out or not row["ok"]:  # file text never as markup: a field named `[/x]` would raise MarkupError
            (console if row["ok"] else err_console).print(text, highlight=False, markup=False, emoji=False,
                                                          soft_wrap=True)  # and `:100:` is a line, not 💯
    if bad:
        raise typer.Exit(ExitCode.USAGE)


@app.command()
def report(
    by: Annotated[By, typer.Option("--by", help="Roll up by organization or host.")] = By.org,
    policy_id: Annotated[str | None, typer.Option("--policy-id", help="Only this policy id.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only scans since: ISO time, epoch, or 30d.")] = None,
    json_out: JsonOpt = False,
    clearance: ClearanceOpt = None,
    store: StoreOpt = None,
) -> None:
    """Scores across hosts from the latest stored scan of each host (a national view per ministry).

    Example: soc compliance report --by org --since 30d
    """
    try:
        start = parse_time(since)
    except QueryError as exc:
        die(f"--since: {exc}")
    clauses = [Term("event.dataset", DATASET)]
    if policy_id:
        clauses.append(Term("soc.compliance.policy.id", policy_id))
    gate = open_reader(get_store(store), clearance)
    try:
        read = gate.search_events(Query(tuple(clauses), since=start), 10_000_000, "compliance report")
    except StoreUnavailable as exc:
        die(f"store unavailable: {exc}", ExitCode.FAILURE)
    finally:
        gate.store.close()
    say_withheld(read, "events", gate)
    events = read.items
    rows = rollup(events, by.value)
    if json_out:
        for row in rows:
            print_ndjson(row)
        return
    table = Table(title=f"Compliance by {by.value}")
    for col in (by.value, "hosts", "scans", "score", "passed", "failed", "not applicable", "error"):
        table.add_column(col)
    for row in rows:
        score = "n/a" if row["score"] is None else f"{row['score']}%"
        table.add_row(row[by.value], str(row["hosts"]), str(row["scans"]), score, str(row["passed"]),
                      str(row["failed"]), str(row["not_applicable"]), str(row["error"]))
    console.print(table)
