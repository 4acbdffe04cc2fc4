"""Check the sites against the server baseline (clause 6.1.9), changing nothing: one entry function."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lpse_ops.actions import operation, records

KIND = "preflight"
"""The kind of result record ``playbooks/preflight.yml`` emits per host."""


@dataclass
class PreflightRequest:
    inventory: Path
    limit: str | None = None
    progress: operation.ProgressFactory | None = None
    state_url: str | None = None


@dataclass
class PreflightOutcome:
    """The run, each host's record (or why it has none), and each host's failed baseline checks."""

    result: operation.OperationResult
    found: records.HostRecords
    failures: dict[str, list[str]]


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


def preflight(request: PreflightRequest) -> PreflightOutcome:
    """Run the baseline checks on the sites; raise OperationRefused on bad input (nothing touched)."""
    ctx = operation.OperationContext(operation="preflight", playbook="preflight.yml", inventory=request.inventory,
                                     limit=request.limit, progress=request.progress, state_url=request.state_url)
    result = operation.run(ctx)
    found = records.read(result, KIND)
    result.exit_code = found.exit_code(result.exit_code)
    return PreflightOutcome(result, found, baseline_failures(found))
