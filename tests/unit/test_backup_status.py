"""``backup status`` verdicts from a site's status JSON (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lpse_ops.actions.backup import Thresholds, assess

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def iso(delta: timedelta) -> str:
    return (NOW - delta).isoformat()


def status(backup_age: timedelta, wal_age: timedelta, queue: int = 0, failed: int = 0) -> dict:
    """A site's ``lpse-backup status`` JSON, in the shape the role's tool prints."""
    last = {"label": "20261124-090000F", "type": "full", "time": iso(backup_age)}
    return {"action": "status", "ok": True, "alerts": ["pgbackrest repo2: last backup is older than 26 h"],
            "pgbackrest": {"repos": {"1": {"last_backup": last}, "2": {"last_backup": last}}},
            "restic": {"local": {"last_snapshot_time": iso(backup_age)},
                       "offsite": {"last_snapshot_time": iso(backup_age)}},
            "wal_archiving": {"last_archived_time": iso(wal_age), "failed_count": failed,
                              "last_failed_time": iso(wal_age - timedelta(seconds=30)) if failed else None},
            "spool_queue": {"files": queue}}


def test_assess_fresh_site_has_no_warning():
    verdict = assess("site1", status(timedelta(hours=2), timedelta(minutes=1)),
                     {"ok": True, "verified_at": iso(timedelta(days=1))}, Thresholds(), NOW)
    assert verdict["ok"], verdict["warnings"]
    assert round(verdict["ages"]["backup_local_s"]) == 7200


def test_assess_old_backup_old_wal_and_no_verification_warn():
    verdict = assess("site1", status(timedelta(hours=30), timedelta(minutes=20)), None, Thresholds(), NOW)
    text = " | ".join(verdict["warnings"])
    assert "local database backup is 30.0 h old" in text and "offsite documents snapshot is 30.0 h old" in text
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


def test_assess_keeps_site_alerts_it_does_not_recompute():
    output = status(timedelta(hours=1), timedelta(minutes=1))
    output["alerts"].append("restic offsite: S3 refused the credentials")
    verdict = assess("site1", output, {"ok": True, "verified_at": iso(timedelta(days=1))}, Thresholds(), NOW)
    assert verdict["warnings"] == ["restic offsite: S3 refused the credentials"]
