"""The help text users read: every command's --help is clean on the Typer versions we allow."""

from __future__ import annotations

import pytest

COMMANDS = ["enhance", "train", "evaluate", "export", "info"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_shows_no_type_placeholders_after_flags(run, command):
    args = ["--help"] if command is None else [command, "--help"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    # Typer 0.29 prints `<bool>` after every boolean flag; pyproject caps Typer below it.
    assert "<bool>" not in result.output
