"""DR drills in the state store (table ``drills``, migration 0007; clauses 10.2, 10.4).

One row per ``lpse-ops drill run``: the scenario and site, whether the recovery worked (and the step that
failed when it did not), the measured RTO and the database and documents RPO in seconds, the runbook's
targets, whether they were met, and the timeline. Other areas (the DRP, the monthly report, the evidence
export) read drills through :func:`list_drills` only.

Every function takes a :class:`~lpse_ops.state.store.StateStore` and uses its write/read sessions; starting
and finishing a drill are audited (``drill.start``, ``drill.finish``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from lpse_ops.state import audit
from lpse_ops.state.models import Drill
from lpse_ops.state.store import StateError, StateStore, _iso, _utc

TARGET_KEYS = ("rto_s", "rpo_db_s", "rpo_docs_s")


def start_drill(store: StateStore, scenario: str, site: str, targets: Mapping[str, Any],
                run_id: int | None = None, started_at: datetime | None = None) -> int:
    """Record the start of a drill of *scenario* on *site* with the runbook's *targets*; return its id."""
    clean_targets = {key: targets.get(key) for key in TARGET_KEYS}
    with store._write() as session:
        row = Drill(scenario=scenario, site=site, run_id=run_id, started_at=_utc(started_at) or datetime.now(UTC),
                    targets=clean_targets, timeline=[])
        session.add(row)
        session.flush()
        entry = store._append(session, "drill.start", {"drill_id": row.id, "scenario": scenario, "site": site,
                                                        "run_id": run_id, "targets": clean_targets}, None)
    store._anchor(entry)
    return row.id


def finish_drill(store: StateStore, drill_id: int, *, ok: bool, failed_step: str | None = None,
                 rto_s: float | None = None, rpo_db_s: float | None = None, rpo_docs_s: float | None = None,
                 met: bool | None = None, timeline: list[Mapping[str, Any]] | None = None,
                 detail: Mapping[str, Any] | None = None, finished_at: datetime | None = None) -> None:
    """Record how drill *drill_id* ended: its outcome, measurements, timeline and detail; audit it."""
    with store._write() as session:
        row = session.get(Drill, drill_id)
        if row is None:
            raise StateError(f"drill {drill_id} not found")
        row.finished_at = _utc(finished_at) or datetime.now(UTC)
        row.ok = ok
        row.failed_step = failed_step
        row.rto_s, row.rpo_db_s, row.rpo_docs_s = rto_s, rpo_db_s, rpo_docs_s
        row.met = met
        row.timeline = audit.normalize_detail({"timeline": list(timeline or [])})["timeline"]
        row.detail = audit.normalize_detail(detail) if detail else None
        session.add(row)
        session.flush()
        entry = store._append(session, "drill.finish", {
            "drill_id": drill_id, "scenario": row.scenario, "site": row.site, "run_id": row.run_id, "ok": ok,
            "failed_step": failed_step, "rto_s": rto_s, "rpo_db_s": rpo_db_s, "rpo_docs_s": rpo_docs_s,
            "met": met}, None)
    store._anchor(entry)


def _drill_dict(row: Drill) -> dict[str, Any]:
    return {"id": row.id, "run_id": row.run_id, "scenario": row.scenario, "site": row.site,
            "started_at": _iso(row.started_at), "finished_at": _iso(row.finished_at), "ok": row.ok,
            "failed_step": row.failed_step, "rto_s": row.rto_s, "rpo_db_s": row.rpo_db_s,
            "rpo_docs_s": row.rpo_docs_s, "targets": {key: (row.targets or {}).get(key) for key in TARGET_KEYS},
            "met": row.met, "timeline": list(row.timeline or []), "detail": row.detail}


def list_drills(store: StateStore, since: datetime | None = None, until: datetime | None = None) -> list[dict]:
    """Every drill started in [*since*, *until*) (aware datetimes; naive ones are taken as UTC), oldest first.

    Each drill: ``id, scenario, site, started_at, finished_at`` (ISO 8601 with offset), ``ok`` (None while it
    runs), ``failed_step``, ``rto_s, rpo_db_s, rpo_docs_s`` (seconds, None when not measured), ``targets``
    ``{rto_s, rpo_db_s, rpo_docs_s}``, ``met``, ``timeline`` (events ``{"at", "event", ...}``), plus ``run_id``
    and ``detail``.
    """
    query = select(Drill).order_by(Drill.started_at, Drill.id)
    if since is not None:
        query = query.where(Drill.started_at >= _utc(since))
    if until is not None:
        query = query.where(Drill.started_at < _utc(until))
    with store._read() as session:
        return [_drill_dict(row) for row in session.scalars(query)]


def get_drill(store: StateStore, drill_id: int) -> dict[str, Any]:
    """Return drill *drill_id* (as in :func:`list_drills`); raise :class:`StateError` if unknown."""
    with store._read() as session:
        row = session.get(Drill, drill_id)
        if row is None:
            raise StateError(f"drill {drill_id} not found")
        return _drill_dict(row)
