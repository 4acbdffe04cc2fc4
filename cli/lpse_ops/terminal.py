"""One output wrapper for the whole CLI.

Data goes to stdout, progress and messages to stderr; spinners and live tables only on a TTY;
``--json`` prints only JSON on stdout.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def is_tty() -> bool:
    """Return True when stderr is an interactive terminal (live displays allowed)."""
    return err.is_terminal


def emit_json(data: Any) -> None:
    """Print *data* as JSON on stdout, and nothing else."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def info(message: str) -> None:
    """Print a progress or status message on stderr."""
    err.print(message, highlight=False)


def warn(message: str) -> None:
    """Print a warning on stderr."""
    err.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


def fail(message: str) -> click.ClickException:
    """Return a ClickException carrying *message* (raise it): the message says what to do."""
    return click.ClickException(message)
