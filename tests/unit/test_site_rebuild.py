"""The site tool's pieces for a rebuilt server: which database a stanza belongs to, a restore to the end of
the archive (issue 9: server lost, ransomware)."""

from __future__ import annotations

from lpse_ops.site import pgbackrest

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


def test_a_set_s_timeline_is_its_first_wal_segment_s():
    assert pgbackrest.timeline_of({"archive": {"start": "00000006000000000000006E", "stop": "x"}}) == 6
    assert pgbackrest.timeline_of({"archive": {"start": "0000000A0000000100000002"}}) == 10
    assert pgbackrest.timeline_of({}) is None and pgbackrest.timeline_of({"archive": {"start": "junk"}}) is None


def restore_choosing(monkeypatch, live_timeline: str, set_timeline: int | None):
    from types import SimpleNamespace

    from lpse_ops.site import postgres, restore

    monkeypatch.setattr(postgres, "psql", lambda *a, **k: [f"{live_timeline}\t42"])
    current = SimpleNamespace(settings=None, stanza_system_id=42, set_timeline=set_timeline, result={})
    restore.note_live_timeline(current)
    return current


def test_a_set_on_the_live_timeline_is_followed_as_current_which_needs_no_history_file(monkeypatch):
    # a rebuilt server's timeline 6 has no 00000006.history in its repositories: a numbered target fails
    current = restore_choosing(monkeypatch, "6", set_timeline=6)
    assert current.timeline == "current" and current.result["timeline_followed"] == "current (6)"


def test_a_set_on_an_earlier_timeline_follows_the_live_one_by_number(monkeypatch):
    current = restore_choosing(monkeypatch, "6", set_timeline=5)
    assert current.timeline == "6" and current.result["timeline_followed"] == 6
