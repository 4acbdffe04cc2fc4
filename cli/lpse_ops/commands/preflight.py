"""``lpse-ops preflight``: check the sites against the server baseline (clause 6.1.9)."""

from __future__ import annotations

from pathlib import Path

import click

from lpse_ops import progress, terminal
from lpse_ops.actions import operation, records
from lpse_ops.commands._options import (
    inventory_option,
    json_option,
    limit_option,
    render,
    require_inventory,
    run_operation,
    warn_missing_records,
)

KIND = "preflight"
"""The kind of result record ``playbooks/preflight.yml`` emits per host."""


def baseline_failures(found: records.HostRecords) -> dict[str, list[str]]:
    """Return, per host, the baseline checks that failed (from its ``preflight`` result record).

    A host whose checks did not all run gets that said too; a host without a record gets why it has none.
    """
    failures: dict[str, list[str]] = {}
    for host, record in found.found.items():
        checks = record.get("checks") or []
        failures[host] = [f"{c.get('check')}: {c.get('detail')}" for c in checks
                          if isinstance(c, dict) and not c.get("ok")]
        if not record.get("complete"):
            failures[host].append(f"incomplete: only {len(checks)} check(s) ran before a task failed")
    for host, reason in found.missing.items():
        failures[host] = [reason]
    return failures


@click.command(name="preflight")
@inventory_option
@limit_option
@json_option
def preflight(inventory_path: Path | None, limit: str | None, as_json: bool) -> None:
    """Check OS, CPU, memory, disk, ports, time and DNS on every site; change nothing."""
    ctx = operation.OperationContext(operation="preflight", playbook="preflight.yml",
                                     inventory=require_inventory(inventory_path), limit=limit,
                                     progress=progress.live(not as_json))
    result = run_operation(ctx)
    found = records.read(result, KIND)
    failures = baseline_failures(found)
    result.exit_code = found.exit_code(result.exit_code)
    if as_json:
        terminal.emit_json({**result.as_dict(), "baseline_failures": failures, "records": found.found,
                            "missing_records": found.missing})
    else:
        render(result, "preflight", {h: "; ".join(f) for h, f in failures.items() if f})
        warn_missing_records(result, found)
    raise SystemExit(result.exit_code)
