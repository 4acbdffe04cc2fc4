"""``lpse-ops audit-log``: show and verify the tamper-evident audit trail (clauses 13.3 and 13.4)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from lpse_ops import terminal
from lpse_ops.commands.runs import open_store, state_url_option


@click.group(name="audit-log")
def audit_log() -> None:
    """Show and verify the hash-chained, append-only audit log of every operation."""


@audit_log.command(name="verify")
@click.option("--head-path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Head anchor file to compare with [default: audit-head.json in LPSE_OPS_HOME].")
@click.option("--json", "as_json", is_flag=True, help="Print the verification result as JSON.")
@state_url_option
def verify_command(head_path: Path | None, as_json: bool, state_url: str | None) -> None:
    """Check every entry's hash and link, and the chain's end against the head anchor; exit 1 on any problem."""
    store = open_store(state_url, head_path)
    try:
        result = store.audit_verify()
    finally:
        store.close()
    if as_json:
        terminal.emit_json(result.as_dict())
    else:
        for warning in result.warnings:
            terminal.warn(warning)
        if result.ok:
            head = result.head_hash[:12] if result.head_hash else "(empty)"
            terminal.out.print(f"audit log intact: {result.entries} entries, head {head}", highlight=False)
        else:
            terminal.err.print(f"[red]audit log NOT intact[/red]: {len(result.problems)} problem(s) "
                               f"in {result.entries} entries", highlight=False)
            for problem in result.problems:
                terminal.err.print(f"  - {problem}", highlight=False, markup=False)
    if not result.ok:
        raise SystemExit(1)


@audit_log.command(name="show")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1), help="Newest N entries.")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@state_url_option
def show_command(limit: int, as_json: bool, state_url: str | None) -> None:
    """Show the newest audit entries, oldest first."""
    store = open_store(state_url)
    try:
        entries = store.audit_entries(limit=limit)
    finally:
        store.close()
    if as_json:
        terminal.emit_json(entries)
        return
    if not entries:
        terminal.info("the audit log is empty")
        return
    table = Table(title="audit log")
    for column in ("seq", "time (UTC)", "actor", "operation", "detail", "hash"):
        table.add_column(column, justify="right" if column == "seq" else "left",
                         no_wrap=column in ("seq", "time (UTC)", "hash"))
    for entry in entries:
        table.add_row(str(entry["seq"]), entry["ts"][:19].replace("T", " "), escape(entry["actor"]),
                      escape(entry["operation"]),
                      escape(json.dumps(entry["detail"], sort_keys=True, separators=(",", ":"))), entry["hash"][:12])
    terminal.print_table(table)
