"""Harden the sites (issue 10; clauses 6.1.4.3, 6.2.7, 6.1.3, 6.2.19): the ``hardening`` role, then SPSE's health.

Runs ``playbooks/harden.yml`` as one recorded, site-locked operation and reads each host's ``harden``
result record: whether every step ran, whether SPSE still serves through nginx, and what the host could
enforce (a container may be unable to load a firewall, audit rules or kernel settings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lpse_ops.actions import fleet, operation, records

KIND = "harden"
"""The kind of result record ``playbooks/harden.yml`` emits per host."""


@dataclass
class HardenRequest:
    """Where to harden, whether as a dry run, and role inputs (``hardening_*``) as extra vars."""

    inventory: Path
    limit: str | None = None
    check: bool = False
    extravars: dict = field(default_factory=dict)
    progress: operation.ProgressFactory | None = None
    state_url: str | None = None


@dataclass
class HardenResult:
    """The run and each host's ``harden`` record (hosts without one are in ``missing`` with the reason)."""

    run: operation.OperationResult
    hosts: dict[str, dict]
    missing: dict[str, str]

    @property
    def exit_code(self) -> int:
        return self.run.exit_code

    def as_dict(self) -> dict:
        return {**self.run.as_dict(), "records": self.hosts, "missing_records": self.missing}


def targets(request: HardenRequest) -> fleet.Fleet:
    """Read the inventory once: the sites a harden run would touch (the plan the command shows before confirming),
    passed on to :func:`harden`. Refuses a bad inventory or an empty match."""
    return fleet.read(request.inventory, limit=request.limit, validate_for="harden")


def harden(request: HardenRequest, read: fleet.Fleet | None = None) -> HardenResult:
    """Run the hardening role on the sites (*read*: the fleet :func:`targets` read, else read here); raise
    operation.OperationRefused when nothing could start.

    A site whose record says SPSE does not serve after the role fails the run (exit code 3).
    """
    unknown = sorted(key for key in request.extravars if not key.startswith("hardening_"))
    if unknown:
        raise operation.OperationRefused(f"only hardening_* role inputs may be set, not: {', '.join(unknown)} "
                                         "(roles/hardening/meta/argument_specs.yml)")
    op = operation.OperationContext(
        operation="harden", playbook="harden.yml", inventory=request.inventory, limit=request.limit,
        extravars=request.extravars, check=request.check, progress=request.progress, state_url=request.state_url,
        record_args={"inputs": request.extravars}, validate_for="harden", lock_sites=not request.check, fleet=read)
    result = operation.run(op)
    found = records.read(result, KIND)
    result.exit_code = found.exit_code(result.exit_code)
    not_serving = [host for host, record in found.found.items()
                   if not record.get("check_mode") and record.get("serving") is False]
    if not_serving and result.exit_code == operation.EXIT_OK:
        result.exit_code = operation.EXIT_HOSTS_FAILED
    return HardenResult(run=result, hosts=found.found, missing=found.missing)
