"""soc logs: (being built)."""

import typer

app = typer.Typer(help="(logs: being built)", no_args_is_help=True)
