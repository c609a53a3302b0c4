"""soc alerts: (being built)."""

import typer

app = typer.Typer(help="(alerts: being built)", no_args_is_help=True)
