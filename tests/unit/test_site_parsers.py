"""The site's pure helpers over recorded engine output: pgBackRest, restic, psql, settings, lock."""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lpse_ops.site import documents, locking, pgbackrest, postgres, restic, settings
from lpse_ops.site.errors import Failure

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engines"


def recorded(name: str):
    return json.loads((FIXTURES / f"{name}.json").read_text())["output"]


def test_pgbackrest_stanza_of_finds_the_site_stanza_and_describes_its_last_set():
    stanza = pgbackrest.stanza_of(recorded("pgbackrest-info"), "spse")
    (last,) = pgbackrest.backups_in(stanza, "1")
    assert pgbackrest.describe_backup(last) == {
        "label": "20261124-093245F", "type": "full", "started_at": "2026-11-24T09:32:45+00:00",
        "finished_at": "2026-11-24T09:32:48+00:00", "size_bytes": 31861617, "repo_size_bytes": 3916592,
        "error": False}
    assert pgbackrest.stopped_at(last) == datetime(2026, 11, 24, 9, 32, 48, tzinfo=UTC)


def test_pgbackrest_stanza_of_unknown_stanza_reads_as_missing():
    stanza = pgbackrest.stanza_of(recorded("pgbackrest-info"), "other")
    assert pgbackrest.stanza_missing(pgbackrest.repo_status(stanza, 1)) and pgbackrest.backups_in(stanza, 1) == []


def test_pgbackrest_repo_error_is_per_repo():
    stanza = pgbackrest.stanza_of(recorded("pgbackrest-info-repo2-refused"), "spse")
    first, second = pgbackrest.repo_status(stanza, "1"), pgbackrest.repo_status(stanza, "2")
    assert pgbackrest.repo_usable(first) and first["message"] == "no valid backups"
    assert not pgbackrest.repo_usable(second) and second["code"] == 99 and "403" in second["message"]
    (parsed,) = pgbackrest.parse_info(recorded("pgbackrest-info-repo2-refused"))
    assert parsed.status_message == "different across repos" and parsed.repo_status[1] == "no valid backups"


def test_pgbackrest_missing_stanza_recorded_on_both_repos():
    stanza = pgbackrest.stanza_of(recorded("pgbackrest-info-stanza-missing"), "nosuch")
    assert all(pgbackrest.stanza_missing(pgbackrest.repo_status(stanza, r)) for r in (1, 2))


def test_pgbackrest_verify_problems_name_the_bad_files():
    output = ("P00   INFO: verify command begin\n"
              "P01   INFO: invalid checksum 'backup/spse/20261124-093245F/pg_data/base/5/16390.zst'\n"
              "P00   INFO: stanza: spse\n              status: error\n")
    assert pgbackrest.verify_problems(output) == [
        "P01   INFO: invalid checksum 'backup/spse/20261124-093245F/pg_data/base/5/16390.zst'", "status: error"]


def test_pgbackrest_argv_builders():
    assert pgbackrest.argv("spse", *pgbackrest.info_args(2)) == ["pgbackrest", "--stanza=spse", "info",
                                                                  "--output=json", "--repo=2"]
    assert pgbackrest.restore_to_time_args(2, "2026-11-24 09:00:00+00", ("--repo2-path=/v/x",))[-1] == \
        "--repo2-path=/v/x"


def test_restic_recorded_snapshots_newest_tagged_and_covering():
    snapshots = restic.parse_snapshots(recorded("restic-snapshots-site1"))
    assert [s.short_id for s in snapshots] == ["b9a73e37", "49686697"]
    assert restic.newest_tagged(snapshots, "20261128-031826F").short_id == "49686697"
    assert restic.newest_tagged(snapshots, "nope") is None
    assert restic.covering(snapshots, "/var/lib/spse/documents") == snapshots
    assert restic.covering(snapshots, "/srv/elsewhere") == []


def test_restic_backup_summary_and_forget_counts():
    stdout = ('{"message_type":"status","percent_done":0.5}\n'
              '{"message_type":"summary","files_new":21,"files_changed":0,"data_added":105987,'
              '"total_files_processed":21,"total_bytes_processed":91777,"snapshot_id":"2e182940abc"}\n')
    assert restic.describe_summary(restic.parse_backup_summary(stdout)) == {
        "snapshot_id": "2e182940abc", "files_new": 21, "files_changed": 0, "data_added_bytes": 105987,
        "total_files": 21, "total_bytes": 91777}
    forget = "Applying Policy: ...\nremove 2 snapshots:\n...\nremove 1 snapshot:\n"
    assert restic.parse_forget(forget) == {"groups_pruned": 2, "snapshots_removed": 3}


def test_restic_env_file_and_repo_args():
    assert restic.parse_env_file('# Ansible managed\nAWS_ACCESS_KEY_ID="abc"\n\nAWS_DEFAULT_REGION=us-east-1\n') == {
        "AWS_ACCESS_KEY_ID": "abc", "AWS_DEFAULT_REGION": "us-east-1"}
    assert restic.repo_args("/var/lib/lpse-backup/restic", "/ca.crt", ("--option", "x")) == [
        "--repo", "/var/lib/lpse-backup/restic"]
    assert restic.repo_args("s3:https://o/b", "/ca.crt", ("--option", "x")) == [
        "--repo", "s3:https://o/b", "--cacert", "/ca.crt", "--option", "x"]


def test_postgres_checksum_session_pins_every_setting_before_checksumming():
    sql = postgres.checksum_session("SELECT 'RP';\n")
    pins = [f"SET LOCAL {name} =" for name, _ in postgres.PINNED]
    assert sql.startswith("BEGIN;\n") and sql.rstrip().endswith("COMMIT;")
    assert all(pin in sql for pin in pins)
    assert max(sql.index(pin) for pin in pins) < sql.index("LOCK TABLE") < sql.index("SELECT 'RP'")
    assert "SET LOCAL TimeZone = 'UTC';" in sql and "SET LOCAL search_path = pg_catalog, public;" in sql


def test_postgres_table_checksums_and_archiver_row():
    lines = ["BEGIN", "T\ttenders\t5\tabc", "T\tdocuments\t0\td41d8cd98f00b204e9800998ecf8427e", "RP\t0/3000\tx"]
    assert postgres.table_checksums(lines) == {"tenders": {"rows": 5, "md5": "abc"},
                                               "documents": {"rows": 0, "md5": "d41d8cd98f00b204e9800998ecf8427e"}}
    assert postgres.parse_archiver("0000000100000000000000A1\t2026-11-24 16:00:00+07\t2\tX\t2026-11-24 08:59:00+00") \
        == {"last_archived_wal": "0000000100000000000000A1", "last_archived_time": "2026-11-24T09:00:00+00:00",
            "failed_count": 2, "last_failed_wal": "X", "last_failed_time": "2026-11-24T08:59:00+00:00"}
    assert postgres.wal_at_or_after("000000020000000000000010", "000000010000000000000010")
    assert not postgres.wal_at_or_after("", "000000010000000000000010")


def test_settings_missing_keys_are_named():
    with pytest.raises(Failure) as caught:
        settings.Settings.from_mapping({"site_code": "lab01"})
    assert caught.value.code == "config_invalid" and "stanza" in caught.value.message


def test_settings_file_missing_is_config_missing(tmp_path: Path):
    with pytest.raises(Failure) as caught:
        settings.load(str(tmp_path / "nope.json"))
    assert caught.value.code == "config_missing"


def test_locking_second_holder_gets_lock_busy(tmp_path: Path):
    path = str(tmp_path / "lock")
    holding, release = threading.Event(), threading.Event()

    def hold():
        with locking.exclusive(path, 0):
            holding.set()
            release.wait(5)
    thread = threading.Thread(target=hold)
    thread.start()
    holding.wait(5)
    try:
        with pytest.raises(Failure) as caught, locking.exclusive(path, 0):
            pass
        assert caught.value.code == "lock_busy"
    finally:
        release.set()
        thread.join()
    with locking.exclusive(path, 0):
        pass


def test_documents_check_finds_missing_and_changed(tmp_path: Path):
    (tmp_path / "a.pdf").write_bytes(b"A")
    (tmp_path / "b.pdf").write_bytes(b"B")
    def row(doc_id: int, sha: str, path: str) -> str:  # as documents.QUERY prints it
        return f"{doc_id}\t{sha.encode().hex()}\t{path.encode().hex()}"
    rows = [row(1, documents.sha256_file(tmp_path / "a.pdf"), "a.pdf"), row(2, "00ff", "b.pdf"),
            row(3, "00ff", "c.pdf")]
    assert documents.check(documents.parse_rows(rows), str(tmp_path)) == (["3:c.pdf"], ["2:b.pdf"])


def test_documents_bring_back_copies_only_files_whose_hash_matches(tmp_path: Path):
    live, aside = tmp_path / "live", tmp_path / "aside"
    (aside / "ab").mkdir(parents=True)
    live.mkdir()
    (aside / "ab" / "good").write_bytes(b"tender document")
    (aside / "ab" / "bad").write_bytes(b"changed since its row was written")
    good = documents.Document("1", documents.sha256_file(aside / "ab" / "good"), "ab/good")
    bad = documents.Document("2", "00" * 32, "ab/bad")
    gone = documents.Document("3", "11" * 32, "cd/gone")
    still = documents.bring_back([good, bad, gone], str(aside), str(live))
    assert still == [bad, gone]
    assert (live / "ab" / "good").read_bytes() == b"tender document" and not (live / "ab" / "bad").exists()
    assert documents.check([good], str(live)) == ([], [])


def test_run_steps_forget_only_with_daily_database_backups_never_with_documents_runs():
    from lpse_ops.site import run

    assert run.steps_for("files") == (run.preflight_files, run.back_up_files)
    assert run.forget_snapshots not in run.steps_for("incr")
    assert run.steps_for("full")[-1] is run.forget_snapshots and run.steps_for("diff")[-1] is run.forget_snapshots


def test_documents_runs_take_their_own_lock_so_a_database_run_never_holds_them_back(tmp_path: Path):
    from lpse_ops.site import run
    from tests.unit.test_site_status import site_settings

    held = dataclasses.replace(site_settings(tmp_path), lock_path=str(tmp_path / "main.lock"), lock_wait_s=0)
    with run.run_lock(held, "full"), run.run_lock(held, "files"):
        pass  # the files lock is free while a database run holds the main one
    with run.run_lock(held, "files"), pytest.raises(Failure) as caught, run.run_lock(held, "files"):
        pass
    assert caught.value.code == "lock_busy"


@pytest.mark.parametrize("state, dead", [
    ({"ActiveState": "activating", "SubState": "start", "MainPID": "0", "ControlPID": "0"}, True),
    ({"ActiveState": "activating", "SubState": "start", "MainPID": "0", "ControlPID": "4242"}, False),
    ({"ActiveState": "active", "SubState": "running", "MainPID": "77", "ControlPID": "0"}, False),
])
def test_services_dead_start_is_activating_with_no_process_left(state, dead):
    """As seen on a lab site: Debian's postgresql@.service (TimeoutStartSec=0) after a refused recovery."""
    from lpse_ops.site import services

    assert services.dead_start(state) is dead


PG_REFUSED_RECOVERY = """\
2026-12-04 06:15:10.447 WIB [17446] LOG:  database system is ready to accept read-only connections
2026-12-04 06:15:10.462 WIB [17449] LOG:  restored log file "00000002000000000000001F" from archive
2026-12-04 06:15:10.709 WIB [17449] LOG:  redo done at 0/1F002918 system usage: CPU: user: 0.00 s, system: 0.00 s, \
elapsed: 0.76 s
2026-12-04 06:15:10.709 WIB [17449] LOG:  last completed transaction was at log time 2026-12-04 06:14:19.979297+07
2026-12-04 06:15:10.709 WIB [17449] FATAL:  recovery ended before configured recovery target was reached
2026-12-04 06:15:10.712 WIB [17446] LOG:  startup process (PID 17449) exited with exit code 1
2026-12-04 06:15:10.712 WIB [17446] LOG:  terminating any other active server processes
2026-12-04 06:15:10.713 WIB [17446] LOG:  shutting down due to startup process failure
2026-12-04 06:15:10.716 WIB [17446] LOG:  database system is shut down
pam_unix(runuser:session): session opened for user postgres(uid=102) by (uid=0)
psql: error: connection to server on socket "/var/run/postgresql/.s.PGSQL.5432" failed: No such file or directory
	Is the server running locally and accepting connections on that socket?
pam_unix(runuser:session): session closed for user postgres
postgresql@15-main.service: Can't open PID file /run/postgresql/15-main.pid (yet?) after start-post: \
No such file or directory
Cluster is not running.
postgresql@15-main.service: Control process exited, code=exited, status=2/INVALIDARGUMENT
postgresql@15-main.service: Failed with result 'protocol'.
"""  # journalctl -u postgresql@15-main -o cat, a lab site, a restore past the archive


def test_services_last_complaint_is_postgresqls_fatal_not_the_noise_after_it():
    from lpse_ops.site import services

    assert services.last_complaint(PG_REFUSED_RECOVERY).endswith(
        "FATAL:  recovery ended before configured recovery target was reached")
    assert services.last_complaint("Started x.service\nStopped x.service") == ""


FIND_OUTPUT = (  # restic 0.14.0 `find --json` of two paths: one in both snapshots, one in the older only
    '[{"matches":[{"path":"/d/a/f2","type":"file","size":4}],"hits":1,"snapshot":"35e9f83a3a4b96a1"},'
    '{"matches":[{"path":"/d/a/f1","type":"file","size":4},{"path":"/d/a/f2","type":"file","size":4}],'
    '"hits":2,"snapshot":"3818e1979dbe7e97"}]\n')


def test_restic_find_names_the_snapshots_holding_each_path():
    from lpse_ops.site import restic

    assert restic.find_args(["/d/a/f1", "/d/a/f2"]) == ["find", "--json", "/d/a/f1", "/d/a/f2"]
    assert restic.find_args(["/d/a/f1"], ["abc", "def"]) == ["find", "--json", "--snapshot", "abc", "--snapshot", "def",
                                                              "/d/a/f1"]
    assert restic.parse_find(FIND_OUTPUT) == {"35e9f83a3a4b96a1": {"/d/a/f2"},
                                             "3818e1979dbe7e97": {"/d/a/f1", "/d/a/f2"}}
    assert restic.parse_find("") == {} and restic.parse_find("[]") == {}
