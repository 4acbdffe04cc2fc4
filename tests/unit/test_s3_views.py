"""What a versioned, Object-Locked bucket looked like at a given time (pure, from version listings)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lpse_ops.backends.s3 import Version, state_as_of

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


LISTING = [
    Version("restic/lab01/config", "v1", at(0), False),
    Version("pgbackrest/lab01/backup.info", "v1", at(1), False),
    Version("pgbackrest/lab01/backup.info", "v2", at(10), False),      # overwritten later
    Version("pgbackrest/lab01/archive/0001", "v1", at(2), False),
    Version("pgbackrest/lab01/archive/0001", "dm1", at(20), True),     # deleted later (a delete marker)
    Version("restic/lab01/locks/abc", "v1", at(3), False),
    Version("restic/lab01/locks/abc", "dm1", at(4), True),             # restic removed its lock
]


def test_state_as_of_before_the_overwrite_keeps_the_old_version():
    state = state_as_of(LISTING, at(5))
    assert state["pgbackrest/lab01/backup.info"].version_id == "v1"
    assert "pgbackrest/lab01/archive/0001" in state


def test_state_as_of_after_the_delete_omits_the_key():
    state = state_as_of(LISTING, at(30))
    assert "pgbackrest/lab01/archive/0001" not in state
    assert state["pgbackrest/lab01/backup.info"].version_id == "v2"


def test_state_as_of_before_anything_is_empty_and_deleted_locks_stay_gone():
    assert state_as_of(LISTING, at(-1)) == {}
    assert "restic/lab01/locks/abc" not in state_as_of(LISTING, at(5))
    assert "restic/lab01/locks/abc" in state_as_of(LISTING, at(3))
