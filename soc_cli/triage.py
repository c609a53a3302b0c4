"""soc triage: the analysts' console (Textual) over the store, read through the gate at the user's clearance."""

from __future__ import annotations

from typing import Annotated

import typer

from soc_cli.common import ClearanceOpt, StoreOpt, get_store, open_reader

app = typer.Typer(no_args_is_help=False)  # help: the callback's docstring


@app.callback(invoke_without_command=True)
def triage(
    limit: Annotated[int, typer.Option(min=1, help="Most alerts in the queue (riskiest, then newest first).")] = 500,
    clearance: ClearanceOpt = None,
    store: StoreOpt = None,
) -> None:
    """The triage console: the alert queue (f: status, v: severity, g: group by rule), the highlighted alert's
    detail (why it fired, its matched key highlighted, history, related events) and keys to ack (a), assign (w),
    close with a reason (c), note (n), suppress (x), add to an incident (i) and pivot to the timeline (t).

    Every read goes through the read gate at your clearance; every action is audited as with `soc alerts`.

    Example: soc triage --store sqlite:///var/lib/soc/soc.db --clearance restricted
    """
    from soc_cli.console import TriageApp

    gate = open_reader(get_store(store), clearance)
    try:
        TriageApp(gate, limit).run()
    finally:
        gate.store.close()
