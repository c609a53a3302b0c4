"""soc sensor: (being built)."""

import typer

app = typer.Typer(help="(sensor: being built)", no_args_is_help=True)
