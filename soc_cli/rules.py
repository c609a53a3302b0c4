"""soc rules: (being built)."""

import typer

app = typer.Typer(help="(rules: being built)", no_args_is_help=True)
