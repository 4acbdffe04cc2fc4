"""State-store reads for an evidence export (clauses 6.2.19, 13.3, 13.4): one site's records over a period.

Every function takes aware datetimes ``[since, until)`` and a site (its inventory host name) and
returns JSON-ready dicts, oldest first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from lpse_ops.state.models import AuditEntry, RestoreVerification, Run, SiteProbe
from lpse_ops.state.times import as_utc, iso_utc

if TYPE_CHECKING:
    from lpse_ops.state.store import StateStore

SITE_KEYS = ("host", "hosts", "site", "sites", "limit", "target", "targets")
"""Detail keys whose values name the sites an audit entry is about."""


_utc = as_utc
_iso = iso_utc


def _names(value: Any) -> Iterable[str]:
    """Yield the site names a detail value can hold: a name, a list, or an Ansible limit "a,b:c"."""
    if isinstance(value, str):
        for part in value.replace(":", ",").split(","):
            yield part.strip()
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _names(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _names(item)


def mentions(detail: Any, site: str) -> bool:
    """Return True when an audit entry's *detail* is about *site* (under a site key, at any depth)."""
    if isinstance(detail, Mapping):
        for key, value in detail.items():
            if key in SITE_KEYS and site in set(_names(value)):
                return True
            if isinstance(value, Mapping | list) and mentions(value, site):
                return True
    elif isinstance(detail, list):
        return any(mentions(item, site) for item in detail)
    return False


def _entry(row: AuditEntry) -> dict[str, Any]:
    return {"seq": row.seq, "ts": row.ts, "actor": row.actor, "operation": row.operation, "detail": row.detail,
            "prev_hash": row.prev_hash, "hash": row.hash}


def audit_for_site(store: StateStore, site: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Return the audit entries written in [*since*, *until*) that are about *site*, by seq."""
    low = _utc(since).isoformat(timespec="microseconds")
    high = _utc(until).isoformat(timespec="microseconds")
    query = select(AuditEntry).where(AuditEntry.ts >= low, AuditEntry.ts < high).order_by(AuditEntry.seq)
    with store._read() as session:
        return [_entry(row) for row in session.scalars(query) if mentions(row.detail, site)]


def audit_range(store: StateStore, first: int, last: int) -> list[dict[str, Any]]:
    """Return every audit entry with ``first <= seq <= last``, by seq."""
    query = select(AuditEntry).where(AuditEntry.seq >= first, AuditEntry.seq <= last).order_by(AuditEntry.seq)
    with store._read() as session:
        return [_entry(row) for row in session.scalars(query)]


def runs_for_site(store: StateStore, site: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Return the runs started in [*since*, *until*) over *site*, with their host results, and every step
    under them (runs whose parent is one of them, at any depth, wherever they ran), by id."""
    with store._read() as session:
        query = (select(Run).where(Run.started_at >= _utc(since), Run.started_at < _utc(until))
                 .options(selectinload(Run.host_results)).order_by(Run.id))
        chosen = {run.id: run for run in session.scalars(query) if site in (run.hosts or [])}
        parents = set(chosen)
        while parents:
            children = session.scalars(select(Run).where(Run.parent_id.in_(parents))
                                       .options(selectinload(Run.host_results)))
            parents = set()
            for run in children:
                if run.id not in chosen:
                    chosen[run.id] = run
                    parents.add(run.id)
        return [store._run_dict(chosen[key], with_hosts=True) for key in sorted(chosen)]


def verifications_for_site(store: StateStore, site: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Return *site*'s restore verifications made in [*since*, *until*), oldest first."""
    query = (select(RestoreVerification).where(RestoreVerification.host == site,
                                               RestoreVerification.verified_at >= _utc(since),
                                               RestoreVerification.verified_at < _utc(until))
             .order_by(RestoreVerification.verified_at, RestoreVerification.id))
    with store._read() as session:
        return [{"id": row.id, "run_id": row.run_id, "host": row.host, "verified_at": _iso(row.verified_at),
                 "ok": row.ok, "repo": row.repo, "backup_label": row.backup_label,
                 "recovery_point": row.recovery_point, "recovery_time": row.recovery_time,
                 "restore_duration_s": row.restore_duration_s, "checks": row.checks}
                for row in session.scalars(query)]


def probes_for_site(store: StateStore, site: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Return *site*'s fleet probes made in [*since*, *until*), oldest first."""
    query = (select(SiteProbe).where(SiteProbe.host == site, SiteProbe.probed_at >= _utc(since),
                                     SiteProbe.probed_at < _utc(until))
             .order_by(SiteProbe.probed_at, SiteProbe.id))
    with store._read() as session:
        return [{"id": row.id, "run_id": row.run_id, "host": row.host, "probed_at": _iso(row.probed_at),
                 **{key: getattr(row, key) for key in store._PROBE_COLUMNS}} for row in session.scalars(query)]
