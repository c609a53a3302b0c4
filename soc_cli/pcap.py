"""soc pcap: evidence — the packets of an alert's or an incident's flows, cut from the capture they came from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from correlator.evidence import EvidenceError, extract
from correlator.store import StoreError
from sensors.capture import CaptureError
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
    warn,
)

app = typer.Typer(help="Packet evidence from the captures the sensor read.\n\n"
                       "Example: soc pcap extract --incident 1 -o incident-1.pcap", no_args_is_help=True)


@app.command("extract")
def extract_cmd(
    output: Annotated[Path, typer.Option("-o", "--output", help="The pcap to write (a <output>.json manifest beside "
                                                                "it names the label, alerts, flows and SHA-256).")],
    alert: Annotated[str | None, typer.Option("--alert", help="An alert id.")] = None,
    incident: Annotated[int | None, typer.Option("--incident", help="An incident number: all its alerts.")] = None,
    clearance: ClearanceOpt = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Write exactly the packets of an alert's flows (or an incident's alerts' flows) to a pcap.

    The packets come from the capture files `soc sensor pcap` read (re-read with the same reader and filter); the
    extract carries the label of its alert or incident and is refused above your clearance. Exit 1 when nothing
    could be extracted, or some flows could not be located (the others are written).

    Example: soc pcap extract --alert 0f3c9a1e2b7d4c6a8e5f1a2b3c4d5e6f -o alert.pcap
    """
    if (alert is None) == (incident is None):
        die("give --alert ID or --incident N (one of them)")
    gate = open_reader(get_store(store), clearance)
    try:
        result = extract(gate, output, alert, incident)
    except (EvidenceError, StoreError, CaptureError, OSError) as exc:
        die(str(exc), ExitCode.FAILURE)
    for problem in result.problems:
        warn(problem)
    if json:
        print_ndjson(result.manifest())
    else:
        console.print(f"{output}: {result.packets} packets of {len(result.flows)} flows, label "
                      f"{result.level or 'none'} (rank {result.rank}), sha256 {result.sha256}", highlight=False)
    if result.problems:
        raise typer.Exit(ExitCode.FAILURE)
