"""``lpse-ops preflight``: check the sites against the server baseline (clause 6.1.9)."""

from __future__ import annotations

from pathlib import Path

import click

from lpse_ops import terminal
from lpse_ops.actions import operation
from lpse_ops.commands._options import (
    inventory_option,
    json_option,
    limit_option,
    render,
    require_inventory,
    run_operation,
)

REPORT_TASK = "Report the server baseline checks"


def baseline_failures(result: operation.OperationResult) -> dict[str, list[str]]:
    """Return, per host, the baseline checks that failed (from the role's report task)."""
    failures: dict[str, list[str]] = {}
    for host, state in result.tracker.hosts.items():
        report = state.captured.get(REPORT_TASK, {})
        checks = report.get("preflight_report") or report.get("msg") or []
        if isinstance(checks, list):
            failures[host] = [f"{c.get('check')}: {c.get('detail')}" for c in checks
                              if isinstance(c, dict) and not c.get("ok")]
    return failures


@click.command(name="preflight")
@inventory_option
@limit_option
@json_option
def preflight(inventory_path: Path | None, limit: str | None, as_json: bool) -> None:
    """Check OS, CPU, memory, disk, ports, time and DNS on every site; change nothing."""
    ctx = operation.OperationContext(operation="preflight", playbook="preflight.yml",
                                     inventory=require_inventory(inventory_path), limit=limit,
                                     capture=(REPORT_TASK,), show_progress=not as_json)
    result = run_operation(ctx)
    failures = baseline_failures(result)
    if as_json:
        terminal.emit_json({**result.as_dict(), "baseline_failures": failures})
    else:
        render(result, "preflight", {h: "; ".join(f) for h, f in failures.items() if f})
    raise SystemExit(result.exit_code)
