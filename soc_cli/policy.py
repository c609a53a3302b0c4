"""soc policy: (being built)."""

import typer

app = typer.Typer(help="(policy: being built)", no_args_is_help=True)
