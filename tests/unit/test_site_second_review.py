"""Second review of the site tool's privilege boundaries (issue 22): what spse or postgres control must never
leave a site half-changed or make root act on their behalf. Each test is the attack, run as root."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from lpse_ops.site import documents, restore
from tests.unit import test_postgresql_role as pg
from tests.unit.test_postgresql_role import cluster  # noqa: F401 (the real PostgreSQL 15 fixture)
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


ARGS = SimpleNamespace(repo=1, target_time="2026-01-01 00:00:00+00", repo2_path=None, repo2_bucket=None,
                       restic_repo=None)


def test_a_restore_rolls_back_when_a_step_raises_something_else_than_a_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """postgres owns the data dir's parent: right after the restore moved the data dir aside it can make a
    folder (or a link) at the name; make_data_dir's mkdir raised FileExistsError, main caught only Failure,
    and the site stayed down with its data dir moved aside and no record (a documents row whose path held a
    newline did the same with a ValueError). Any exception after the first change must roll the site back."""
    from lpse_ops.site import safefs

    config = _restore_site(tmp_path)
    calls = _no_services(monkeypatch)

    def postgres_wins_the_race(pgdata: str) -> None:
        os.mkdir(pgdata)  # what postgres does between the rename and root's mkdir
        safefs.make_owned_dir(pgdata, 65534, 65534, 0o700)
    monkeypatch.setattr(restore, "make_data_dir", postgres_wins_the_race)
    monkeypatch.setattr(restore, "STEPS", (restore.move_database_aside, restore.restore_database))
    result = restore.main(config, ARGS)
    assert result["ok"] is False and result.get("rolled_back") is True, result
    assert result["code"] == "unexpected" and "FileExistsError" in result["error"], result
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


@pytest.mark.skipif(not (pg.PG_BIN / "postgres").exists(), reason="needs PostgreSQL 15 (Debian)")
def test_a_document_whose_name_holds_a_newline_and_a_tab_is_read_as_one_row_by_real_psql(tmp_path: Path,
                                                                                       cluster: pg.Cluster):  # noqa: F811
    """spse names the documents (and their rows): a stored_path with a newline or a tab came out of psql as
    two lines or four fields, so every restore and verify of that site crashed (and, before the rollback fix,
    left it down). The rows are read through the real psql of a real PostgreSQL 15 and come out whole."""
    import hashlib

    from lpse_ops.site import postgres

    name = "ab/first line\nsecond\tline.pdf"
    folder = tmp_path / "docs" / "ab"
    folder.mkdir(parents=True)
    (folder / "first line\nsecond\tline.pdf").write_bytes(b"%PDF- a tender")
    digest = hashlib.sha256(b"%PDF- a tender").hexdigest()
    cluster.sql("CREATE DATABASE review22")
    as_postgres_psql(cluster.port, "CREATE TABLE documents (id bigserial PRIMARY KEY, sha256 char(64) NOT NULL, "
                     "stored_path text NOT NULL);\nINSERT INTO documents (sha256, stored_path) "
                     "VALUES (:'sha', :'name');\n", sha=digest, name=name)
    config = site_settings(tmp_path)
    rows = postgres.psql(config, documents.QUERY, database="review22", port=cluster.port)
    found = documents.parse_rows(rows)
    assert [(d.sha256, d.stored_path) for d in found] == [(digest, name)]
    assert documents.check(found, str(tmp_path / "docs")) == ([], [])


def as_postgres_psql(port: int, sql: str, **variables: str) -> None:
    """Run *sql* in database review22 as the postgres user; *variables* are psql variables (``:'name'``
    quotes one as an SQL literal), so the test's odd names reach the table as data."""
    user = pg.pwd.getpwnam("postgres")

    def drop() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    argv = ["psql", f"--port={port}", "--no-psqlrc", "--dbname=review22", "--set=ON_ERROR_STOP=1",
            *[f"--set={key}={value}" for key, value in variables.items()]]
    done = pg.subprocess.run(argv, input=sql, capture_output=True, text=True, check=False, timeout=60,
                             preexec_fn=drop, cwd="/")  # noqa: PLW1509
    assert done.returncode == 0, done.stderr


def test_a_bundle_replaced_after_its_sha256_was_checked_is_never_unpacked(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch):
    """release-unpack hashed the file, then opened it again by name to read and unpack it, and never compared
    the sha256 of the bytes it unpacked: another signed build of the same version put at the name in between
    (a second run copying its own bundle) was unpacked, not the bytes the control node verified."""
    import hashlib
    import shutil

    from lpse_ops import bundle as b
    from lpse_ops.site import release as r
    from lpse_ops.site.errors import Failure
    from tests.unit.test_bundle import make_source

    key_id = b.keygen(tmp_path / "keys" / "release.key", tmp_path / "keys" / "release.pub", "test release key")
    assert key_id
    verified = b.build(make_source(tmp_path / "a"), tmp_path / "keys" / "release.key", tmp_path / "out-a")
    other_source = make_source(tmp_path / "b")
    (other_source / "payload" / "lib" / "spse.jar").write_bytes(b"another build of the same version")
    other = b.build(other_source, tmp_path / "keys" / "release.key", tmp_path / "out-b")
    (tmp_path / "trusted").mkdir()
    shutil.copy(tmp_path / "keys" / "release.pub", tmp_path / "trusted" / "release.pub")
    keys = r.trusted_keys(b.trusted_key_texts(tmp_path / "trusted"))
    base = tmp_path / "spse"
    (base / "releases").mkdir(parents=True)
    site_copy = tmp_path / "bundles" / "spse-1.1.tar.gz"
    site_copy.parent.mkdir()
    shutil.copy(verified, site_copy)
    expected = hashlib.sha256(verified.read_bytes()).hexdigest()
    hash_then_swap = r.file_sha256

    def swapped_after_the_hash(path: str) -> str:
        digest = hash_then_swap(path)
        shutil.copy(other, tmp_path / "swap")
        os.replace(tmp_path / "swap", path)
        return digest
    monkeypatch.setattr(r, "file_sha256", swapped_after_the_hash)
    with pytest.raises(Failure) as caught:
        r.unpack(str(site_copy), expected, "1.1", str(base), keys)
    assert caught.value.code == "bundle_sha256_mismatch", caught.value.message
    assert os.listdir(base / "releases") == [] and not (base / "manifests").exists()


def test_a_version_folder_postgres_swaps_for_a_link_never_moves_or_chowns_what_it_points_to(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Third review (F4): postgres owns the data folder's parent (Debian's /var/lib/postgresql/15). It swaps
    that folder for a link to a root folder holding a ``main``: the restore used to rename root's ``main``
    aside and make a new ``main`` there, postgres's. The parent is now opened from / without following a
    link, so the restore refuses and rolls back, and the root folder is untouched."""
    from lpse_ops.site import safefs

    config = _restore_site(tmp_path)
    _no_services(monkeypatch)
    victim = tmp_path / "root-folder"
    (victim / "main").mkdir(parents=True)
    (victim / "main" / "keep").write_text("root's\n")
    version = tmp_path / "postgresql" / "15"
    (version / "main").mkdir(parents=True)
    (version / "main" / "PG_VERSION").write_text("15\n")
    os.rename(version, tmp_path / "postgresql" / "15.real")  # what postgres can do: it owns the folder above
    os.symlink(victim, version)
    config = config.__class__(**{**config.__dict__, "pg_data": str(version / "main")})
    monkeypatch.setattr(restore, "STEPS", (restore.move_database_aside, restore.restore_database))
    result = restore.main(config, ARGS)
    assert result["ok"] is False and "is a symlink, not a directory" in result["error"], result
    assert result["step"] == "move_database_aside" and not result["moved_aside"], result
    assert sorted(os.listdir(victim)) == ["main"] and (victim / "main" / "keep").read_text() == "root's\n"
    assert os.stat(victim / "main").st_uid == 0
    with pytest.raises(safefs.Unsafe, match="is a symlink, not a directory"):
        safefs.make_owned_dir(str(version / "new"), 65534, 65534, 0o700)
    assert not (victim / "new").exists()


def test_a_backup_label_postgres_writes_into_backup_info_never_names_a_file_root_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Fourth review (F5): postgres owns repository 1 and can read its cipher pass, so it can rewrite
    backup.info and rename the new set ``../../postgresql/x``; the backup run then wrote its manifest to
    ``manifests/../../postgresql/x.json.tmp``, through a link postgres planted there (root's .bashrc, say).
    A label pgBackRest never makes now stops the run before anything is named after it."""
    from lpse_ops.site import engine, manifest, pgbackrest, run
    from lpse_ops.site.errors import Failure

    config = _restore_site(tmp_path)
    sets = [{"label": "20261203-045951F", "type": "full", "database": {"repo-key": 1}}]
    monkeypatch.setattr(engine, "pgbackrest_info", lambda *_a, **_k: [{"name": config.stanza, "backup": sets}])
    monkeypatch.setattr(engine, "pgbackrest_call",
                        lambda *_a, **_k: sets.append({"label": "../../postgresql/x", "type": "full",
                                                       "database": {"repo-key": 1}}))
    victim = tmp_path / "bashrc"
    victim.write_text("root's\n")
    (tmp_path / "x.json.tmp").symlink_to(victim)
    with pytest.raises(Failure) as refused:
        run.back_up_repo(config, "1", "full")
    assert refused.value.code == "backup_label_invalid" and "'../../postgresql/x'" in refused.value.message
    assert victim.read_text() == "root's\n"
    assert pgbackrest.odd_labels({"backup": [{"label": "20261203-045951F_20261203-050553I"},
                                             {"label": "20261203-045951F_20261203-050553D"}]}) == []
    assert pgbackrest.odd_labels({"backup": [{"label": "20261203-045951F\n"}, {"label": None}]}) == [
        "'20261203-045951F\\n'", "None"]
    with pytest.raises(ValueError, match="not a pgBackRest backup label"):
        manifest.save({"label": "../x"}, str(tmp_path / "manifests"))
