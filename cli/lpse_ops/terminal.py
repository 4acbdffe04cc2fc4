"""One output wrapper for the whole CLI.

Data goes to stdout, progress and messages to stderr; spinners and live tables only on a TTY;
``--json`` prints only JSON on stdout.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
PIPE_WIDTH_MAX = 4000
"""Widest line a table is printed at off a terminal (a pipe, a file, a CI log)."""
_warned: set[str] = set()


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
    """Print a warning on stderr, once: the same warning again in this process is not printed."""
    if message in _warned:
        return
    _warned.add(message)
    err.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


def print_table(table: Table, console: Console | None = None) -> None:
    """Print *table* (on *console*, default stdout) without ever cutting a cell.

    On a terminal, a cell too wide for its column folds onto the next line instead of ending in "…".
    Off a terminal (a pipe, a file, a CI log), the table is printed at its natural width, whatever
    ``COLUMNS`` says, so every id and time stays whole on one line for grep and for people.
    """
    console = console or out
    for column in table.columns:
        if column.overflow == "ellipsis":
            column.overflow = "fold"
    if console.is_terminal:
        console.print(table)
        return
    natural = Measurement.get(console, console.options.update_width(PIPE_WIDTH_MAX), table).maximum
    if natural <= console.width:
        console.print(table)
        return
    wide = Console(file=console.file, width=min(natural, PIPE_WIDTH_MAX), soft_wrap=True, force_terminal=False,
                   color_system=None, no_color=True, highlight=False)
    wide.print(table)


def fail(message: str) -> click.ClickException:
    """Return a ClickException carrying *message* (raise it): the message says what to do."""
    return click.ClickException(message)
