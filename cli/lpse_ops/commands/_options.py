"""Options and rendering shared by the fleet commands."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.table import Table

from lpse_ops import settings, terminal
from lpse_ops.actions.operation import OperationContext, OperationRefused, OperationResult, run
from lpse_ops.actions.records import HostRecords


def app_settings() -> settings.Settings:
    """Return the current settings; a bad ``LPSE_OPS_*`` value becomes a one-line error (exit code 1)."""
    try:
        return settings.current()
    except settings.SettingsError as error:
        raise terminal.fail(f"bad setting: {error} (see docs/settings.md)") from error


def default_inventory() -> str | None:
    """Return ``LPSE_OPS_INVENTORY``, else the lab's inventory when a lab was brought up."""
    from lpse_ops.lab.lab import inventory_path

    configured = app_settings().inventory
    if configured:
        return str(configured)
    lab_inventory = inventory_path()
    return str(lab_inventory) if lab_inventory.exists() else None


def inventory_option(function: Callable) -> Callable:
    return click.option("-i", "--inventory", "inventory_path", type=click.Path(path_type=Path),
                        default=default_inventory, show_default="$LPSE_OPS_INVENTORY, else the lab's",
                        help="Inventory file or folder.")(function)


def limit_option(function: Callable) -> Callable:
    return click.option("--limit", "-l", default=None, help="Only these hosts or groups (Ansible pattern).")(function)


def yes_option(what: str) -> Callable[[Callable], Callable]:
    """Return the ``--yes`` option (default ``LPSE_OPS_YES``) of a command that would otherwise ask before *what*."""
    return click.option("--yes", is_flag=True, default=lambda: app_settings().yes,
                        help=f"Do not ask for confirmation before {what} (env LPSE_OPS_YES).")


def json_option(function: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print only JSON on stdout.")(function)


def require_inventory(inventory_path: Path | None) -> Path:
    if inventory_path is None:
        raise terminal.fail("no inventory: pass -i PATH, set LPSE_OPS_INVENTORY, or run `lpse-ops lab up`")
    return inventory_path


@contextmanager
def refusal_as_error() -> Iterator[None]:
    """Turn a refusal (bad input, nothing touched) inside the block into a one-line error, exit code 1."""
    try:
        yield
    except OperationRefused as error:
        raise terminal.fail(str(error)) from error


def run_operation(ctx: OperationContext) -> OperationResult:
    """Run *ctx*; a refusal becomes a one-line error with exit code 1."""
    with refusal_as_error():
        return run(ctx)


def render(result: OperationResult, title: str, details: dict[str, str] | None = None) -> None:
    """Print the summary table of a finished operation on stdout."""
    table = Table(title=f"{title}: {result.result} in {result.duration_s:.0f}s (run {result.run_id})")
    for column in ("host", "status", "ok", "changed", "failed", "detail"):
        table.add_column(column, overflow="fold")
    for name in sorted(result.tracker.hosts):
        state = result.tracker.hosts[name]
        detail = (details or {}).get(name) or "; ".join(state.messages)
        style = {"ok": "green", "changed": "yellow"}.get(state.status, "red")
        table.add_row(name, f"[{style}]{state.status}[/{style}]", str(state.ok), str(state.changed),
                      str(state.failed + state.unreachable), terminal.shown(detail))
    terminal.print_table(table)
    terminal.info(f"artifacts: {result.artifact_dir}")


def warn_missing_records(result: OperationResult, found: HostRecords) -> None:
    """Name on stderr each host without a result record that the summary table has no row for."""
    for host, reason in sorted(found.missing.items()):
        if host not in result.tracker.hosts:
            terminal.warn(f"{host}: {reason}")
