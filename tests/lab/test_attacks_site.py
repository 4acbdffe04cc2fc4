"""Root on a site never trusts what spse controls (issue 22), against the lab's real site: spse plants a
folder whose name holds a newline, a FIFO and a link to /dev/zero in its documents, and the site tool's
own timers' commands (the 30-second delta, an upgrade's checkpoint) run on them as root.
Site: site1 of the test lab."""

from __future__ import annotations

import json
import shlex
import time

from tests.lab.labkit import LOCAL_RESTIC, on_site, start_documents_timers, stop_documents_timers

DOCS = "/var/lib/spse/documents"


def as_spse(script: str) -> str:
    """Run *script* as the spse account (the application's, which owns the documents)."""
    return on_site(f"runuser -u spse -- bash -c {json.dumps(script)}")


def as_postgres(script: str) -> str:
    """Run *script* as the postgres account (the database's, which owns the data folder)."""
    return on_site(f"runuser -u postgres -- bash -c {json.dumps(script)}")


def site_tool(*args: str, timeout: float = 900) -> dict:
    """Run ``lpse-backup ARGS`` on the site as root, bounded; return its JSON record."""
    out = on_site(f"timeout {int(timeout)} lpse-backup {' '.join(args)}", check=False, timeout=timeout + 60)
    assert out.strip(), "lpse-backup printed nothing (killed by timeout: it hung)"
    return json.loads(out)


def delta_when_the_lock_is_free(bound_s: float = 120) -> dict:
    """A delta run, again while another run holds the documents' lock (it skips then; bounded): the backup setup's
    own first documents run can still hold it under load (ci17)."""
    deadline = time.monotonic() + bound_s
    while True:
        result = site_tool("run", "--type", "delta")
        if "documents lock" not in str(result.get("skipped") or "") or time.monotonic() > deadline:
            return result
        time.sleep(1)


def test_a_newline_in_a_document_folder_name_never_backs_up_etc_shadow(backed_up):
    """``documents/a\\n/etc/shadow``: one path a line, the delta used to hand restic /etc/shadow."""
    stop_documents_timers()
    try:
        as_spse(f"mkdir -p $'{DOCS}/attack-nl\\n/etc' && echo decoy > $'{DOCS}/attack-nl\\n/etc/shadow'")
        result = delta_when_the_lock_is_free()
        assert result["ok"] and not result.get("skipped") and result["files"] >= 1, result
        snapshot = result["restic"]["local"]["snapshot_id"]
        found = json.loads(on_site(f"{LOCAL_RESTIC} find --json "
                                   f"--snapshot {snapshot} /etc/shadow") or "[]")
        assert not any(entry.get("matches") for entry in found), f"/etc/shadow is in the delta snapshot: {found}"
        listed = on_site(f"{LOCAL_RESTIC} ls --json {snapshot}")
        paths = [json.loads(line).get("path", "") for line in listed.splitlines() if '"path"' in line]
        assert f"{DOCS}/attack-nl\n/etc/shadow" in paths, paths
        assert not any(path.startswith("/etc") for path in paths), paths
    finally:
        on_site(f"rm -rf $'{DOCS}/attack-nl\\n'")
        start_documents_timers()


def test_a_fifo_or_a_link_to_dev_zero_never_hangs_an_upgrade_checkpoint(backed_up):
    """The checkpoint hashes every document while the site shows the maintenance page: a FIFO or a link to
    /dev/zero used to block it for ever."""
    as_spse(f"mkfifo {DOCS}/attack-fifo && ln -s /dev/zero {DOCS}/attack-zero && ln -s /etc/shadow "
            f"{DOCS}/attack-shadow")
    try:
        result = site_tool("checkpoint", "--name", "attack-22", timeout=600)
        assert result["ok"], result
        skipped = {item["path"]: item["reason"] for item in result["documents"]["skipped"]}
        assert skipped == {"attack-fifo": "a fifo, not a regular file", "attack-zero": "a symlink, not a regular file",
                           "attack-shadow": "a symlink, not a regular file"}, result["documents"]
    finally:
        on_site(f"rm -f {DOCS}/attack-fifo {DOCS}/attack-zero {DOCS}/attack-shadow "
                "/var/lib/lpse-backup/checkpoints/attack-22.json")
    assert on_site("stat -c %U:%a /etc/shadow").strip() in ("root:640", "root:600"), "/etc/shadow changed hands"


# The moment of the race, put where only the confinement can win: the 30-second delta listed
# attack-swap/shadow as a regular file in a folder; spse then swapped the folder for a link to /etc before
# restic read it. The site tool's own delta function is called with that listing on the real site.
RACE = """
import json, sys
sys.path.insert(0, "/usr/local/sbin/lpse-backup")
from lpse_ops.site import run, settings
from lpse_ops.site.errors import Failure
try:
    print(json.dumps(run.snapshot_delta(settings.load(), "local", [sys.argv[1]])))
except Failure as failure:
    print(json.dumps({"code": failure.code, "message": str(failure)}))
"""


def test_a_folder_swapped_for_a_link_to_etc_after_the_listing_is_never_read_through(backed_up):
    """spse swaps a listed folder for ``-> /etc`` between the listing and restic's read: restic (root) reads
    the documents where no link is followed, so /etc/shadow never reaches a repository, and the delta
    refuses with the reason."""
    stop_documents_timers()
    count = len(json.loads(on_site(f"{LOCAL_RESTIC} snapshots --json")))
    try:
        as_spse(f"mkdir -p {DOCS}/attack-swap && echo decoy > {DOCS}/attack-swap/shadow")
        as_spse(f"mv {DOCS}/attack-swap {DOCS}/attack-swap.listed && ln -s /etc {DOCS}/attack-swap")
        out = on_site(f"python3 -c {shlex.quote(RACE)} {DOCS}/attack-swap/shadow", timeout=600)
        refused = json.loads(out)
        assert refused.get("code") == "documents_unsafe", refused
        assert "became a symbolic link" in refused["message"] and "too many levels of symbolic links" in \
            refused["message"], refused
        snapshots = json.loads(on_site(f"{LOCAL_RESTIC} snapshots --json"))
        assert len(snapshots) == count, "a snapshot was stored through the link"
        found = json.loads(on_site(f"{LOCAL_RESTIC} find --json "
                                   f"'{DOCS}/attack-swap/*'") or "[]")
        assert not any(entry.get("matches") for entry in found), found
        # the next real delta lists the link for what it is and backs the rest up
        result = site_tool("run", "--type", "delta")
        assert result["ok"], result
        assert {"path": "attack-swap", "reason": "a symlink, not a regular file"} in result["skipped_files"], result
    finally:
        on_site(f"rm -rf {DOCS}/attack-swap {DOCS}/attack-swap.listed")
        start_documents_timers()
    assert "nosymfollow" not in on_site("cat /proc/self/mountinfo"), "the confinement leaked out of its namespace"


def test_spse_cannot_swap_its_documents_folder_nor_postgres_the_folders_root_writes_config_into(backed_up):
    """The folders holding what spse or postgres own are root's (roles spse, postgresql, backup): spse cannot
    rename its documents folder to put a link in its place (root's restic, restores and the install would
    follow it), and postgres cannot plant a link where root writes lpse.conf, pg_hba.conf, lpse_backup.conf."""
    tries = {
        "spse": as_spse(f"mv {DOCS} {DOCS}.x 2>&1; ln -s /etc /var/lib/spse/planted 2>&1; true"),
        "postgres": as_postgres("ln -s /etc/bash_completion.d /etc/postgresql/15/main/conf.d/planted.conf 2>&1; "
                                "mv /etc/postgresql/15/main/conf.d /tmp/conf.d 2>&1; "
                                "mv /etc/postgresql/15/main /etc/postgresql/15/moved 2>&1; "
                                "mv /etc/postgresql/15 /etc/postgresql/moved 2>&1; true"),
    }
    assert tries["spse"].count("Permission denied") == 2, tries["spse"]
    assert tries["postgres"].count("Permission denied") == 4, tries["postgres"]
    owners = on_site("stat -c '%n %U:%G %a' /var/lib/spse /var/lib/spse/documents /etc/postgresql /etc/postgresql/15 "
                     "/etc/postgresql/15/main /etc/postgresql/15/main/conf.d").splitlines()
    assert owners == ["/var/lib/spse root:spse 750", "/var/lib/spse/documents spse:spse 750",
                      "/etc/postgresql root:postgres 755", "/etc/postgresql/15 root:postgres 755",
                      "/etc/postgresql/15/main root:postgres 755", "/etc/postgresql/15/main/conf.d root:postgres 755"]
