"""soc demo: the main job on the bundled capture of a small ministry network, ending in the triage table."""

from __future__ import annotations

from importlib.resources import as_file, files
from typing import Annotated

import typer

from soc_cli import alerts, sensor
from soc_cli.common import JsonOpt, StoreOpt, err_console

app = typer.Typer(help="Run the main job on a bundled capture of a small ministry network and show the alerts.")

HOME_NET = "10.0.0.0/8,172.16.0.0/12"
CLEARANCE = "secret"  # the demo reads as the SOC lead of rules/policy/national-backbone.yml


@app.callback(invoke_without_command=True)
def demo(
    store: StoreOpt = None,
    clearance: Annotated[str, typer.Option(help="Reader clearance for the triage table.")] = CLEARANCE,
    json: JsonOpt = False,
) -> None:
    """Sensor -> classification policy -> Sigma rules -> store on rules/samples/demo-ministry.pcap, then triage.

    The capture holds normal ministry traffic and seven attacks: a port scan of the citizen portal, SSH brute force,
    DNS tunnelling, cleartext HTTP credentials to a secret system, an upload of secret data to the internet, DNS to
    an outside resolver and an ICMP tunnel. Re-running is idempotent: event ids are deterministic.
    """
    with as_file(files("rules") / "samples" / "demo-ministry.pcap") as pcap:
        if not json:
            err_console.print(f"[bold]soc demo[/]: reading {pcap.name} (sensor demo-backbone, home net {HOME_NET})")
        sensor.pcap(files=[pcap], store=store, bpf=None, sensor_name="demo-backbone", home_net=HOME_NET,
                    community_id_seed=0, json_out=json)
    if not json:
        err_console.print(f"triage table as a reader cleared [bold]{clearance}[/] (see --clearance):")
    alerts.list_alerts(since=None, until=None, severity=None, limit=50, clearance=clearance, store=store,
                       as_json=json)
