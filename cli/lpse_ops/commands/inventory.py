"""``lpse-ops inventory``: check an inventory before anything touches a host."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from lpse_ops import inventory as inventory_lib
from lpse_ops import terminal
from lpse_ops.commands._options import inventory_option, json_option, require_inventory


@click.group(name="inventory")
def inventory() -> None:
    """Inspect and validate inventories."""


@inventory.command(name="validate")
@inventory_option
@click.option("--for", "operation", type=click.Choice(sorted(inventory_lib.REQUIRED_FOR)), default="validate",
              show_default=True, help="Also require the variables this operation needs.")
@json_option
def validate_command(inventory_path: Path | None, operation: str, as_json: bool) -> None:
    """Report every inventory mistake: unknown group, duplicate site code, missing variable, bad address."""
    path = require_inventory(inventory_path)
    try:
        report = inventory_lib.validate(path, operation)
    except inventory_lib.InventoryError as error:
        raise terminal.fail(str(error)) from error
    if as_json:
        terminal.emit_json(report.as_dict())
    else:
        table = Table(title=f"inventory {path}")
        for column in ("host", "site_code", "address"):
            table.add_column(column)
        for name, variables in sorted(report.sites.items()):
            table.add_row(name, str(variables.get("site_code", "-")),
                          f"{variables.get('ansible_host', name)}:{variables.get('ansible_port', 22)}")
        terminal.print_table(table)
        for problem in report.problems:
            terminal.err.print(f"[red]problem:[/red] {problem}", highlight=False)
        if report.ok:
            terminal.info(f"inventory is valid: {len(report.sites)} site(s)")
    if not report.ok:
        raise SystemExit(1)
