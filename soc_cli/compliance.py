"""soc compliance: (being built)."""

import typer

app = typer.Typer(help="(compliance: being built)", no_args_is_help=True)
