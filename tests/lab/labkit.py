"""Helpers for the lab tests: run the real CLI, start extra hosts, write inventories, read logins."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# Overridable so that two test runs on one machine (a developer and a helper) use separate labs.
LAB_NAME = os.environ.get("LPSE_OPS_TEST_LAB_NAME", "lpse-test")
SITE = "site1"  # the site the backup tests work on
PORT_BASE = int(os.environ.get("LPSE_OPS_TEST_PORT_BASE", "2420"))
SITES = int(os.environ.get("LPSE_OPS_TEST_SITES", "3"))  # one site in each Indonesian zone (lab.ZONES)
REUSE_HOME = Path(os.environ.get("LPSE_OPS_TEST_HOME", "/tmp/lpse-ops-test-home"))
CLI = str(Path(sys.executable).with_name("lpse-ops"))


# The site's restic environment (repository password and S3 keys from the backup role's files), for a test that
# runs restic on a site by hand; LOCAL_RESTIC is restic on the site's local repository with it.
RESTIC_ENV = ("set -a; . /etc/lpse-backup/restic.env; set +a; "
              "export RESTIC_PASSWORD_FILE=/etc/lpse-backup/restic.password")
LOCAL_RESTIC = f"{RESTIC_ENV}; restic -r /var/lib/lpse-backup/restic"


def run_cli(*args: str, check_json: bool = True, timeout: float = 1800,
            answer: str | None = None) -> tuple[int, dict | list | None, str]:
    """Run the real ``lpse-ops`` command (*answer* typed at its prompt); return (exit code, JSON stdout, output)."""
    done = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout, check=False,
                          input=answer)
    data = None
    if check_json and done.stdout.strip()[:1] in ("{", "["):
        data = json.loads(done.stdout)
    return done.returncode, data, done.stderr + done.stdout


def remove_extra_host(lab_state: dict, name: str) -> None:
    """Remove a host :func:`extra_host` started (it carries the lab's label: left running, a later ``lab up`` would
    count it as one of the lab's sites)."""
    subprocess.run(["docker", "rm", "-f", f"{lab_state['name']}-{name}"], capture_output=True, check=False, timeout=120)


def extra_host(lab_state: dict, name: str, ssh_port: int, https_port: int, tmpfs: dict[str, str] | None = None):
    """Start one more lab host (not in the lab inventory) and return its HostSpec; remove it with
    :func:`remove_extra_host` when done."""
    from lpse_ops.lab import lab as lab_actions

    lab_plan = lab_actions.LabPlan(lab_state["name"], lab_state["port_base"], [])
    host = lab_actions.HostSpec(name, "site", ssh_port, https_port=https_port, site_code=name, tmpfs=tmpfs or {})
    subprocess.run(["docker", "rm", "-f", lab_plan.container(host)], capture_output=True, check=False)
    lab_actions.start_host(lab_plan, host, lab_state["image"])
    lab_actions.provision_access(lab_plan, host, (lab_actions.lab_dir() / "id_ed25519.pub").read_text())
    assert lab_actions.ssh_ok(host, wait_s=60), f"{name} does not answer SSH"
    return host


def inventory_for(path: Path, hosts: dict[str, dict], with_secret: bool = True,
                  extra_groups: dict[str, list[str]] | None = None) -> Path:
    """Write an inventory for *hosts* (name -> vars) using the lab's SSH settings."""
    import yaml

    from lpse_ops.lab import lab as lab_actions

    lab_inventory = yaml.safe_load(lab_actions.inventory_path().read_text())
    common = dict(lab_inventory["all"]["vars"])
    if with_secret:
        common["postgresql_spse_password"] = "lab-only-password"
    children: dict = {"sites": {"hosts": hosts}}
    for group, members in (extra_groups or {}).items():
        children[group] = {"hosts": dict.fromkeys(members)}
    data = {"all": {"vars": common, "children": children}}
    path.write_text(yaml.safe_dump(data))
    return path


def container_of(host_name: str) -> str:
    return f"{LAB_NAME}-{host_name}"


def ssh_logins(host_name: str) -> int:
    """Return how many SSH logins the host's sshd has accepted so far (from its journal)."""
    done = subprocess.run(["docker", "exec", container_of(host_name), "journalctl", "-u", "ssh", "--no-pager",
                           "-o", "cat"], capture_output=True, text=True, check=True)
    return done.stdout.count("Accepted publickey")


def on_site(script: str, check: bool = True, site: str = SITE, timeout: float = 900) -> str:
    """Run a shell script as root on a site (by hand, as an operator would) and return stdout."""
    done = subprocess.run(["docker", "exec", container_of(site), "bash", "-c", script],
                          capture_output=True, text=True, timeout=timeout, check=False)
    if check:
        assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def sql(query: str, site: str = SITE) -> str:
    """Run one SQL statement in the site's SPSE database as postgres; return its unaligned output."""
    return on_site(f"runuser -u postgres -- psql -d spse -AtX -c {json.dumps(query)}", site=site).strip()


def upload_documents(prefix: str, count: int, site: str = SITE, size: int = 2048) -> dict[str, str]:
    """Create *count* tenders with one document each (about *size* bytes, each its own) through nginx on the site;
    return name -> sha256."""
    script = f"""
set -e
for i in $(seq 1 {count}); do
  tender=$(curl -sk -X POST https://127.0.0.1/tenders -H 'Content-Type: application/json' \\
    -d "{{\\"code\\":\\"{prefix}-$i\\",\\"title\\":\\"Dokumen {prefix} $i\\",\\"agency\\":\\"Dinas $i\\"}}" \\
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  head -c $(({size} + i * 37)) /dev/urandom > /tmp/doc-$i
  curl -sk -X POST "https://127.0.0.1/tenders/$tender/documents?name={prefix}-$i.pdf" \\
    --data-binary @/tmp/doc-$i -o /dev/null -w '%{{http_code}}\\n' | grep -q 201
  echo "{prefix}-$i.pdf $(sha256sum /tmp/doc-$i | cut -d' ' -f1)"
  rm -f /tmp/doc-$i
done
"""
    return dict(line.split() for line in on_site(script, site=site).splitlines() if line.strip())


DOCUMENTS_TIMERS = ("files", "delta")
"""The documents' timers: the 5-minute full snapshot and the 30-second delta of new documents."""


def stop_documents_timers(site: str = SITE) -> None:
    """Stop both documents timers and wait (bounded) until no run of theirs is in progress: a test then
    decides when the documents are snapshotted."""
    for name in DOCUMENTS_TIMERS:
        on_site(f"systemctl stop lpse-backup-{name}.timer && timeout 600 sh -c "
                f"'while systemctl is-active --quiet lpse-backup-{name}.service; do sleep 1; done'", site=site)


def start_documents_timers(site: str = SITE) -> None:
    on_site(" && ".join(f"systemctl start lpse-backup-{name}.timer" for name in DOCUMENTS_TIMERS), site=site)


DATABASE_TIMERS = ("full", "diff", "incr")
"""The database backups' timers (the hourly incremental, the daily diff, the weekly full)."""


@contextlib.contextmanager
def database_timers_stopped(site: str = SITE):
    """No scheduled database backup while the block runs (a test that counts backup sets decides when one is
    taken: the hourly incremental once landed in the middle of such a test); waits (bounded) for a run in
    progress, and starts the timers again afterwards."""
    for name in DATABASE_TIMERS:
        on_site(f"systemctl stop lpse-backup-{name}.timer && timeout 900 sh -c "
                f"'while systemctl is-active --quiet lpse-backup-{name}.service; do sleep 1; done'", site=site)
    try:
        yield
    finally:
        on_site(" && ".join(f"systemctl start lpse-backup-{name}.timer" for name in DATABASE_TIMERS), site=site)


def backup_cli(*args: str, timeout: float = 1800, site: str = SITE):
    """Run ``lpse-ops backup ARGS --limit SITE --json``; return (exit code, JSON, output)."""
    return run_cli("backup", *args, "--limit", site, "--json", timeout=timeout)


def documents_not_matching(site: str = SITE) -> list[str]:
    """Return every document the site's database references whose file is missing or has another sha256."""
    out = on_site("cd /var/lib/spse/documents && runuser -u postgres -- psql -d spse -AtX -c "
                  "\"SELECT sha256 || ' ' || stored_path FROM documents\" | while read sum path; do "
                  "[ \"$(sha256sum \"$path\" 2>/dev/null | cut -c1-64)\" = \"$sum\" ] || echo \"$path\"; done",
                  site=site)
    return [line for line in out.splitlines() if line.strip()]


def wal_archived_past(segment: str, site: str = SITE) -> bool:
    """Whether PostgreSQL reports *segment*, or a later one, archived.

    Whole names are compared, timeline first: after a rollback the abandoned timeline may have reached a
    higher segment number than the new one (comparing only the last 16 digits would then say "archived"
    while the new timeline's segment is still on the site). A ``.history`` file's name is not a segment.
    """
    last = sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", site=site)[:24]
    return len(last) == 24 and all(c in "0123456789ABCDEF" for c in last) and last >= segment


def archived_now(site: str = SITE, timeout: float = 120) -> None:
    """Switch WAL and wait (bounded) until the segment holding every commit so far is archived."""
    segment = sql("SELECT pg_walfile_name(pg_current_wal_lsn())", site=site)
    sql("SELECT pg_switch_wal()", site=site)
    wait_until_archived(segment, site=site, timeout=timeout)


def wait_until_archived(segment: str, site: str = SITE, timeout: float = 120) -> None:
    """Wait (bounded) until PostgreSQL reports *segment* (or a later one) archived: pushed to both repositories."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wal_archived_past(segment, site):
            return
        time.sleep(1)
    raise AssertionError(f"WAL segment {segment} was not archived within {timeout} s")
