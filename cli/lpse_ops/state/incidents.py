"""Incidents and service requests in the state store (clauses 7.1, 7.6, 7.7): records, history, escalations.

Every change is one write transaction that also appends its audit-log entry (``incident.*``), so the
record, its history and the audit chain never disagree. The due times are computed by the caller
(``actions/incidents.py``, in the site's working time) and stored with the record; the breach flags
are then a comparison with the moment of response or resolution, or with *now* while still waiting.

Statuses run ``open -> acknowledged -> in_progress -> resolved -> closed`` (:data:`TRANSITIONS`); the first
change out of ``open`` is the response (``responded_at``); ``resolved -> in_progress`` reopens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from lpse_ops import config
from lpse_ops.state import audit
from lpse_ops.state.models import Incident, IncidentEvent, Run
from lpse_ops.state.store import StateError, StateStore
from lpse_ops.state.times import as_utc, iso_utc

KINDS: tuple[str, ...] = ("incident", "request")
PRIORITIES: tuple[str, ...] = ("P1", "P2", "P3", "P4")
STATUSES: tuple[str, ...] = ("open", "acknowledged", "in_progress", "resolved", "closed")
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "open": ("acknowledged", "in_progress", "resolved"),
    "acknowledged": ("in_progress", "resolved"),
    "in_progress": ("resolved",),
    "resolved": ("closed", "in_progress"),
    "closed": (),
}
"""Which status may follow which: forward only, except a resolved record reopened (back to in_progress)."""
ESCALATIONS: dict[str, str] = {"functional": "7.7.1", "structural": "7.7.2"}
"""Escalation kinds and their clauses: to a technical support tier, or to officials and management."""
WAITING_RESPONSE = ("open",)
OPEN_STATUSES = ("open", "acknowledged", "in_progress")


class IncidentNotFoundError(StateError, LookupError):
    """No incident has the requested id."""


class IncidentChangeError(StateError):
    """The change is not allowed (a status that cannot follow, an unknown run, a bad value); nothing was written."""


_utc = as_utc
_iso = iso_utc


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise IncidentChangeError(f"{name} needs a time zone or an offset, not a naive time")
    return value.astimezone(UTC)


def _event_dict(event: IncidentEvent) -> dict[str, Any]:
    return {"id": event.id, "at": _iso(event.at), "actor": event.actor, "kind": event.kind,
            "from_status": event.from_status, "to_status": event.to_status, "to": event.target,
            "note": event.note, "detail": event.detail}


def breaches(row: Incident, now: datetime) -> tuple[bool, bool]:
    """Return (response breached, resolution breached) of *row* at *now*: late answers, or still waiting past due."""
    responded = _utc(row.responded_at) or now
    resolved = _utc(row.resolved_at) or now
    return responded > _utc(row.response_due), resolved > _utc(row.resolution_due)


def _incident_dict(row: Incident, now: datetime, with_events: bool) -> dict[str, Any]:
    response_breached, resolution_breached = breaches(row, now)
    data: dict[str, Any] = {
        "id": row.id, "kind": row.kind, "site": row.site, "site_name": row.site_name,
        "site_timezone": row.site_timezone, "priority": row.priority, "title": row.title,
        "description": row.description, "impact": row.impact, "status": row.status, "opened_by": row.opened_by,
        "opened_at": _iso(row.opened_at), "responded_at": _iso(row.responded_at),
        "resolved_at": _iso(row.resolved_at), "closed_at": _iso(row.closed_at),
        "response_due": _iso(row.response_due), "resolution_due": _iso(row.resolution_due),
        "response_target_s": row.response_target_s, "resolution_target_s": row.resolution_target_s,
        "response_breached": response_breached, "resolution_breached": resolution_breached,
        "breached": response_breached or resolution_breached,
        "escalations": [{"kind": event.kind.removeprefix("escalation."), "to": event.target, "at": _iso(event.at),
                         "reason": event.note, "actor": event.actor,
                         "clause": ESCALATIONS.get(event.kind.removeprefix("escalation."))}
                        for event in row.events if event.kind.startswith("escalation.")],
        "run_ids": list(row.run_ids or []), "detail": row.detail or {},
    }
    if with_events:
        data["events"] = [_event_dict(event) for event in row.events]
    return data


def _check_runs(session: Session, run_ids: Iterable[int]) -> list[int]:
    wanted = list(dict.fromkeys(int(run_id) for run_id in run_ids))
    if not wanted:
        return []
    found = set(session.scalars(select(Run.id).where(Run.id.in_(wanted))))
    missing = [run_id for run_id in wanted if run_id not in found]
    if missing:
        raise IncidentChangeError(f"run {', '.join(map(str, missing))} not found: see lpse-ops runs list")
    return wanted


def _load(session: Session, incident_id: int) -> Incident:
    row = session.scalar(select(Incident).where(Incident.id == incident_id).options(selectinload(Incident.events)))
    if row is None:
        raise IncidentNotFoundError(f"incident {incident_id} not found: see lpse-ops incident list")
    return row


def _event(session: Session, row: Incident, kind: str, actor: str, at: datetime, **fields: Any) -> IncidentEvent:
    event = IncidentEvent(incident_id=row.id, at=at, actor=actor, kind=kind, **fields)
    row.events.append(event)
    session.flush()
    return event


def create_incident(store: StateStore, *, kind: str, site: str, site_name: str, site_timezone: str, priority: str,
                    title: str, opened_at: datetime, response_due: datetime, resolution_due: datetime,
                    response_target_s: int, resolution_target_s: int, description: str | None = None,
                    impact: str | None = None, run_ids: Iterable[int] = (), detail: Mapping[str, Any] | None = None,
                    actor: str | None = None) -> dict[str, Any]:
    """Record a new incident or request (status ``open``) with its due times, and audit it; return it.

    Raises IncidentChangeError for an unknown kind or priority, a naive time or a run id not in the store.
    """
    if kind not in KINDS:
        raise IncidentChangeError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if priority not in PRIORITIES:
        raise IncidentChangeError(f"priority must be one of {', '.join(PRIORITIES)}, not {priority!r}")
    actor = actor or config.actor()
    opened = _aware(opened_at, "opened_at")
    with store._write() as session:
        row = Incident(kind=kind, site=site, site_name=site_name, site_timezone=site_timezone, priority=priority,
                       title=title, description=description, impact=impact, status="open", opened_by=actor,
                       opened_at=opened, response_due=_aware(response_due, "response_due"),
                       resolution_due=_aware(resolution_due, "resolution_due"),
                       response_target_s=int(response_target_s), resolution_target_s=int(resolution_target_s),
                       run_ids=_check_runs(session, run_ids), detail=audit.normalize_detail(detail or {}), events=[])
        session.add(row)
        session.flush()
        _event(session, row, "opened", actor, opened, to_status="open", note=description,
               detail={"priority": priority, "response_due": _iso(row.response_due),
                       "resolution_due": _iso(row.resolution_due)})
        entry = store._append(session, "incident.open", {
            "incident_id": row.id, "kind": kind, "site": site, "priority": priority, "title": title,
            "response_due": _iso(row.response_due), "resolution_due": _iso(row.resolution_due),
            "run_ids": row.run_ids}, actor)
        result = _incident_dict(row, datetime.now(UTC), with_events=True)
    store._anchor(entry)
    return result


def update_incident(store: StateStore, incident_id: int, *, status: str | None = None, note: str | None = None,
                    priority: str | None = None, response_due: datetime | None = None,
                    resolution_due: datetime | None = None, response_target_s: int | None = None,
                    resolution_target_s: int | None = None, run_ids: Iterable[int] = (),
                    detail: Mapping[str, Any] | None = None, at: datetime | None = None,
                    actor: str | None = None) -> dict[str, Any]:
    """Apply one update (status, priority with its new due times, runs linked, a note) as events, and audit it.

    The first status change out of ``open`` sets ``responded_at``; ``resolved`` sets ``resolved_at`` (cleared
    when reopened); ``closed`` sets ``closed_at``. Raises IncidentNotFoundError, or IncidentChangeError when the
    status cannot follow the current one (nothing is written).
    """
    actor = actor or config.actor()
    moment = _aware(at, "at") if at else datetime.now(UTC)
    with store._write() as session:
        row = _load(session, incident_id)
        changes: dict[str, Any] = {}
        if status is not None and status != row.status:
            if status not in STATUSES:
                raise IncidentChangeError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
            allowed = TRANSITIONS[row.status]
            if status not in allowed:
                raise IncidentChangeError(
                    f"incident {incident_id} is {row.status}: it can become "
                    f"{' or '.join(allowed) if allowed else 'nothing else (closed records stay closed)'}, not {status}")
            if row.status in WAITING_RESPONSE and row.responded_at is None:
                row.responded_at = moment
            if status == "resolved":
                row.resolved_at = moment
            elif status == "in_progress" and row.status == "resolved":
                row.resolved_at = None
            if status == "closed":
                row.closed_at = moment
            _event(session, row, "status", actor, moment, from_status=row.status, to_status=status, note=note)
            changes["status"] = [row.status, status]
            row.status = status
        if priority is not None and priority != row.priority:
            if priority not in PRIORITIES:
                raise IncidentChangeError(f"priority must be one of {', '.join(PRIORITIES)}, not {priority!r}")
            if response_due is None or resolution_due is None:
                raise IncidentChangeError("a new priority needs its new response and resolution due times")
            _event(session, row, "priority", actor, moment, note=note, detail={
                "from": row.priority, "to": priority, "response_due": _iso(response_due),
                "resolution_due": _iso(resolution_due)})
            changes["priority"] = [row.priority, priority]
            row.priority = priority
            row.response_due = _aware(response_due, "response_due")
            row.resolution_due = _aware(resolution_due, "resolution_due")
            row.response_target_s = int(response_target_s if response_target_s is not None else row.response_target_s)
            row.resolution_target_s = int(resolution_target_s if resolution_target_s is not None
                                          else row.resolution_target_s)
        linked = [run_id for run_id in _check_runs(session, run_ids) if run_id not in (row.run_ids or [])]
        if linked:
            row.run_ids = [*(row.run_ids or []), *linked]
            _event(session, row, "link", actor, moment, note=note, detail={"run_ids": linked})
            changes["run_ids"] = linked
        if detail:
            row.detail = audit.normalize_detail({**(row.detail or {}), **detail})
            changes["detail"] = sorted(detail)
        if note and not any(key in changes for key in ("status", "priority", "run_ids")):
            _event(session, row, "note", actor, moment, note=note)
            changes["note"] = True
        if not changes:
            raise IncidentChangeError(f"nothing to change on incident {incident_id}: give a new status, priority, "
                                      "run or note")
        session.flush()
        entry = store._append(session, "incident.update", {"incident_id": row.id, "site": row.site,
                                                           "changes": changes, "note": note}, actor)
        result = _incident_dict(row, datetime.now(UTC), with_events=True)
    store._anchor(entry)
    return result


def escalate_incident(store: StateStore, incident_id: int, *, kind: str, to: str, reason: str,
                      at: datetime | None = None, actor: str | None = None) -> dict[str, Any]:
    """Record a functional (7.7.1, to a technical tier) or structural (7.7.2, to officials) escalation; audit it.

    Raises IncidentChangeError for an unknown kind, an empty target or reason, or a closed record.
    """
    if kind not in ESCALATIONS:
        raise IncidentChangeError(f"escalation must be functional (clause 7.7.1) or structural (7.7.2), not {kind!r}")
    if not to.strip() or not reason.strip():
        raise IncidentChangeError("an escalation names who it goes to (--to) and why (--reason)")
    actor = actor or config.actor()
    moment = _aware(at, "at") if at else datetime.now(UTC)
    with store._write() as session:
        row = _load(session, incident_id)
        if row.status == "closed":
            raise IncidentChangeError(f"incident {incident_id} is closed: open a new one to escalate")
        _event(session, row, f"escalation.{kind}", actor, moment, target=to.strip(), note=reason.strip(),
               detail={"clause": ESCALATIONS[kind]})
        entry = store._append(session, f"incident.escalate.{kind}", {
            "incident_id": row.id, "site": row.site, "kind": kind, "clause": ESCALATIONS[kind], "to": to.strip(),
            "reason": reason.strip()}, actor)
        result = _incident_dict(row, datetime.now(UTC), with_events=True)
    store._anchor(entry)
    return result


def get_incident(store: StateStore, incident_id: int, now: datetime | None = None) -> dict[str, Any]:
    """Return incident *incident_id* with its whole history (``events``); raise IncidentNotFoundError."""
    with store._read() as session:
        return _incident_dict(_load(session, incident_id), _utc(now) or datetime.now(UTC), with_events=True)


def list_incidents(store: StateStore, since: datetime | None = None, until: datetime | None = None, *,
                   now: datetime | None = None, site: str | None = None, kind: str | None = None,
                   status: str | None = None, breached: bool | None = None) -> list[dict[str, Any]]:
    """Return the incidents and requests opened in [*since*, *until*) (naive times are taken as UTC), oldest first.

    Each is a dict with at least ``id, kind, site, priority, title, status, opened_at, responded_at,
    resolved_at, response_due, resolution_due, response_breached, resolution_breached, escalations
    ({kind, to, at, reason}), run_ids``; times are ISO 8601 strings with an offset (UTC). Breaches are
    judged at *now* (default: the present) for records still waiting. *site*, *kind*, *status* and
    *breached* filter further (``status="active"``: not yet resolved).
    """
    moment = _utc(now) or datetime.now(UTC)
    query = select(Incident).options(selectinload(Incident.events)).order_by(Incident.opened_at, Incident.id)
    if since is not None:
        query = query.where(Incident.opened_at >= _utc(since))
    if until is not None:
        query = query.where(Incident.opened_at < _utc(until))
    if site:
        query = query.where(Incident.site == site)
    if kind:
        query = query.where(Incident.kind == kind)
    if status == "active":
        query = query.where(Incident.status.in_(OPEN_STATUSES))
    elif status:
        query = query.where(Incident.status == status)
    with store._read() as session:
        rows = [_incident_dict(row, moment, with_events=False) for row in session.scalars(query)]
    if breached is not None:
        rows = [row for row in rows if row["breached"] == breached]
    return rows
