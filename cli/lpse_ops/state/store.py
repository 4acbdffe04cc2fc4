"""The state store: runs, per-host results and the audit log, in SQLite or PostgreSQL.

``StateStore.open()`` migrates the database to the newest Alembic revision every time (cheap
when already there), so an upgraded lpse-ops brings its schema along. The default is an SQLite
file in the lpse-ops home; a shared PostgreSQL store (psycopg 3 ships with lpse-ops) needs
a URL such as ``postgresql+psycopg://lpse_ops@db.example/lpse_ops`` (``postgresql://`` is read as
psycopg 3 too).

Concurrency: every write runs in one transaction that first takes the store's write lock
(SQLite ``BEGIN IMMEDIATE``; PostgreSQL a transaction-scoped advisory lock, which needs no
UPDATE/TRUNCATE privilege on ``audit_log``), so two lpse-ops processes never fork the audit chain.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.pool import StaticPool

from lpse_ops import config
from lpse_ops.state import audit
from lpse_ops.state.models import AuditEntry, RestoreVerification, Run, RunHost, SiteLock, SiteProbe
from lpse_ops.state.times import as_utc, iso_utc

RESULTS = ("ok", "failed", "error", "aborted")
"""The values of ``runs.result``."""

AUDIT_LOCK_KEY = 0x4C50_5345_0A0D_17
"""PostgreSQL advisory lock key serialising writers of one store ("LPSE" ...)."""

_WRITE = "lpse_ops_write"
"""Execution option marking a connection whose transaction must take the write lock."""

_MIGRATE_LOCK = threading.Lock()
"""Alembic's ``context`` is process-global: one migration at a time per process."""

PSYCOPG_HINT = "PostgreSQL needs the psycopg driver: pip install 'psycopg[binary]'"


class StateError(Exception):
    """The state store cannot do what was asked (bad URL, unreachable database, unknown run, ...)."""


class RunNotFoundError(StateError, LookupError):
    """No run has the requested id."""


def lock_holder(lock: Mapping[str, Any]) -> str:
    """Return "SITE is locked by HOLDER since TIME UTC for OPERATION (run N)" for a ``list_locks`` row."""
    since = datetime.fromisoformat(lock["acquired_at"]).astimezone(UTC) if lock.get("acquired_at") else None
    run = f" (run {lock['run_id']})" if lock.get("run_id") is not None else ""
    return (f"{lock['site']} is locked by {lock['holder']} since "
            f"{since.strftime('%Y-%m-%d %H:%M:%S UTC') if since else '?'} for {lock['operation']}{run}")


def describe_lock(lock: Mapping[str, Any]) -> str:
    """Return who holds *lock* (a ``list_locks`` row), since when, and what the operator can do about it."""
    return (f"{lock_holder(lock)}: wait for it, or `lpse-ops lock release {lock['site']} --force` "
            "if that run is dead")


class SiteLockedError(StateError):
    """A site is locked by another operation; ``locks`` holds every lock in the way (``list_locks`` rows)."""

    def __init__(self, locks: list[dict[str, Any]]) -> None:
        self.locks = locks
        super().__init__("\n".join(describe_lock(lock) for lock in locks))


class LockNotHeldError(StateError):
    """A release was refused: the site is not locked, or another actor holds it and ``force`` was not given."""


def _normalize_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise StateError(f"not a database URL: {url!r} ({error})") from error
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StateError(f"the state store supports SQLite and PostgreSQL URLs, not {parsed.drivername}")
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        database = Path(parsed.database).expanduser()
        database.parent.mkdir(parents=True, exist_ok=True)
        parsed = parsed.set(database=str(database.resolve()))
    return parsed


def _is_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def engine_for(url: str | URL) -> Engine:
    """Return an engine for *url* with the store's transaction and locking behaviour."""
    parsed = _normalize_url(url) if isinstance(url, str) else url
    try:
        if parsed.get_backend_name() == "sqlite":
            options: dict[str, Any] = {"connect_args": {"timeout": 30}}
            if _is_memory(parsed):
                options = {"connect_args": {"check_same_thread": False}, "poolclass": StaticPool}
            else:  # created 0600 before SQLite makes it 0644: it holds the runs and the audit log
                with suppress(FileExistsError):
                    os.close(os.open(parsed.database, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            engine = create_engine(parsed, **options)
            _sqlite_transactions(engine)
        else:
            # A server that silently drops packets must not hang an operator's command.
            engine = create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    except (ImportError, NoSuchModuleError) as error:
        hint = PSYCOPG_HINT if parsed.get_backend_name() == "postgresql" else str(error)
        raise StateError(f"cannot load the database driver for {parsed.drivername}: {hint}") from error
    return engine


def _sqlite_transactions(engine: Engine) -> None:
    """Let SQLAlchemy, not pysqlite, emit BEGIN, so that writes can BEGIN IMMEDIATE."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # no implicit BEGIN from the driver
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.get_execution_options().get(_WRITE) else "BEGIN")


def migrations_dir() -> Path:
    """Return the folder of the packaged Alembic migrations (works from an installed wheel)."""
    return Path(str(resources.files("lpse_ops") / "migrations"))


# The newest migration (migrations/versions): a store already there is opened without loading Alembic,
# which costs every lpse-ops command about half a second of CPU. A unit test holds it equal to Alembic's head.
HEAD_REVISION = "0011"


def alembic_config(url: str | URL | None = None):
    """Return an Alembic configuration built in code (no ``alembic.ini`` needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if url is not None:
        rendered = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


_utc = as_utc
_iso = iso_utc


def _count(value: Any) -> int:
    """Return an Ansible recap counter (int, bool or missing) as an int."""
    if value is None:
        return 0
    return int(value)


class StateStore:
    """Runs, host results and the hash-chained audit log of lpse-ops, behind one small API."""

    def __init__(self, engine: Engine, url: URL, head_path: Path | None) -> None:
        self.engine = engine
        self.url = url
        self.head_path = head_path

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str | None = None, head_path: str | Path | None = None) -> StateStore:
        """Open the store at *url* (default: ``config.state_url()``) and migrate it to the newest revision.

        *head_path* is the audit head anchor file, outside the database; by default
        ``<home>/audit-head.json`` for the configured store, ``<home>/audit-head-<id>.json`` for any
        other URL, and none for an in-memory SQLite database.
        """
        configured = config.state_url()
        parsed = _normalize_url(url or configured)
        if head_path is None and not _is_memory(parsed):
            head_path = cls._default_head_path(parsed, configured)
        engine = engine_for(parsed)
        store = cls(engine, parsed, Path(head_path) if head_path is not None else None)
        try:
            store.migrate()
        except SQLAlchemyError as error:
            engine.dispose()
            raise StateError(f"cannot open the state store {store.identity}: {error}") from error
        return store

    @staticmethod
    def _default_head_path(url: URL, configured: str) -> Path:
        try:
            is_configured = url == _normalize_url(configured)
        except StateError:
            is_configured = False
        if is_configured:
            return config.home() / "audit-head.json"
        digest = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()[:12]
        return config.home() / f"audit-head-{digest}.json"

    @property
    def identity(self) -> str:
        """The store's URL without password, as recorded in the head anchor."""
        return self.url.render_as_string(hide_password=True)

    def revision(self) -> str | None:
        """The schema revision the store is at; None for an empty store."""
        with self.engine.connect() as connection:
            try:
                return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except SQLAlchemyError:
                return None

    def migrate(self) -> None:
        """Upgrade the schema to the newest Alembic revision (a no-op when already there)."""
        if self.revision() == HEAD_REVISION:
            return
        from alembic import command

        cfg = alembic_config()
        with _MIGRATE_LOCK, self.engine.connect() as connection:
            connection = connection.execution_options(**{_WRITE: True})
            if connection.dialect.name == "postgresql":
                # Two processes opening an empty store at once would both CREATE TABLE (one fails on
                # a duplicate catalog key): the writers' lock serialises migrations too; Alembic runs
                # inside this transaction, so the second one finds the schema at head.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY})
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
            connection.commit()

    def close(self) -> None:
        """Release the store's connections."""
        self.engine.dispose()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """Yield a session in one transaction holding the store's write lock; commit on success."""
        with self.engine.connect() as connection:
            connection = connection.execution_options(**{_WRITE: True})
            with connection.begin(), Session(bind=connection, expire_on_commit=False) as session:
                if connection.dialect.name == "postgresql":
                    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY})
                yield session
                session.flush()

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.engine) as session:
            yield session

    # -- runs ---------------------------------------------------------------------------------

    def start_run(self, operation: str, args: Mapping[str, Any], hosts: list[str], actor: str | None = None,
                  parent_id: int | None = None) -> int:
        """Record the start of *operation* over *hosts* (and audit it); return the run id.

        *parent_id*: the run this one is a step of (a rollout's wave, a wave's site step).
        """
        actor = actor or config.actor()
        clean_args = audit.normalize_detail(args)
        host_list = [str(host) for host in hosts]
        with self._write() as session:
            if parent_id is not None and session.get(Run, parent_id) is None:
                raise RunNotFoundError(f"parent run {parent_id} not found")
            run = Run(operation=operation, actor=actor, args=clean_args, hosts=host_list,
                      started_at=datetime.now(UTC), parent_id=parent_id)
            session.add(run)
            session.flush()
            entry = self._append(session, "run.start", {"run_id": run.id, "operation": operation,
                                                        "hosts": host_list, "args": clean_args,
                                                        **({"parent_id": parent_id} if parent_id else {})}, actor)
        self._anchor(entry)
        return run.id

    def finish_run(self, run_id: int, result: str, host_results: Mapping[str, Mapping[str, Any]] | None = None,
                   artifact_dir: str | Path | None = None, summary: Mapping[str, Any] | None = None) -> None:
        """Record how run *run_id* ended (duration computed) with its per-host results, and audit it."""
        if result not in RESULTS:
            raise ValueError(f"result must be one of {', '.join(RESULTS)}, not {result!r}")
        with self._write() as session:
            run = session.get(Run, run_id)
            if run is None:
                raise RunNotFoundError(f"run {run_id} not found")
            if run.finished_at is not None:
                raise StateError(f"run {run_id} already finished ({run.result})")
            now = datetime.now(UTC)
            run.finished_at = now
            run.duration_s = round((now - _utc(run.started_at)).total_seconds(), 3)
            run.result = result
            run.artifact_dir = str(artifact_dir) if artifact_dir is not None else None
            run.summary = audit.normalize_detail(summary) if summary is not None else None
            for host, outcome in (host_results or {}).items():
                self._host_result(session, run_id, host, outcome)
            session.flush()
            entry = self._append(session, "run.finish", {
                "run_id": run_id, "operation": run.operation, "hosts": list(run.hosts), "result": result,
                "duration_s": run.duration_s, "artifact_dir": run.artifact_dir,
            }, run.actor)
        self._anchor(entry)

    def record_host_result(self, run_id: int, host: str, status: str | None = None, changed: int = 0,
                           failed: int = 0, unreachable: int = 0, detail: Mapping[str, Any] | None = None) -> None:
        """Record (or replace) the outcome of run *run_id* on *host*, e.g. as soon as that host is done."""
        outcome: dict[str, Any] = {"changed": changed, "failed": failed, "unreachable": unreachable,
                                   **({"status": status} if status else {}), **(dict(detail or {}))}
        with self._write() as session:
            if session.get(Run, run_id) is None:
                raise RunNotFoundError(f"run {run_id} not found")
            self._host_result(session, run_id, host, outcome)

    @staticmethod
    def _host_result(session: Session, run_id: int, host: str, outcome: Mapping[str, Any]) -> None:
        """Upsert one host's outcome; ``failures`` (Ansible's name) is accepted for ``failed``."""
        rest = {key: value for key, value in outcome.items()
                if key not in ("status", "changed", "failed", "failures", "unreachable")}
        failed = _count(outcome.get("failed", outcome.get("failures")))
        unreachable = _count(outcome.get("unreachable"))
        status = outcome.get("status") or ("unreachable" if unreachable else "failed" if failed else "ok")
        row = session.get(RunHost, (run_id, host)) or RunHost(run_id=run_id, host=host)
        row.status = str(status)
        row.changed = _count(outcome.get("changed"))
        row.failed = failed
        row.unreachable = unreachable
        row.detail = audit.normalize_detail(rest) if rest else None
        session.add(row)

    @staticmethod
    def _run_dict(run: Run, with_hosts: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": run.id, "operation": run.operation, "actor": run.actor, "args": run.args, "hosts": run.hosts,
            "started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at),
            "duration_s": run.duration_s, "result": run.result, "artifact_dir": run.artifact_dir,
            "summary": run.summary, "parent_id": run.parent_id,
        }
        if with_hosts:
            data["host_results"] = {
                row.host: {"status": row.status, "changed": row.changed, "failed": row.failed,
                           "unreachable": row.unreachable, "detail": row.detail}
                for row in run.host_results
            }
        return data

    def get_run(self, run_id: int) -> dict[str, Any]:
        """Return run *run_id* with its per-host results; raise :class:`RunNotFoundError` if unknown."""
        with self._read() as session:
            run = session.scalar(select(Run).where(Run.id == run_id).options(selectinload(Run.host_results)))
            if run is None:
                raise RunNotFoundError(f"run {run_id} not found")
            return self._run_dict(run, with_hosts=True)

    def list_runs(self, limit: int = 20, operation: str | None = None,
                  parent_id: int | None = None) -> list[dict[str, Any]]:
        """Return the newest *limit* runs (optionally of one *operation*, or steps of *parent_id*), newest first."""
        query = select(Run).order_by(Run.id.desc()).limit(limit)
        if operation:
            query = query.where(Run.operation == operation)
        if parent_id is not None:
            query = query.where(Run.parent_id == parent_id)
        with self._read() as session:
            return [self._run_dict(run, with_hosts=False) for run in session.scalars(query)]

    # -- restore verifications ----------------------------------------------------------------

    def record_verification(self, host: str, ok: bool, *, run_id: int | None = None, repo: str | None = None,
                            backup_label: str | None = None, recovery_point: str | None = None,
                            recovery_time: str | None = None, restore_duration_s: float | None = None,
                            checks: list | None = None, verified_at: datetime | None = None,
                            site_verification_id: str | None = None, source: str = "control",
                            detail: dict | None = None) -> int:
        """Record one restore verification of *host*'s backup (and audit it); return its id.

        *verified_at* is when the verification finished (the site's clock; default now). A verification
        carrying the site's own *site_verification_id* is recorded once: when the store already holds it
        for *host*, nothing is written (no audit entry either) and the id it has is returned.
        """
        with self._write() as session:
            if site_verification_id:
                known = session.scalars(select(RestoreVerification.id).where(
                    RestoreVerification.host == host,
                    RestoreVerification.site_verification_id == site_verification_id)).first()
                if known is not None:
                    return known
            row = RestoreVerification(run_id=run_id, host=host, verified_at=verified_at or datetime.now(UTC), ok=ok,
                                      repo=repo, backup_label=backup_label, recovery_point=recovery_point,
                                      recovery_time=recovery_time, restore_duration_s=restore_duration_s,
                                      checks=audit.normalize_detail({"checks": checks or []})["checks"],
                                      site_verification_id=site_verification_id, source=source,
                                      detail=audit.normalize_detail(detail or {}))
            session.add(row)
            session.flush()
            entry = self._append(session, "backup.verified", {
                "verification_id": row.id, "host": host, "ok": ok, "backup_label": backup_label,
                "recovery_point": recovery_point, "restore_duration_s": restore_duration_s,
                "site_verification_id": site_verification_id, "source": source, "run_id": run_id}, None)
        self._anchor(entry)
        return row.id

    def known_site_verifications(self, host: str, site_ids: list[str]) -> set[str]:
        """Which of *site_ids* (a site's own verification ids) the store already holds for *host*."""
        if not site_ids:
            return set()
        query = select(RestoreVerification.site_verification_id).where(
            RestoreVerification.host == host, RestoreVerification.site_verification_id.in_(site_ids))
        with self._read() as session:
            return set(session.scalars(query))

    def list_verifications(self, host: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """Return the newest restore verifications (of one *host*, or all), newest first (by when they finished)."""
        query = select(RestoreVerification).order_by(RestoreVerification.verified_at.desc(),
                                                     RestoreVerification.id.desc()).limit(limit)
        if host:
            query = query.where(RestoreVerification.host == host)
        with self._read() as session:
            return [self._verification_dict(row) for row in session.scalars(query)]

    @staticmethod
    def _verification_dict(row: RestoreVerification) -> dict[str, Any]:
        return {"id": row.id, "run_id": row.run_id, "host": row.host, "verified_at": _iso(row.verified_at),
                "ok": row.ok, "repo": row.repo, "backup_label": row.backup_label,
                "recovery_point": row.recovery_point, "recovery_time": row.recovery_time,
                "restore_duration_s": row.restore_duration_s, "checks": row.checks,
                "site_verification_id": row.site_verification_id, "source": row.source or "control",
                "detail": row.detail or {}}

    # -- site probes (fleet status) -----------------------------------------------------------

    _PROBE_COLUMNS = ("reachable", "error", "spse_version", "fault_codes", "disk_used_percent",
                      "memory_available_percent", "load_5m", "cpus", "duration_s", "facts")

    def record_probe(self, host: str, probe: Mapping[str, Any], run_id: int | None = None,
                     probed_at: datetime | None = None) -> int:
        """Store one site probe (the keys of ``_PROBE_COLUMNS``; ``facts`` the whole probe); return its id."""
        with self._write() as session:
            row = SiteProbe(host=host, run_id=run_id, probed_at=probed_at or datetime.now(UTC),
                            **{key: probe.get(key) for key in self._PROBE_COLUMNS})
            row.reachable = bool(row.reachable)
            row.fault_codes = list(row.fault_codes or [])
            row.facts = audit.normalize_detail(probe.get("facts") or {})
            session.add(row)
            session.flush()
            return row.id

    def list_probes(self, host: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Return the newest site probes (of one *host*, or all), newest first."""
        query = select(SiteProbe).order_by(SiteProbe.id.desc()).limit(limit)
        if host:
            query = query.where(SiteProbe.host == host)
        with self._read() as session:
            return [{"id": row.id, "run_id": row.run_id, "host": row.host, "probed_at": _iso(row.probed_at),
                     **{key: getattr(row, key) for key in self._PROBE_COLUMNS}} for row in session.scalars(query)]

    # -- site locks ---------------------------------------------------------------------------

    @staticmethod
    def _lock_dict(row: SiteLock) -> dict[str, Any]:
        return {"site": row.site, "operation": row.operation, "run_id": row.run_id, "holder": row.holder,
                "acquired_at": _iso(row.acquired_at)}

    def acquire_sites(self, sites: list[str], operation: str, run_id: int | None = None,
                      holder: str | None = None) -> list[dict[str, Any]]:
        """Lock every site in *sites* for *operation* (run *run_id*) by *holder*, all or none, and audit it.

        Returns the new locks; raises :class:`SiteLockedError` naming every site already locked (by anyone,
        this holder included: one change at a time per site), in which case no lock is taken.
        """
        holder = holder or config.actor()
        names = list(dict.fromkeys(str(site) for site in sites))
        if not names:
            return []
        try:
            with self._write() as session:
                held = list(session.scalars(select(SiteLock).where(SiteLock.site.in_(names)).order_by(SiteLock.site)))
                if held:
                    raise SiteLockedError([self._lock_dict(row) for row in held])
                now = datetime.now(UTC)
                rows = [SiteLock(site=name, operation=operation, run_id=run_id, holder=holder, acquired_at=now)
                        for name in names]
                session.add_all(rows)
                session.flush()
                entry = self._append(session, "lock.acquire", {"sites": names, "operation": operation,
                                                               "run_id": run_id}, holder)
        except IntegrityError as error:  # a writer that bypassed the write lock got there first
            held = [lock for lock in self.list_locks() if lock["site"] in names]
            raise SiteLockedError(held) if held else StateError(f"cannot lock {', '.join(names)}: {error}") from error
        self._anchor(entry)
        return [self._lock_dict(row) for row in rows]

    def release_sites(self, sites: list[str], *, run_id: int | None = None, holder: str | None = None,
                      force: bool = False) -> list[dict[str, Any]]:
        """Release the locks on *sites* and audit it; return the locks released.

        With *run_id*, only that run's locks are released and others are left alone (an operation
        ending). Otherwise every named site must be locked, and by *holder* (default: this actor)
        unless *force*; else :class:`LockNotHeldError` is raised and nothing is released.
        """
        holder = holder or config.actor()
        names = list(dict.fromkeys(str(site) for site in sites))
        if not names:
            return []
        with self._write() as session:
            rows = list(session.scalars(select(SiteLock).where(SiteLock.site.in_(names)).order_by(SiteLock.site)))
            if run_id is not None:
                rows = [row for row in rows if row.run_id == run_id]
            else:
                problems = [f"{name} is not locked" for name in names if name not in {row.site for row in rows}]
                if not force:
                    problems += [f"{lock_holder(self._lock_dict(row))}, not by {holder}: add --force only "
                                 "if that run is dead" for row in rows if row.holder != holder]
                if problems:
                    raise LockNotHeldError("; ".join(problems))
            released = [self._lock_dict(row) for row in rows]
            if not released:
                return []
            for row in rows:
                session.delete(row)
            session.flush()
            others = [lock for lock in released if lock["holder"] != holder]
            entry = self._append(session, "lock.release", {
                "sites": [lock["site"] for lock in released], "run_id": run_id, "forced": bool(force and others),
                "locks": released}, holder)
        self._anchor(entry)
        return released

    def list_locks(self) -> list[dict[str, Any]]:
        """Return every site lock held now, by site name."""
        with self._read() as session:
            return [self._lock_dict(row) for row in session.scalars(select(SiteLock).order_by(SiteLock.site))]

    # -- audit log ----------------------------------------------------------------------------

    def _append(self, session: Session, operation: str, detail: Mapping[str, Any], actor: str | None) -> AuditEntry:
        """Append one chained entry inside *session*'s (write-locked) transaction."""
        last = session.execute(select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)).first()
        seq, prev_hash = (last.seq + 1, last.hash) if last else (1, audit.GENESIS_HASH)
        ts = audit.utc_timestamp()
        actor = actor or config.actor()
        clean = audit.normalize_detail(detail)
        entry = AuditEntry(seq=seq, ts=ts, actor=actor, operation=operation, detail=clean, prev_hash=prev_hash,
                           hash=audit.entry_hash(seq, ts, actor, operation, clean, prev_hash))
        session.add(entry)
        session.flush()
        return entry

    def _anchor(self, entry: AuditEntry) -> None:
        if self.head_path is not None:
            audit.write_anchor(self.head_path, entry.seq, entry.hash, store=self.identity)
        # After the commit: the head goes to the Object-Lock witness; an unreachable one only adds lag.
        from lpse_ops.state import witness

        witness.after_append(self, entry.seq, entry.hash)

    @staticmethod
    def _entry_dict(entry: AuditEntry) -> dict[str, Any]:
        return {"seq": entry.seq, "ts": entry.ts, "actor": entry.actor, "operation": entry.operation,
                "detail": entry.detail, "prev_hash": entry.prev_hash, "hash": entry.hash}

    def audit_append(self, operation: str, detail: Mapping[str, Any], actor: str | None = None) -> dict[str, Any]:
        """Append an entry to the audit log (serialised against other writers) and return it."""
        with self._write() as session:
            entry = self._append(session, operation, detail, actor)
        self._anchor(entry)
        return self._entry_dict(entry)

    def audit_entries(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Return the audit log in sequence order (only the newest *limit* entries when given)."""
        query = select(AuditEntry).order_by(AuditEntry.seq.desc() if limit else AuditEntry.seq)
        if limit:
            query = query.limit(limit)
        with self._read() as session:
            entries = [self._entry_dict(entry) for entry in session.scalars(query)]
        return sorted(entries, key=lambda entry: entry["seq"]) if limit else entries

    def audit_count(self) -> int:
        """Return the number of audit entries."""
        with self._read() as session:
            return session.scalar(select(func.count()).select_from(AuditEntry)) or 0

    def audit_verify(self) -> audit.AuditVerifyResult:
        """Walk the whole chain, compare its end with the head anchor, and report every problem."""
        anchor = None
        anchor_problem = None
        if self.head_path is not None:
            try:
                anchor = audit.read_anchor(self.head_path)
            except ValueError as error:
                anchor_problem = f"{error} (tampered)"
        result = audit.verify_chain(self.audit_entries(), anchor, store=self.identity,
                                    anchor_path=str(self.head_path) if self.head_path else None)
        if anchor_problem:
            result.problems.append(anchor_problem)
            result.ok = False
        return result  # no anchor: verify_chain's own warning says so (once)
