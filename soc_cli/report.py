"""soc report: daily, weekly and incident reports (Markdown, self-contained HTML with charts, JSON; en/ar)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from correlator.gate import Read
from correlator.query import QueryError, parse_time
from correlator.report import ReportError, build
from correlator.report_render import FORMATS, LANGS, render
from correlator.store import StoreError
from soc_cli.common import (
    ClearanceOpt,
    ExitCode,
    JsonOpt,
    StoreOpt,
    console,
    die,
    get_store,
    open_reader,
    print_ndjson,
    say_withheld,
)

app = typer.Typer(help="Reports through the read gate: alerts by severity, organization and rule, MTTA/MTTR, top "
                       "talkers, policy violations, open incidents, compliance.\n\n"
                       "Example: soc report daily --format html --lang ar -o daily.html",
                  no_args_is_help=True)

FormatOpt = Annotated[str, typer.Option("--format", "-f", help=f"One of {', '.join(FORMATS)}.")]
OutOpt = Annotated[Path | None, typer.Option("-o", "--output", help="Write the report here (default: stdout).")]
LangOpt = Annotated[str, typer.Option("--lang", help="Labels in en, or ar (right to left).")]
SinceOpt = Annotated[str | None, typer.Option("--since", help="Period start: ISO-8601, epoch, or 24h/7d ago.")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="Period end (exclusive; default: now).")]


def _report(kind: str, number: int | None, fmt: str, output: Path | None, lang: str, since: str | None,
            until: str | None, json_out: bool, clearance: str | None, store: str | None) -> None:
    """Build the report through the gate, write it (file or stdout), print its data with --json."""
    if fmt not in FORMATS:
        die(f"--format {fmt!r}: one of {', '.join(FORMATS)}")
    if lang not in LANGS:
        die(f"--lang {lang!r}: one of {', '.join(LANGS)}")
    try:
        start, end = parse_time(since), parse_time(until)
    except QueryError as exc:
        die(f"--since/--until: {exc}")
    gate = open_reader(get_store(store), clearance)
    try:
        data = build(gate, kind, start, end, number)
    except (ReportError, StoreError) as exc:
        die(str(exc), ExitCode.FAILURE)
    finally:
        gate.store.close()
    if data["withheld"]:
        say_withheld(Read([], data["withheld"]), "items", gate)
    text = render(data, fmt, lang)
    if output is not None:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            die(f"-o {output}: {exc.strerror or exc}", ExitCode.FAILURE)
    if json_out:
        print_ndjson(json.loads(json.dumps(data, default=str)))
    elif output is None:
        console.file.write(text)
    else:
        console.print(f"{kind} report ({data['label']['level']}) written to {output}", highlight=False)


@app.command()
def daily(fmt: FormatOpt = "md", output: OutOpt = None, lang: LangOpt = "en", since: SinceOpt = None,
          until: UntilOpt = None, json_out: JsonOpt = False, clearance: ClearanceOpt = None,
          store: StoreOpt = None) -> None:
    """The last 24 hours (or the day from --since / to --until).

    Example: soc report daily --format html -o daily.html
    """
    _report("daily", None, fmt, output, lang, since, until, json_out, clearance, store)


@app.command()
def weekly(fmt: FormatOpt = "md", output: OutOpt = None, lang: LangOpt = "en", since: SinceOpt = None,
           until: UntilOpt = None, json_out: JsonOpt = False, clearance: ClearanceOpt = None,
           store: StoreOpt = None) -> None:
    """The last 7 days (or the week from --since / to --until).

    Example: soc report weekly --format md --lang ar -o weekly.md
    """
    _report("weekly", None, fmt, output, lang, since, until, json_out, clearance, store)


@app.command()
def incident(number: Annotated[int, typer.Argument(help="The incident's number (soc incident list).")],
             fmt: FormatOpt = "md", output: OutOpt = None, lang: LangOpt = "en", since: SinceOpt = None,
             until: UntilOpt = None, json_out: JsonOpt = False, clearance: ClearanceOpt = None,
             store: StoreOpt = None) -> None:
    """One incident: its alerts over their span, with the period's talkers, violations and compliance.

    Example: soc report incident 1 --format html -o incident-1.html
    """
    _report("incident", number, fmt, output, lang, since, until, json_out, clearance, store)
