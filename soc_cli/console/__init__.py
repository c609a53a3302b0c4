"""`soc triage`: the analysts' console (Textual) over the read gate; see soc_cli/console/app.py."""

from soc_cli.console.app import TriageApp

__all__ = ["TriageApp"]
