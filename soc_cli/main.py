"""The `soc` entry point: global options and the command groups."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Annotated

import typer
import yaml

from soc_cli.common import die, state

app = typer.Typer(
    name="soc",
    help="soc — a national SOC toolkit: network sensors, Sigma detection, classification policy, compliance scans.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each group lives in soc_cli/<name>.py and exposes `app`.
GROUPS = ["store", "events", "sensor", "logs", "rules", "alerts", "hunt", "compliance", "policy", "audit", "share",
          "demo"]
for _name in GROUPS:
    _module = importlib.import_module(f"soc_cli.{_name}")
    app.add_typer(_module.app, name=_name)


def _load_config(path: Path | None) -> dict:
    path = path or Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "soc" / "config.yaml"
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        die(f"{path}: invalid YAML: {exc}")
    if not isinstance(data, dict):
        die(f"{path}: the config must be a mapping of settings")
    return data


@app.callback()
def main(
    store: Annotated[str | None, typer.Option("--store", envvar="SOC_STORE", show_envvar=True,
                                              help="Store URI (sqlite:///path.db or http(s)://host:9200).")] = None,
    config: Annotated[Path | None, typer.Option("--config", envvar="SOC_CONFIG", show_envvar=True,
                                                help="Config file (default ~/.config/soc/config.yaml).")] = None,
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True, help="More detail on stderr.")] = 0,
) -> None:
    """Global options apply to every command."""
    state["config"] = _load_config(config)
    state["store"] = store or state["config"].get("store")
    state["verbose"] = verbose


@app.command()
def version() -> None:
    """Print soc's version and the versions of the engines it uses."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as v

    for pkg in ("soc", "pysigma", "elasticsearch", "scapy", "typer", "rich"):
        try:
            typer.echo(f"{pkg} {v(pkg)}")
        except PackageNotFoundError:
            typer.echo(f"{pkg} (not installed)")


if __name__ == "__main__":
    app()
