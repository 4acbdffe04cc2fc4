"""Server lost (runbooks/server-lost.md; clauses 10.2, 10.4): the site's container is destroyed and a bare
Debian host takes its name and ports; the runbook's steps, run with the real CLI, rebuild it from the
offsite bucket and the inventory alone. Afterwards the rebuilt site serves with its data and its backups
running, for the lab tests after this one (it runs late: ``LATE_MODULES``).

The moments under test, on the old server before it is lost:

1. tender KEEP and document SNAP, then a documents snapshot (the last one the server will push);
2. tender AFTERSNAP: a row after that snapshot (its WAL goes offsite);
3. document LOST: uploaded after the last snapshot, so its file is lost with the server;
4. tender LATE, and the WAL holding everything pushed offsite.

Recovering to ``latest`` replays all of it, then finds LOST's file in no snapshot: the database is
recovered again to just before LOST, so KEEP, SNAP and AFTERSNAP are back, LOST and LATE are not, and
every document the database references is present with its sha256.
"""

from __future__ import annotations

import subprocess
import time

from tests.lab.labkit import (
    SITE,
    backup_cli,
    container_of,
    documents_not_matching,
    on_site,
    run_cli,
    sql,
    upload_documents,
)


def archived_now() -> None:
    """Switch WAL and wait (bounded) until the segment holding every commit so far is archived."""
    segment = sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    sql("SELECT pg_switch_wal()")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")[-16:] >= segment[-16:]:
            return
        time.sleep(1)
    raise AssertionError(f"WAL segment {segment} was not archived within 120 s")


def lose_the_server(lab: dict) -> None:
    """Destroy the site's container; start a bare Debian host with its name and ports (SSH only); put its new
    host key in place of the old one, as the runbook's Diagnosis says."""
    from lpse_ops.lab import lab as lab_actions

    host = next(lab_actions.HostSpec(**h) for h in lab["hosts"] if h["name"] == SITE)
    plan = lab_actions.LabPlan(lab["name"], lab["port_base"], [])
    subprocess.run(["docker", "rm", "-f", container_of(SITE)], check=True, capture_output=True)
    lab_actions.start_host(plan, host, lab["image"])
    lab_actions.provision_access(plan, host, (lab_actions.lab_dir() / "id_ed25519.pub").read_text())
    subprocess.run(["ssh-keygen", "-R", f"[127.0.0.1]:{host.ssh_port}", "-f",
                    str(lab_actions.lab_dir() / "known_hosts")], capture_output=True, check=False)
    assert lab_actions.ssh_ok(host, wait_s=90), f"the bare {SITE} does not answer SSH"


def test_server_lost_is_rebuilt_from_the_offsite_bucket_and_the_inventory(lab, release, backed_up, monkeypatch):
    stamp = time.time_ns()
    on_site("systemctl stop lpse-backup-files.timer && timeout 600 sh -c "
            "'while systemctl is-active --quiet lpse-backup-files.service; do sleep 1; done'")
    sql(f"INSERT INTO tenders (code, title, agency) VALUES ('KEEP-{stamp}', 'sebelum', 'x')")
    kept = upload_documents(f"SNAP{stamp}", 1)
    code, _, output = backup_cli("run", "--type", "files")
    assert code == 0, output
    sql(f"INSERT INTO tenders (code, title, agency) VALUES ('AFTERSNAP-{stamp}', 'setelah snapshot', 'x')")
    lost = upload_documents(f"LOST{stamp}", 1)
    sql(f"INSERT INTO tenders (code, title, agency) VALUES ('LATE-{stamp}', 'setelah dokumen hilang', 'x')")
    archived_now()
    documents_before = int(sql("SELECT count(*) FROM documents"))

    lose_the_server(lab)
    assert on_site("test -e /var/lib/postgresql || echo bare").strip() == "bare"

    monkeypatch.setenv("LPSE_OPS_TRUSTED_KEYS", str(release["trusted"]))
    code, _, output = run_cli("inventory", "validate", "--for", "install")
    assert code == 0, output
    code, _, output = run_cli("install", str(release["bundles"]["1.0"]), "--limit", SITE)
    assert code == 0, output
    # On the fresh cluster the setup refuses, creating nothing: repo2 holds the lost server's database.
    code, _, output = run_cli("backup", "setup", "--limit", SITE, "--json")
    assert code == 3 and "holds stanza spse of another database" in output, output
    assert on_site("ls /var/lib/pgbackrest").strip() == "", "a stanza was created for the wrong database"

    code, report, output = run_cli("backup", "restore", "--limit", SITE, "--from", "offsite", "--target-time",
                                   "latest", "--yes", "--json")
    assert code == 0, output
    result = report["outputs"][SITE]
    assert result["ok"] and result["health"]["status"] == "ok", result
    assert result["timeline_followed"] == "default" and "rebuilt server" in result["live_cluster"], result
    assert result["recovery_point"]["before_lost_documents"] == 1, result["recovery_point"]
    assert documents_not_matching() == [], "a document the rebuilt database references is missing"
    codes = sql(f"SELECT string_agg(code, ' ' ORDER BY code) FROM tenders WHERE code LIKE '%-{stamp}'")
    assert codes == f"AFTERSNAP-{stamp} KEEP-{stamp}", codes
    (snap_name,), (lost_name,) = kept, lost
    assert sql(f"SELECT count(*) FROM documents WHERE name = '{snap_name}'") == "1"
    assert sql(f"SELECT count(*) FROM documents WHERE name = '{lost_name}'") == "0"
    assert int(sql("SELECT count(*) FROM documents")) == documents_before - 1

    # Backups again on the recovered database (stanza on both repositories, archiving checked, timers), so the
    # lab tests after this one find the site backed up as before; the runbook's fresh full backup is left to
    # the timers and to bench/rebuild.py (CI time).
    code, _, output = run_cli("backup", "setup", "--limit", SITE)
    assert code == 0, output
    assert on_site("systemctl is-active lpse-backup-files.timer").strip() == "active"
