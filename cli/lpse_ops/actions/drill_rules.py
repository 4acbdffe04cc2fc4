"""The pure rules of a DR drill: whether a site may be drilled, where its API answers, the measured RPO
against the runbook's targets, the ``last_drill`` line, and the runbook's verdict. No I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lpse_ops.actions import runbook_run

DRILLABLE_ENVIRONMENTS = ("lab", "staging")


def drillable(hostvars: dict[str, Any]) -> tuple[bool, str]:
    """Whether a site may be drilled (a fault is injected for real), and why (pure)."""
    allowed = hostvars.get("site_drill_allowed")
    environment = str(hostvars.get("lpse_environment") or "")
    if isinstance(allowed, str):
        allowed = allowed.strip().lower() in ("1", "true", "yes", "on")
    if allowed is True:
        return True, "site_drill_allowed is true"
    if allowed is False:
        return False, "site_drill_allowed is false"
    if environment in DRILLABLE_ENVIRONMENTS:
        return True, f"lpse_environment is {environment}"
    return False, (f"lpse_environment is {environment or 'unset'} and site_drill_allowed is not set: a drill "
                   "injects a real fault, so only lab and staging sites, or sites with site_drill_allowed: true, "
                   "may be drilled")


def site_url(hostvars: dict[str, Any]) -> str:
    """The site's HTTPS base URL as the control machine reaches it (``site_drill_url``; the lab's port)."""
    if hostvars.get("site_drill_url"):
        return str(hostvars["site_drill_url"]).rstrip("/")
    host = hostvars.get("ansible_host") or "127.0.0.1"
    port = hostvars.get("lab_https_port")
    return f"https://{host}:{port}" if port else f"https://{host}"


def parse_at(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def rpo_seconds(acks: list[dict[str, Any]], present: set[int], fault_at: datetime, ack_key: str) -> float | None:
    """The recovery point gap for one kind of write (pure).

    *acks*: the marker log (``seq``, and the ack time under *ack_key*); *present*: the sequence numbers
    found after recovery. The gap runs from the last write acknowledged before *fault_at* to the last
    acknowledged write that is present (0 when that one survived); with none present, back to the first
    write's acknowledgement (a lower bound). None when nothing was acknowledged before the fault.
    """
    before = [ack for ack in acks if ack.get(ack_key) and parse_at(ack[ack_key]) <= fault_at]
    if not before:
        return None
    last = max(before, key=lambda ack: ack["seq"])
    survivors = [ack for ack in before if ack["seq"] in present]
    if not survivors:
        return round((parse_at(last[ack_key]) - parse_at(before[0][ack_key])).total_seconds(), 3)
    newest = max(survivors, key=lambda ack: ack["seq"])
    return round(max(0.0, (parse_at(last[ack_key]) - parse_at(newest[ack_key])).total_seconds()), 3)


def targets_met(measured: dict[str, float | None], targets: dict[str, Any]) -> bool:
    """Every measured figure is at or under its target (a missing measurement is not met) (pure)."""
    for key in ("rto_s", "rpo_db_s", "rpo_docs_s"):
        target = targets.get(key)
        if target is None:
            continue
        if measured.get(key) is None or measured[key] > target:
            return False
    return True


def last_drill_line(finished_at: datetime) -> str:
    """The runbook front-matter line to paste after a drill whose targets were met (pure)."""
    return f"last_drill: {finished_at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


def floor_second(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)


def deadline_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def runbook_verdict(book: runbook_run.RunbookResult) -> tuple[str | None, list[dict[str, Any]]]:
    """Return the step a drill's runbook stopped at (None when it ran to its end) and the steps that failed
    and were passed by their policy, each ``{step, section, exit_code}`` (pure).

    A passed failure does not fail the drill (a diagnosis probe of a broken site is expected to fail; the
    drill's own checks judge the recovery) but the drill records and shows it.
    """
    stopped_at = book.failed_step if book.result in runbook_run.STOPPED_RESULTS else None
    passed = [{"step": outcome.step.id, "section": outcome.step.section, "exit_code": outcome.exit_code}
              for outcome in book.continued_failures]
    return stopped_at, passed
