"""``lpse-ops runs``: the history of operations recorded in the state store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.markup import escape
from rich.table import Table

from lpse_ops import terminal
from lpse_ops.state import RunNotFoundError, StateError, StateStore

F = TypeVar("F", bound=Callable[..., Any])


def state_url_option(function: F) -> F:
    """Add ``--state-url`` (default: ``LPSE_OPS_STATE_URL`` through the settings, else the SQLite file in the
    lpse-ops home; the store resolves None)."""
    return click.option(
        "--state-url", default=None, metavar="URL",
        help="SQLAlchemy URL of the state store [default: $LPSE_OPS_STATE_URL, else an SQLite file in LPSE_OPS_HOME; "
             "PostgreSQL needs pip install 'psycopg[binary]'].",
    )(function)


def open_store(state_url: str | None, head_path: Path | None = None) -> StateStore:
    """Open (and migrate) the state store, turning failures into a CLI error."""
    try:
        return StateStore.open(state_url, head_path=head_path)
    except StateError as error:
        raise terminal.fail(str(error)) from error


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def _result(result: str | None) -> str:
    colour = {"ok": "green", "failed": "red", "error": "red", "aborted": "yellow"}.get(result or "", "cyan")
    return f"[{colour}]{result or 'running'}[/{colour}]"


def _host_row(host: str, outcome: dict[str, Any]) -> tuple[str, ...]:
    return (escape(host), _result(outcome["status"]), str(outcome["changed"]), str(outcome["failed"]),
            str(outcome["unreachable"]), escape(terminal.inline(outcome["detail"]) if outcome["detail"] else ""))


@click.group(name="runs")
def runs() -> None:
    """Show the history of install, upgrade, backup and other runs."""


@runs.command(name="list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1), help="Newest N runs.")
@click.option("--operation", default=None, help="Only runs of this operation (e.g. install).")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
@state_url_option
def list_command(limit: int, operation: str | None, as_json: bool, state_url: str | None) -> None:
    """List the newest runs, newest first."""
    store = open_store(state_url)
    try:
        rows = store.list_runs(limit=limit, operation=operation)
    finally:
        store.close()
    if as_json:
        terminal.emit_json(rows)
        return
    if not rows:
        terminal.info("no runs recorded" + (f" for operation {operation}" if operation else ""))
        return
    table = Table(title="runs")
    for column in ("id", "operation", "actor", "hosts", "result", "duration", "started"):
        table.add_column(column, justify="right" if column in ("id", "hosts", "duration") else "left",
                         no_wrap=column in ("id", "duration", "started"))
    for row in rows:
        table.add_row(str(row["id"]), escape(row["operation"]), escape(row["actor"]), str(len(row["hosts"])),
                      _result(row["result"]), _duration(row["duration_s"]),
                      (row["started_at"] or "-")[:16].replace("T", " "))
    terminal.print_table(table)


@runs.command(name="show")
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@state_url_option
def show_command(run_id: int, as_json: bool, state_url: str | None) -> None:
    """Show one run: arguments, outcome, per-host results and artifact folder."""
    store = open_store(state_url)
    try:
        run = store.get_run(run_id)
    except RunNotFoundError as error:
        raise terminal.fail(f"{error}; see lpse-ops runs list") from error
    finally:
        store.close()
    if as_json:
        terminal.emit_json(run)
        return
    out = terminal.out
    out.print(f"[bold]run {run['id']}[/bold]: {escape(run['operation'])} by {escape(run['actor'])}", highlight=False)
    out.print(f"  result:    {_result(run['result'])}", highlight=False)
    out.print(f"  started:   {run['started_at']}", highlight=False)
    out.print(f"  finished:  {run['finished_at'] or '-'} ({_duration(run['duration_s'])})", highlight=False)
    out.print(f"  artifacts: {escape(run['artifact_dir'] or '-')}", highlight=False)
    out.print("  args:", highlight=False)
    for line in terminal.detail_lines(run["args"] or {}):
        out.print(escape(line), highlight=False)
    if run["summary"]:
        out.print("  summary:", highlight=False)
        for line in terminal.detail_lines(run["summary"]):
            out.print(escape(line), highlight=False)
    if run.get("parent_id"):
        out.print(f"  parent:    run {run['parent_id']} (lpse-ops runs show {run['parent_id']})", highlight=False)
    table = Table(title=f"hosts ({len(run['hosts'])})")
    for column in ("host", "status", "changed", "failed", "unreachable", "detail"):
        table.add_column(column)
    for host in run["hosts"]:
        outcome = run["host_results"].get(host)
        if outcome is None:
            table.add_row(escape(host), "[dim]no result[/dim]", "", "", "", "")
            continue
        table.add_row(*_host_row(host, outcome))
    for host, outcome in run["host_results"].items():
        if host not in run["hosts"]:
            table.add_row(*_host_row(host, outcome))
    terminal.print_table(table)
