"""soc playbook: (being built)."""

import typer

app = typer.Typer(help="(playbook: being built)", no_args_is_help=True)
