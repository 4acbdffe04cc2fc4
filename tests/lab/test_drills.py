"""DR drills on the lab's site1 (issue 9): refused where not allowed, a made-to-fail drill reported as failed at
its step, a rows-deleted drill that recovers the markers and meets its targets, and a failed-upgrade drill (a
real upgrade to a release whose migration fails halfway) after which the site serves its old version with
every acknowledged write. Runs late (LATE_MODULES): it leaves site1 serving with every referenced document in
place, on the version it ran."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from lpse_ops.state import StateStore
from lpse_ops.state import drills as drill_state
from tests.lab.labkit import SITE, backup_cli, documents_not_matching, inventory_for, on_site, run_cli, sql


def lab_site_vars() -> dict:
    from lpse_ops.lab import lab as lab_actions

    data = yaml.safe_load(lab_actions.inventory_path().read_text())
    return dict(data["all"]["children"]["sites"]["hosts"][SITE])


def drills_recorded() -> list[dict]:
    with StateStore.open() as store:
        return drill_state.list_drills(store)


def test_a_site_not_marked_drillable_is_refused_with_the_reason(backed_up, tmp_path):
    before = len(drills_recorded())
    production = inventory_for(tmp_path / "production.yml", {SITE: {**lab_site_vars(),
                                                                    "lpse_environment": "production"}})
    code, _, output = run_cli("drill", "run", "rows-deleted", "--site", SITE, "-i", str(production), "--json")
    assert code == 1
    assert f"{SITE} is not drillable: lpse_environment is production and site_drill_allowed is not set" in output
    opted_out = inventory_for(tmp_path / "lab.yml", {SITE: {**lab_site_vars(), "site_drill_allowed": False}})
    code, _, output = run_cli("drill", "run", "rows-deleted", "--site", SITE, "-i", str(opted_out), "--json")
    assert code == 1 and f"{SITE} is not drillable: site_drill_allowed is false" in output
    assert len(drills_recorded()) == before  # nothing recorded, nothing touched


def test_a_drill_whose_recovery_cannot_work_fails_naming_the_step(backed_up):
    # A recovery point a day before the oldest backup: the runbook's restore step cannot succeed.
    impossible = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    code, report, output = run_cli("drill", "run", "rows-deleted", "--site", SITE, "--target-time", impossible,
                                   "--warmup-markers", "3", "--json")
    assert code == 3, output
    assert report["ok"] is False and report["met"] is False
    assert report["failed_step"] == "restore-before-mistake"
    assert report["runbook"]["failed_step"] == "restore-before-mistake"
    restore = next(step for step in report["runbook"]["steps"] if step["id"] == "restore-before-mistake")
    assert restore["status"] == "failed" and restore["exit_code"] not in (0, None)
    assert report["rto_s"] is None  # never "recovered"
    recorded = drills_recorded()[-1]
    assert (recorded["id"], recorded["ok"], recorded["failed_step"]) == (report["id"], False, "restore-before-mistake")
    assert "fault_injected" in [event["event"] for event in recorded["timeline"]]
    assert documents_not_matching() == []  # the site was left as the fault left it: serving, consistent


def test_rows_deleted_drill_brings_the_markers_back_within_the_targets(backed_up):
    code, report, output = run_cli("drill", "run", "rows-deleted", "--site", SITE, "--warmup-markers", "5", "--json")
    assert code == 0, output
    assert report["ok"] is True and report["met"] is True and report["failed_step"] is None
    markers = report["markers"]
    # every marker acknowledged before the DELETE's second is back, rows and documents, checked here by hand too
    present = int(sql(f"SELECT count(*) FROM tenders WHERE code LIKE 'DRILL{report['id']}-%'"))
    assert present == markers["tenders_present"] >= 4
    assert markers["last_tender_present"] >= markers["last_acknowledged_before_fault"] - 2
    assert 0 <= report["rpo_db_s"] <= report["targets"]["rpo_db_s"] == 60
    assert 0 <= report["rpo_docs_s"] <= report["targets"]["rpo_docs_s"] == 300
    assert report["rto_s"] <= report["targets"]["rto_s"]
    assert markers["consistency"]["not_matching_count"] == 0 and documents_not_matching() == []
    events = [event["event"] for event in report["timeline"]]
    assert events.index("fault_injected") < events.index("runbook_started") < events.index("data_verified")
    assert report["last_drill_line"].startswith("last_drill: ")
    with StateStore.open() as store:
        steps = store.list_runs(limit=100, parent_id=report["runbook"]["run_id"], operation="runbook.step")
        assert {step["args"]["step"] for step in steps} >= {"restore-before-mistake", "site-healthy"}
        book = store.get_run(report["runbook"]["run_id"])
        assert book["parent_id"] == report["run_id"] and book["result"] == "ok"
        assert store.list_locks() == []


# Each scenario once on small data; the 1.3 GB rounds are in bench/drills.py.
@pytest.mark.parametrize("scenario", ["documents-lost", "ransomware", "database-corrupted"])
def test_every_other_scenario_recovers_the_site_within_its_targets(backed_up, scenario):
    """The fault for real on small data (the 1.3 GB rounds are in bench/drills.py): the documents folder removed;
    PostgreSQL stopped and its data files overwritten; or the site's files encrypted with its local repositories
    deleted and its offsite snapshots forgotten with its own keys (the runbook restores from the offsite
    repositories as they stood before the attack, then puts them back: ``backup offsite-put-back``)."""
    code, report, output = run_cli("drill", "run", scenario, "--site", SITE, "--warmup-markers", "3", "--json",
                                   timeout=2400)
    assert code == 0, output[-4000:]
    assert report["ok"] is True and report["met"] is True and report["failed_step"] is None, report
    assert report["markers"]["consistency"]["not_matching_count"] == 0 and documents_not_matching() == []
    assert report["rto_s"] <= report["targets"]["rto_s"]
    assert 0 <= report["rpo_db_s"] <= report["targets"]["rpo_db_s"]
    events = [event["event"] for event in report["timeline"]]
    assert events.index("fault_injected") < events.index("runbook_started") < events.index("data_verified")
    with StateStore.open() as store:
        steps = {step["args"]["step"]: step for step in store.list_runs(
            limit=100, parent_id=report["runbook"]["run_id"], operation="runbook.step")}
        if scenario == "ransomware":  # restored from the offsite repositories as they stood, then put back
            assert steps["restore-offsite-as-of"]["result"] == "ok", steps["restore-offsite-as-of"]
            assert steps["offsite-put-back"]["result"] == "ok", steps["offsite-put-back"]
        assert store.list_locks() == []


def test_failed_upgrade_drill_serves_the_old_version_with_every_acknowledged_write(backed_up, release, tmp_path,
                                                                                    monkeypatch):
    from lpse_ops import reference

    releases = tmp_path / "releases"
    releases.mkdir()
    (releases / release["bundles"]["1.1"].name).symlink_to(release["bundles"]["1.1"])  # the way from 1.0
    bad = reference.build_bad_release("migration-fails-halfway", release["key"], releases)
    version = bad.name.removeprefix("spse-").removesuffix(".tar.gz")
    code, _, output = backup_cli("verify")  # an upgrade needs a verified restore younger than 26 h
    assert code == 0, output
    monkeypatch.setenv("LPSE_OPS_TRUSTED_KEYS", str(release["trusted"]))
    before = json.loads(on_site("curl -sk https://127.0.0.1/health"))["version"]
    code, report, output = run_cli("drill", "run", "failed-upgrade", "--site", SITE, "--to", version, "--releases",
                                   str(releases), "--warmup-markers", "5", "--json", timeout=3600)
    assert code == 0, output
    assert report["ok"] is True and report["met"] is True and report["failed_step"] is None
    events = {event["event"]: event for event in report["timeline"]}
    assert events["upgrade_returned"]["outcome"] == "rolled_back", events["upgrade_returned"]
    assert "failed step migrate" in events["fault_injected"]["fault"], events["fault_injected"]
    # the old version serves, and not one write the site acknowledged, before or during the upgrade, is lost
    assert events["version_verified"]["version"] == before != version
    markers = report["markers"]
    assert markers["tenders_present"] == markers["acknowledged"] >= 5, markers
    assert report["rpo_db_s"] == 0 and report["rpo_docs_s"] == 0
    assert markers["consistency"]["not_matching_count"] == 0 and documents_not_matching() == []
    # the runbook said to continue past the refused rollback (the upgrade had rolled back by itself)
    rollback = next(step for step in report["runbook"]["steps"] if step["id"] == "rollback-upgrade")
    assert rollback["decision"] == "continue" and "nothing to roll back to" in rollback["output_tail"], rollback
    with StateStore.open() as store:
        upgrade_run = store.get_run(int(events["upgrade_returned"]["rollout"]))
        assert upgrade_run["parent_id"] == report["run_id"], upgrade_run
        assert store.list_locks() == []
