"""The site tool's pieces for a rebuilt server: which database a stanza belongs to, a restore to the end of
the archive, and the timeline a promotion branched from (issue 9: server lost, ransomware)."""

from __future__ import annotations

from lpse_ops.site import pgbackrest, restore

# `pgbackrest info --output=json` on a rebuilt lab server whose first setup created repo1 for its fresh cluster
# (recorded on lab01 before the role refused that case): the stanza's repos hold two different databases.
MISMATCHED = {"name": "spse", "db": [{"id": 1, "repo-key": 1, "system-id": 7713150951578401234, "version": "15"},
                                     {"id": 1, "repo-key": 2, "system-id": 7713145942750271771, "version": "15"}],
              "status": {"code": 5, "message": "database mismatch across repos"}}


def test_system_id_is_per_repository_and_newest_db_entry_wins():
    assert pgbackrest.system_id(MISMATCHED, 1) == 7713150951578401234
    assert pgbackrest.system_id(MISMATCHED, "2") == 7713145942750271771
    upgraded = {"db": [{"id": 1, "repo-key": 2, "system-id": 1}, {"id": 2, "repo-key": 2, "system-id": 2}]}
    assert pgbackrest.system_id(upgraded, 2) == 2


def test_system_id_of_a_missing_stanza_is_unknown():
    assert pgbackrest.system_id(pgbackrest.stanza_of([], "spse"), 2) is None


def test_restore_to_end_of_archive_has_no_target():
    args = pgbackrest.restore_to_end_args(2, ("--repo2-path=/v/x", "--target-timeline=3"))
    assert args == ["restore", "--repo=2", "--type=default", "--repo2-path=/v/x", "--target-timeline=3"]
    assert not any(arg.startswith("--target=") for arg in args)


def test_parent_timeline_reads_the_last_entry_of_the_promoted_timelines_history(tmp_path):
    (tmp_path / "pg_wal").mkdir()
    (tmp_path / "pg_wal" / "0000000A.history").write_text(
        "1\t0/5000000\tno recovery target specified\n\n9\t0/9A000A0\tbefore 2026-11-28 09:20:33.357+00\n")
    assert restore.parent_timeline(str(tmp_path), "10") == "9"


def test_parent_timeline_unknown_without_a_history_file(tmp_path):
    assert restore.parent_timeline(str(tmp_path), "2") is None
    assert restore.parent_timeline(str(tmp_path), "default") is None
