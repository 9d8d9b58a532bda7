"""``python -m autohdr_cli`` runs the command line."""

from .cli import app

app()
