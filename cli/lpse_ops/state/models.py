"""Typed SQLAlchemy models of the state store.

The schema itself is owned by the Alembic migrations in ``lpse_ops/migrations/versions``; these
models mirror it for queries and for ``alembic revision --autogenerate``. Later areas (backups,
incidents, ...) add their tables here and a migration ``0002_...`` onwards.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    """Declarative base shared by every state table."""

    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}


class Run(Base):
    """One execution of an operation (install, upgrade, backup, ...) over a set of hosts."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    operation: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(255))
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    hosts: Mapped[list[str]] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_s: Mapped[float | None] = mapped_column(Float)
    result: Mapped[str | None] = mapped_column(String(16))
    artifact_dir: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    """The run this one is a step of: rollout -> wave -> site step; drill -> step."""

    host_results: Mapped[list[RunHost]] = relationship(
        back_populates="run", order_by="RunHost.host", cascade="all, delete-orphan"
    )

    __table_args__ = (
        Index("ix_runs_operation", "operation"),
        Index("ix_runs_started_at", "started_at"),
        Index("ix_runs_parent_id", "parent_id"),
    )


class RunHost(Base):
    """The outcome of one run on one host (Ansible play recap counters plus free-form detail)."""

    __tablename__ = "run_hosts"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    changed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    unreachable: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    run: Mapped[Run] = relationship(back_populates="host_results")


class AuditEntry(Base):
    """One link of the hash-chained, append-only audit log (triggers refuse UPDATE and DELETE)."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[str] = mapped_column(String(40))
    """ISO 8601 UTC timestamp, stored as the exact string that was hashed."""
    actor: Mapped[str] = mapped_column(String(255))
    operation: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("hash", name="uq_audit_log_hash"),)


class RestoreVerification(Base):
    """One real restore test of a backup on one host: result, recovery point and restore duration."""

    __tablename__ = "restore_verifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    host: Mapped[str] = mapped_column(String(255))
    verified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ok: Mapped[bool] = mapped_column(Boolean)
    repo: Mapped[str | None] = mapped_column(String(32))
    backup_label: Mapped[str | None] = mapped_column(String(128))
    recovery_point: Mapped[str | None] = mapped_column(String(255))
    recovery_time: Mapped[str | None] = mapped_column(String(64))
    restore_duration_s: Mapped[float | None] = mapped_column(Float)
    checks: Mapped[list[str] | None] = mapped_column(JSON)
    site_verification_id: Mapped[str | None] = mapped_column(String(64))
    """The site's own id of this verification (``lpse-backup verify``): recorded once, however often it is read."""
    source: Mapped[str | None] = mapped_column(String(16))
    """``control``: started by ``lpse-ops backup verify``; ``site``: the site ran it itself (its timer)."""
    detail: Mapped[dict | None] = mapped_column(JSON)
    """The site's run (trigger, systemd invocation id), start and duration, and the error and code of a failure."""

    __table_args__ = (Index("ix_restore_verifications_host_time", "host", "verified_at"),
                      UniqueConstraint("host", "site_verification_id", name="uq_restore_verifications_site_id"))


class SiteLock(Base):
    """Who is changing a site right now: one install, upgrade, restore or drill per site at a time."""

    __tablename__ = "site_locks"

    site: Mapped[str] = mapped_column(String(255), primary_key=True)
    """The inventory host name of the site."""
    operation: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    holder: Mapped[str] = mapped_column(String(255))
    """The actor holding the lock (``LPSE_OPS_ACTOR`` or ``user@host``)."""
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SiteProbe(Base):
    """One ``fleet status`` probe of one site: headline figures for trends, and every fact and fault."""

    __tablename__ = "site_probes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    host: Mapped[str] = mapped_column(String(255))
    probed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reachable: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(String(32))
    """How the connection failed (unreachable, auth_failed, host_key_mismatch, timeout, ...)."""
    spse_version: Mapped[str | None] = mapped_column(String(64))
    fault_codes: Mapped[list[str]] = mapped_column(JSON)
    disk_used_percent: Mapped[float | None] = mapped_column(Float)
    """The fullest of the probed file systems."""
    memory_available_percent: Mapped[float | None] = mapped_column(Float)
    load_5m: Mapped[float | None] = mapped_column(Float)
    cpus: Mapped[int | None] = mapped_column(Integer)
    duration_s: Mapped[float | None] = mapped_column(Float)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (Index("ix_site_probes_host_time", "host", "probed_at"), Index("ix_site_probes_run_id", "run_id"))


# --- incidents and service requests (migration 0006, issue 11) ---


class Incident(Base):
    """One incident or service request (clause 7.1) of one site: priority, targets, status and links to runs."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    """incident (a disturbance) or request (a service request)."""
    site: Mapped[str] = mapped_column(String(255))
    """The inventory host name of the site."""
    site_name: Mapped[str] = mapped_column(String(255))
    site_timezone: Mapped[str] = mapped_column(String(64))
    """The site's zone when the record was opened: its targets run in the site's working time."""
    priority: Mapped[str] = mapped_column(String(4))
    title: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    impact: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    opened_by: Mapped[str] = mapped_column(String(255))
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    responded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    response_due: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolution_due: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    response_target_s: Mapped[int] = mapped_column(Integer)
    """The priority's response target, in seconds of working time, as it stood when the due times were set."""
    resolution_target_s: Mapped[int] = mapped_column(Integer)
    run_ids: Mapped[list[int]] = mapped_column(JSON)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    events: Mapped[list[IncidentEvent]] = relationship(
        back_populates="incident", order_by="IncidentEvent.id", cascade="all, delete-orphan"
    )

    __table_args__ = (Index("ix_incidents_opened_at", "opened_at"), Index("ix_incidents_site", "site"),
                      Index("ix_incidents_status", "status"))


class IncidentEvent(Base):
    """One change of an incident, with who and when: opened, a status change, an escalation, a note, a link."""

    __tablename__ = "incident_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    """opened, status, priority, note, link, escalation.functional (7.7.1), escalation.structural (7.7.2)."""
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    target: Mapped[str | None] = mapped_column(String(255))
    """Who an escalation went to (a support tier, an official)."""
    note: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    incident: Mapped[Incident] = relationship(back_populates="events")

    __table_args__ = (Index("ix_incident_events_incident", "incident_id", "id"),)



# --- runbook runs and DR drills (migration 0007, issue 9) ---


class Drill(Base):
    """One DR drill on one site: the scenario, whether recovery worked, measured RTO/RPO against targets."""

    __tablename__ = "drills"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    """The ``drill.run`` run (its child is the ``runbook.run``, whose children are the steps)."""
    scenario: Mapped[str] = mapped_column(String(64))
    site: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ok: Mapped[bool | None] = mapped_column(Boolean)
    """Recovery worked and the data checks passed (None while running)."""
    failed_step: Mapped[str | None] = mapped_column(String(128))
    rto_s: Mapped[float | None] = mapped_column(Float)
    rpo_db_s: Mapped[float | None] = mapped_column(Float)
    rpo_docs_s: Mapped[float | None] = mapped_column(Float)
    targets: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The runbook's targets in seconds: rto_s, rpo_db_s, rpo_docs_s."""
    met: Mapped[bool | None] = mapped_column(Boolean)
    timeline: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    """Events in order: {"at": ISO time, "event": name, ...}."""
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (Index("ix_drills_started_at", "started_at"), Index("ix_drills_site", "site"))


# --- compliance audits (migration 0008, issue 10) ---


class ComplianceAudit(Base):
    """One compliance audit of one site: the score, Lynis's index, the failed controls and the drift."""

    __tablename__ = "compliance_audits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    site: Mapped[str] = mapped_column(String(255))
    audited_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    score: Mapped[float | None] = mapped_column(Float)
    """0-100, severity-weighted; None when the site could not be audited."""
    lynis_index: Mapped[int | None] = mapped_column(Integer)
    failed: Mapped[list[str]] = mapped_column(JSON)
    """The ids of the failed controls."""
    drift: Mapped[dict[str, Any]] = mapped_column(JSON)
    """Against the site's previous audit: {"worse": [control ids], "better": [control ids]}."""
    results: Mapped[dict[str, Any]] = mapped_column(JSON)
    """Every control's outcome (status, evidence) and the site's facts."""

    __table_args__ = (Index("ix_compliance_audits_site_time", "site", "audited_at"),)


# --- access certificates, warnings and freezes (migration 0009, issue 10) ---
class AccessGrant(Base):
    """One SSH user certificate signed by the LKPP CA for one engineer (clauses 6.1.3, 6.1.10)."""

    __tablename__ = "access_grants"

    serial: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    """The certificate's serial (ssh-keygen -z), allocated by the store: what the KRL revokes."""
    key_id: Mapped[str] = mapped_column(String(255))
    engineer: Mapped[str] = mapped_column(String(255))
    key_fingerprint: Mapped[str] = mapped_column(String(128))
    principals: Mapped[list[str]] = mapped_column(JSON)
    sites: Mapped[list[str]] = mapped_column(JSON)
    valid_after: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_before: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(Text)
    granted_by: Mapped[str] = mapped_column(String(255))
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    certificate: Mapped[str] = mapped_column(Text)
    """The certificate itself (public: it is useless without the engineer's private key)."""
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_by: Mapped[str | None] = mapped_column(String(255))
    revoke_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_access_grants_engineer", "engineer"),
                      UniqueConstraint("key_id", name="uq_access_key_id"))


class SiteSanction(Base):
    """A warning, freeze or unfreeze of one site's SPSE by LKPP (clause 6.2.20), with its reason."""

    __tablename__ = "site_sanctions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(16))
    """warn, freeze or unfreeze."""
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(255))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    applied: Mapped[bool] = mapped_column(Boolean)
    """The site confirmed the action (its result record); false: it failed or was not reached."""
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))

    __table_args__ = (Index("ix_site_sanctions_site_at", "site", "at"),)


# --- audit-log witness and evidence exports (migration 0010, issue 11) ---


class AuditWitnessProgress(Base):
    """How far one witness target (endpoint/bucket/prefix) has received this store's audit-log head.

    Bookkeeping for the lag and the catch-up, not evidence: the locked objects in the bucket are.
    """

    __tablename__ = "audit_witness_progress"

    target: Mapped[str] = mapped_column(String(512), primary_key=True)
    witnessed_seq: Mapped[int | None] = mapped_column(Integer)
    """The newest head seq written to the witness (only ever moves forward)."""
    witnessed_hash: Mapped[str | None] = mapped_column(String(64))
    witnessed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    """Why the last attempt failed (None after a success)."""
    failures: Mapped[int] = mapped_column(Integer, default=0)
    """Failed attempts since the last success."""
