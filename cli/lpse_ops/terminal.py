"""One output wrapper for the whole CLI.

Data goes to stdout, progress and messages to stderr; spinners and live tables only on a TTY;
``--json`` prints only JSON on stdout.
"""

from __future__ import annotations

import json
import re
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
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


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def shown(text: str) -> str:
    """*text* as data on a terminal: control characters (an escape sequence could erase or forge lines)
    replaced by "?", and Rich markup escaped. Messages may carry what a site or its files said."""
    return escape(_CONTROL.sub("?", str(text)))


def info(message: str) -> None:
    """Print a progress or status message on stderr."""
    err.print(shown(message), highlight=False)


def warn(message: str) -> None:
    """Print a warning on stderr, once: the same warning again in this process is not printed."""
    if message in _warned:
        return
    _warned.add(message)
    err.print(f"[yellow]warning:[/yellow] {shown(message)}", highlight=False)


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


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else str(value)


def _empty(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, dict | list | tuple) and not value)


def inline(value: Any) -> str:
    """Return *value* (a run's args, summary or host detail: JSON-like data) as one readable line.

    A mapping is ``key=value, key=value`` with empty entries (None, "", [], {}) left out; a nested mapping
    is in parentheses, a list is ``[a, b]`` (top level: ``a, b``); nothing is a Python repr.
    """
    if isinstance(value, dict):
        return ", ".join(f"{key}={_nested(item)}" for key, item in value.items() if not _empty(item)) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(_nested(item) for item in value) or "-"
    return _scalar(value)


def _nested(value: Any) -> str:
    if isinstance(value, dict):
        return f"({inline(value)})"
    if isinstance(value, list | tuple):
        return f"[{inline(value)}]"
    return _scalar(value)


def detail_lines(value: Any, indent: int = 4) -> list[str]:
    """Return *value* as readable lines: one ``key: value`` line per entry of a mapping (a nested mapping
    indented below its key, a multi-line text as an indented block), empty entries left out."""
    pad = " " * indent
    if not isinstance(value, dict):
        return [f"{pad}{inline(value)}"]
    lines = []
    for key, item in value.items():
        if _empty(item):
            continue
        if isinstance(item, dict) and len(item) > 1:
            lines.append(f"{pad}{key}:")
            lines.extend(detail_lines(item, indent + 2))
        elif isinstance(item, str) and "\n" in item:
            lines.append(f"{pad}{key}:")
            lines.extend(f"{pad}  | {line}" for line in item.splitlines())
        else:
            lines.append(f"{pad}{key}: {inline(item) if isinstance(item, dict | list | tuple) else _scalar(item)}")
    return lines or [f"{pad}-"]
