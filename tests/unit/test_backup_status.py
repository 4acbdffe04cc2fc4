"""``backup status`` verdicts from a site's status JSON (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lpse_ops.actions.backup import Thresholds, assess

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def iso(delta: timedelta) -> str:
    return (NOW - delta).isoformat()


def status(backup_age: timedelta, wal_age: timedelta, queue: int = 0, failed: int = 0) -> dict:
    return {"pgbackrest": {"repo1": {"time": iso(backup_age)}, "repo2": {"time": iso(backup_age)}},
            "wal": {"last_archived_time": iso(wal_age), "failed_count": failed,
                    "last_failed_time": iso(wal_age - timedelta(seconds=30)) if failed else None},
            "queue": {"files": queue}}


def test_assess_fresh_site_has_no_warning():
    verdict = assess("site1", status(timedelta(hours=2), timedelta(minutes=1)),
                     {"ok": True, "verified_at": iso(timedelta(days=1))}, Thresholds(), NOW)
    assert verdict["ok"], verdict["warnings"]
    assert round(verdict["ages"]["backup_local_s"]) == 7200


def test_assess_old_backup_old_wal_and_no_verification_warn():
    verdict = assess("site1", status(timedelta(hours=30), timedelta(minutes=20)), None, Thresholds(), NOW)
    text = " | ".join(verdict["warnings"])
    assert "local backup is 30.0 h old" in text and "offsite backup is 30.0 h old" in text
    assert "last WAL archived 20 min ago" in text and "no verified restore yet" in text


def test_assess_growing_queue_and_failing_archive_warn():
    verdict = assess("site1", status(timedelta(hours=1), timedelta(minutes=1), queue=200, failed=3),
                     {"ok": True, "verified_at": iso(timedelta(days=1))}, Thresholds(), NOW)
    text = " | ".join(verdict["warnings"])
    assert "WAL queue growing: 200 segments" in text and "WAL archiving is failing (3 failures" in text


def test_assess_failed_verification_warns():
    verdict = assess("site1", status(timedelta(hours=1), timedelta(minutes=1)),
                     {"ok": False, "verified_at": iso(timedelta(hours=1))}, Thresholds(), NOW)
    assert verdict["warnings"] == ["the last restore verification FAILED"]
