"""Backups, second pass (issue 7): each test puts its moment where only the feature can get it right,
or injects for real the fault its check exists for. Site: site1 of the test lab (Asia/Jakarta)."""

from __future__ import annotations

import contextlib
import json
import time
from datetime import UTC, datetime

import pytest

from tests.lab.labkit import (
    RESTIC_ENV,
    SITE,
    archived_now,
    backup_cli,
    documents_not_matching,
    on_site,
    run_cli,
    sql,
    start_documents_timers,
    stop_documents_timers,
    upload_documents,
)

pytestmark = pytest.mark.usefixtures("backed_up")


@contextlib.contextmanager
def files_timer_stopped():
    """Hold the documents timers (5-minute snapshots, 30-second deltas) still, so a test decides when
    snapshots happen."""
    stop_documents_timers()
    try:
        yield
    finally:
        start_documents_timers()


def last_label(report: dict) -> str:
    return report["outputs"][SITE]["pgbackrest"]["1"]["label"]


def verify_set(label: str) -> tuple[int, dict, str]:
    code, report, output = backup_cli("verify", "--repo", "1", "--set", label)
    return code, (report or {}).get("outputs", {}).get(SITE, {}), output


def failed_checks_of_a_new_set() -> list[dict]:
    """Take an incremental backup, verify that very set (it must fail), and return its failed checks."""
    code, report, output = backup_cli("run", "--type", "incr")
    assert code == 0, output
    code, result, output = verify_set(last_label(report))
    assert code == 3, output
    return [c for c in result["checks"] if not c["ok"]]


@pytest.fixture(scope="module", autouse=True)
def ends_on_a_verification_that_passed():
    """Section 2 leaves failed verifications as the site's newest, on purpose. The module ends by verifying a new
    set, which must pass: a module after this one (fleet status, harden's probe, the upgrade plan) judges the site
    by its newest verification, and would see a critical fault this module made (ci20: test_hardening did, once
    the scheduled verification module no longer ran in between)."""
    yield
    code, report, output = backup_cli("run", "--type", "incr")
    assert code == 0, output
    code, _result, output = verify_set(last_label(report))
    assert code == 0, output


def document_path(name: str) -> str:
    return "/var/lib/spse/documents/" + sql(f"SELECT stored_path FROM documents WHERE name = '{name}'")


def restore_to(when: datetime, *extra: str) -> tuple[int, dict, str]:
    code, report, output = run_cli("backup", "restore", "--limit", SITE, "--target-time", when.isoformat(),
                                   *extra, "--yes", "--json")
    return code, (report or {}).get("outputs", {}).get(SITE, {}), output


def target_now() -> datetime:
    """A recovery target after every commit so far, then one commit after it, archived: PostgreSQL only
    knows it has reached a target time when it replays a commit past it."""
    archived_now()
    time.sleep(1)
    target = datetime.now(UTC)
    time.sleep(1)
    sql(f"INSERT INTO tenders (code, title, agency) VALUES ('AFTER-{time.time_ns()}', 'setelah target', 'x')")
    archived_now()
    return target


# --- 1. checksums that no session or server setting changes -------------------------------------------

SETTINGS_PROBE = ("CREATE TABLE IF NOT EXISTS zz_settings_probe (id int PRIMARY KEY, t timestamptz, d date, "
                  "i interval, f float8, m money, b bytea); INSERT INTO zz_settings_probe VALUES "
                  "(1, '2026-11-28 23:59:59.123456+00', '2026-12-31', '1 day 02:03:04.5', 0.1, 12.34, '\\xdeadbeef') "
                  "ON CONFLICT DO NOTHING")
ODD_SETTINGS = {"DateStyle": "SQL, DMY", "IntervalStyle": "sql_standard", "extra_float_digits": "0",
                "bytea_output": "escape", "timezone": "Asia/Jayapura"}


def test_verify_passes_when_the_server_settings_differ_from_the_scratch_instance():
    """The manifest is taken under odd server settings, the scratch instance runs on defaults: only
    checksums that pin every output setting can agree."""
    sql(SETTINGS_PROBE)
    conf = "\n".join(f"{name} = '{value}'" for name, value in ODD_SETTINGS.items())
    on_site(f"cat > /etc/postgresql/15/main/conf.d/zz_odd.conf <<'EOF'\n{conf}\nEOF\n"
            "systemctl reload postgresql@15-main")
    try:
        assert sql("SHOW DateStyle") == "SQL, DMY"
        code, report, output = backup_cli("run", "--type", "incr")
        assert code == 0, output
        code, result, output = verify_set(last_label(report))
        assert code == 0, output
        assert any(c["check"] == "table zz_settings_probe" and c["ok"] for c in result["checks"]), result["checks"]
    finally:
        on_site("rm -f /etc/postgresql/15/main/conf.d/zz_odd.conf && systemctl reload postgresql@15-main")


# --- 2. verify catches what it claims to catch ---------------------------------------------------------

@pytest.mark.parametrize("fault, word", [
    ("printf 'tampered' >> {path}", "sha256 mismatch"),  # changed on disk after its row was written
    ("rm {path}", "missing"),                            # the file is gone, the row is not
])
def test_verify_names_a_document_whose_file_no_longer_matches_its_row(fault, word):
    (name, _), = upload_documents(f"DOC{word[:4].upper()}{int(time.time())}", 1).items()
    path = document_path(name)
    on_site(f"cp -a {path} /tmp/saved-doc && " + fault.format(path=path))
    try:
        failed = failed_checks_of_a_new_set()
        assert [c["check"] for c in failed] == ["documents match their sha256"], failed
        lists = dict(part.split(" [", 1) for part in failed[0]["detail"].split("; ")[1:])  # {"missing": "...]"}
        named = {kind for kind, items in lists.items() if path.rsplit("/", 1)[-1] in items}
        assert named == {word}, failed
    finally:
        on_site(f"cp -a /tmp/saved-doc {path} && rm -f /tmp/saved-doc")


def test_verify_names_a_table_whose_restored_rows_differ_from_the_manifest():
    """An UNLOGGED table is never in WAL and pgBackRest skips its files: the restored copy is empty
    while the manifest counted its rows. Only a per-table check can say which table."""
    sql("CREATE UNLOGGED TABLE IF NOT EXISTS zz_unlogged (id int PRIMARY KEY, note text); "
        "INSERT INTO zz_unlogged SELECT g, 'catatan ' || g FROM generate_series(1, 50) g ON CONFLICT DO NOTHING")
    try:
        failed = failed_checks_of_a_new_set()
        assert [c["check"] for c in failed] == ["table zz_unlogged"], failed
        assert "expected 50 rows" in failed[0]["detail"] and "got 0 rows" in failed[0]["detail"], failed
    finally:
        sql("DROP TABLE IF EXISTS zz_unlogged")


# --- 3. every restore leaves the database and the documents in agreement --------------------------------

def test_restore_after_the_last_snapshot_brings_back_documents_from_the_set_aside_folder():
    """Documents uploaded after the last restic snapshot: the recovered database lists them, no snapshot
    holds them; the live folder set aside by the restore does, and the hash proves them."""
    with files_timer_stopped():
        code, _, output = backup_cli("run", "--type", "incr")
        assert code == 0, output
        late = upload_documents(f"LATE{int(time.time())}", 3)
        code, result, output = restore_to(target_now())
    assert code == 0, output
    assert sql(f"SELECT count(*) FROM documents WHERE name IN ({', '.join(repr(n) for n in late)})") == "3"
    assert documents_not_matching() == [], "a document the recovered database references is missing"
    recovered = result["documents"]
    assert recovered["missing"] == [] and recovered["from_set_aside"] >= 3, recovered


def test_a_delta_snapshot_holds_just_the_new_documents_and_a_restore_takes_them_from_it():
    """Documents added after the last full snapshot, then a delta (the 30-second timer's run), then the files
    lost from the live folder too: only the delta holds them. The restore starts from the full snapshot,
    never the delta, and brings them from it (without deltas it fails: documents_missing)."""
    with files_timer_stopped():
        code, _, output = backup_cli("run", "--type", "incr")
        assert code == 0, output
        new = upload_documents(f"DELTA{int(time.time())}", 2)
        code, report, output = backup_cli("run", "--type", "delta")
        assert code == 0, output
        taken = report["outputs"][SITE]
        assert taken["files"] == 2 and taken["restic"]["offsite"]["files_new"] == 2, taken
        code, report, output = backup_cli("run", "--type", "delta")
        assert report["outputs"][SITE]["skipped"] == "no document changed since the last snapshot", output
        for name in new:
            on_site(f"rm {document_path(name)}")
        code, result, output = restore_to(target_now())
    assert code == 0, output
    assert sql(f"SELECT count(*) FROM documents WHERE name IN ({', '.join(repr(n) for n in new)})") == "2"
    assert documents_not_matching() == [], "a document the recovered database references is missing"
    recovered = result["documents"]
    assert recovered["missing"] == [] and recovered["from_later_snapshots"] == 2, recovered
    assert result["restic_snapshot"]["id"] != taken["restic"]["local"]["snapshot_id"][:8]


def test_restore_after_an_emptied_folder_was_snapshotted_brings_documents_back_from_an_earlier_snapshot():
    """A document lost from the folder, then a snapshot without it (the 5-minute timer runs on after a loss):
    the chosen snapshot and the set-aside folder lack it; only the earlier snapshot holds it."""
    with files_timer_stopped():
        (name, _), = upload_documents(f"EARLIER{int(time.time())}", 1).items()
        code, _, output = backup_cli("run", "--type", "files")  # a snapshot that holds it
        assert code == 0, output
        path = document_path(name)
        on_site(f"mv {path} /tmp/earlier-doc")  # lost
        code, _, output = backup_cli("run", "--type", "files")  # a snapshot without it
        assert code == 0, output
        code, result, output = restore_to(target_now())
    try:
        assert code == 0, output
        recovered = result["documents"]
        assert recovered["missing"] == [] and recovered["from_earlier_snapshots"] == 1, recovered
        assert documents_not_matching() == [], "a document the recovered database references is missing"
    finally:
        on_site("rm -f /tmp/earlier-doc")


def test_restore_fails_loudly_and_rolls_back_when_a_referenced_document_is_nowhere():
    with files_timer_stopped():
        code, _, output = backup_cli("run", "--type", "incr")
        assert code == 0, output
        (name, _), = upload_documents(f"NOWHERE{int(time.time())}", 1).items()
        path = document_path(name)
        on_site(f"mv {path} /tmp/nowhere-doc")  # lost before any snapshot took it
        target = target_now()
        tenders = sql("SELECT count(*) FROM tenders")
        code, result, output = restore_to(target)
    try:
        assert code == 3, output
        assert result["code"] == "documents_missing", result
        assert path.rsplit("/", 1)[-1] in json.dumps(result["documents"]["missing"]), result["documents"]
        assert result["rolled_back"] and result["health_after_rollback"]["status"] == "ok", result
        assert sql("SELECT count(*) FROM tenders") == tenders
    finally:
        on_site(f"mv /tmp/nowhere-doc {path}")


def test_offsite_restore_replays_wal_from_the_offsite_repository_alone():
    """The local repository and WAL spool are out of reach, the target is after the last backup: only
    WAL archived offsite can bring the last commit back."""
    code, _, output = backup_cli("run", "--type", "incr")
    assert code == 0, output
    stamp = int(time.time())
    sql(f"INSERT INTO tenders (code, title, agency) VALUES ('OFF-{stamp}', 'setelah cadangan', 'x')")
    archived_now()
    time.sleep(1)
    target = datetime.now(UTC)
    time.sleep(1)
    sql(f"INSERT INTO tenders (code, title, agency) VALUES ('TOOLATE-{stamp}', 'sesudah target', 'x')")
    archived_now()
    on_site("mv /var/lib/pgbackrest /var/lib/pgbackrest.hidden")
    try:
        code, result, output = restore_to(target, "--from", "offsite")
        assert code == 0, output
        assert result["repo"] == 2, result
    finally:
        on_site("mv /var/lib/pgbackrest.hidden /var/lib/pgbackrest")
    assert sql(f"SELECT code FROM tenders WHERE code LIKE '%-{stamp}'") == f"OFF-{stamp}"
    assert documents_not_matching() == []


# --- 4. faults for real leave every earlier backup restorable ------------------------------------------

def restic_latest_restores(repo: str = "/var/lib/lpse-backup/restic") -> None:
    on_site(f"{RESTIC_ENV}; rm -rf /tmp/proof && restic -r {repo} restore latest --target /tmp/proof "
            "--include /var/lib/spse/documents && test -n \"$(ls -A /tmp/proof/var/lib/spse/documents)\" && "
            "rm -rf /tmp/proof")


def test_wrong_s3_secret_for_restic_fails_clearly_and_leaves_backups_restorable():
    on_site("sed -i.bak 's/^AWS_SECRET_ACCESS_KEY=.*/AWS_SECRET_ACCESS_KEY=wrong-secret-on-purpose/' "
            "/etc/lpse-backup/restic.env")
    try:
        code, report, output = backup_cli("run", "--type", "files")
        assert code == 3, output
        result = report["outputs"][SITE]
        assert result["code"] == "s3_credentials_refused", result
        assert "restic" in result["step"], result
    finally:
        on_site("mv /etc/lpse-backup/restic.env.bak /etc/lpse-backup/restic.env")
    restic_latest_restores()


def test_a_disk_that_fills_during_the_documents_backup_leaves_earlier_snapshots_restorable():
    """The local restic repository sits on a small disk that passes the free-space check, then fills
    while restic writes 96 MB of new documents."""
    repo = "/var/lib/lpse-backup/restic"
    # the site's own 5-minute documents run must not be the one that fills the disk: stop its timer and
    # wait (bounded) until no run of it is in progress
    stop_documents_timers()
    size = int(on_site(f"du -sb {repo} | cut -f1").split()[0])
    on_site(f"cp -a {repo} /tmp/restic-copy && mount -t tmpfs -o size={size + 80 * 2**20} tmpfs {repo} && "
            f"cp -a /tmp/restic-copy/. {repo}/ && rm -rf /tmp/restic-copy")
    try:
        on_site("mkdir -p /var/lib/spse/documents/zz-fill && for i in $(seq 1 96); do "
                "head -c 1048576 /dev/urandom > /var/lib/spse/documents/zz-fill/f$i; done")
        code, report, output = backup_cli("run", "--type", "files")
        assert code == 3, output
        result = report["outputs"][SITE]
        assert result["code"] == "no_space", result
        assert result["step"] != "preflight", result  # it filled for real, during the backup
        restic_latest_restores(repo)
    finally:
        on_site(f"umount {repo}; rm -rf /var/lib/spse/documents/zz-fill")
        start_documents_timers()
    restic_latest_restores()
