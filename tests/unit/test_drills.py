"""DR drills: the state module (migration 0007) and the pure measurements of actions/drill_rules.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from lpse_ops.state import drills as drill_state
from lpse_ops.state.store import StateError, StateStore

JAYAPURA = ZoneInfo("Asia/Jayapura")


def test_drills_round_trip_with_offsets_and_window(tmp_path):
    with StateStore.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        run_id = store.start_run("drill.run", {"scenario": "rows-deleted"}, ["site1"])
        first = drill_state.start_drill(store, "rows-deleted", "site1",
                                        {"rto_s": 1800, "rpo_db_s": 60, "rpo_docs_s": 300}, run_id=run_id,
                                        started_at=datetime(2026, 11, 28, 9, 0, tzinfo=JAYAPURA))
        drill_state.finish_drill(store, first, ok=True, rto_s=95.5, rpo_db_s=1.2, rpo_docs_s=0.0, met=True,
                                 timeline=[{"at": "2026-11-28T00:00:05+00:00", "event": "fault"}])
        second = drill_state.start_drill(store, "documents-lost", "site1", {"rto_s": 1800},
                                         started_at=datetime(2026, 11, 28, 10, 0, tzinfo=JAYAPURA))
        drill_state.finish_drill(store, second, ok=False, failed_step="restore-to-snapshot", met=False)
        everything = drill_state.list_drills(store)
        # 09:00 WIT is 00:00 UTC: the window is read in absolute time, whatever zone the caller uses.
        window = drill_state.list_drills(store, since=datetime(2026, 11, 28, 0, 30, tzinfo=UTC),
                                         until=datetime(2026, 11, 28, 10, 30, tzinfo=JAYAPURA))
        entries = [entry["operation"] for entry in store.audit_entries()]
    assert [drill["id"] for drill in everything] == [first, second]
    drill = everything[0]
    assert set(drill) >= {"id", "scenario", "site", "started_at", "finished_at", "ok", "failed_step", "rto_s",
                          "rpo_db_s", "rpo_docs_s", "targets", "met", "timeline"}
    assert drill["started_at"] == "2026-11-28T00:00:00+00:00"
    assert datetime.fromisoformat(drill["finished_at"]).utcoffset() == timedelta(0)
    assert drill["targets"] == {"rto_s": 1800, "rpo_db_s": 60, "rpo_docs_s": 300}
    assert drill["timeline"] == [{"at": "2026-11-28T00:00:05+00:00", "event": "fault"}]
    assert (drill["ok"], drill["met"], drill["rto_s"], drill["run_id"]) == (True, True, 95.5, run_id)
    assert everything[1]["failed_step"] == "restore-to-snapshot" and everything[1]["ok"] is False
    assert everything[1]["targets"] == {"rto_s": 1800, "rpo_db_s": None, "rpo_docs_s": None}
    assert [drill["id"] for drill in window] == [second]
    assert entries.count("drill.start") == 2 and entries.count("drill.finish") == 2


def test_finishing_an_unknown_drill_is_refused(tmp_path):
    with StateStore.open(f"sqlite:///{tmp_path / 'state.db'}") as store, \
            pytest.raises(StateError, match="drill 42 not found"):
        drill_state.finish_drill(store, 42, ok=True)


# -- actions/drill_rules.py: the pure rules ---------------------------------------------------------

from lpse_ops.actions import drill_rules  # noqa: E402
from lpse_ops.backends import site_shell  # noqa: E402


@pytest.mark.parametrize("hostvars, allowed, reason", [
    ({"lpse_environment": "lab"}, True, "lpse_environment is lab"),
    ({"lpse_environment": "staging"}, True, "lpse_environment is staging"),
    ({"lpse_environment": "production"}, False, "lpse_environment is production and site_drill_allowed is not set"),
    ({}, False, "lpse_environment is unset and site_drill_allowed is not set"),
    ({"lpse_environment": "production", "site_drill_allowed": True}, True, "site_drill_allowed is true"),
    ({"lpse_environment": "lab", "site_drill_allowed": False}, False, "site_drill_allowed is false"),
    ({"lpse_environment": "lab", "site_drill_allowed": "no"}, False, "site_drill_allowed is false"),
])
def test_which_sites_may_be_drilled(hostvars, allowed, reason):
    got_allowed, got_reason = drill_rules.drillable(hostvars)
    assert got_allowed is allowed and got_reason.startswith(reason)


def acks(*pairs: tuple[int, float]) -> list[dict]:
    base = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)
    return [{"seq": seq, "tender_ack": (base + timedelta(seconds=at)).isoformat()} for seq, at in pairs]


def test_rpo_is_the_gap_from_the_last_acknowledged_before_the_fault_to_the_last_present():
    log = acks((1, 0), (2, 1), (3, 2), (4, 3), (5, 4.5))
    fault = datetime(2026, 11, 28, 1, 0, 4, tzinfo=UTC)  # marker 5 was acknowledged after the fault
    assert drill_rules.rpo_seconds(log, {1, 2, 3, 4}, fault, "tender_ack") == 0.0
    assert drill_rules.rpo_seconds(log, {1, 2}, fault, "tender_ack") == 2.0
    assert drill_rules.rpo_seconds(log, {1, 2, 3, 4, 5}, fault, "tender_ack") == 0.0
    assert drill_rules.rpo_seconds(log, set(), fault, "tender_ack") == 3.0  # none back: a lower bound
    assert drill_rules.rpo_seconds(log, {1}, datetime(2026, 11, 28, 0, 59, tzinfo=UTC), "tender_ack") is None


def test_rpo_does_not_depend_on_the_zone_the_times_were_written_in():
    jayapura = [{"seq": 1, "tender_ack": "2026-11-28T10:00:00+09:00"},
                {"seq": 2, "tender_ack": "2026-11-28T10:00:07+09:00"}]
    fault = datetime(2026, 11, 28, 1, 0, 8, tzinfo=UTC)
    assert drill_rules.rpo_seconds(jayapura, {1}, fault, "tender_ack") == 7.0


def test_targets_met_needs_every_measure_at_or_under_its_target():
    targets = {"rto_s": 1800, "rpo_db_s": 60, "rpo_docs_s": 300}
    assert drill_rules.targets_met({"rto_s": 1800, "rpo_db_s": 60, "rpo_docs_s": 0}, targets)
    assert not drill_rules.targets_met({"rto_s": 1800.1, "rpo_db_s": 1, "rpo_docs_s": 0}, targets)
    assert not drill_rules.targets_met({"rto_s": 10, "rpo_db_s": None, "rpo_docs_s": 0}, targets)
    assert drill_rules.targets_met({"rto_s": 10, "rpo_db_s": None, "rpo_docs_s": 0}, {"rto_s": 60})


def test_the_last_drill_line_is_utc_whatever_the_zone():
    finished = datetime(2026, 11, 28, 16, 40, 12, tzinfo=JAYAPURA)
    assert drill_rules.last_drill_line(finished) == "last_drill: 2026-11-28T07:40:12Z"


def test_drill_run_refuses_a_production_site_before_touching_it(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  vars:\n    lpse_environment: production\n  children:\n    sites:\n      hosts:\n"
                         "        site1:\n          ansible_host: 192.0.2.1\n")
    done = subprocess.run([str(Path(sys.executable).with_name("lpse-ops")), "drill", "run", "rows-deleted",
                           "--site", "site1", "-i", str(inventory)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 1
    assert ("site1 is not drillable: lpse_environment is production and site_drill_allowed is not set"
            in " ".join(done.stderr.split())), done.stderr
    with StateStore.open() as store:
        assert drill_state.list_drills(store) == [] and store.list_runs() == []


# -- failed-upgrade: the breaking upgrade as the drill's fault (actions/drill_upgrade.py) -----------------------


def test_failed_upgrade_drill_is_refused_without_its_release_before_touching_the_site(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  vars:\n    lpse_environment: lab\n  children:\n    sites:\n      hosts:\n"
                         "        site1:\n          ansible_host: 192.0.2.1\n")
    cli = str(Path(sys.executable).with_name("lpse-ops"))
    empty = tmp_path / "releases"
    empty.mkdir()
    for extra, reason in (([], "needs --to VERSION and --releases DIR"),
                          (["--to", "1.2.1", "--releases", str(empty)], "no folder of signed bundles")):
        done = subprocess.run([cli, "drill", "run", "failed-upgrade", "--site", "site1", "-i", str(inventory), *extra],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 1 and reason in " ".join(done.stderr.split()), done.stderr
        assert "Nothing was touched" in done.stderr
    done = subprocess.run([cli, "drill", "run", "rows-deleted", "--site", "site1", "-i", str(inventory),
                           "--to", "1.2.1"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "for the failed-upgrade drill only" in done.stderr, done.stderr
    with StateStore.open() as store:
        assert drill_state.list_drills(store) == [] and store.list_runs() == []


def test_the_breaking_upgrade_is_one_site_without_notices_and_its_outcome_is_read_from_the_report(tmp_path):
    from pathlib import Path

    from lpse_ops.actions import drill_upgrade

    fault = drill_upgrade.UpgradeFault("1.2.1", Path("/r"), Path("/k"))
    argv = drill_upgrade.upgrade_argv("site2", Path("/inv"), fault)
    assert argv[:4] == ["upgrade", "run", "--to", "1.2.1"]
    assert argv[argv.index("--limit") + 1] == "site2" and argv[argv.index("--trusted-keys") + 1] == "/k"
    assert {"--no-notice", "--yes", "--json"} <= set(argv)
    report = {"run_id": 7, "waves": [{"sites": [{"host": "site1", "outcome": "upgraded", "record": {}},
                                                {"host": "site2", "outcome": "rolled_back",
                                                 "record": {"failed_step": "migrate"}}]}]}
    assert drill_upgrade.site_outcome(report, "site2") == ("rolled_back", {"failed_step": "migrate"})
    assert drill_upgrade.site_outcome(report, "site3") == ("not_started", {})


def test_the_drill_continues_past_a_refused_rollback_only_after_the_upgrade_rolled_back_by_itself():
    from datetime import datetime as dt
    from types import SimpleNamespace

    from lpse_ops.actions import drill_upgrade

    moment = dt(2026, 11, 28, tzinfo=UTC)
    refused = SimpleNamespace(output_tail="no successful upgrade of site1 in rollout 7: nothing to roll back to")
    other = SimpleNamespace(output_tail="exit 3: rollback_failed at restore-db")
    rollback, status = SimpleNamespace(id="rollback-upgrade"), SimpleNamespace(id="rollout-outcome")
    rolled_back = drill_upgrade.Injected(moment, moment, 7, "rolled_back", {}, 3)
    stuck = drill_upgrade.Injected(moment, moment, 7, "rollback_failed", {}, 3)
    assert drill_upgrade.decide(rolled_back)(rollback, refused) is True
    assert drill_upgrade.decide(rolled_back)(rollback, other) is False
    assert drill_upgrade.decide(rolled_back)(status, refused) is False
    assert drill_upgrade.decide(stuck)(rollback, refused) is False
    assert drill_upgrade.decide(None)(rollback, refused) is False


def _book(result: str, failed_step: str | None, outcomes: list):
    from pathlib import Path

    from lpse_ops.actions import runbook_run

    planned = runbook_run.RunbookPlan(Path("server-lost.md"), "t", {}, "site1", [o.step for o in outcomes])
    return runbook_run.RunbookResult(11, planned, outcomes, result, failed_step, 0)


def _step(step_id: str, section: str, status: str, decision: str | None, exit_code: int):
    from lpse_ops.actions import runbook_run

    step = runbook_run.PlannedStep(1, step_id, section, "fleet.status", "continue", "lpse-ops fleet status", [])
    return runbook_run.StepOutcome(step, status, exit_code, decision=decision)


def test_a_drill_records_a_passed_runbook_failure_without_failing_and_stops_on_a_stop():
    passed = _book("completed_with_failures", "site-healthy",
                   [_step("probe-site", "Diagnosis", "ok", None, 0),
                    _step("site-healthy", "Verification", "failed", "continue", 3)])
    assert drill_rules.runbook_verdict(passed) == (None, [{"step": "site-healthy", "section": "Verification",
                                                           "exit_code": 3}])
    stopped = _book("failed", "restore", [_step("restore", "Recovery", "failed", "stop", 3)])
    assert drill_rules.runbook_verdict(stopped) == ("restore", [])
    clean = _book("ok", None, [_step("probe-site", "Diagnosis", "ok", None, 0)])
    assert drill_rules.runbook_verdict(clean) == (None, [])


def test_the_drill_report_shows_the_steps_the_runbook_passed(capsys):
    from lpse_ops.actions import drill_types
    from lpse_ops.commands import drill as drill_command

    row = {"id": 4, "scenario": "documents-lost", "site": "site1", "ok": True, "met": True, "failed_step": None,
           "run_id": 9, "targets": {"rto_s": 1800}, "rto_s": 60.0, "rpo_db_s": 0.0, "rpo_docs_s": 0.0,
           "timeline": [], "detail": {"runbook_result": "completed_with_failures",
                                      "continued_failures": [{"step": "site-healthy", "section": "Verification",
                                                              "exit_code": 3}]}}
    drill_command._show(drill_types.DrillResult(row, None, {}, "last_drill: x"))
    err = capsys.readouterr().err
    assert "runbook steps failed and the runbook went on" in err and "site-healthy (exit 3)" in err, err
    assert "completed_with_failures" in err


def test_a_drill_works_on_the_sites_own_folders_and_database_not_the_labs():
    """An inventory that moves the documents, the database and the cluster: every fault script and check follows."""
    from lpse_ops.actions import drill_rebuild

    hostvars = {"ansible_host": "10.0.0.5", "site_spse_docs_dir": "/srv/spse data/dokumen", "site_db_name": "spse_prod",
                "site_pg_cluster": "spse"}
    shell = site_shell.SiteShell("site9", hostvars)
    try:
        assert (shell.facts.spse_docs_dir, shell.facts.db_name) == ("/srv/spse data/dokumen", "spse_prod")
        assert (shell.facts.pg_data_dir, shell.facts.pg_unit) == ("/var/lib/postgresql/15/spse",
                                                                  "postgresql@15-spse.service")
    finally:
        shell.close()
    script = site_shell.consistency_script(shell.facts.spse_docs_dir, shell.facts.db_name)
    assert script.startswith("cd '/srv/spse data/dokumen' && ") and script.count("-d spse_prod") == 2

    class Recorder:
        def __init__(self):
            self.scripts = []

        def run(self, script, timeout=300.0, check=True):
            self.scripts.append(script)
            return "done"

    recorder = Recorder()
    drill_rebuild.ransomware("site9", recorder, hostvars)
    encrypt = recorder.scripts[1]
    assert encrypt.startswith("docs='/srv/spse data/dokumen'\npgdata=/var/lib/postgresql/15/spse\n")
    assert "/var/lib/spse" not in encrypt and "15/main" not in encrypt
