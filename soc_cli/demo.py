"""soc demo: the main job on the bundled capture of a small ministry network, ending in the triage table."""

from __future__ import annotations

import math
import os
import time
from importlib.resources import as_file, files
from typing import Annotated

import typer

from correlator.gate import DEMO_PURPOSE
from correlator.store import data_dir
from sensors.capture import read_file
from soc_cli import alerts, sensor
from soc_cli.common import ClearanceOpt, JsonOpt, err_console, get_store, state

app = typer.Typer()  # help: the callback's docstring

HOME_NET = "10.0.0.0/8,172.16.0.0/12"
DAY = 86400.0


def whole_days_to_now(pcap: str, now: float | None = None) -> float:
    """Seconds — a whole number of days — that move the capture's last packet into the past 24 hours.

    Whole days keep the capture's times of day; re-running the same day writes the same events (ids are
    deterministic), so the demo stays idempotent within a day.
    """
    last = max((ts for ts, *_ in read_file(pcap)), default=0.0)
    now = time.time() if now is None else now
    return math.floor((now - last) / DAY) * DAY


def demo_store_uri() -> str:
    """The demo's own store: `$SOC_HOME/demo.db`, apart from the user's events."""
    return f"sqlite:///{data_dir() / 'demo.db'}"


@app.callback(invoke_without_command=True)
def demo(
    store: Annotated[str | None, typer.Option(
        "--store", help="Write into this store instead of the demo's own ($SOC_HOME/demo.db); it is then read at "
                        "your clearance like any other store.")] = None,
    clearance: ClearanceOpt = None,
    json: JsonOpt = False,
) -> None:
    """Run the main job on a bundled capture of a small ministry network and show the alerts.

    Sensor -> classification policy -> Sigma rules -> store on rules/samples/demo-ministry.pcap, then triage.

    The capture holds normal ministry traffic and seven attacks: a port scan of the citizen portal, SSH brute force,
    DNS tunnelling, cleartext HTTP credentials to a secret system, an upload of secret data to the internet, DNS to
    an outside resolver and an ICMP tunnel. Re-running is idempotent: event ids are deterministic.

    The capture is replayed as recent traffic: its times move by whole days so that its last packet falls within
    the past 24 hours (`soc alerts list --since 24h` finds it).

    Without --store the demo writes into its own store, marked as holding only this synthetic sample: it is read at
    the policy's top level (every alert of the story) unless you ask for a lower --clearance. Any other store is
    read at your clearance.

    Example: soc demo --clearance public
    """
    chosen = store or (state["store"] if state["store"] != os.environ.get("SOC_STORE") else None)
    uri = chosen or demo_store_uri()
    if chosen is None:
        data_dir().mkdir(parents=True, exist_ok=True)
        own = get_store(uri, create=True)
        own.set_purpose(DEMO_PURPOSE)
        own.close()
    with as_file(files("rules") / "samples" / "demo-ministry.pcap") as pcap:
        if not json:
            err_console.print(f"[bold]soc demo[/]: reading {pcap.name} (sensor demo-backbone, home net {HOME_NET}) "
                              f"into {uri}")
        sensor.pcap(files=[pcap], store=uri, bpf=None, sensor_name="demo-backbone", home_net=HOME_NET,
                    community_id_seed=0, time_shift=whole_days_to_now(str(pcap)), json_out=json)
    alerts.list_alerts(since=None, until=None, severity=None, limit=50, clearance=clearance, store=uri,
                       as_json=json)
    if not json:
        err_console.print(f"explore the demo: [bold]soc --store {uri} alerts list[/] (or export SOC_STORE={uri})",
                          highlight=False, soft_wrap=True)
