"""Install is for a bare site (or the same version), and one change at a time per site (issue 8, item 5).

A site that runs SPSE 1.0 refuses an install of 1.1 before anything changes on it; a site locked in
the state store by another operator refuses a restore (or install) before any SSH login to it.
"""

from __future__ import annotations

import json

import pytest

from tests.lab.labkit import on_site, run_cli, ssh_logins
from tests.lab.test_install import https, site_hosts

FAKE_HOLDER = "alice@other-control"


def site_view(site: str) -> dict:
    """What the site serves and holds: /health through nginx, the release link, releases and bundles."""
    return {
        "health": json.loads(on_site("curl -sk https://127.0.0.1/health", site=site)),
        "current": on_site("readlink /opt/spse/current", site=site).strip(),
        "releases": sorted(on_site("ls /opt/spse/releases", site=site).split()),
        "bundles": sorted(on_site("ls /opt/spse/bundles", site=site).split()),
    }


def test_install_other_version_on_running_site_refused_and_site_unchanged(lab, installed, release):
    before = site_view("site2")
    assert before["health"]["version"] == "1.0" and before["current"] == "/opt/spse/releases/1.0", before

    code, report, output = run_cli("install", str(release["bundles"]["1.1"]), "--limit", "site2",
                                   "--trusted-keys", str(release["trusted"]), "--json")

    assert code == 3, output
    host = report["hosts"]["site2"]
    assert host["failed"] == 1 and host["changed"] == 0, host
    message = " ".join(host["messages"])
    assert "site runs SPSE 1.0; install is for a bare site or the same version: use `lpse-ops upgrade` " \
           "to move it to 1.1" in message, message
    after = site_view("site2")
    assert after == before, (before, after)
    port = next(h["https_port"] for h in site_hosts(lab) if h["name"] == "site2")
    status, body = https(port, "/health")
    assert status == 200 and json.loads(body)["version"] == "1.0"


def test_install_other_version_refusal_shows_why_in_table(lab, installed, release):
    code, _, output = run_cli("install", str(release["bundles"]["1.1"]), "--limit", "site2",
                              "--trusted-keys", str(release["trusted"]))
    assert code == 3, output
    assert "site2: FAILED Refuse a site that runs another SPSE version: site runs SPSE 1.0; install is for a " \
           "bare site or the same version: use `lpse-ops upgrade` to move it to 1.1" in output, output
    assert site_view("site2")["health"]["version"] == "1.0"


# The same version is allowed again: test_install.py's second run proves it (and that it changes nothing).


@pytest.fixture
def site1_locked_by_someone_else(lab):
    """site1 locked in the lab's state store by another operator's install run, released afterwards."""
    from lpse_ops.state import StateStore

    with StateStore.open() as store:
        run_id = store.start_run("install", {"version": "1.1"}, ["site1"], actor=FAKE_HOLDER)
        store.acquire_sites(["site1"], "install", run_id=run_id, holder=FAKE_HOLDER)
    yield run_id
    with StateStore.open() as store:
        store.release_sites(["site1"], run_id=run_id, holder=FAKE_HOLDER)
        store.finish_run(run_id, "aborted", {}, None, summary={"test": "fake holder"})


def test_restore_on_locked_site_refused_naming_holder_without_ssh_login(lab, installed,
                                                                        site1_locked_by_someone_else):
    holder_run = site1_locked_by_someone_else
    before = ssh_logins("site1")

    code, _, output = run_cli("backup", "restore", "--limit", "site1", "--target-time", "2026-01-01 00:00:00",
                              "--yes", "--json")

    assert code == 1, output
    assert f"site1 is locked by {FAKE_HOLDER} since " in output, output
    assert f"UTC for install (run {holder_run}): wait for it, or `lpse-ops lock release site1 --force`" in output
    assert "Traceback" not in output
    assert ssh_logins("site1") == before
    from lpse_ops.state import StateStore

    with StateStore.open() as store:
        refused = store.list_runs(limit=1, operation="backup.restore")[0]
        locks = store.list_locks()
    assert refused["result"] == "aborted" and refused["artifact_dir"] is None, refused  # ansible never ran
    assert [(row["site"], row["holder"], row["run_id"]) for row in locks] == [("site1", FAKE_HOLDER, holder_run)]


def test_install_on_locked_site_refused_without_ssh_login(lab, installed, release, site1_locked_by_someone_else):
    before = ssh_logins("site1")
    code, _, output = run_cli("install", str(release["bundles"]["1.0"]), "--limit", "site1",
                              "--trusted-keys", str(release["trusted"]), "--json")
    assert code == 1 and f"site1 is locked by {FAKE_HOLDER}" in output, output
    assert ssh_logins("site1") == before


def test_lock_release_of_other_holder_needs_force(lab, site1_locked_by_someone_else):
    code, _, output = run_cli("lock", "release", "site1")
    assert code == 1 and f"site1 is locked by {FAKE_HOLDER}" in output and "--force" in output, output
    code, _, output = run_cli("lock", "list")
    assert code == 0 and "site1" in output and FAKE_HOLDER in output, output
