"""``backup status`` verdicts from a site's status facts (pure), and the command printing each once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from click.testing import CliRunner

from lpse_ops.actions import backup as actions
from lpse_ops.actions.backup import Thresholds, assess
from lpse_ops.main import main as cli

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
VERIFIED = {"ok": True, "verified_at": (NOW - timedelta(days=1)).isoformat()}


def iso(delta: timedelta) -> str:
    return (NOW - delta).isoformat()


def status(backup_age: timedelta, wal_age: timedelta, queue: int = 0, failed: int = 0) -> dict:
    """A site's ``lpse-backup status`` JSON: facts only, in the shape ``lpse_ops.site.status`` prints."""
    last = {"label": "20261124-090000F", "type": "full", "time": iso(backup_age)}
    repo = {"status": {"code": 0, "message": "ok"}, "backups": 1, "last_backup": last}
    return {"action": "status", "ok": True,
            "pgbackrest": {"stanza": "spse", "status": {"code": 0, "message": "ok"}, "repos": {"1": repo, "2": repo}},
            "restic": {"local": {"snapshots": 1, "last_snapshot_time": iso(backup_age)},
                       "offsite": {"snapshots": 1, "last_snapshot_time": iso(backup_age)}},
            "wal_archiving": {"last_archived_time": iso(wal_age), "failed_count": failed,
                              "last_failed_time": iso(wal_age - timedelta(seconds=30)) if failed else None},
            "spool_queue": {"files": queue, "alert_threshold_files": 64}, "last_verify": None}


def fresh_site() -> dict:
    """A site just set up: stanza created, no backup, no snapshot, no verification yet."""
    empty = {"status": {"code": 2, "message": "no valid backups"}, "backups": 0, "last_backup": None}
    return {"action": "status", "ok": True,
            "pgbackrest": {"stanza": "spse", "status": {"code": 2, "message": "no valid backups"},
                           "repos": {"1": empty, "2": empty}},
            "restic": {"local": {"snapshots": 0, "last_snapshot_time": None, "last_snapshot_id": None},
                       "offsite": {"snapshots": 0, "last_snapshot_time": None, "last_snapshot_id": None}},
            "wal_archiving": {"last_archived_time": iso(timedelta(minutes=1)), "failed_count": 0,
                              "last_failed_time": None},
            "spool_queue": {"files": 0, "alert_threshold_files": 64}, "last_verify": None}


def test_assess_fresh_site_has_no_warning():
    verdict = assess("site1", status(timedelta(hours=2), timedelta(minutes=1)), VERIFIED, Thresholds(), NOW)
    assert verdict["ok"], verdict["warnings"]
    assert round(verdict["ages"]["backup_local_s"]) == 7200 and verdict["codes"] == []


def test_assess_old_backup_old_wal_and_no_verification_warn():
    verdict = assess("site1", status(timedelta(hours=30), timedelta(minutes=20)), None, Thresholds(), NOW)
    text = " | ".join(verdict["warnings"])
    assert "local database backup is 30.0 h old" in text and "offsite documents snapshot is 30.0 h old" in text
    assert "last WAL archived 20 min ago" in text and "no verified restore yet" in text
    assert verdict["codes"].count("backup_too_old") == 2 and "wal_too_old" in verdict["codes"]


def test_assess_growing_queue_and_failing_archive_warn():
    verdict = assess("site1", status(timedelta(hours=1), timedelta(minutes=1), queue=200, failed=3),
                     VERIFIED, Thresholds(), NOW)
    text = " | ".join(verdict["warnings"])
    assert "WAL queue growing: 200 segments" in text and "WAL archiving is failing (3 failures" in text
    assert verdict["codes"] == ["wal_failing", "wal_queue_growing"]


def test_assess_failed_verification_warns():
    verdict = assess("site1", status(timedelta(hours=1), timedelta(minutes=1)),
                     {"ok": False, "verified_at": iso(timedelta(hours=1))}, Thresholds(), NOW)
    assert verdict["warnings"] == [f"the last restore verification ({iso(timedelta(hours=1))}) FAILED"]


def test_assess_unreadable_restic_repo_warns_once_with_its_code():
    output = status(timedelta(hours=1), timedelta(minutes=1))
    output["restic"]["offsite"] = {"error": "offsite S3 refused the credentials: check backup_s3_access_key",
                                   "code": "s3_credentials_refused"}
    verdict = assess("site1", output, VERIFIED, Thresholds(), NOW)
    assert verdict["warnings"] == ["restic offsite could not be read: offsite S3 refused the credentials: check "
                                   "backup_s3_access_key (s3_credentials_refused)"]
    assert verdict["codes"] == ["restic_unreadable"]


def test_assess_repo_error_names_the_repo_and_its_message():
    output = status(timedelta(hours=1), timedelta(minutes=1))
    output["pgbackrest"]["repos"]["2"] = {**output["pgbackrest"]["repos"]["2"],
                                          "status": {"code": 99, "message": "[ProtocolError] HTTP 403"}}
    verdict = assess("site1", output, VERIFIED, Thresholds(), NOW)
    assert verdict["warnings"] == ["pgBackRest repo2 (offsite database backup): [ProtocolError] HTTP 403"]


def test_assess_fresh_site_warns_once_per_missing_thing():
    verdict = assess("site1", fresh_site(), None, Thresholds(), NOW)
    assert verdict["warnings"] == ["no local database backup yet", "no offsite database backup yet",
                                   "no local documents snapshot yet", "no offsite documents snapshot yet",
                                   "no verified restore yet"]


def site_result(ok: bool, finished: timedelta, ident: str | None = "a1", **extra) -> dict:
    """One verification as the site tool reports it (``lpse_ops.site.status.verification_summary``)."""
    checks = [{"check": "pgbackrest verify", "ok": True, "detail": "every file matches"},
              {"check": "table public.documents", "ok": ok, "detail": "12 rows" if ok else "expected 12 rows, got 11"}]
    return {"id": ident, "ok": ok, "repo": 1, "set": "20261124-090000F",
            "started_at": iso(finished + timedelta(minutes=2)),
            "finished_at": iso(finished), "duration_s": 120.0, "restore_duration_s": 40.0,
            "restore_point": {"name": "lpse-20261124-090000F", "time": iso(finished + timedelta(hours=1))},
            "trigger": "systemd", "invocation_id": "f00d", "error": None if ok else "verify failed: table", "code":
            None if ok else "verify_failed", "checks": checks, **extra}


def test_assess_uses_the_verification_it_is_given_not_the_sites_last_verify():
    """One truth: the verdict follows the stored verification; the site's own reaches the store by ingestion."""
    output = status(timedelta(hours=1), timedelta(minutes=1))
    output["last_verify"] = {"ok": False, "finished_at": iso(timedelta(hours=2)), "error": "verify failed: table x"}
    verdict = assess("site1", output, {"ok": True, "verified_at": iso(timedelta(days=3))}, Thresholds(), NOW)
    assert verdict["codes"] == [] and round(verdict["ages"]["verified_s"]) == 3 * 86400


def test_site_verifications_reads_the_recent_list_and_a_legacy_last_verify_once():
    output = status(timedelta(hours=1), timedelta(minutes=1))
    output["verifications"] = [site_result(True, timedelta(days=8), "old"),
                               site_result(True, timedelta(hours=3), "new")]
    output["last_verify"] = {"id": "new", "ok": True, "finished_at": iso(timedelta(hours=3)), "set": "20261124-090000F"}
    assert [v["id"] for v in actions.site_verifications(output)] == ["old", "new"]
    legacy = status(timedelta(hours=1), timedelta(minutes=1))  # a site tool from before the ids
    legacy["last_verify"] = {"ok": False, "repo": 1, "set": "S", "finished_at": iso(timedelta(hours=2)),
                             "failed_checks": ["table t"]}
    (found,) = actions.site_verifications(legacy)
    assert found["id"].startswith("legacy-") and found["checks"] == [{"check": "table t", "ok": False,
                                                                       "detail": "failed"}]
    assert actions.site_verifications(legacy)[0]["id"] == found["id"]  # the same id on every reading


def test_ingest_records_a_site_verification_once_and_the_current_one_is_the_newest(tmp_path: Path):
    from lpse_ops.state import StateStore

    output = status(timedelta(hours=1), timedelta(minutes=1))
    output["verifications"] = [site_result(True, timedelta(hours=30), "v1"),
                               site_result(False, timedelta(hours=2), "v2")]
    with StateStore.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        run = store.start_run("fleet.status", {}, ["site1"])
        assert len(actions.ingest_site_verifications(store, "site1", output, run)) == 2
        assert actions.ingest_site_verifications(store, "site1", output, run) == []  # read again: nothing new
        entries = store.audit_count()
        # a second process that read the same site without knowing: the store still holds each once
        actions.record_site_verification(store, "site1", output["verifications"][1], run, "site")
        assert len(store.list_verifications("site1")) == 2 and store.audit_count() == entries
        current = actions.current_verification(store, "site1")
        assert current["site_verification_id"] == "v2" and current["ok"] is False and current["source"] == "site"
        assert current["verified_at"] == iso(timedelta(hours=2)) and current["run_id"] == run
        assert current["detail"]["trigger"] == "systemd" and current["detail"]["code"] == "verify_failed"
        assert [c["check"] for c in current["checks"]] == ["pgbackrest verify", "table public.documents"]
        # an older verification read later does not become current: newest by when it finished
        output["verifications"] = [site_result(True, timedelta(hours=5), "v0")]
        actions.ingest_site_verifications(store, "site1", output, run)
        assert actions.current_verification(store, "site1")["site_verification_id"] == "v2"
        verdict = assess("site1", status(timedelta(hours=1), timedelta(minutes=1)), current, Thresholds(), NOW)
        assert verdict["codes"] == ["verification_failed"]
        assert "expected 12 rows, got 11" not in verdict["warnings"][0]  # the error, not every check
        assert "verify failed: table" in verdict["warnings"][0]
        assert "by the site's timer" in actions.describe_verification(current)


def test_assess_failed_status_gives_one_warning():
    output = {"action": "status", "ok": False, "error": "lpse-backup must run as root (sudo)", "code": "not_root"}
    verdict = assess("site1", output, VERIFIED, Thresholds(), NOW)
    assert verdict["warnings"] == ["status unavailable: lpse-backup must run as root (sudo) (not_root)"]


def test_backup_status_command_prints_each_warning_once(monkeypatch, tmp_path: Path):
    """Before, the site's alerts and the control side's verdicts both printed: each warning came twice."""
    outputs = {"site1": fresh_site()}
    outputs["site1"]["wal_archiving"]["last_archived_time"] = datetime.now(UTC).isoformat()
    monkeypatch.setattr(actions, "execute", lambda *args, **kwargs: (SimpleNamespace(run_id=1, exit_code=0), outputs))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all: {}\n")
    result = CliRunner().invoke(cli, ["backup", "status", "-i", str(inventory), "--json"])
    assert result.exit_code == 5, result.output
    (site,) = json.loads(result.output)["sites"]
    assert len(site["warnings"]) == len(set(site["warnings"])) == 5, site["warnings"]
    for topic in ("local database backup", "offsite database backup", "local documents snapshot",
                  "offsite documents snapshot", "verified restore"):
        assert sum(topic in warning for warning in site["warnings"]) == 1, (topic, site["warnings"])
