"""lpse-backup status: facts only (no alerts, no verdict), over recorded engine output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lpse_ops.site import engine, restic, settings, status
from lpse_ops.site.errors import Failure

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engines"


def recorded(name: str):
    return json.loads((FIXTURES / f"{name}.json").read_text())["output"]


def site_settings(tmp_path: Path) -> settings.Settings:
    return settings.Settings.from_mapping({
        "site_code": "lab01", "stanza": "spse", "database": "spse", "pg_version": 15, "pg_port": 5432,
        "pg_data": str(tmp_path / "pgdata"), "pg_unit": "postgresql@15-main.service",
        "pgbackrest_repo1_path": str(tmp_path / "repo1"), "spool_path": str(tmp_path / "spool"),
        "s3_endpoint": "https://offsite:8333", "s3_ca_file": "/etc/lpse-backup/offsite-ca.crt",
        "restic_repos": {"local": str(tmp_path / "restic"), "offsite": "s3:https://offsite:8333/b/restic/lab01"},
        "restic_password_file": "/etc/lpse-backup/restic.password", "restic_env_file": "/etc/lpse-backup/restic.env",
        "restic_paths": ["/var/lib/spse/documents"], "restic_keep": {"daily": 7, "weekly": 4, "monthly": 6},
        "docs_dir": "/var/lib/spse/documents", "state_dir": str(tmp_path / "state"), "spse_unit": "spse.service",
        "health_url": "http://127.0.0.1:8080/health", "max_backup_age_h": 26})


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> settings.Settings:
    config = site_settings(tmp_path)
    info = recorded("pgbackrest-info")
    monkeypatch.setattr(engine, "stanza", lambda s, *a, **k: info[0])
    snapshots = restic.parse_snapshots(recorded("restic-snapshots"))

    def snapshots_of(_settings, name, url=None):
        if name == "offsite":
            raise Failure("s3_credentials_refused", "offsite S3 refused the credentials", step="restic snapshots")
        return snapshots
    monkeypatch.setattr(engine, "restic_snapshots", snapshots_of)
    monkeypatch.setattr(status.postgres, "psql", lambda *a, **k: [
        "000000010000000000000007\t2026-11-24 16:33:10.123+07\t0\t\t"])
    queue = Path(config.spool_path) / "archive" / "spse" / "out"
    queue.mkdir(parents=True)
    for name in ("000000010000000000000008-abc.zst", "000000010000000000000009-def.zst", "000000010000000000000007.ok"):
        (queue / name).write_bytes(b"x" * 10)
    return config


def test_status_reports_facts_and_no_verdict(site):
    facts = status.main(site, None)
    assert facts["ok"] and "alerts" not in facts and "healthy" not in facts
    assert "alert" not in facts["spool_queue"]
    repos = facts["pgbackrest"]["repos"]
    assert repos["1"]["last_backup"] == {"label": "20261124-093245F", "type": "full",
                                         "time": "2026-11-24T09:32:48+00:00", "database_bytes": 31861617}
    assert facts["files_size"] is None  # no full files snapshot taken yet
    assert repos["2"]["status"] == {"code": 0, "message": "ok"} and repos["2"]["backups"] == 1


def test_status_wal_time_with_server_offset_is_reported_in_utc(site):
    wal = status.main(site, None)["wal_archiving"]
    assert wal["last_archived_time"] == "2026-11-24T09:33:10+00:00" and wal["failed_count"] == 0
    assert wal["pgbackrest_archive_max"] == {"1": "000000010000000000000007", "2": "000000010000000000000007"}


def test_status_spool_counts_waiting_segments_only(site):
    queue = status.main(site, None)["spool_queue"]
    assert queue["files"] == 2 and queue["bytes"] == 20 and queue["alert_threshold_files"] == 64


def test_status_unreadable_restic_repo_carries_its_code(site):
    facts = status.main(site, None)["restic"]
    assert facts["local"] == {"snapshots": 1, "last_snapshot_time": "2026-11-24T09:32:56+00:00",
                              "last_snapshot_id": "46244e4d", "last_delta_time": None}
    assert facts["offsite"] == {"error": "offsite S3 refused the credentials", "code": "s3_credentials_refused"}


def test_status_unreadable_pgbackrest_carries_its_code(site, monkeypatch):
    def refused(*_args, **_kwargs):
        raise Failure("stanza_missing", "stanza spse missing", step="pgbackrest info")
    monkeypatch.setattr(engine, "stanza", refused)
    facts = status.main(site, None)
    assert facts["pgbackrest"] == {"stanza": "spse", "error": "stanza spse missing", "code": "stanza_missing",
                                   "repos": {}}
    assert facts["wal_archiving"]["pgbackrest_archive_max"] == {}


def test_status_postgres_down_is_a_fact_with_a_code(site, monkeypatch):
    def down(*_args, **_kwargs):
        raise Failure("engine_failed", "psql: could not connect", step="status")
    monkeypatch.setattr(status.postgres, "psql", down)
    wal = status.main(site, None)["wal_archiving"]
    assert wal["code"] == "postgres_unavailable" and "could not connect" in wal["error"]


def test_status_last_verify_summarises_the_saved_result(site):
    path = Path(site.state_dir) / "verify" / "last.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"ok": False, "repo": 1, "set": "S", "finished_at": "2026-11-24T10:00:00+00:00",
                                "error": "verify failed", "code": "verify_failed",
                                "checks": [{"check": "table t", "ok": False}, {"check": "x", "ok": True}]}))
    last = status.main(site, None)["last_verify"]
    assert last["code"] == "verify_failed" and last["failed_checks"] == ["table t"]


def test_status_facts_feed_the_control_side_verdict(site):
    from datetime import UTC, datetime

    from lpse_ops.actions.backup import Thresholds, assess

    facts = status.main(site, None)
    verdict = assess("site1", facts, None, Thresholds(), datetime(2026, 11, 24, 9, 35, tzinfo=UTC))
    assert verdict["codes"] == ["restic_unreadable", "no_verification"], verdict["warnings"]


def test_status_reports_the_newest_verifications_each_with_its_own_id_and_the_history_is_bounded(site, monkeypatch):
    from lpse_ops.site import verify

    monkeypatch.setattr(verify, "HISTORY_KEPT", 3)
    kept = []
    for day in range(1, 6):
        result = {"action": "verify", "ok": day != 4, "id": f"id{day}", "repo": 1, "set": f"S{day}",
                  "started_at": f"2026-11-0{day}T04:00:00+00:00", "finished_at": f"2026-11-0{day}T04:05:00+00:00",
                  "trigger": "systemd", "invocation_id": f"inv{day}", "duration_s": 300.0,
                  "checks": [{"check": "table t", "ok": day != 4, "detail": "x" * 500}]}
        verify.keep(site, result)
        kept.append(result)
    assert len(verify.history_names(site)) == 3  # the oldest two pruned
    facts = status.main(site, None)
    assert [v["id"] for v in facts["verifications"]] == ["id3", "id4", "id5"]  # oldest first
    failed = facts["verifications"][1]
    assert failed["ok"] is False and failed["invocation_id"] == "inv4" and failed["trigger"] == "systemd"
    assert failed["checks"] == [{"check": "table t", "ok": False, "detail": "x" * 200}]  # short, never the whole
    assert facts["last_verify"]["id"] == "id5"


def test_verify_gives_every_result_a_new_id_and_says_whether_systemd_started_it(site, monkeypatch):
    """The id makes the control side record it once; INVOCATION_ID is set by systemd for the timer's service."""
    from types import SimpleNamespace

    from lpse_ops.site import verify

    monkeypatch.setattr(verify, "STEPS", ())
    monkeypatch.setattr(verify.scratch, "remove", lambda *a, **k: None)
    monkeypatch.setenv("INVOCATION_ID", "0123abcd")
    args = SimpleNamespace(repo=1, set=None, random=False)
    first = verify.main(site, args)
    monkeypatch.delenv("INVOCATION_ID")
    second = verify.main(site, args)
    assert first["id"] != second["id"] and len(first["id"]) == 32
    assert (first["trigger"], first["invocation_id"]) == ("systemd", "0123abcd")
    assert (second["trigger"], second["invocation_id"]) == ("command", None)
    assert [v["id"] for v in status.main(site, None)["verifications"]] == [first["id"], second["id"]]


def test_a_verification_that_crashes_is_kept_as_failed_and_its_scratch_removed(site, monkeypatch):
    """The weekly timer's run must leave a record whatever goes wrong: a crash (here a full disk while the
    scratch instance is built) is the newest verification, failed, naming the step; never the week-old pass."""
    from types import SimpleNamespace

    from lpse_ops.site import verify

    def disk_full(current):
        raise OSError(28, "No space left on device")

    removed = []
    verify.keep(site, {"action": "verify", "ok": True, "id": "old", "repo": 1, "set": "S",
                       "finished_at": "2026-11-28T04:05:00+00:00", "checks": []})
    monkeypatch.setattr(verify, "STEPS", (disk_full,))
    monkeypatch.setattr(verify.scratch, "remove", lambda settings, scratch: removed.append(scratch))
    result = verify.main(site, SimpleNamespace(repo=1, set=None, random=False))
    assert not result["ok"] and result["code"] == "unexpected" and result["step"] == "disk_full", result
    assert "No space left on device" in result["error"] and removed
    assert status.main(site, None)["last_verify"]["id"] == result["id"]


def test_status_verifications_only_runs_no_engine(site, monkeypatch):
    """What the upgrade plan asks: the site's own verification files, never pgBackRest or restic."""
    from types import SimpleNamespace

    from lpse_ops.site import verify

    def engine_run(*_args, **_kwargs):
        raise AssertionError("an engine was run for --verifications-only")

    monkeypatch.setattr(engine, "stanza", engine_run)
    monkeypatch.setattr(engine, "restic_snapshots", engine_run)
    monkeypatch.setattr(status.postgres, "psql", engine_run)
    verify.keep(site, {"action": "verify", "ok": True, "id": "v9", "repo": 1, "set": "S",
                       "finished_at": "2026-11-28T04:05:00+00:00", "checks": []})
    facts = status.main(site, SimpleNamespace(verifications_only=True))
    assert facts["ok"] and [v["id"] for v in facts["verifications"]] == ["v9"] and facts["last_verify"]["id"] == "v9"
    assert "pgbackrest" not in facts and "restic" not in facts
