"""Result records read per host (actions/records.py) and by each command that reads them."""

from __future__ import annotations

import json
from pathlib import Path

from lpse_ops.actions import backup, install, operation, preflight, records
from lpse_ops.commands import install as install_command
from lpse_ops.runner_events import HostState, PlayTracker

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "runner" / "preflight-failed-and-unreachable.json"


def finished(hosts: list[str], tracker: PlayTracker, code: int = operation.EXIT_OK) -> operation.OperationResult:
    return operation.OperationResult(1, hosts, tracker, "ok" if code == 0 else "failed", code, 1.0, "")


def recorded_preflight() -> operation.OperationResult:
    tracker = PlayTracker()
    for event in json.loads(RECORDED.read_text()):
        tracker.feed(event)
    return finished(["site2", "site3", "site9"], tracker, operation.EXIT_HOSTS_UNREACHABLE)


def test_read_recorded_preflight_unreachable_host_reported_missing() -> None:
    found = records.read(recorded_preflight(), "preflight")
    assert sorted(found.found) == ["site2", "site3"]
    assert list(found.missing) == ["site9"]
    assert found.missing["site9"].startswith("no result record: unreachable (")
    assert "port 2299: Connection refused" in found.missing["site9"]


def test_read_host_without_events_or_record_reported_missing() -> None:
    found = records.read(finished(["site1"], PlayTracker()), "install")
    assert found.missing == {"site1": "no result record: the run reported nothing for this host"}
    assert found.exit_code(operation.EXIT_OK) == operation.EXIT_HOSTS_FAILED


def test_read_ok_host_without_record_fails_the_exit_code() -> None:
    tracker = PlayTracker(hosts={"site1": HostState(ok=5)})
    found = records.read(finished(["site1"], tracker), "install")
    assert found.missing == {"site1": "no result record: the playbook emitted none for this host"}
    assert found.exit_code(operation.EXIT_OK) == operation.EXIT_HOSTS_FAILED
    assert found.exit_code(operation.EXIT_HOSTS_UNREACHABLE) == operation.EXIT_HOSTS_UNREACHABLE


def test_read_record_of_another_kind_or_schema_reported_missing() -> None:
    tracker = PlayTracker(hosts={"a": HostState(ok=1), "b": HostState(ok=1)},
                          records={"a": {"kind": "preflight", "schema": 1}, "b": {"kind": "install", "schema": 2}})
    found = records.read(finished(["a", "b"], tracker), "install")
    assert found.found == {}
    assert "kind 'preflight' schema 1, expected kind 'install' schema 1" in found.missing["a"]
    assert "schema 2" in found.missing["b"]


def test_preflight_baseline_failures_from_records_every_host_named() -> None:
    failures = preflight.baseline_failures(records.read(recorded_preflight(), preflight.KIND))
    assert failures["site2"] == []
    assert failures["site3"] == ["vcpus: 2 vCPUs (minimum 64)"]
    assert failures["site9"][0].startswith("no result record: unreachable")


def test_preflight_baseline_failures_incomplete_record_said() -> None:
    tracker = PlayTracker(hosts={"a": HostState(failed=1, messages=["Check listening ports: boom"])},
                          records={"a": {"kind": "preflight", "schema": 1, "complete": False, "ok": False,
                                         "checks": [{"check": "os", "ok": True, "detail": "Debian 12"}]}})
    failures = preflight.baseline_failures(records.read(finished(["a"], tracker, 3), preflight.KIND))
    assert failures == {"a": ["incomplete: only 1 check(s) ran before a task failed"]}


def install_record(**fields: object) -> dict:
    health = {"status": "ok", "version": "1.0", "schema_version": 1, "database": "up", "documents_dir": "/d"}
    return {"kind": "install", "schema": 1, "version": "1.0", "check_mode": False, "complete": True,
            "serving": True, "health": health, **fields}


def test_install_health_and_details_from_records() -> None:
    tracker = PlayTracker(
        hosts={"a": HostState(ok=9), "b": HostState(ok=3, failed=1, messages=["Install nginx: no package"]),
               "c": HostState(unreachable=1, messages=["unreachable: refused"]), "d": HostState(ok=9)},
        records={"a": install_record(),
                 "b": install_record(complete=False, serving=False, health=None),
                 "d": install_record(check_mode=True, serving=False, health=None)})
    found = records.read(finished(["a", "b", "c", "d"], tracker, 4), install.KIND)
    assert install.health_by_host(found) == {"a": install_record()["health"]}
    details = install_command.install_details(found)
    assert details["a"] == "serving 1.0 (schema 1, ok)"
    assert "b" not in details  # the table shows the failure messages
    assert details["c"] == "no result record: unreachable (unreachable: refused)"
    assert details["d"] == "dry run of SPSE 1.0 passed"


def test_backup_host_outputs_from_records_every_host_has_output_or_error() -> None:
    status = {"ok": True, "pgbackrest": {"repos": {}}}
    tracker = PlayTracker(
        hosts={"a": HostState(ok=3), "b": HostState(ok=2, failed=1, messages=["Run lpse-backup: non-zero return code"]),
               "c": HostState(ok=2, failed=1, messages=["Run lpse-backup: non-zero return code"]),
               "d": HostState(unreachable=1, messages=["unreachable: timed out"])},
        records={"a": {"kind": "backup_exec", "schema": 1, "action": "status", "rc": 0, "output": status,
                       "unparsed": "", "stderr": ""},
                 "b": {"kind": "backup_exec", "schema": 1, "action": "status", "rc": 1, "output": None,
                       "unparsed": "Traceback (most recent call last)", "stderr": ""},
                 "c": {"kind": "backup_exec", "schema": 1, "action": "status", "rc": 2, "output": None,
                       "unparsed": "", "stderr": ""}})
    outputs = backup.host_outputs(finished(["a", "b", "c", "d"], tracker, 4))
    assert outputs["a"] == status
    assert outputs["b"] == {"error": "Traceback (most recent call last)"}
    assert outputs["c"] == {"error": "Run lpse-backup: non-zero return code"}
    assert outputs["d"] == {"error": "no result record: unreachable (unreachable: timed out)"}
    assert backup.assess("d", outputs["d"], None, backup.Thresholds())["codes"] == ["status_unavailable"]
