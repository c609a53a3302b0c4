"""soc share: export alert indicators as a STIX 2.1 bundle, TLP 2.0 and classification marked, capped by level."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from correlator.policy import PolicyEngine
from correlator.query import Query, QueryError, parse_time
from correlator.store import StoreError
from soc_cli.common import (
    ClearanceOpt,
    ExitCode,
    JsonOpt,
    PolicyOpt,
    StoreOpt,
    active_policy,
    console,
    die,
    err_console,
    get_store,
    open_reader,
    print_ndjson,
    say_withheld,
)

app = typer.Typer(help="Share threat intelligence: STIX 2.1 bundles under TLP 2.0 and the classification cap.\n\n"
                       "Example: soc share export --tlp amber+strict --since 24h -o bundle.json",
                  no_args_is_help=True)


@app.command("export")
def export(
    output: Annotated[Path, typer.Option("-o", "--output", help="Bundle file to write (JSON).")],
    tlp: Annotated[str, typer.Option(help="TLP 2.0 marking: clear, green, amber, amber+strict, red.")] = "amber",
    since: Annotated[str | None, typer.Option(help="Alerts from: ISO-8601, epoch, or 24h/7d ago.")] = "24h",
    until: Annotated[str | None, typer.Option(help="Alerts up to (exclusive).")] = None,
    max_level: Annotated[str | None, typer.Option(help="Cap below the policy's share_max_level (never above).")]
    = None,
    limit: Annotated[int, typer.Option(min=1, help="Most alerts read.")] = 10000,
    producer: Annotated[str, typer.Option(help="Identity name of the producer in the bundle.")] = "soc",
    clearance: ClearanceOpt = None,
    policy: PolicyOpt = None,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write indicators from alerts as a STIX 2.1 bundle; refuse anything above the shareable maximum.

    The cap is the lowest of the policy's `settings.share_max_level`, --max-level and your clearance. Alerts above
    it and internal/government observables are left out, and each omission is listed on stderr.

    Example: soc share export --tlp amber+strict --since 24h -o bundle.json
    """
    from correlator.policy.sharing import TLP2_IDS, Sharer  # stix2 loads in 0.15 s: only for this command

    tlp = tlp.lower().removeprefix("tlp:")
    if tlp not in TLP2_IDS:
        die(f"--tlp {tlp!r}: use one of {', '.join(TLP2_IDS)}")
    pol = active_policy(policy)
    cap = pol.share_max_level
    if max_level is not None:
        try:
            asked = pol.level(max_level)
        except (KeyError, IndexError):
            die(f"--max-level {max_level!r}: unknown level (levels: {', '.join(lv.name for lv in pol.levels)})")
        cap = min(cap, asked, key=lambda lv: lv.rank)
    try:
        q = Query((), parse_time(since), parse_time(until))
    except QueryError as exc:
        die(str(exc))
    gate = open_reader(s := get_store(store), clearance)
    cap = min(cap, gate.reader.level, key=lambda lv: lv.rank)
    try:
        read = gate.search_alerts(q, limit, f"share export since={since} until={until}")
    except StoreError as exc:
        die(str(exc), ExitCode.FAILURE)
    say_withheld(read, "alerts", gate)
    alerts = read.items
    result = Sharer(PolicyEngine(pol), tlp, cap, producer).build(alerts)
    try:
        output.write_text(result.bundle.serialize(pretty=True, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as exc:
        die(f"{output}: cannot write: {exc}", ExitCode.FAILURE)
    s.audit("share-export", {"output": str(output), "tlp": tlp, "cap": cap.name, "alerts": len(alerts),
                             "indicators": result.indicators, "left_out": len(result.left_out)})
    for line in result.left_out:
        err_console.print(f"left out: {line}", highlight=False, markup=False, soft_wrap=True)
    summary = {"output": str(output), "tlp": f"TLP:{tlp.upper()}", "cap": cap.name, "alerts": len(alerts),
               "indicators": result.indicators, "left_out": len(result.left_out)}
    if json_out:
        print_ndjson(summary)
    else:
        console.print(f"wrote {result.indicators} indicators from {len(alerts)} alerts to {output} "
                      f"(TLP:{tlp.upper()}, up to {cap.name}); {len(result.left_out)} left out")
