"""Access certificates, warnings and freezes in the state store (tables ``access_grants`` and
``site_sanctions``, migration 0009; clauses 6.1.3, 6.1.10, 6.2.19, 6.2.20).

A grant is one SSH user certificate the LKPP CA signed for one engineer: its serial (allocated here, under
the store's write lock, so two operators never sign the same serial), key id, principals, sites, validity
window, reason, and the certificate; a revocation marks it. A sanction is one warning, freeze or unfreeze
of one site with its reason and whether the site confirmed it. Every write is audited (``access.grant``,
``access.revoke``, ``site.warn``, ``site.freeze``, ``site.unfreeze``) in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select

from lpse_ops import config
from lpse_ops.state.models import AccessGrant, SiteSanction
from lpse_ops.state.store import StateError, StateStore, _iso, _utc

SANCTIONS = ("warn", "freeze", "unfreeze")


@dataclass
class SignedCertificate:
    """What the signer returns for a serial: the certificate text and what it holds."""

    key_id: str
    certificate: str
    key_fingerprint: str
    principals: list[str]
    valid_after: datetime
    valid_before: datetime


def record_grant(store: StateStore, *, engineer: str, sites: list[str], reason: str,
                 sign: Callable[[int], SignedCertificate], actor: str | None = None) -> dict[str, Any]:
    """Allocate the next serial, call ``sign(serial)`` and record the grant, all in one locked transaction.

    *sign* runs while the store's write lock is held (ssh-keygen takes milliseconds), so serials are unique
    across operators sharing a store; if it raises, nothing is recorded and the serial stays free.
    Returns the grant as :func:`grant_dict`.
    """
    actor = actor or config.actor()
    with store._write() as session:
        serial = (session.scalar(select(func.max(AccessGrant.serial))) or 0) + 1
        signed = sign(serial)
        row = AccessGrant(serial=serial, key_id=signed.key_id, engineer=engineer,
                          key_fingerprint=signed.key_fingerprint, principals=list(signed.principals),
                          sites=list(sites), valid_after=_utc(signed.valid_after),
                          valid_before=_utc(signed.valid_before), reason=reason, granted_by=actor,
                          granted_at=datetime.now(UTC), certificate=signed.certificate)
        session.add(row)
        session.flush()
        grant = grant_dict(row)
        detail = {key: grant[key] for key in ("serial", "key_id", "engineer", "key_fingerprint", "principals",
                                              "sites", "valid_after", "valid_before", "reason")}
        entry = store._append(session, "access.grant", detail, actor)
    store._anchor(entry)
    return grant


def grant_dict(row: AccessGrant, now: datetime | None = None) -> dict[str, Any]:
    """Return *row* as a plain dict, with ``expired`` and ``active`` computed at *now* (default: now, UTC)."""
    now = now or datetime.now(UTC)
    valid_before = _utc(row.valid_before)
    expired = now >= valid_before
    return {"serial": row.serial, "key_id": row.key_id, "engineer": row.engineer,
            "key_fingerprint": row.key_fingerprint, "principals": list(row.principals), "sites": list(row.sites),
            "valid_after": _iso(row.valid_after), "valid_before": _iso(row.valid_before), "reason": row.reason,
            "granted_by": row.granted_by, "granted_at": _iso(row.granted_at), "certificate": row.certificate,
            "revoked": row.revoked_at is not None, "revoked_at": _iso(row.revoked_at), "revoked_by": row.revoked_by,
            "revoke_reason": row.revoke_reason, "expired": expired,
            "active": row.revoked_at is None and not expired and now >= _utc(row.valid_after)}


def list_grants(store: StateStore, *, engineer: str | None = None, include_ended: bool = True) -> list[dict[str, Any]]:
    """Return the grants (newest first), of *engineer* only when given; without *include_ended*, only those
    neither revoked nor expired."""
    query = select(AccessGrant).order_by(AccessGrant.serial.desc())
    if engineer:
        query = query.where(AccessGrant.engineer == engineer)
    with store._read() as session:
        grants = [grant_dict(row) for row in session.scalars(query)]
    return grants if include_ended else [g for g in grants if not g["revoked"] and not g["expired"]]


def find_grants(store: StateStore, *, engineer: str | None = None, key_id: str | None = None,
                serial: int | None = None) -> list[dict[str, Any]]:
    """Return the grants matching any of *engineer*, *key_id* or *serial* (those given), by serial."""
    conditions = []
    if engineer:
        conditions.append(AccessGrant.engineer == engineer)
    if key_id:
        conditions.append(AccessGrant.key_id == key_id)
    if serial is not None:
        conditions.append(AccessGrant.serial == serial)
    if not conditions:
        raise StateError("name an engineer, a certificate id or a serial")
    with store._read() as session:
        return [grant_dict(row) for row in session.scalars(
            select(AccessGrant).where(or_(*conditions)).order_by(AccessGrant.serial))]


def mark_revoked(store: StateStore, serials: list[int], reason: str, *, krl_version: int,
                 actor: str | None = None) -> list[dict[str, Any]]:
    """Mark *serials* revoked (those not yet revoked) and audit it; return the grants marked."""
    actor = actor or config.actor()
    now = datetime.now(UTC)
    with store._write() as session:
        rows = list(session.scalars(select(AccessGrant).where(AccessGrant.serial.in_(serials),
                                                              AccessGrant.revoked_at.is_(None))))
        for row in rows:
            row.revoked_at, row.revoked_by, row.revoke_reason = now, actor, reason
        session.flush()
        marked = [grant_dict(row, now) for row in rows]
        entry = store._append(session, "access.revoke", {
            "serials": [g["serial"] for g in marked], "key_ids": [g["key_id"] for g in marked],
            "engineers": sorted({g["engineer"] for g in marked}), "reason": reason, "krl_version": krl_version}, actor)
    store._anchor(entry)
    return marked


def revoked_serials(store: StateStore) -> list[int]:
    """Return every revoked serial, ascending: what the KRL must list."""
    with store._read() as session:
        return list(session.scalars(select(AccessGrant.serial).where(AccessGrant.revoked_at.is_not(None))
                                    .order_by(AccessGrant.serial)))


def record_sanction(store: StateStore, *, site: str, action: str, reason: str, applied: bool,
                    run_id: int | None, actor: str | None = None, at: datetime | None = None) -> dict[str, Any]:
    """Record a warning, freeze or unfreeze of *site* (audited as ``site.<action>``); return it."""
    if action not in SANCTIONS:
        raise ValueError(f"action must be one of {', '.join(SANCTIONS)}, not {action!r}")
    actor = actor or config.actor()
    with store._write() as session:
        row = SiteSanction(site=site, action=action, reason=reason, actor=actor, at=_utc(at) or datetime.now(UTC),
                           applied=applied, run_id=run_id)
        session.add(row)
        session.flush()
        sanction = _sanction_dict(row)
        entry = store._append(session, f"site.{action}", {key: sanction[key] for key in (
            "id", "site", "reason", "applied", "run_id", "at")} | {"clause": "6.2.20"}, actor)
    store._anchor(entry)
    return sanction


def _sanction_dict(row: SiteSanction) -> dict[str, Any]:
    return {"id": row.id, "site": row.site, "action": row.action, "reason": row.reason, "actor": row.actor,
            "at": _iso(row.at), "applied": bool(row.applied), "run_id": row.run_id}


def list_sanctions(store: StateStore, site: str | None = None) -> list[dict[str, Any]]:
    """Return every warning, freeze and unfreeze (of *site* only when given), oldest first."""
    query = select(SiteSanction).order_by(SiteSanction.at, SiteSanction.id)
    if site:
        query = query.where(SiteSanction.site == site)
    with store._read() as session:
        return [_sanction_dict(row) for row in session.scalars(query)]


def freeze_status(store: StateStore) -> dict[str, dict[str, Any]]:
    """Return, per site with any sanction: ``frozen`` (its last applied freeze/unfreeze was a freeze), the
    freeze in force (or null), the number of warnings and the last warning."""
    status: dict[str, dict[str, Any]] = {}
    for sanction in list_sanctions(store):
        site = status.setdefault(sanction["site"], {"site": sanction["site"], "frozen": False, "freeze": None,
                                                    "warnings": 0, "last_warning": None, "last_failed": None})
        if not sanction["applied"]:
            site["last_failed"] = sanction
            continue
        if sanction["action"] == "warn":
            site["warnings"] += 1
            site["last_warning"] = sanction
        else:
            site["frozen"] = sanction["action"] == "freeze"
            site["freeze"] = sanction if site["frozen"] else None
    return status
