"""soc hunt: (being built). A single command: define it with @app.callback(invoke_without_command=True)."""

import typer

app = typer.Typer(help="(hunt: being built)", no_args_is_help=True)
