"""The `soc` command line (Typer + Rich)."""
