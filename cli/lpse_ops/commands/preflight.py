"""``lpse-ops preflight``: check the sites against the server baseline (clause 6.1.9)."""

from __future__ import annotations

from pathlib import Path

import click

from lpse_ops import progress, terminal
from lpse_ops.actions import preflight as checks
from lpse_ops.commands._options import (
    inventory_option,
    json_option,
    limit_option,
    refusal_as_error,
    render,
    require_inventory,
    warn_missing_records,
)


@click.command(name="preflight")
@inventory_option
@limit_option
@json_option
def preflight(inventory_path: Path | None, limit: str | None, as_json: bool) -> None:
    """Check OS, CPU, memory, disk, ports, time and DNS on every site; change nothing."""
    request = checks.PreflightRequest(inventory=require_inventory(inventory_path), limit=limit,
                                      progress=progress.live(not as_json))
    with refusal_as_error():
        outcome = checks.preflight(request)
    result, found = outcome.result, outcome.found
    if as_json:
        terminal.emit_json({**result.as_dict(), "baseline_failures": outcome.failures, "records": found.found,
                            "missing_records": found.missing})
    else:
        render(result, "preflight", {h: "; ".join(f) for h, f in outcome.failures.items() if f})
        warn_missing_records(result, found)
    raise SystemExit(result.exit_code)
