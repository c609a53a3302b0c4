"""soc audit: (being built)."""

import typer

app = typer.Typer(help="(audit: being built)", no_args_is_help=True)
