"""Backups that are proven (issue 4), against the lab's real hosts: pgBackRest and restic, local and
offsite (SeaweedFS with Object Lock), verified by real restores. Site: site1 of the test lab."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.lab.labkit import (
    LOCAL_RESTIC,
    SITE,
    backup_cli,
    database_timers_stopped,
    documents_not_matching,
    on_site,
    run_cli,
    sql,
    start_documents_timers,
    stop_documents_timers,
    upload_documents,
    wait_until_archived,
)


def test_backup_setup_second_run_changes_nothing(backed_up):
    code, report, output = backup_cli("setup")
    assert code == 0, output
    assert all(host["changed"] == 0 for host in report["hosts"].values()), report["hosts"]


def test_backup_run_reaches_both_repositories(backed_up):
    result = backed_up["run"]["outputs"][SITE]
    assert result["ok"] and set(result["pgbackrest"]) == {"1", "2"}, result
    assert result["manifest"]["tables"]["tenders"] >= 3200 and result["manifest"]["tables"]["documents"] >= 200
    assert {"local", "offsite"} <= set(result["restic"])


def test_backup_list_shows_sets_and_snapshots_in_every_repo(backed_up):
    code, report, output = backup_cli("list")
    assert code == 0, output
    rows = report["backups"]
    assert {(r["engine"], str(r["repo"])) for r in rows} >= {("pgbackrest", "1"), ("pgbackrest", "2"),
                                                             ("restic", "local"), ("restic", "offsite")}


def test_engines_by_hand_list_and_restore_the_backups(backed_up):
    info = json.loads(on_site("pgbackrest --stanza=spse --output=json info"))
    labels = {b["label"] for b in info[0]["backup"]}
    assert backed_up["run"]["outputs"][SITE]["pgbackrest"]["1"]["label"] in labels
    on_site("rm -rf /tmp/byhand && install -d -o postgres -g postgres -m 0700 /tmp/byhand/pg && "
            "runuser -u postgres -- pgbackrest --stanza=spse --repo=2 --pg1-path=/tmp/byhand/pg restore "
            "--type=immediate --target-action=promote --archive-mode=off && test -f /tmp/byhand/pg/PG_VERSION")
    snapshots = json.loads(on_site(f"{LOCAL_RESTIC} snapshots --json"))
    assert snapshots, "restic lists no snapshot"
    name, digest = next(iter(backed_up["documents"].items()))
    stored = sql(f"SELECT stored_path FROM documents WHERE name = '{name}'")
    # The run's own snapshot, not `latest`: the documents timer's delta snapshots (every few minutes, only the
    # files added since) may be newer, and hold none of the older documents.
    # restic 0.14 (Debian 12) prints the short id in the backup summary, 0.15 and later the full one.
    snapshot = backed_up["run"]["outputs"][SITE]["restic"]["local"]["snapshot_id"]
    assert snapshot and len(snapshot) >= 8, backed_up["run"]["outputs"][SITE]["restic"]
    assert any(entry["id"].startswith(snapshot) for entry in snapshots), (snapshot, snapshots)
    on_site(f"{LOCAL_RESTIC} restore {snapshot} --target /tmp/byhand/files "
            f"--include /var/lib/spse/documents")
    restored = on_site(f"sha256sum /tmp/byhand/files{stored} 2>/dev/null || "
                       f"sha256sum /tmp/byhand/files/var/lib/spse/documents/{stored}").split()[0]
    assert restored == digest
    on_site("rm -rf /tmp/byhand")


@pytest.mark.parametrize("repo", ["1", "2"])
def test_backup_verify_restores_and_checks_everything(backed_up, repo):
    code, report, output = backup_cli("verify", "--repo", repo)
    assert code == 0, output
    result = report["outputs"][SITE]
    assert result["ok"] and result["restore_duration_s"] > 0, result
    checks = {c["check"] for c in result["checks"]}
    assert len(checks) >= 5 and all(c["ok"] for c in result["checks"]), result["checks"]
    from lpse_ops.state import StateStore

    latest = StateStore.open().list_verifications(SITE, limit=1)[0]
    assert latest["ok"] and latest["repo"] == repo and latest["recovery_point"]


def test_a_differential_set_and_a_random_verification_as_pgbackrest_lists_them(backed_up):
    """``backup run --type diff`` takes a differential set (pgBackRest's own info says so, on both repos);
    ``backup verify --random`` proves one of the sets pgBackRest lists, and says which and of what type."""
    code, report, output = backup_cli("run", "--type", "diff")
    assert code == 0, output
    taken = report["outputs"][SITE]["pgbackrest"]
    info = {repo: {b["label"]: b["type"] for b in json.loads(on_site(
        f"pgbackrest --stanza=spse --repo={repo} --output=json info"))[0]["backup"]} for repo in ("1", "2")}
    for repo in ("1", "2"):
        assert info[repo][taken[repo]["label"]] == "diff", (repo, taken[repo], info[repo])
    code, report, output = backup_cli("verify", "--random")
    assert code == 0, output
    result = report["outputs"][SITE]
    assert result["ok"] and result["set"] in info["1"] and result["backup_type"] == info["1"][result["set"]], result


def test_backup_status_reports_the_ages_of_backups_wal_and_verified_restore(backed_up):
    code, report, output = backup_cli("status")
    assert code in (0, 5), output
    (site,) = report["sites"]
    ages = site["ages"]
    assert ages["backup_local_s"] < 3600 and ages["backup_offsite_s"] < 3600, ages
    assert ages["files_local_s"] < 3600 and ages["files_offsite_s"] < 3600, ages
    assert ages["wal_archived_s"] is not None and ages["verified_s"] < 3600, ages
    assert not any("verif" in warning for warning in site["warnings"]), site["warnings"]
    code, report, output = backup_cli("status", "--max-backup-age", "0.0001")
    assert code == 5 and any("local database backup is" in w for w in report["sites"][0]["warnings"]), output


def timer_calendar(name: str, site: str = SITE) -> str:
    return on_site(f"systemctl show lpse-backup-{name}.timer -p TimersCalendar --value", site=site)


def test_backup_schedule_with_limit_reaches_that_site_only_and_setup_keeps_it(backed_up):
    other = "site2"
    code, _, output = backup_cli("schedule", "--verify", "Fri *-*-* 05:00:00")
    assert code == 0, output
    # A setup of both sites afterwards (not one limited to site1) keeps site1's own schedule and gives site2
    # (set up for the first time in the same run) none of it. The other sites are left out: a backup setup of a
    # site CI does not need is minutes of CPU.
    code, _, output = run_cli("backup", "setup", "--limit", f"{SITE}:{other}", "--json")
    assert code == 0, output
    assert "Fri *-*-* 05:00:00" in timer_calendar("verify"), timer_calendar("verify")
    assert "active" in on_site("systemctl is-active lpse-backup-verify.timer")
    assert "Sat *-*-* 04:00:00" in timer_calendar("verify", other), timer_calendar("verify", other)
    # the saved schedules, read where the role keeps them: site1's has its Fri verify (so the path is right);
    # site2 has none of its own (a setup saves one only for `backup schedule --limit`), or one without it
    saved = "/etc/lpse-backup/schedule.json"
    assert "Fri *-*-* 05:00:00" in json.loads(on_site(f"cat {saved}")).get("verify", ""), on_site(f"cat {saved}")
    theirs = on_site(f"if [ -e {saved} ]; then cat {saved}; else echo absent; fi", site=other).strip()
    assert theirs == "absent" or "Fri" not in json.dumps(json.loads(theirs)), theirs


def test_backup_schedule_refuses_a_bad_calendar_before_any_change(backed_up):
    before = on_site("stat -c %Y /etc/lpse-backup/lpse-backup.json /etc/systemd/system/lpse-backup-full.timer")
    code, report, output = backup_cli("schedule", "--full", "every other tuesday")
    assert code == 3, output
    assert "not a systemd OnCalendar expression" in output, output
    assert on_site("stat -c %Y /etc/lpse-backup/lpse-backup.json /etc/systemd/system/lpse-backup-full.timer") == before


def test_documents_timer_runs_every_five_minutes_with_a_stable_offset(backed_up):
    assert "*-*-* *:00/5:00" in timer_calendar("files"), timer_calendar("files")
    unit = on_site("systemctl cat lpse-backup-files.timer")
    assert "FixedRandomDelay=true" in unit and "RandomizedDelaySec=60s" in unit, unit
    # between them, every 30 s, the documents added since (run --type delta)
    assert "*-*-* *:*:00/30" in timer_calendar("delta"), timer_calendar("delta")
    assert on_site("systemctl is-active lpse-backup-delta.timer").strip() == "active"


def test_corrupted_file_in_local_repo_is_named_by_verify(backed_up):
    label = backed_up["run"]["outputs"][SITE]["pgbackrest"]["1"]["label"]
    target = on_site(f"find /var/lib/pgbackrest/backup/spse/{label}/pg_data/base -type f -size +1k | sort | head -1")
    target = target.strip()
    assert target, "no data file found in the backup set"
    on_site(f"cp -a {target} /tmp/saved-file && printf 'CORRUPT' | dd of={target} bs=1 seek=100 conv=notrunc")
    try:
        code, report, output = backup_cli("verify", "--repo", "1", "--set", label)
        assert code == 3, output
        text = json.dumps(report["outputs"][SITE])
        assert os.path.basename(target).split(".")[0] in text, text
    finally:
        on_site(f"cp -a /tmp/saved-file {target} && rm -f /tmp/saved-file")
    # The set whole again, verified again: the site's newest verification is no longer the failed one, so a
    # module after this one (fleet status, a drill's health step, the upgrade plan) sees no critical fault.
    code, _report, output = backup_cli("verify", "--repo", "1", "--set", label)
    assert code == 0, output


def test_a_verification_waits_out_a_documents_snapshots_restic_lock_and_passes(backed_up):
    """ci23 saw a verification fail on a whole set because the 30-second delta held a restic lock when its
    ``restic check`` asked for an exclusive one. Here the lock is held for real, by a restic backup reading a pipe
    that stays open 30 s (as a delta holds one while it reads), from before the verification starts: the check is
    sent back, waits it out, and the set verifies."""
    label = backed_up["run"]["outputs"][SITE]["pgbackrest"]["1"]["label"]
    stop_documents_timers()
    try:
        on_site("systemd-run --unit lpse-test-lock-holder --collect sh -c "
                f"'sleep 30 | {{ {LOCAL_RESTIC} backup --stdin --stdin-filename lock-holder --tag lock-holder; }}'")
        # the lock exists before the verification starts (bounded wait for that state)
        on_site(f"timeout 60 sh -c 'until [ -n \"$({LOCAL_RESTIC} list locks --no-lock 2>/dev/null)\" ]; "
                "do sleep 0.5; done'")
        code, report, output = backup_cli("verify", "--repo", "1", "--set", label)
        assert code == 0, output
        check = next(c for c in report["outputs"][SITE]["checks"] if c["check"].startswith("restic check"))
        assert check["ok"] and "lock sent it back" in check["detail"], check
    finally:
        on_site("timeout 120 sh -c 'while systemctl is-active --quiet lpse-test-lock-holder; do sleep 1; done'",
                check=False)
        on_site(f"{LOCAL_RESTIC} forget --tag lock-holder >/dev/null", check=False)
        start_documents_timers()


def test_restore_to_a_point_between_two_batches_gets_exactly_the_first(backed_up):
    batch = int(time.time())
    upload_documents(f"A{batch}", 20)
    code, _, output = backup_cli("run", "--type", "incr")  # documents of batch A reach restic
    assert code == 0, output
    time.sleep(2)
    between = datetime.now(UTC)
    time.sleep(2)
    upload_documents(f"B{batch}", 20)
    segment = sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    sql("SELECT pg_switch_wal()")
    wait_until_archived(segment)  # batch B's commits, past the target, reach the archive
    code, report, output = run_cli("backup", "restore", "--limit", SITE, "--target-time", between.isoformat(),
                                   "--yes", "--json")
    assert code == 0, output
    assert sql(f"SELECT count(*) FROM tenders WHERE code LIKE 'A{batch}-%'") == "20"
    assert sql(f"SELECT count(*) FROM tenders WHERE code LIKE 'B{batch}-%'") == "0"
    assert sql("SELECT count(*) FROM tenders WHERE code LIKE 'GEN-%'") == "3000"
    assert documents_not_matching() == [], "documents missing or different after restore"
    # the promoted database's writes leave the site within archive_timeout (30 s), no switch forced: without
    # the restore's wake-up of the checkpointer they waited for its next timed checkpoint, 5 minutes
    write_leaves_the_site_by_itself("RESTORED")


def write_leaves_the_site_by_itself(prefix: str) -> None:
    """One write, then its WAL segment archived within archive_timeout and a margin, with no pg_switch_wal."""
    sql(f"INSERT INTO tenders (code, title, agency) VALUES ('{prefix}-{time.time_ns()}', 'arsip', 'x')")
    wait_until_archived(sql("SELECT pg_walfile_name(pg_current_wal_lsn())"), timeout=75)


def test_wal_leaves_the_site_within_archive_timeout_after_a_postgresql_restart(backed_up):
    # PostgreSQL 15 ignores archive_timeout after a start until its first timed checkpoint (5 minutes): the
    # backup role's drop-in asks for a checkpoint after every start
    on_site("systemctl restart postgresql@15-main")
    write_leaves_the_site_by_itself("RESTARTED")


def backup_count() -> int:
    info = json.loads(on_site("pgbackrest --stanza=spse --output=json info"))
    return len(info[0].get("backup", [])) if info else 0


@pytest.mark.parametrize("fault, expected", [
    ("sed -i.bak 's/^repo2-s3-key-secret=.*/repo2-s3-key-secret=wrong-secret-on-purpose/' "
     "/etc/pgbackrest/pgbackrest.conf", "refused the credentials"),
    ("mount -t tmpfs -o size=1m tmpfs /var/lib/pgbackrest && head -c 1000k /dev/zero > /var/lib/pgbackrest/filler",
     "no space left"),
    ("mount -t tmpfs -o size=512m tmpfs /var/lib/pgbackrest && chown postgres:postgres /var/lib/pgbackrest",
     "stanza spse missing"),
])
def test_backup_faults_give_a_clear_error_and_leave_backups_as_they_were(backed_up, fault, expected):
    with database_timers_stopped():  # only this test's backup may run: the count is compared below
        before = backup_count()
        on_site(fault)
        try:
            code, report, output = backup_cli("run", "--type", "incr")
            assert code == 3, output
            error = report["outputs"][SITE].get("error", "")
            assert expected in error, error
        finally:
            on_site("if mountpoint -q /var/lib/pgbackrest; then umount /var/lib/pgbackrest; fi; "
                    "[ -f /etc/pgbackrest/pgbackrest.conf.bak ] && mv /etc/pgbackrest/pgbackrest.conf.bak "
                    "/etc/pgbackrest/pgbackrest.conf || true")
        assert backup_count() == before


def test_restore_that_cannot_reach_its_target_rolls_the_site_back(backed_up):
    tenders = sql("SELECT count(*) FROM tenders")
    future = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=30)
    code, report, output = run_cli("backup", "restore", "--limit", SITE, "--target-time", future.isoformat(),
                                   "--yes", "--json")
    assert code == 3, output
    result = report["outputs"][SITE]
    assert result["rolled_back"] and "rolled back" in result["error"], result
    assert result["health_after_rollback"]["status"] == "ok", result
    assert sql("SELECT count(*) FROM tenders") == tenders


def s3_clients():
    from lpse_ops.lab import lab as lab_actions

    settings = json.loads((lab_actions.lab_dir() / "s3-credentials.json").read_text())
    endpoint, ca_cert = settings["endpoint_control"], settings["ca_cert"]
    site = lab_actions.s3_client(endpoint, ca_cert, settings["credentials"]["site-lab01"])
    admin = lab_actions.s3_client(endpoint, ca_cert, settings["credentials"]["admin"])
    return site, admin, settings["bucket"]


def offsite_segment_stored(admin, bucket: str, segment: str, timeout: float = 120) -> datetime:
    """Wait (bounded) until WAL *segment* is in the offsite pgBackRest archive; return its LastModified."""
    prefix = "pgbackrest/lab01/archive/spse/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for page in admin.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []) or []:
                if f"/{segment[:16]}/{segment}-" in item["Key"]:
                    return item["LastModified"]
        time.sleep(1)
    raise AssertionError(f"WAL segment {segment} never reached the offsite archive under {prefix}")


def test_site_credentials_cannot_destroy_offsite_backups_which_still_restore(backed_up):
    """Runs last: it attacks the offsite repository with the site's own keys, then restores from it."""
    from botocore.exceptions import ClientError

    site, admin, bucket = s3_clients()
    key = "pgbackrest/lab01/backup/spse/backup.info"
    original = site.head_object(Bucket=bucket, Key=key)
    assert original["ObjectLockMode"] == "COMPLIANCE"
    version, content = original["VersionId"], admin.get_object(Bucket=bucket, Key=key)["Body"].read()
    # A commit before and one after the recovery target, both archived offsite before the attack.
    stamp = int(time.time())
    sql(f"INSERT INTO tenders (code, title, agency) VALUES ('KEEP-{stamp}', 'sebelum', 'x')")
    time.sleep(2)
    target = datetime.now(UTC)
    time.sleep(2)
    sql(f"INSERT INTO tenders (code, title, agency) VALUES ('LATE-{stamp}', 'sesudah', 'x')")
    segment = sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    sql("SELECT pg_switch_wal()")
    wait_until_archived(segment)
    # The view is cut by the bucket's own clock (each version's LastModified, whole seconds): the moment
    # "before the attack" is taken from the offsite copy of the segment holding LATE, never from ours.
    before_attack = max(datetime.now(UTC), offsite_segment_stored(admin, bucket, segment) + timedelta(seconds=1))
    time.sleep(2)
    refused = []
    for attempt in (lambda: site.delete_object(Bucket=bucket, Key=key, VersionId=version),
                    lambda: site.put_object_retention(Bucket=bucket, Key=key, VersionId=version, Retention={
                        "Mode": "GOVERNANCE", "RetainUntilDate": datetime(2000, 1, 1, tzinfo=UTC)}),
                    lambda: site.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"}),
                    lambda: site.delete_bucket(Bucket=bucket)):
        with pytest.raises(ClientError) as caught:
            attempt()
        refused.append(caught.value.response["Error"]["Code"])
    assert len(refused) == 4, refused
    # What the site's keys CAN do: overwrite (a new version) and delete (a delete marker) ...
    site.put_object(Bucket=bucket, Key=key, Body=b"ransomware was here")
    for item in site.list_objects_v2(Bucket=bucket, Prefix="pgbackrest/lab01/archive/").get("Contents", [])[:50]:
        site.delete_object(Bucket=bucket, Key=item["Key"])
    # ... and neither destroys anything: the locked version is still there, byte for byte.
    assert admin.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read() == content
    try:
        code, report, output = run_cli("backup", "restore", "--limit", SITE, "--from", "offsite",
                                       "--offsite-as-of", before_attack.isoformat(),
                                       "--target-time", target.isoformat(), "--yes", "--json")
        assert code == 0, output
        result = report["outputs"][SITE]
        assert result["ok"] and result["health"]["status"] == "ok", result
        assert sql("SELECT count(*) FROM tenders WHERE code LIKE 'GEN-%'") == "3000"
        assert sql(f"SELECT count(*) FROM tenders WHERE code IN ('KEEP-{stamp}', 'LATE-{stamp}')") == "1"
        assert sql(f"SELECT code FROM tenders WHERE code LIKE '%-{stamp}'") == f"KEEP-{stamp}"
        assert documents_not_matching() == [], "a referenced document is missing after the offsite restore"
        view = result["offsite_view"]
        assert view["copied"] > 0 and view["removed"] >= view["copied"], view
    finally:
        # Put the repository back as it was for later runs: the admin copies the locked versions forward.
        from lpse_ops.backends.s3 import list_versions, state_as_of

        for item_key, item in state_as_of(list_versions(admin, bucket, "pgbackrest/lab01/"), before_attack).items():
            admin.copy_object(Bucket=bucket, Key=item_key,
                              CopySource={"Bucket": bucket, "Key": item_key, "VersionId": item.version_id})
