"""Compliance audits in the state store (issue 10; clauses 6.2.7, 6.2.19).

Other areas (reports, the fleet view) read audits through :func:`list_audits`; the audit action
writes them through :func:`record_audit`, which also computes the drift against the site's previous
audit.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from lpse_ops.state import audit as audit_chain
from lpse_ops.state.models import ComplianceAudit
from lpse_ops.state.store import StateStore, _iso, _utc


def drift_between(previous_failed: list[str] | None, failed: list[str]) -> dict[str, list[str]]:
    """Return ``{"worse": [...], "better": [...]}``: controls failing now and not before, and the reverse.

    With no previous audit (*previous_failed* None) nothing is "worse": the first audit is the baseline.
    """
    if previous_failed is None:
        return {"worse": [], "better": []}
    before, now = set(previous_failed), set(failed)
    return {"worse": sorted(now - before), "better": sorted(before - now)}


def _audit_dict(row: ComplianceAudit, with_results: bool = False) -> dict[str, Any]:
    data = {"id": row.id, "run_id": row.run_id, "site": row.site, "audited_at": _iso(row.audited_at),
            "score": row.score, "lynis_index": row.lynis_index, "failed": list(row.failed or []),
            "drift": {"worse": list((row.drift or {}).get("worse", [])),
                      "better": list((row.drift or {}).get("better", []))}}
    if with_results:
        data["results"] = row.results
    return data


def previous_audit(store: StateStore, site: str) -> dict[str, Any] | None:
    """Return the site's newest audit that has a score (an unreachable site's row has none), or None."""
    query = (select(ComplianceAudit).where(ComplianceAudit.site == site, ComplianceAudit.score.is_not(None))
             .order_by(ComplianceAudit.id.desc()).limit(1))
    with store._read() as session:
        row = session.scalars(query).first()
        return _audit_dict(row, with_results=True) if row else None


def record_audit(store: StateStore, site: str, *, score: float | None, failed: list[str],
                 lynis_index: int | None = None, results: Mapping[str, Any] | None = None,
                 run_id: int | None = None, audited_at: datetime | None = None) -> dict[str, Any]:
    """Store one site's audit, with its drift against the previous scored audit; return it as list_audits does.

    Times are stored in UTC (SQLite keeps no zone: a site's local time stored as given would compare wrong).
    """
    previous = previous_audit(store, site)
    drift = drift_between(previous["failed"] if previous else None, failed) if score is not None else \
        {"worse": [], "better": []}
    with store._write() as session:
        row = ComplianceAudit(site=site, run_id=run_id, audited_at=_utc(audited_at or datetime.now(UTC)),
                              score=None if score is None else float(score),
                              lynis_index=lynis_index, failed=sorted(failed), drift=drift,
                              results=audit_chain.normalize_detail(results or {}))
        session.add(row)
        session.flush()
        return _audit_dict(row)


def list_audits(store: StateStore, since: datetime | None = None, until: datetime | None = None,
                site: str | None = None, with_results: bool = False) -> list[dict[str, Any]]:
    """Return audits (oldest first) with ``audited_at`` in [*since*, *until*), optionally of one *site*.

    Each: ``id, run_id, site, audited_at`` (ISO, UTC), ``score`` (0-100 or None when unreachable),
    ``lynis_index`` (or None), ``failed`` (control ids), ``drift`` ``{worse: [...], better: [...]}``;
    ``results`` too with *with_results*.
    """
    query = select(ComplianceAudit).order_by(ComplianceAudit.audited_at, ComplianceAudit.id)
    if since is not None:
        query = query.where(ComplianceAudit.audited_at >= _utc(since))
    if until is not None:
        query = query.where(ComplianceAudit.audited_at < _utc(until))
    if site:
        query = query.where(ComplianceAudit.site == site)
    with store._read() as session:
        return [_audit_dict(row, with_results) for row in session.scalars(query)]
