"""soc demo: (being built)."""

import typer

app = typer.Typer(help="(demo: being built)", no_args_is_help=True)
