"""Time-bounded reads of the state store for the reports (clauses 6.2.16, 6.2.17, 8.1).

The store's own ``list_*`` methods return the newest N rows; a monthly report needs every row of a
period instead, and a 600-site fleet probed every hour has too many probes to page through. Each
function takes a :class:`~lpse_ops.state.store.StateStore` and a half-open period [*since*, *until*)
of aware datetimes (naive ones are taken as UTC), reads through the store's read session, and
returns plain dicts with ISO 8601 UTC times, oldest first. Read-only: nothing here writes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import selectinload

from lpse_ops.state.models import RestoreVerification, Run, SiteProbe
from lpse_ops.state.store import StateStore, _iso, _utc

PROBE_FIGURES = ("reachable", "error", "spse_version", "disk_used_percent", "memory_available_percent", "load_5m",
                 "cpus")
"""The headline columns of a probe that the reports read (not the whole ``facts`` document)."""


def runs_between(store: StateStore, since: datetime | None, until: datetime | None,
                 operations: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Return the runs started in [*since*, *until*) (of *operations* when given), with their host results."""
    query = select(Run).options(selectinload(Run.host_results)).order_by(Run.started_at, Run.id)
    if operations:
        query = query.where(Run.operation.in_(operations))
    if since is not None:
        query = query.where(Run.started_at >= _utc(since))
    if until is not None:
        query = query.where(Run.started_at < _utc(until))
    with store._read() as session:
        return [StateStore._run_dict(run, with_hosts=True) for run in session.scalars(query)]


def probes_between(store: StateStore, since: datetime | None, until: datetime | None) -> list[dict[str, Any]]:
    """Return the site probes taken in [*since*, *until*): ``host, probed_at`` and :data:`PROBE_FIGURES`."""
    columns = [getattr(SiteProbe, name) for name in PROBE_FIGURES]
    query = select(SiteProbe.host, SiteProbe.probed_at, *columns).order_by(SiteProbe.probed_at, SiteProbe.id)
    if since is not None:
        query = query.where(SiteProbe.probed_at >= _utc(since))
    if until is not None:
        query = query.where(SiteProbe.probed_at < _utc(until))
    with store._read() as session:
        return [{"host": row.host, "probed_at": _iso(row.probed_at),
                 **{name: getattr(row, name) for name in PROBE_FIGURES}} for row in session.execute(query)]


def latest_probes_before(store: StateStore, until: datetime) -> dict[str, dict[str, Any]]:
    """Return each site's newest reachable probe taken before *until* (for a site not probed in the period)."""
    newest = (select(SiteProbe.host, func.max(SiteProbe.probed_at).label("at"))
              .where(SiteProbe.probed_at < _utc(until), SiteProbe.reachable.is_(True))
              .group_by(SiteProbe.host).subquery())
    query = (select(SiteProbe.host, SiteProbe.probed_at, SiteProbe.spse_version)
             .join(newest, and_(SiteProbe.host == newest.c.host, SiteProbe.probed_at == newest.c.at))
             .where(SiteProbe.reachable.is_(True)))
    with store._read() as session:
        return {row.host: {"host": row.host, "probed_at": _iso(row.probed_at), "spse_version": row.spse_version}
                for row in session.execute(query)}


def verifications_between(store: StateStore, since: datetime | None,
                          until: datetime | None) -> list[dict[str, Any]]:
    """Return the restore verifications done in [*since*, *until*)."""
    query = select(RestoreVerification).order_by(RestoreVerification.verified_at, RestoreVerification.id)
    if since is not None:
        query = query.where(RestoreVerification.verified_at >= _utc(since))
    if until is not None:
        query = query.where(RestoreVerification.verified_at < _utc(until))
    with store._read() as session:
        return [{"id": row.id, "run_id": row.run_id, "host": row.host, "verified_at": _iso(row.verified_at),
                 "ok": row.ok, "repo": row.repo, "backup_label": row.backup_label,
                 "recovery_time": row.recovery_time, "restore_duration_s": row.restore_duration_s,
                 "source": row.source or "control", "site_verification_id": row.site_verification_id}
                for row in session.scalars(query)]
