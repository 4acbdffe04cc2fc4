"""Warn, freeze and unfreeze an LPSE's SPSE (clause 6.2.20; docs/freeze.md).

:func:`apply` runs ``playbooks/freeze.yml`` on one site and records the sanction (state store table
``site_sanctions`` and the audit log, with its reason and whether the site confirmed it). A frozen site
answers writes with 423 and a notice in Bahasa Indonesia (nginx), keeps serving reads, is refused by the
upgrade plan and by install, and keeps its backups running. :func:`status` and :func:`history` read it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lpse_ops import config
from lpse_ops.actions import fleet, operation, records
from lpse_ops.state import StateStore
from lpse_ops.state import access as sanction_state

KIND = "freeze"
"""The kind of result record ``playbooks/freeze.yml`` emits per host."""
PLAYBOOK = "freeze.yml"
ACTIONS = sanction_state.SANCTIONS


class FreezeRefused(Exception):
    """Nothing was run: the input is wrong; the message says what to do."""


@dataclass
class SanctionRequest:
    """Apply *action* (warn, freeze, unfreeze) to the one site *site* of *inventory*, because *reason*."""

    action: str
    site: str
    reason: str
    inventory: Path
    progress: operation.ProgressFactory | None = None
    state_url: str | None = None


@dataclass
class SanctionResult:
    """The run, the site's result record (or why none), and the sanction as recorded."""

    run: operation.OperationResult
    record: dict | None
    missing: str | None
    sanction: dict

    @property
    def exit_code(self) -> int:
        if self.record is None:
            return self.run.exit_code or operation.EXIT_HOSTS_FAILED
        return self.run.exit_code if self.sanction["applied"] else (self.run.exit_code or operation.EXIT_HOSTS_FAILED)

    def as_dict(self) -> dict:
        return {**self.run.as_dict(), "record": self.record, "missing_record": self.missing,
                "sanction": self.sanction}


def confirmed(action: str, record: dict | None) -> bool:
    """Return True when the site's *record* shows *action* done (pure): every task ran and the freeze file
    (freeze, unfreeze) or the warning file (warn) is as the action leaves it."""
    if not record or not record.get("complete") or record.get("action") != action:
        return False
    if action == "freeze":
        return record.get("frozen") is True
    if action == "unfreeze":
        return record.get("frozen") is False
    return record.get("warned") is True


def check(request: SanctionRequest) -> list[str]:
    """Return what is wrong with *request* (empty when it can run)."""
    problems = []
    if request.action not in ACTIONS:
        problems.append(f"action must be one of {', '.join(ACTIONS)}")
    if len(request.reason.strip()) < 5:
        problems.append("--reason must say why (it is recorded and shown on the site: clause 6.2.20)")
    if not request.site or any(c in request.site for c in ",:*!&[]") or request.site in ("all", "sites"):
        problems.append("--site must name one site (an inventory host), not a pattern or group")
    return problems


def apply(request: SanctionRequest) -> SanctionResult:
    """Run the action on the site, then record it (applied or not) with its reason; return what happened.

    Raises FreezeRefused on bad input or a site the inventory does not have (nothing run, nothing recorded).
    """
    problems = check(request)
    if problems:
        raise FreezeRefused("nothing was done:\n  - " + "\n  - ".join(problems))
    try:
        read = fleet.read_site(request.inventory, request.site)
    except operation.OperationRefused as error:
        raise FreezeRefused(str(error)) from error
    if read is None:
        raise FreezeRefused(f"{request.site} is not a site of inventory {request.inventory}")
    actor = config.actor()
    at = datetime.now(UTC).replace(microsecond=0)
    op = operation.OperationContext(
        operation=f"site.{request.action}", playbook=PLAYBOOK, inventory=request.inventory, limit=request.site,
        extravars={"freeze_action": request.action, "freeze_reason": request.reason.strip(), "freeze_actor": actor,
                   "freeze_at": at.strftime("%Y-%m-%dT%H:%M:%SZ")},
        progress=request.progress, state_url=request.state_url, validate_for="validate", fleet=read,
        record_args={"action": request.action, "reason": request.reason.strip(), "clause": "6.2.20"})
    try:
        result = operation.run(op)
    except operation.OperationRefused as error:
        raise FreezeRefused(str(error)) from error
    found = records.read(result, KIND)
    record = found.found.get(request.site)
    with StateStore.open(request.state_url or config.state_url()) as store:
        sanction = sanction_state.record_sanction(
            store, site=request.site, action=request.action, reason=request.reason.strip(),
            applied=confirmed(request.action, record), run_id=result.run_id, actor=actor, at=at)
    return SanctionResult(run=result, record=record, missing=found.missing.get(request.site), sanction=sanction)


def status(state_url: str | None = None) -> list[dict]:
    """Return each site with a recorded sanction: frozen or not (the freeze in force), warnings, last failure."""
    with StateStore.open(state_url or config.state_url()) as store:
        return sorted(sanction_state.freeze_status(store).values(), key=lambda s: (not s["frozen"], s["site"]))


def history(state_url: str | None = None, site: str | None = None) -> list[dict]:
    """Return every warning, freeze and unfreeze (of *site* only when given), oldest first."""
    with StateStore.open(state_url or config.state_url()) as store:
        return sanction_state.list_sanctions(store, site)
