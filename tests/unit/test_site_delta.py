"""lpse-backup run --type delta: which documents it takes, and when it takes none (no engine runs here:
every path that would call restic is either skipped by design or replaced by a recorder)."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from lpse_ops.site import engine, restic, run
from tests.unit.test_site_status import site_settings


@pytest.fixture
def site(tmp_path: Path):
    config = site_settings(tmp_path)
    docs = tmp_path / "documents"
    docs.mkdir()
    (tmp_path / "state").mkdir()
    return config.__class__(**{**config.__dict__, "docs_dir": str(docs), "lock_path": str(tmp_path / "lock")})


@pytest.fixture
def restic_calls(monkeypatch):
    calls = []

    def fake(settings, name, args, **kwargs):
        listing = Path(args[args.index("--files-from-raw") + 1]).read_bytes()
        assert listing.endswith(b"\0"), "restic refuses a raw list without its trailing NUL"
        calls.append((name, args, [os.fsdecode(path) for path in listing[:-1].split(b"\0")]))
        return SimpleNamespace(returncode=0, stdout='{"message_type":"summary","snapshot_id":"abc","files_new":1}\n',
                               stderr="")
    monkeypatch.setattr(engine, "restic_call", fake)
    return calls


def delta(site):
    return run.main(site, SimpleNamespace(type="delta"))


def file_clock(folder: str) -> float:
    """Now, as the file system stamps an inode change (a fresh file's st_ctime in *folder*).

    The delta compares documents' change times with its stamp, so the tests set stamps on this clock, not on
    time.time(): with the clock a year ahead (``--clock-ahead-days``, or libfaketime: both move time.time()
    but not the change times the kernel records) the two disagree by a year; on a site they are one clock.
    """
    probe = Path(folder) / f".clock-{time.monotonic_ns()}"
    probe.write_bytes(b"")
    try:
        return os.lstat(probe).st_ctime
    finally:
        probe.unlink()


def test_before_the_first_documents_snapshot_a_delta_takes_nothing(site, restic_calls):
    (Path(site.docs_dir) / "a.pdf").write_bytes(b"a")
    result = delta(site)
    assert result["ok"] and result["skipped"].startswith("no documents snapshot yet") and restic_calls == []


def test_a_delta_takes_exactly_the_documents_changed_since_the_last_snapshot_to_both_repositories(site,
                                                                                                   restic_calls):
    docs = Path(site.docs_dir)
    (docs / "old").mkdir()
    before = docs / "old" / "before.pdf"
    before.write_bytes(b"x")
    os.utime(before, (0, 0))  # an old mtime changes nothing: the inode change time counts
    run.write_stamp(site, file_clock(site.state_dir) + 5)  # every file so far is older than the last snapshot
    assert delta(site)["skipped"] == "no document changed since the last snapshot" and restic_calls == []
    deadline = time.monotonic() + 5  # the clock past before.pdf's change and the 1 s slack (bounded)
    while (file_clock(site.state_dir) < os.lstat(before).st_ctime + run.STAMP_SLACK_S + 0.2
           and time.monotonic() < deadline):
        time.sleep(0.05)
    run.write_stamp(site, file_clock(site.state_dir))
    (docs / "new").mkdir()
    (docs / "new" / "after.pdf").write_bytes(b"y")
    result = delta(site)
    assert result["ok"] and result["files"] == 1, result
    assert [name for name, _, _ in restic_calls] == ["local", "offsite"]
    _, args, listed = restic_calls[0]
    assert args[:6] == ["backup", "--json", "--tag", "lab01", "--tag", restic.DELTA_TAG]
    assert listed == [str(docs / "new" / "after.pdf")]
    assert run.read_stamp(site) >= os.lstat(before).st_ctime  # moved on: the next delta starts from this one


def test_a_delta_that_fails_on_one_repository_keeps_the_stamp_so_the_next_takes_the_files_again(site, monkeypatch):
    run.write_stamp(site, file_clock(site.state_dir) - 1)
    stamp = run.read_stamp(site)
    (Path(site.docs_dir) / "a.pdf").write_bytes(b"a")
    monkeypatch.setattr(engine, "restic_call", lambda settings, name, args, **k: SimpleNamespace(
        returncode=0 if name == "local" else 1, stdout="", stderr="Fatal: unable to open repository"))
    result = delta(site)
    assert not result["ok"] and result["code"] == "restic_failed" and "offsite" in result["error"], result
    assert run.read_stamp(site) == stamp


def test_a_delta_is_skipped_while_another_run_snapshots_the_documents(site, restic_calls):
    run.write_stamp(site, file_clock(site.state_dir) - 1)
    (Path(site.docs_dir) / "a.pdf").write_bytes(b"a")
    with open(site.files_lock_path, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = delta(site)
    assert result["ok"] and "holds the documents lock" in result["skipped"] and restic_calls == []


def test_a_restore_never_starts_from_a_delta():
    from datetime import UTC, datetime

    def snap(sid, minute, tags):
        return restic.Snapshot(sid, sid, datetime(2026, 11, 28, 10, minute, tzinfo=UTC), "h", ("/d",), tags)
    snaps = [snap("full1", 0, ("lab01",)), snap("delta1", 1, ("lab01", "delta")), snap("delta2", 2, ("lab01", "delta"))]
    assert restic.snapshot_at(restic.full(snaps), datetime(2026, 11, 28, 10, 3, tzinfo=UTC)).id == "full1"


def test_a_database_run_pushes_the_live_timeline_s_history_file(site, monkeypatch):
    """A rebuilt server promoted before its archiving was back never archived its timeline's history."""
    wal = Path(site.pg_data) / "pg_wal"
    wal.mkdir(parents=True)
    (wal / "0000000A.history").write_text("9\t0/5D009CC0\tbefore 2026-11-28 23:14:37+07\n")
    pushed = []
    monkeypatch.setattr(run.postgres, "psql", lambda *a, **k: ["10"])
    monkeypatch.setattr(engine, "pgbackrest_call", lambda settings, args, **k: pushed.append(args) or SimpleNamespace(
        returncode=0, stdout="", stderr=""))
    current = run.Run(site, "incr", {})
    run.push_timeline_history(current)
    assert pushed == [["archive-push", "--no-archive-async", str(wal / "0000000A.history")]]
    assert current.result["timeline_history"] == {"timeline": 10, "pushed": True}
    assert run.push_timeline_history in run.steps_for("incr") and run.push_timeline_history in run.steps_for("full")
    monkeypatch.setattr(run.postgres, "psql", lambda *a, **k: ["1"])  # timeline 1 has no history file
    current = run.Run(site, "incr", {})
    run.push_timeline_history(current)
    assert "timeline_history" not in current.result and len(pushed) == 1
