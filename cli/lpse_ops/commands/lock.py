"""``lpse-ops lock``: the site locks that keep changes to one site one at a time (install, restore, ...)."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from lpse_ops import config, terminal
from lpse_ops.commands.runs import open_store, state_url_option
from lpse_ops.state.store import LockNotHeldError


@click.group(name="lock")
def lock() -> None:
    """Show and release the site locks held by running installs, upgrades, restores and drills."""


@lock.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print the locks as JSON.")
@state_url_option
def list_command(as_json: bool, state_url: str | None) -> None:
    """List the sites locked now: by whom, since when, for which operation and run."""
    store = open_store(state_url)
    try:
        locks = store.list_locks()
    finally:
        store.close()
    if as_json:
        terminal.emit_json(locks)
        return
    if not locks:
        terminal.info("no site is locked")
        return
    table = Table(title="site locks")
    for column in ("site", "holder", "since (UTC)", "operation", "run"):
        table.add_column(column, no_wrap=column in ("since (UTC)", "run"))
    for row in locks:
        table.add_row(escape(row["site"]), escape(row["holder"]), (row["acquired_at"] or "-")[:19].replace("T", " "),
                      escape(row["operation"]), str(row["run_id"] if row["run_id"] is not None else "-"))
    terminal.print_table(table)


@lock.command(name="release")
@click.argument("sites", nargs=-1, required=True)
@click.option("--force", is_flag=True,
              help="Release a lock another operator holds (only when that run is dead; audited).")
@click.option("--json", "as_json", is_flag=True, help="Print the released locks as JSON.")
@state_url_option
def release_command(sites: tuple[str, ...], force: bool, as_json: bool, state_url: str | None) -> None:
    """Release the locks on SITES; another holder's lock needs --force. Exit 1 (nothing released) otherwise."""
    store = open_store(state_url)
    try:
        released = store.release_sites(list(sites), holder=config.actor(), force=force)
    except LockNotHeldError as error:
        raise terminal.fail(f"nothing released: {error}") from error
    finally:
        store.close()
    if as_json:
        terminal.emit_json(released)
        return
    for row in released:
        terminal.info(f"released {row['site']} (held by {row['holder']} since {row['acquired_at']} "
                      f"for {row['operation']}, run {row['run_id'] if row['run_id'] is not None else '-'})")
