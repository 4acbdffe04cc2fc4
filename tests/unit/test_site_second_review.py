"""Second review of the site tool's privilege boundaries (issue 22): what spse or postgres control must never
leave a site half-changed or make root act on their behalf. Each test is the attack, run as root."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from lpse_ops.site import documents, restore
from tests.unit.test_site_status import site_settings

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the site tool runs as root")

SHA = "ab" * 32


def _restore_site(tmp_path: Path):
    config = site_settings(tmp_path)
    config = config.__class__(**{**config.__dict__, "docs_dir": str(tmp_path / "docs"),
                                 "lock_path": str(tmp_path / "lpse-backup.lock")})
    Path(config.state_dir).mkdir()
    pgdata = Path(config.pg_data)
    pgdata.mkdir()
    (pgdata / "PG_VERSION").write_text("15\n")
    return config


def _no_services(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    monkeypatch.setattr(restore, "run", lambda argv, **_k: calls.append(argv) or SimpleNamespace(returncode=0))
    monkeypatch.setattr(restore.services, "start", lambda unit, **_k: calls.append(["start", unit]))
    monkeypatch.setattr(restore, "wait_health", lambda *_a, **_k: {"status": "ok"})
    return calls


def _move_database_aside(current: restore.Restore) -> None:
    """The real step's effect, without pwd's postgres account: the data dir aside, an empty one made."""
    aside = f"{current.settings.pg_data}.before-restore-{current.stamp}-test"
    os.rename(current.settings.pg_data, aside)
    current.result["moved_aside"]["pgdata"] = {"from": current.settings.pg_data, "to": aside}
    os.mkdir(current.settings.pg_data, 0o700)


ARGS = SimpleNamespace(repo=1, target_time="2026-01-01 00:00:00+00", repo2_path=None, repo2_bucket=None,
                       restic_repo=None)


def test_a_restore_rolls_back_when_a_step_raises_something_else_than_a_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """spse writes the documents table: a row whose stored_path holds a newline printed as two psql lines,
    parse_rows raised ValueError, main caught only Failure, and the site stayed down with its data dir
    moved aside. Any exception after the first change must roll the site back."""
    config = _restore_site(tmp_path)
    calls = _no_services(monkeypatch)

    def reconcile(_current: restore.Restore) -> None:
        documents.parse_rows([f"1\t{SHA}\tab/first line", "second line.pdf"])
    monkeypatch.setattr(restore, "STEPS", (_move_database_aside, reconcile))
    result = restore.main(config, ARGS)
    assert result["ok"] is False and result.get("rolled_back") is True, result
    assert result["code"] == "unexpected" and "ValueError" in result["error"], result
    assert (Path(config.pg_data) / "PG_VERSION").read_text() == "15\n", "the previous data dir is not back"
    assert ["start", config.pg_unit] in calls and ["start", config.spse_unit] in calls


def test_an_upgrade_s_database_rollback_puts_the_data_dir_back_when_postgres_takes_its_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """postgres owns the data dir's parent: right after rollback-db moved the data dir aside it can make a
    folder (or a link) at the name; make_data_dir's mkdir then raised FileExistsError, rollback_database
    caught only Failure, and the site was left with PostgreSQL stopped and its data dir moved aside."""
    from lpse_ops.site import checkpoint, safefs

    config = _restore_site(tmp_path)
    calls = _no_services(monkeypatch)
    monkeypatch.setattr(checkpoint, "run_command", lambda argv, **_k: calls.append(argv))
    monkeypatch.setattr(checkpoint, "load", lambda _s, name: {"name": name, "label": "20260101-000000F",
                                                              "restore_point": "lpse-20260101-000000F"})

    def postgres_wins_the_race(pgdata: str) -> None:
        os.mkdir(pgdata)  # what postgres does between the rename and root's mkdir
        safefs.make_owned_dir(pgdata, 65534, 65534, 0o700)
    monkeypatch.setattr(checkpoint.restore, "make_data_dir", postgres_wins_the_race)
    result = checkpoint.rollback_database(config, SimpleNamespace(name="before-upgrade"))
    assert result["ok"] is False and result["code"] == "unexpected", result
    assert (Path(config.pg_data) / "PG_VERSION").read_text() == "15\n", "the data dir was left moved aside"
    assert ["start", config.pg_unit] in calls
