"""Scheduled verification counts (issue 23): a verification the site's own timer ran reaches the state store the
next time the control node reads the site, once, and the upgrade plan, fleet status and the monthly report all
name that same verification; a failed one leaves the site out of the plan with its reason and is a fault.

Only the site's timer service verifies here (``systemctl start lpse-backup-verify.service``, as systemd would):
no ``lpse-ops backup verify`` runs in this module.
"""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.lab.labkit import SITE, backup_cli, database_timers_stopped, on_site, run_cli

PASSWORD = "/etc/lpse-backup/restic.password"
DROPIN = "/run/systemd/system/lpse-backup-verify.service.d/90-lpse-test-newest-set.conf"


def timer_verification() -> dict:
    """Run the site's verify timer's service by hand (systemd starts it, as on its schedule); return its result."""
    on_site("systemctl start lpse-backup-verify.service", check=False)
    result = json.loads(on_site("cat /var/lib/lpse-backup/verify/last.json"))
    assert result["trigger"] == "systemd" and result["invocation_id"], result  # systemd ran it, not a command
    return result


def stored(site_id: str) -> list[dict]:
    from lpse_ops import config
    from lpse_ops.state import StateStore

    with StateStore.open(config.state_url()) as store:
        return [v for v in store.list_verifications(SITE, limit=500) if v["site_verification_id"] == site_id]


def plan() -> tuple[int, dict, str]:
    return run_cli("upgrade", "plan", "--to", "1.1", "--limit", SITE, "--json")


def fleet() -> tuple[int, dict, str]:
    return run_cli("fleet", "status", "--limit", SITE, "--json")


def monthly(tmp_path, verified: dict) -> dict:
    month = datetime.fromisoformat(verified["finished_at"]).astimezone(ZoneInfo("Asia/Jakarta")).strftime("%Y-%m")
    code, report, output = run_cli("report", "monthly", "--month", month, "--format", "html", "--out",
                                   str(tmp_path), "--json")
    assert code == 0, output
    (row,) = [row for row in report["data"]["verifications"] if row["host"] == SITE]
    return row


@pytest.fixture(scope="module")
def newest_set_verified(backed_up):
    """The verify unit pinned to the newest set, which is taken now, with no scheduled backup meanwhile.

    The timer's service verifies a *random* set (``verify --random``): in a full run an older set, taken by
    the hourly incremental while another module had deleted a document on purpose, rightly fails its
    documents check (CI run, 23:10 WIB: "missing 222:d6/..."). What this module tests is what happens to a
    verification systemd ran, so it needs one whose outcome it knows: systemd still runs the unit (a runtime
    drop-in, removed afterwards), on the set this fixture just took.
    """
    with database_timers_stopped():
        code, _report, output = backup_cli("run", "--type", "full")
        assert code == 0, output
        on_site(f"mkdir -p {DROPIN.rsplit('/', 1)[0]} && printf '%s\\n' '[Service]' 'ExecStart=' "
                f"'ExecStart=/usr/local/sbin/lpse-backup verify --repo 1' > {DROPIN} && systemctl daemon-reload")
        try:
            yield
        finally:
            on_site(f"rm -f {DROPIN} && systemctl daemon-reload")


@pytest.fixture
def verified_by_timer(newest_set_verified):
    """site1 on 1.0, its backups set up, and one successful verification its own timer's service ran."""
    version = on_site("cat /opt/spse/current/VERSION").strip()
    assert version == "1.0", f"{SITE} runs {version}: this module plans an upgrade to 1.1 (run it before the upgrades)"
    result = timer_verification()
    assert result["ok"], result.get("error")
    assert stored(result["id"]) == []  # nothing has read the site yet: the store does not know it
    return result


def test_a_verification_the_sites_timer_ran_is_recorded_once_and_every_view_names_it(verified_by_timer, tmp_path):
    site_id = verified_by_timer["id"]
    code, the_plan, output = plan()
    assert code == 0 and the_plan, output
    eligible = [site["host"] for wave in the_plan["waves"] for site in wave["sites"]]
    assert SITE in eligible, the_plan["excluded"]
    in_plan = the_plan["states"][SITE]["verification"]
    assert (in_plan["site_verification_id"], in_plan["source"], in_plan["ok"]) == (site_id, "site", True)
    (row,) = stored(site_id)  # recorded once, by the plan's reading of the site
    assert row["run_id"] == the_plan["run_id"] and row["detail"]["trigger"] == "systemd"
    assert row["verified_at"] == in_plan["verified_at"]
    assert {check["check"] for check in row["checks"]} >= {"pgbackrest verify", "documents match their sha256"}

    code, status, output = fleet()
    assert status, output
    (site,) = status["sites"]
    assert site["verification"]["site_verification_id"] == site_id and site["verification"]["id"] == row["id"]
    assert not [fault for fault in site["faults"] if fault["code"].startswith(("verification", "no_verification"))]
    assert len(stored(site_id)) == 1  # read a second time: still once

    code, backup_status, output = run_cli("backup", "status", "--limit", SITE, "--json")
    assert backup_status, output
    (verdict,) = backup_status["sites"]
    assert verdict["verification"]["site_verification_id"] == site_id and "verification_failed" not in verdict["codes"]

    reported = monthly(tmp_path, verified_by_timer)
    assert reported["newest_id"] == site_id and reported["by_site"] >= 1 and reported["ok"] >= 1


def test_a_failed_scheduled_verification_leaves_the_site_out_and_is_a_fault(verified_by_timer, tmp_path):
    on_site(f"cp -p {PASSWORD} {PASSWORD}.kept && printf 'not-the-key' > {PASSWORD}")  # break the repository's key
    try:
        failed = timer_verification()
        assert failed["ok"] is False and failed["id"] != verified_by_timer["id"], failed
        assert any("restic" in check["check"] and not check["ok"] for check in failed["checks"]), failed["checks"]

        code, status, output = fleet()
        assert code == 3, output  # a fault on the site within this one probe round
        (site,) = status["sites"]
        faults = {fault["code"]: fault for fault in site["faults"]}
        assert faults["verification_failed"]["severity"] == "critical", site["faults"]
        assert site["verification"]["site_verification_id"] == failed["id"]

        code, the_plan, output = plan()
        assert the_plan, output
        (excluded,) = [site for site in the_plan["excluded"] if site["host"] == SITE]
        assert [reason["code"] for reason in excluded["reasons"]] == ["no_verified_backup"], excluded
        assert "failed" in excluded["reasons"][0]["message"] and "restic" in excluded["reasons"][0]["message"]
        assert the_plan["states"][SITE]["verification"]["site_verification_id"] == failed["id"]

        reported = monthly(tmp_path, failed)
        assert reported["newest_id"] == failed["id"] and reported["failed"] >= 1
    finally:
        on_site(f"mv -f {PASSWORD}.kept {PASSWORD}")
        assert timer_verification()["ok"]  # the site proven again for the modules after this one
        fleet()
