"""A site's state as an upgrade plan judges it: what the site reported (the fleet probe, or the result record of
``playbooks/site_state.yml`` for AWX), turned into a :class:`SiteState`; pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lpse_ops.actions import operation, records
from lpse_ops.backends import ssh_probe

RESULT_KIND = "site_state"
"""The kind of result record ``playbooks/site_state.yml`` emits per host (its fields: docs/upgrade.md)."""


@dataclass
class SiteState:
    """What a site reported (``site_state.yml``), plus inventory and state-store facts about it."""

    host: str
    reachable: bool = True
    version: str | None = None
    schema_version: int | None = None
    health: str | None = None
    health_reason: str | None = None
    free_bytes: int | None = None
    frozen: bool = False
    error: str | None = None
    verification: dict | None = None
    lock: dict | None = None
    tool_sha256: str | None = None

    def as_dict(self) -> dict:
        return {"host": self.host, "reachable": self.reachable, "version": self.version,
                "schema_version": self.schema_version, "health": self.health, "health_reason": self.health_reason,
                "free_bytes": self.free_bytes, "frozen": self.frozen, "error": self.error,
                "verification": {key: self.verification.get(key) for key in (
                    "id", "site_verification_id", "verified_at", "ok", "source", "backup_label")}
                if self.verification else None}


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def flag(value: Any) -> bool:
    """Read a yes/no fact that Ansible may render as a bool or as text ("True", "false", "yes")."""
    return value is True or str(value).strip().lower() in ("true", "yes", "1")


def parse_site_state(host: str, record: Mapping[str, Any] | None, *, unreachable: bool = False,
                     messages: Iterable[str] = ()) -> SiteState:
    """Turn one host's ``site_state`` result record into a SiteState.

    No record, or one whose ``complete`` is false (a reading failed), gives a SiteState with ``error``:
    the run's *messages*, else what was missing.
    """
    if unreachable:
        return SiteState(host, reachable=False, error="; ".join(messages) or "unreachable")
    if not isinstance(record, Mapping) or "version" not in record or not flag(record.get("complete")):
        missing = "no site_state result record from the site" if not isinstance(record, Mapping) else (
            "the site_state result record is incomplete (a reading failed)")
        return SiteState(host, error="; ".join(messages) or missing)
    version = str(record.get("version") or "").strip() or None
    reason = record.get("health_reason")
    return SiteState(host, version=version, schema_version=_int_or_none(record.get("schema_version")),
                     health=str(record.get("health") or "") or None, health_reason=str(reason) if reason else None,
                     free_bytes=_int_or_none(record.get("free_bytes")), frozen=flag(record.get("frozen")))


def states_from_run(result: operation.OperationResult) -> dict[str, SiteState]:
    """Return each target host's SiteState from the result records of a ``site_state.yml`` run.

    A host without a record is kept, with why (unreachable, failed, or nothing reported) as its error.
    """
    found = records.read(result, RESULT_KIND)
    states: dict[str, SiteState] = {}
    for host in sorted(set(result.hosts) | set(found.found) | set(found.missing)):
        tracked = result.tracker.hosts.get(host)
        if tracked is not None and tracked.unreachable:
            states[host] = parse_site_state(host, None, unreachable=True, messages=tracked.messages)
        elif host in found.missing:
            states[host] = SiteState(host, error=found.missing[host])
        else:
            states[host] = parse_site_state(host, found.found[host], messages=tracked.messages if tracked else ())
    return states


def state_from_probe(probe: ssh_probe.SiteProbe) -> SiteState:
    """Turn one site's probe (the fleet view's read-only SSH reading) into the SiteState a plan judges; pure.

    The same facts ``playbooks/site_state.yml`` gathers for AWX: the version (``current/VERSION``, else
    the release folder ``current`` points at), SPSE's own health and schema version, the free space of
    the SPSE folder and the freeze flag.
    """
    if not probe.reachable:
        return SiteState(probe.host, reachable=False, error=f"{probe.error}: {probe.error_detail or ''}".strip(": "))
    if probe.error_detail is not None:
        return SiteState(probe.host, error=probe.error_detail)
    health = probe.spse_health
    return SiteState(probe.host, version=probe.spse_version or probe.release_link,
                     schema_version=probe.schema_version,
                     health=str(health.get("status") or "") or None if health else "unanswered",
                     health_reason=str(health.get("reason")) if health and health.get("reason") else (
                         None if health else "SPSE's /health did not answer"),
                     free_bytes=probe.spse_free_bytes, frozen=bool(probe.frozen), tool_sha256=probe.tool_sha256)
