"""The state store: migrations, runs and their per-host results (SQLite, no hosts needed)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from lpse_ops.commands.runs import runs
from lpse_ops.state import RunNotFoundError, StateError, StateStore
from lpse_ops.state.store import HEAD_REVISION, alembic_config, migrations_dir


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_open_fresh_database_creates_tables_at_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    StateStore.open(url).close()
    assert {"runs", "run_hosts", "audit_log", "alembic_version"} <= _tables(url)
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        version = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        triggers = set(connection.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars())
    engine.dispose()
    from alembic.script import ScriptDirectory


    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert {"restore_verifications"} <= _tables(url)
    assert triggers == {"audit_log_no_update", "audit_log_no_delete"}


def test_the_head_revision_known_without_alembic_is_alembics_head() -> None:
    """A store at HEAD_REVISION is opened without loading Alembic: it must be the newest migration."""
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION


def test_a_store_behind_the_head_is_still_migrated(tmp_path: Path) -> None:
    """The fast path skips Alembic only at the head: a store one revision behind is upgraded on open."""
    from alembic import command
    from alembic.script import ScriptDirectory

    url = f"sqlite:///{tmp_path / 'old.db'}"
    StateStore.open(url).close()
    previous = ScriptDirectory.from_config(alembic_config()).get_revision(HEAD_REVISION).down_revision
    cfg = alembic_config(url)
    command.downgrade(cfg, previous)
    with StateStore.open(url) as store:
        assert store.revision() == HEAD_REVISION


def test_open_default_url_uses_sqlite_file_in_home(lpse_home: Path) -> None:
    with StateStore.open() as store:
        store.audit_append("test.ping", {})
        assert store.head_path == lpse_home / "audit-head.json"
    assert (lpse_home / "state.db").is_file()
    assert (lpse_home / "audit-head.json").is_file()


def test_open_twice_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with StateStore.open(url) as store:
        run_id = store.start_run("install", {"version": "4.5u2"}, ["site1"])
    with StateStore.open(url) as store:
        assert store.get_run(run_id)["operation"] == "install"
        assert store.audit_verify().ok
    with StateStore.open(url) as store:
        assert len(store.list_runs()) == 1


def test_migrations_dir_is_packaged_and_config_needs_no_ini(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no alembic.ini here
    assert (migrations_dir() / "env.py").is_file()
    assert (migrations_dir() / "versions" / "0001_initial.py").is_file()
    assert alembic_config().get_main_option("script_location") == str(migrations_dir())
    with StateStore.open(f"sqlite:///{tmp_path / 'x.db'}") as store:
        assert store.list_runs() == []


def test_open_memory_url_works_without_anchor() -> None:
    with StateStore.open("sqlite://") as store:
        store.audit_append("test.ping", {"n": 1})
        result = store.audit_verify()
    assert result.ok and result.entries == 1
    assert store.head_path is None
    assert result.warnings


def test_open_unsupported_url_fails_with_message() -> None:
    with pytest.raises(StateError, match="SQLite and PostgreSQL"):
        StateStore.open("mysql://u@h/db")


def test_open_postgresql_without_driver_mentions_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    """psycopg is a dependency, so its absence is simulated: ``import psycopg`` raises ImportError."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(StateError, match=r"cannot load the database driver .*pip install 'psycopg\[binary\]'"):
        StateStore.open("postgresql://lpse@127.0.0.1:1/lpse")


def test_open_postgresql_with_driver_names_the_connection_not_the_driver() -> None:
    """With psycopg installed (it is a dependency), a server that is not there is a connection error."""
    pytest.importorskip("psycopg", reason="psycopg is a dependency of lpse-ops: its absence is an install bug")
    with pytest.raises(StateError) as raised:
        StateStore.open("postgresql://lpse@127.0.0.1:1/lpse")
    assert "psycopg[binary]" not in str(raised.value) and "127.0.0.1" in str(raised.value), raised.value


def test_run_finished_records_duration_and_host_results(tmp_path: Path) -> None:
    with StateStore.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        run_id = store.start_run("upgrade", {"to": "4.6", "serial": 10}, ["site1", "site2", "site3"])
        time.sleep(0.05)
        store.finish_run(run_id, "failed", {
            "site1": {"changed": 4, "failures": 0, "ok": 30},
            "site2": {"changed": 1, "failed": 1, "msg": "migration failed"},
            "site3": {"unreachable": True},
        }, artifact_dir=tmp_path / "artifacts" / "run-1", summary={"ok": 1, "failed": 2})
        run = store.get_run(run_id)
    assert run["result"] == "failed"
    assert run["actor"] == "tester@control"
    assert run["args"] == {"to": "4.6", "serial": 10}
    assert run["hosts"] == ["site1", "site2", "site3"]
    assert run["duration_s"] >= 0.05
    assert run["started_at"] <= run["finished_at"]
    assert run["artifact_dir"] == str(tmp_path / "artifacts" / "run-1")
    assert run["summary"] == {"ok": 1, "failed": 2}
    assert run["host_results"] == {
        "site1": {"status": "ok", "changed": 4, "failed": 0, "unreachable": 0, "detail": {"ok": 30}},
        "site2": {"status": "failed", "changed": 1, "failed": 1, "unreachable": 0,
                  "detail": {"msg": "migration failed"}},
        "site3": {"status": "unreachable", "changed": 0, "failed": 0, "unreachable": 1, "detail": None},
    }


def test_run_start_and_finish_append_audit_entries(tmp_path: Path) -> None:
    with StateStore.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        run_id = store.start_run("backup", {}, ["site1"], actor="alice")
        store.finish_run(run_id, "ok", {"site1": {"changed": 0}}, None)
        entries = store.audit_entries()
    assert [entry["operation"] for entry in entries] == ["run.start", "run.finish"]
    assert entries[0]["detail"]["run_id"] == run_id and entries[0]["detail"]["hosts"] == ["site1"]
    assert entries[1]["detail"]["result"] == "ok" and entries[1]["detail"]["operation"] == "backup"
    assert {entry["actor"] for entry in entries} == {"alice"}


def test_record_host_result_replaces_previous_outcome(tmp_path: Path) -> None:
    with StateStore.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        run_id = store.start_run("install", {}, ["site1"])
        store.record_host_result(run_id, "site1", failed=1, detail={"msg": "first try"})
        store.record_host_result(run_id, "site1", changed=2)
        outcome = store.get_run(run_id)["host_results"]["site1"]
    assert outcome == {"status": "ok", "changed": 2, "failed": 0, "unreachable": 0, "detail": None}


def test_list_runs_newest_first_with_limit_and_operation_filter(tmp_path: Path) -> None:
    with StateStore.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        ids = [store.start_run(operation, {}, ["h"]) for operation in ("install", "backup", "install", "upgrade")]
        assert [run["id"] for run in store.list_runs()] == ids[::-1]
        assert [run["id"] for run in store.list_runs(limit=2)] == ids[:1:-1]
        assert [run["id"] for run in store.list_runs(operation="install")] == [ids[2], ids[0]]
        assert store.list_runs()[0]["result"] is None


def test_finish_run_invalid_result_or_unknown_or_twice_raises(tmp_path: Path) -> None:
    with StateStore.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        run_id = store.start_run("install", {}, ["h"])
        with pytest.raises(ValueError, match="result must be one of"):
            store.finish_run(run_id, "great", {}, None)
        with pytest.raises(RunNotFoundError):
            store.finish_run(999, "ok", {}, None)
        store.finish_run(run_id, "aborted", {}, None)
        with pytest.raises(StateError, match="already finished"):
            store.finish_run(run_id, "ok", {}, None)
        with pytest.raises(RunNotFoundError):
            store.get_run(999)
        assert store.audit_verify().entries == 2  # failed calls left no audit entry


def test_runs_cli_list_and_show_print_json_and_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with StateStore.open(url) as store:
        run_id = store.start_run("install", {"version": "4.5"}, ["site[1]", "site2"])
        store.finish_run(run_id, "ok", {"site[1]": {"changed": 2}}, str(tmp_path / "art"))
    runner = CliRunner()
    listed = runner.invoke(runs, ["list", "--json", "--state-url", url])
    assert listed.exit_code == 0, listed.output
    assert [row["id"] for row in json.loads(listed.stdout)] == [run_id]
    shown = runner.invoke(runs, ["show", str(run_id), "--json"], env={"LPSE_OPS_STATE_URL": url})
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["host_results"]["site[1]"]["changed"] == 2
    table = runner.invoke(runs, ["list", "--state-url", url])
    assert table.exit_code == 0 and "install" in table.stdout
    detail = runner.invoke(runs, ["show", str(run_id), "--state-url", url])
    assert detail.exit_code == 0 and "site[1]" in detail.stdout and str(tmp_path / "art") in detail.stdout


def test_runs_cli_show_unknown_run_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(runs, ["show", "42", "--state-url", f"sqlite:///{tmp_path / 'state.db'}"])
    assert result.exit_code == 1
    assert "run 42 not found" in result.output


def test_runs_cli_bad_state_url_exits_1() -> None:
    result = CliRunner().invoke(runs, ["list", "--state-url", "oracle://x/y"])
    assert result.exit_code == 1
    assert "SQLite and PostgreSQL" in result.output


def test_record_verification_kept_newest_first_and_audited(tmp_path, monkeypatch):
    monkeypatch.setenv("LPSE_OPS_HOME", str(tmp_path))
    from lpse_ops.state import StateStore

    store = StateStore.open(f"sqlite:///{tmp_path / 'v.db'}")
    store.record_verification("site1", True, repo="1", backup_label="20261124-010000F",
                              recovery_point="lpse-20261124-010000F", restore_duration_s=4.2,
                              checks=[{"check": "row counts", "ok": True}])
    store.record_verification("site1", False, repo="2", checks=[{"check": "pgbackrest verify", "ok": False}])
    rows = store.list_verifications("site1")
    assert [row["ok"] for row in rows] == [False, True]
    assert rows[1]["restore_duration_s"] == 4.2 and rows[1]["checks"][0]["check"] == "row counts"
    assert [e["operation"] for e in store.audit_entries()][-2:] == ["backup.verified", "backup.verified"]
    assert store.audit_verify().ok


def test_runs_link_to_their_parent_so_a_rollout_groups_its_waves_and_steps(tmp_path: Path) -> None:
    with StateStore.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        rollout = store.start_run("upgrade.rollout", {"to": "1.2"}, ["site1", "site2"])
        wave = store.start_run("upgrade.wave", {"wave": 1}, ["site1"], parent_id=rollout)
        step = store.start_run("upgrade.site", {}, ["site1"], parent_id=wave)
        other = store.start_run("backup", {}, ["site2"])
        assert store.get_run(step)["parent_id"] == wave
        assert [r["id"] for r in store.list_runs(parent_id=rollout)] == [wave]
        assert [r["id"] for r in store.list_runs(parent_id=wave)] == [step]
        assert store.get_run(other)["parent_id"] is None
        assert store.audit_entries()[-2]["detail"]["parent_id"] == wave
        with pytest.raises(RunNotFoundError, match="parent run 999 not found"):
            store.start_run("upgrade.site", {}, ["site1"], parent_id=999)


def test_the_default_store_file_is_created_0600_and_the_home_folder_0700(lpse_home: Path) -> None:
    """The store holds the audit log and every run: another local account must read none of it."""
    import os
    import stat

    old_umask = os.umask(0o022)  # the usual umask: files 0644, folders 0755 unless asked otherwise
    try:
        StateStore.open().close()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(lpse_home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(lpse_home / "state.db").st_mode) == 0o600


def test_an_explicit_sqlite_store_file_is_created_0600(tmp_path: Path) -> None:
    import os
    import stat

    old_umask = os.umask(0o022)
    try:
        StateStore.open(f"sqlite:///{tmp_path / 'elsewhere' / 'store.db'}").close()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(tmp_path / "elsewhere" / "store.db").st_mode) == 0o600
