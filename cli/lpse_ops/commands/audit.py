"""``lpse-ops audit-log``: show and verify the tamper-evident audit trail (clauses 13.3 and 13.4)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from lpse_ops import terminal
from lpse_ops.commands.runs import open_store, state_url_option
from lpse_ops.state import witness


@click.group(name="audit-log")
def audit_log() -> None:
    """Show and verify the hash-chained, append-only audit log of every operation."""


@audit_log.command(name="verify")
@click.option("--head-path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Head anchor file to compare with [default: audit-head.json in LPSE_OPS_HOME].")
@click.option("--witness", "with_witness", is_flag=True,
              help="Also compare every head written to the Object-Lock witness bucket with the chain "
                   "(catches a chain rewritten whole, anchor and all); names the first seq that disagrees.")
@click.option("--json", "as_json", is_flag=True, help="Print the verification result as JSON.")
@state_url_option
def verify_command(head_path: Path | None, with_witness: bool, as_json: bool, state_url: str | None) -> None:
    """Check every entry's hash and link, and the chain's end against the head anchor; exit 1 on any problem.

    Also says how far behind the audit-log witness is (from the store's bookkeeping); --witness reads
    the witness bucket itself.
    """
    store = open_store(state_url, head_path)
    try:
        result = store.audit_verify()
        lag_rows = witness.progress(store)
        check = witness.check(store) if with_witness else None
    except witness.WitnessError as error:
        raise terminal.fail(f"{error}; the chain itself was not the problem: run without --witness to check "
                            "only the chain") from error
    finally:
        store.close()
    ok = result.ok and (check is None or check.ok)
    if as_json:
        terminal.emit_json({**result.as_dict(), "ok": ok, "chain_ok": result.ok, "witness_progress": lag_rows,
                            **({"witness": check.as_dict()} if check else {})})
    else:
        for warning in result.warnings:
            terminal.warn(warning)
        for row in lag_rows:
            if row["lag"] and check is None:
                error = f"; last error: {row['last_error']}" if row["last_error"] else ""
                terminal.warn(f"witness {row['target']} is {row['lag']} entr{'y' if row['lag'] == 1 else 'ies'} "
                              f"behind (witnessed up to {row['witnessed_seq'] or 'nothing'} of {row['head_seq']})"
                              f"{error}: the next audit write catches up")
        if result.ok:
            head = result.head_hash[:12] if result.head_hash else "(empty)"
            terminal.out.print(f"audit log intact: {result.entries} entries, head {head}", highlight=False)
        else:
            terminal.err.print(f"[red]audit log NOT intact[/red]: {len(result.problems)} problem(s) "
                               f"in {result.entries} entries", highlight=False)
            for problem in result.problems:
                terminal.err.print(f"  - {problem}", highlight=False, markup=False)
        if check is not None:
            for warning in check.warnings:
                terminal.warn(warning)
            if check.ok:
                terminal.out.print(f"witness agrees: {check.witnessed} witnessed head(s), up to entry "
                                   f"{check.witnessed_seq or '-'} of {check.head_seq or '-'} "
                                   f"({check.target.get('bucket')})", highlight=False)
            else:
                terminal.err.print(f"[red]witness DISAGREES[/red] from entry {check.first_disagreeing_seq} "
                                   f"(last agreeing witnessed entry: {check.last_agreeing_seq or 'none'})",
                                   highlight=False)
                for problem in check.problems:
                    terminal.err.print(f"  - {problem}", highlight=False, markup=False)
    if not ok:
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
