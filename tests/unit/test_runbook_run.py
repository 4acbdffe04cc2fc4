"""lpse-ops runbook run: refusals before anything runs, steps as real lpse-ops commands recorded as child runs,
on_failure, and the site lock a step works under (LPSE_OPS_PARENT_RUN). No host is needed: the steps are
commands that read the state store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lpse_ops.actions import operation, runbook_run
from lpse_ops.state import StateStore

CLI = str(Path(sys.executable).with_name("lpse-ops"))

RUNBOOK = """---
scenario: {name}
owner: tests
rto_target_minutes: 5
rpo_target_seconds: 60
rpo_documents_target_seconds: 300
clauses: ["10.2"]
last_drill: null
---

# A test runbook

## Meaning

Nothing breaks.

## Impact

None.

## Diagnosis

```step id=locks-before action=lock.list on_failure=stop
lpse-ops lock list
```

## Recovery

```step id=show-rollout action=runs.show on_failure={second_policy}
lpse-ops runs show {{rollout}}
```

```step id=audit-ok action=audit-log.verify on_failure=stop
lpse-ops audit-log verify
```

## Verification

```step id=locks-after action=lock.list on_failure=continue
lpse-ops lock list --json
```
"""


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text("all:\n  children:\n    sites:\n      hosts:\n        site1:\n          ansible_host: 127.0.0.1\n")
    return path


def write_runbook(tmp_path: Path, second_policy: str, name: str = "test-book") -> Path:
    path = tmp_path / f"{name}.md"
    path.write_text(RUNBOOK.format(name=name, second_policy=second_policy))
    return path


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def runs(operation_name: str | None = None) -> list[dict]:
    with StateStore.open() as store:
        return store.list_runs(limit=1000, operation=operation_name)


def test_a_placeholder_without_a_value_is_refused_before_anything_runs(tmp_path, inventory):
    book = write_runbook(tmp_path, "stop")
    done = cli("runbook", "run", str(book), "--site", "site1", "-i", str(inventory), "--yes")
    assert done.returncode == 1
    assert "no value for {rollout}" in done.stderr and "show-rollout" in done.stderr, done.stderr
    assert runs() == []  # nothing recorded, nothing run


def test_an_unknown_set_key_and_an_unknown_site_are_refused(tmp_path, inventory):
    book = write_runbook(tmp_path, "stop")
    done = cli("runbook", "run", str(book), "--site", "site1", "-i", str(inventory), "--yes", "--set", "rolout=1")
    assert done.returncode == 1 and "--set rolout: not a placeholder" in done.stderr, done.stderr
    done = cli("runbook", "run", str(book), "--site", "site9", "-i", str(inventory), "--yes", "--set", "rollout=1")
    assert done.returncode == 1 and "--site must name one site" in done.stderr, done.stderr


def test_a_failing_stop_step_stops_the_run_and_every_step_is_a_child_run(tmp_path, inventory):
    book = write_runbook(tmp_path, "stop")
    done = cli("runbook", "run", str(book), "--site", "site1", "-i", str(inventory), "--yes", "--json",
               "--set", "rollout=424242")
    assert done.returncode == 3, done.stderr
    report = json.loads(done.stdout)
    assert report["result"] == "failed" and report["failed_step"] == "show-rollout"
    assert [step["id"] for step in report["steps"]] == ["locks-before", "show-rollout"]  # audit-ok never ran
    failed = report["steps"][1]
    assert failed["command"] == "lpse-ops runs show 424242" and failed["exit_code"] == 1
    assert "run 424242 not found" in failed["output_tail"]
    parent = next(run for run in runs("runbook.run") if run["id"] == report["run_id"])
    assert parent["result"] == "failed" and parent["summary"]["failed_step"] == "show-rollout"
    with StateStore.open() as store:
        children = store.list_runs(limit=100, parent_id=report["run_id"], operation="runbook.step")
        assert sorted(child["args"]["step"] for child in children) == ["locks-before", "show-rollout"]
        step = store.get_run(next(child["id"] for child in children if child["args"]["step"] == "show-rollout"))
        assert step["summary"]["exit_code"] == 1 and step["summary"]["duration_s"] >= 0
        assert step["args"]["command"] == "lpse-ops runs show 424242"
        assert store.list_locks() == []  # released at the end
        operations = [entry["operation"] for entry in store.audit_entries()]
    assert "runbook.step.failed" in operations


def test_a_failing_continue_step_lets_the_next_steps_run(tmp_path, inventory):
    book = write_runbook(tmp_path, "continue")
    done = cli("runbook", "run", str(book), "--site", "site1", "-i", str(inventory), "--yes", "--json",
               "--set", "rollout=424242")
    assert done.returncode == runbook_run.EXIT_CONTINUED_FAILURES == 5, done.stderr
    report = json.loads(done.stdout)
    assert [step["status"] for step in report["steps"]] == ["ok", "failed", "ok", "ok"]
    # every step ran, and the result says one failed (not "ok" with no failed step)
    assert report["result"] == "completed_with_failures" and report["failed_step"] == "show-rollout"
    assert report["continued_failures"] == ["show-rollout"]
    parent = next(run for run in runs("runbook.run") if run["id"] == report["run_id"])
    assert parent["result"] == "failed" and parent["summary"]["result"] == "completed_with_failures"
    assert parent["summary"]["failed_step"] == "show-rollout"
    # the last step saw the runbook's own lock on site1 while it ran
    held = json.loads(report["steps"][3]["output_tail"])
    held = held["locks"] if isinstance(held, dict) else held
    assert [(lock["site"], lock["run_id"]) for lock in held] == [("site1", report["run_id"])]


def test_a_site_held_by_another_run_is_refused_naming_the_holder(tmp_path, inventory):
    book = write_runbook(tmp_path, "stop")
    with StateStore.open() as store:
        other = store.start_run("backup.restore", {}, ["site1"])
        store.acquire_sites(["site1"], "backup.restore", run_id=other, holder="someone@else")
    done = cli("runbook", "run", str(book), "--site", "site1", "-i", str(inventory), "--yes",
               "--set", "rollout=1")
    assert done.returncode == 1
    assert "site1 is locked by someone@else" in done.stderr and f"(run {other})" in done.stderr, done.stderr
    assert [run["operation"] for run in runs("runbook.step")] == []


def test_a_step_works_under_the_lock_of_its_runbook_and_drill_but_not_of_another_run(monkeypatch):
    with StateStore.open() as store:
        drill = store.start_run("drill.run", {}, ["site1"])
        store.acquire_sites(["site1"], "drill.run", run_id=drill)
        book = store.start_run("runbook.run", {}, ["site1"], parent_id=drill)
        step = store.start_run("runbook.step", {}, ["site1"], parent_id=book)
        assert operation.lineage(store, step) == {step, book, drill}
        monkeypatch.setenv("LPSE_OPS_PARENT_RUN", str(step))
        restore = store.start_run("backup.restore", {}, ["site1"], parent_id=operation.parent_run())
        operation.lock_hosts(store, "backup.restore", ["site1"], restore, "tester@control")  # no deadlock
        operation.refuse_if_locked("backup.restore", ["site1"], {})
        assert [lock["run_id"] for lock in store.list_locks()] == [drill]
        stranger = store.start_run("install", {}, ["site1"])
        monkeypatch.setenv("LPSE_OPS_PARENT_RUN", str(stranger))
        with pytest.raises(operation.OperationRefused, match="site1 is locked by"):
            operation.refuse_if_locked("backup.restore", ["site1"], {})
        with pytest.raises(operation.OperationRefused, match="site1 is locked by"):
            operation.lock_hosts(store, "backup.restore", ["site1"], stranger, "tester@control")


def test_the_plan_fills_placeholders_quoted_and_adds_yes_only_where_a_command_takes_it(tmp_path, inventory):
    book = write_runbook(tmp_path, "stop")
    planned = runbook_run.plan(runbook_run.RunbookRequest(str(book), "site1", inventory,
                                                          values={"rollout": "7; rm -rf /"}, yes=True))
    show = next(step for step in planned.steps if step.id == "show-rollout")
    assert show.command == "lpse-ops runs show '7; rm -rf /'" and show.argv == ["runs", "show", "7; rm -rf /"]
    assert planned.targets == {"rto_s": 300, "rpo_db_s": 60, "rpo_docs_s": 300}
    real = runbook_run.plan(runbook_run.RunbookRequest("rows-deleted", "site1", inventory,
                                                       values={"target_time": "2026-11-24T09:29:00Z"}, yes=True))
    restore = next(step for step in real.steps if step.action == "backup.restore")
    assert restore.argv[-1] == "--yes" and "--yes" not in restore.command  # the runner confirms it, not the runbook
    assert "--yes" not in next(s for s in real.steps if s.action == "lock.list").argv


def test_each_step_is_asked_for_and_a_no_stops_the_run_as_aborted(tmp_path, inventory):
    book = write_runbook(tmp_path, "continue")
    done = subprocess.run([CLI, "runbook", "run", str(book), "--site", "site1", "-i", str(inventory),
                           "--set", "rollout=424242"], input="y\ny\nn\n", capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 1, done.stderr
    assert "Run step 3 audit-ok (Recovery): lpse-ops audit-log verify ?" in done.stderr
    with StateStore.open() as store:
        book_run = store.list_runs(limit=1, operation="runbook.run")[0]
        assert book_run["result"] == "aborted" and book_run["summary"]["failed_step"] == "audit-ok"
        ran = store.list_runs(limit=100, parent_id=book_run["id"], operation="runbook.step")
        assert sorted(step["args"]["step"] for step in ran) == ["locks-before", "show-rollout"]
        assert "runbook.step.declined" in [entry["operation"] for entry in store.audit_entries()]


def _outcome(step_id: str, status: str, decision: str | None = None, exit_code: int | None = 0,
             section: str = "Recovery") -> runbook_run.StepOutcome:
    step = runbook_run.PlannedStep(1, step_id, section, "lock.list", "continue", "lpse-ops lock list", [])
    return runbook_run.StepOutcome(step, status, exit_code, decision=decision)


def test_the_result_names_a_passed_failure_and_a_stop_wins():
    clean = [_outcome("a", "ok"), _outcome("b", "warning", exit_code=5)]
    assert runbook_run.finished_result(clean, "ok", None) == ("ok", None)
    passed = [_outcome("a", "failed", "continue", 3), _outcome("b", "ok"), _outcome("c", "failed", "continue", 1)]
    assert runbook_run.finished_result(passed, "ok", None) == ("completed_with_failures", "a")
    stopped = [_outcome("a", "failed", "continue", 3), _outcome("b", "failed", "stop", 3)]
    assert runbook_run.finished_result(stopped, "failed", "b") == ("failed", "b")
    assert runbook_run.RESULT_EXIT_CODES == {"ok": 0, "completed_with_failures": 5, "failed": 3, "aborted": 1}
