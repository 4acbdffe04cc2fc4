"""The shared PostgreSQL state store against a real PostgreSQL server (issue 7).

Migrations, runs and restore verifications, the append-only audit log, and two operators (two OS
processes, each with its own ``StateStore``) appending at once without forking the chain.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from lpse_ops.state import RunNotFoundError, StateError, StateStore
from lpse_ops.state.models import Base
from lpse_ops.state.store import alembic_config

from .conftest import PgServer

ENTRIES_PER_OPERATOR = 200


def _head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _query(url: str, statement: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(statement))]
    finally:
        engine.dispose()


# -- migrations ------------------------------------------------------------------------------------


def test_open_empty_postgres_database_migrates_to_head_as_non_superuser(pg_url: str) -> None:
    assert _query(pg_url, "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user") \
        == [(False, False, False)]
    assert _query(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'") == []

    StateStore.open(pg_url).close()

    assert _query(pg_url, "SELECT version_num FROM alembic_version") == [(_head_revision(),)]
    tables = {row[0] for row in _query(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    # Every table the models declare, created by the migrations alone (and nothing else).
    assert tables == {"alembic_version", *Base.metadata.tables}
    triggers = {row[0] for row in _query(pg_url, "SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_log'::regclass"
                                                 " AND NOT tgisinternal")}
    assert triggers == {"audit_log_no_update_delete", "audit_log_no_truncate"}


def test_open_migrated_postgres_database_again_is_noop_and_keeps_data(pg_url: str) -> None:
    with StateStore.open(pg_url) as store:
        run_id = store.start_run("install", {"version": "4.5u2"}, ["site1"])
    oids = _query(pg_url, "SELECT relname, oid FROM pg_class WHERE relnamespace = 'public'::regnamespace "
                          "ORDER BY relname")

    with StateStore.open(pg_url) as store:
        assert store.get_run(run_id)["operation"] == "install"
        assert store.audit_count() == 1
    with StateStore.open(pg_url) as store:
        assert [run["id"] for run in store.list_runs()] == [run_id]
        assert store.audit_verify().ok

    # The same tables, not dropped and re-created; still at the newest revision.
    assert _query(pg_url, "SELECT relname, oid FROM pg_class WHERE relnamespace = 'public'::regnamespace "
                          "ORDER BY relname") == oids
    assert _query(pg_url, "SELECT version_num FROM alembic_version") == [(_head_revision(),)]


def _open_in_child(url: str, head: str, barrier: Any, results: Any) -> None:
    barrier.wait(timeout=60)
    try:
        with StateStore.open(url, head_path=head) as store:
            store.audit_append("test.opened", {})
        results.put(("ok", ""))
    except Exception as error:  # report, don't die: the parent asserts on it
        results.put((type(error).__name__, str(error)))


def test_open_empty_postgres_database_from_two_processes_at_once_both_succeed(pg_url: str, tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(3), context.Queue()
    workers = [context.Process(target=_open_in_child, args=(pg_url, str(tmp_path / "head.json"), barrier, results))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    barrier.wait(timeout=60)
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert outcomes == [("ok", ""), ("ok", "")]
    assert _query(pg_url, "SELECT version_num FROM alembic_version") == [(_head_revision(),)]
    with StateStore.open(pg_url, head_path=tmp_path / "head.json") as store:
        assert store.audit_verify().ok
        assert store.audit_count() == 2


# -- runs and restore verifications ----------------------------------------------------------------


def test_runs_on_postgres_round_trip_with_host_results_and_verifications(pg_url: str) -> None:
    with StateStore.open(pg_url) as store:
        first = store.start_run("preflight", {"limit": "site1"}, ["site1"], actor="ani@control")
        store.finish_run(first, "ok", {"site1": {"changed": 0, "failures": 0, "unreachable": 0}})
        run_id = store.start_run("install", {"bundle": "spse-1.0.tar.gz", "check": False}, ["site1", "site2"],
                                 actor="budi@control")
        store.record_host_result(run_id, "site1", changed=7, detail={"msg": "installed 1.0"})
        store.finish_run(run_id, "failed",
                         {"site1": {"changed": 7, "failed": 0, "unreachable": 0, "msg": "installed 1.0"},
                          "site2": {"changed": 1, "failures": 2, "unreachable": 0, "msg": "nginx: bad config"}},
                         artifact_dir="/tmp/artifacts/abc", summary={"failed_hosts": ["site2"]})
        verification = store.record_verification("site1", True, run_id=run_id, repo="1", backup_label="20261124-F",
                                                 recovery_point="0/3000060", recovery_time="2026-11-24 04:00:00+00",
                                                 restore_duration_s=12.5, checks=["tables", "documents"])

        run = store.get_run(run_id)
        assert run["operation"] == "install" and run["actor"] == "budi@control"
        assert run["args"] == {"bundle": "spse-1.0.tar.gz", "check": False}
        assert run["hosts"] == ["site1", "site2"]
        assert run["result"] == "failed" and run["artifact_dir"] == "/tmp/artifacts/abc"
        assert run["summary"] == {"failed_hosts": ["site2"]}
        assert run["started_at"].endswith("+00:00") and run["finished_at"].endswith("+00:00")
        assert run["duration_s"] is not None and run["duration_s"] >= 0
        assert run["host_results"] == {
            "site1": {"status": "ok", "changed": 7, "failed": 0, "unreachable": 0, "detail": {"msg": "installed 1.0"}},
            "site2": {"status": "failed", "changed": 1, "failed": 2, "unreachable": 0,
                      "detail": {"msg": "nginx: bad config"}},
        }
        assert [(r["id"], r["result"]) for r in store.list_runs()] == [(run_id, "failed"), (first, "ok")]
        assert [r["id"] for r in store.list_runs(operation="preflight")] == [first]
        assert [r["id"] for r in store.list_runs(limit=1)] == [run_id]

        assert store.list_verifications("site1") == [{
            "id": verification, "run_id": run_id, "host": "site1", "verified_at": store.list_verifications()[0][
                "verified_at"], "ok": True, "repo": "1", "backup_label": "20261124-F", "recovery_point": "0/3000060",
            "recovery_time": "2026-11-24 04:00:00+00", "restore_duration_s": 12.5, "checks": ["tables", "documents"],
            "site_verification_id": None, "source": "control", "detail": {}}]
        assert store.list_verifications("site2") == []

        with pytest.raises(StateError, match="already finished"):
            store.finish_run(run_id, "ok")
        with pytest.raises(RunNotFoundError):
            store.get_run(9999)
        with pytest.raises(RunNotFoundError):
            store.finish_run(9999, "ok")

        operations = [entry["operation"] for entry in store.audit_entries()]
        assert operations == ["run.start", "run.finish", "run.start", "run.finish", "backup.verified"]
        assert store.audit_verify().ok


# -- the audit log ---------------------------------------------------------------------------------


def test_audit_log_on_postgres_refuses_update_delete_truncate_by_lpse_ops_role(pg_url: str) -> None:
    with StateStore.open(pg_url) as store:
        store.audit_append("test.one", {"n": 1})
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
            with engine.connect() as connection, pytest.raises(sa.exc.DBAPIError, match="append-only"):
                connection.execute(sa.text(statement))
    finally:
        engine.dispose()


def test_audit_verify_on_postgres_superuser_update_names_the_edited_entry(pg_server: PgServer, pg_url: str,
                                                                         tmp_path: Path) -> None:
    with StateStore.open(pg_url, head_path=tmp_path / "head.json") as store:
        for n in range(1, 6):
            store.audit_append("test.entry", {"n": n})
        assert store.audit_verify().ok
    database = pg_url.rsplit("/", 1)[1]
    # A superuser can get past the append-only trigger; verify still names what changed.
    pg_server.superuser_sql("BEGIN; SET LOCAL session_replication_role = replica; "
                            "UPDATE audit_log SET actor = 'mallory' WHERE seq = 3; COMMIT", database)
    with StateStore.open(pg_url, head_path=tmp_path / "head.json") as store:
        result = store.audit_verify()
    assert not result.ok
    assert result.problems == ["entry 3: hash does not match its content (edited)"]


def _append_many(url: str, head: str, actor: str, count: int, bypass_lock: bool, barrier: Any, results: Any) -> None:
    """One operator: open its own store, wait for the other, then append *count* entries as fast as it can."""
    from lpse_ops.state import store as store_module

    if bypass_lock:
        # Each process takes a different advisory lock: the lock no longer serialises anything.
        store_module.AUDIT_LOCK_KEY += 1 + int(actor.rsplit("-", 1)[1])
    errors: list[str] = []
    appended = 0
    try:
        with StateStore.open(url, head_path=head) as store:
            barrier.wait(timeout=60)
            for n in range(count):
                try:
                    store.audit_append("test.race", {"n": n}, actor=actor)
                    appended += 1
                except Exception as error:  # count, and carry on racing
                    errors.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")
    except Exception as error:
        errors.append(f"{type(error).__name__}: {error}")
    results.put((actor, appended, errors))


def _race(url: str, head: Path, bypass_lock: bool) -> dict[str, tuple[int, list[str]]]:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(3), context.Queue()
    workers = [context.Process(target=_append_many, args=(url, str(head), f"operator-{i}", ENTRIES_PER_OPERATOR,
                                                          bypass_lock, barrier, results)) for i in (1, 2)]
    for worker in workers:
        worker.start()
    barrier.wait(timeout=60)  # both stores are open: go
    outcome = {}
    for _ in workers:
        actor, appended, errors = results.get(timeout=120)
        outcome[actor] = (appended, errors)
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    return outcome


def test_audit_append_on_postgres_two_processes_at_once_keep_one_chain(pg_url: str, tmp_path: Path) -> None:
    StateStore.open(pg_url).close()
    started = time.monotonic()
    outcome = _race(pg_url, tmp_path / "head.json", bypass_lock=False)
    elapsed = time.monotonic() - started

    assert outcome == {"operator-1": (ENTRIES_PER_OPERATOR, []), "operator-2": (ENTRIES_PER_OPERATOR, [])}
    total = 2 * ENTRIES_PER_OPERATOR
    with StateStore.open(pg_url, head_path=tmp_path / "head.json") as store:
        entries = store.audit_entries()
        result = store.audit_verify()
    assert result.ok, result.problems
    assert result.warnings == []  # the head anchor both processes wrote is there and agrees
    assert (result.entries, result.head_seq, result.anchor_seq) == (total, total, total)
    assert [entry["seq"] for entry in entries] == list(range(1, total + 1))
    assert entries[0]["prev_hash"] == "0" * 64
    assert all(entry["prev_hash"] == before["hash"] for before, entry in zip(entries, entries[1:], strict=False))
    assert len({entry["prev_hash"] for entry in entries}) == total  # no two entries share a parent: no fork
    for actor in ("operator-1", "operator-2"):
        assert sorted(e["detail"]["n"] for e in entries if e["actor"] == actor) == list(range(ENTRIES_PER_OPERATOR))
    # The two really ran at the same time: their entries interleave rather than one block after the other.
    switches = sum(1 for before, entry in zip(entries, entries[1:], strict=False) if before["actor"] != entry["actor"])
    assert switches >= 10, f"the operators barely overlapped ({switches} switches in {elapsed:.1f} s)"


def test_audit_append_on_postgres_without_write_lock_loses_entries_to_duplicate_seq(pg_url: str,
                                                                                   tmp_path: Path) -> None:
    """The control for the test above: with the advisory lock bypassed the same race breaks.

    It cannot fork: ``seq`` is the primary key and ``hash`` is unique, so the second writer of a
    ``seq`` blocks on the first and then fails with a unique violation. Without the lock, operators'
    appends fail (their operation's audit entry is lost), which the locked test would catch.
    """
    StateStore.open(pg_url).close()
    outcome = _race(pg_url, tmp_path / "head.json", bypass_lock=True)

    errors = [error for _appended, errs in outcome.values() for error in errs]
    appended = sum(count for count, _errs in outcome.values())
    assert errors, "without the lock, two racing writers should have collided at least once"
    assert all("IntegrityError" in error and "audit_log_pkey" in error for error in errors), errors[:3]
    assert appended == 2 * ENTRIES_PER_OPERATOR - len(errors) < 2 * ENTRIES_PER_OPERATOR
    with StateStore.open(pg_url, head_path=tmp_path / "head.json") as store:
        result = store.audit_verify()
    assert result.ok and result.entries == appended  # what did land is still one chain: no fork


# -- errors ----------------------------------------------------------------------------------------


def test_open_postgres_wrong_password_raises_state_error_without_password(pg_server: PgServer) -> None:
    url = pg_server.role_url(pg_server.new_database(), password="not-the-password")
    with pytest.raises(StateError, match="password authentication failed") as caught:
        StateStore.open(url)
    assert "not-the-password" not in str(caught.value)
    assert "cannot open the state store" in str(caught.value)


def test_open_postgres_unreachable_server_raises_state_error(pg_server: PgServer) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(StateError, match="cannot open the state store") as caught:
        StateStore.open(f"postgresql://lpse_ops:pw@127.0.0.1:{port}/lpse_ops")
    assert "Connection refused" in str(caught.value) or "connection failed" in str(caught.value)
    assert "pw@" not in str(caught.value)
    assert time.monotonic() - started < 10


def test_a_site_verification_is_recorded_once_on_postgres(pg_url):
    """Two readers of the same site (a probe round and a plan) record its own verification once: the unique
    (host, site_verification_id) of migration 0011 holds on PostgreSQL too."""
    with StateStore.open(pg_url) as store:
        first_read = store.record_verification("site2", False, site_verification_id="v1", source="site",
                                               detail={"trigger": "systemd", "error": "verify failed"})
        entries = store.audit_count()
        again = store.record_verification("site2", False, site_verification_id="v1", source="site")
        (row,) = store.list_verifications("site2")
        assert first_read == again == row["id"] and store.audit_count() == entries
        assert row["detail"] == {"trigger": "systemd", "error": "verify failed"} and row["source"] == "site"
