"""A verification's ``restic check`` waits out another restic process's lock (a documents delta), with a bound.

CI saw it fail for real (ci23, test_backup): the 30-second documents delta held a lock while the check asked for an
exclusive one, and the verification failed ("repository is already locked by PID 12607"), a critical fault on a site
whose backups were whole. The outputs below are restic 0.14's (Debian 12), as that run printed them.
"""

from __future__ import annotations

import subprocess

from lpse_ops.site import restic
from lpse_ops.site.verify import waiting_out_other_locks

LOCKED = (
    "using temporary cache in /var/lib/lpse-backup/cache/restic/restic-check-cache-3431579435\n"
    "create exclusive lock for repository\n"
    "unable to create lock in backend: repository is already locked by PID 12607 on site1 by root (UID 0, GID 0)\n"
    "lock was created at 2026-12-05 12:45:20 (318.388206ms ago)\nstorage ID d67dd672\n"
    "the `unlock` command can be used to remove stale locks\n"
)
BROKEN_PACK = "check snapshots, trees and blobs\nread all data\nPack ID does not match, want 3f2c…, got 9ab1…\n" \
              "Fatal: repository contains errors\n"


def outcome(code: int, stderr: str = "") -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(["restic", "check", "--read-data"], code, "", stderr)


class Clock:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_only_restics_lock_conflict_counts_as_locked_by_another():
    assert restic.locked_by_another(LOCKED)
    assert not restic.locked_by_another(BROKEN_PACK)
    assert not restic.locked_by_another("Fatal: unable to open config file: Stat: 403 Forbidden")


def test_a_check_that_met_a_delta_lock_runs_again_once_the_lock_is_gone():
    clock, answers = Clock(), [outcome(1, LOCKED), outcome(1, LOCKED), outcome(0)]
    out, waits = waiting_out_other_locks(lambda: answers.pop(0), bound_s=60, poll_s=2, sleep=clock.sleep,
                                         clock=lambda: clock.now)
    assert out.returncode == 0 and answers == [] and clock.slept == [2, 2] and waits == 2


class Restic:
    """A restic command that answers *stderr* with exit 1 every time; counts its runs."""

    def __init__(self, stderr: str) -> None:
        self.stderr, self.runs = stderr, 0

    def __call__(self) -> subprocess.CompletedProcess:
        self.runs += 1
        return outcome(1, self.stderr)


def test_a_broken_repository_fails_at_once_it_is_never_retried():
    clock, broken = Clock(), Restic(BROKEN_PACK)
    out, waits = waiting_out_other_locks(broken, bound_s=60, poll_s=2, sleep=clock.sleep, clock=lambda: clock.now)
    assert out.returncode == 1 and "Pack ID does not match" in out.stderr and waits == 0
    assert broken.runs == 1 and clock.slept == []


def test_a_lock_that_never_goes_fails_the_check_after_the_bound_with_restics_own_words():
    clock, locked = Clock(), Restic(LOCKED)
    out, waits = waiting_out_other_locks(locked, bound_s=10, poll_s=2, sleep=clock.sleep, clock=lambda: clock.now)
    assert out.returncode == 1 and "already locked by PID 12607" in out.stderr and waits == 5
    assert clock.now == 10 and locked.runs == 6  # tried at 0, 2, 4, 6, 8 and 10 s, then no more
