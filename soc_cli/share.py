"""soc share: (being built)."""

import typer

app = typer.Typer(help="(share: being built)", no_args_is_help=True)
