"""PlayTracker over recorded ansible-runner events."""

from __future__ import annotations

import json
from pathlib import Path

from lpse_ops.runner_events import PlayTracker


def ev(kind: str, host: str | None = None, task: str = "t", res: dict | None = None, **extra) -> dict:
    data = {"task": task, "res": res or {}, **extra}
    if host:
        data["host"] = host
    return {"event": kind, "event_data": data}


def test_tracker_counts_changed_failed_and_unreachable_per_host():
    tracker = PlayTracker()
    tracker.feed(ev("runner_on_ok", "a", res={"changed": True}))
    tracker.feed(ev("runner_on_ok", "a", res={"changed": False}))
    tracker.feed(ev("runner_on_failed", "b", task="Install nginx", res={"msg": "No package matching 'ngnx'"}))
    tracker.feed(ev("runner_on_unreachable", "c", res={"msg": "ssh: connect to host refused"}))
    assert tracker.hosts["a"].status == "changed" and tracker.hosts["a"].changed == 1
    assert tracker.hosts["b"].status == "failed"
    assert tracker.hosts["b"].messages == ["Install nginx: No package matching 'ngnx'"]
    assert tracker.hosts["c"].status == "unreachable"
    assert tracker.summary() == {"changed": 1, "failed": 1, "unreachable": 1}


def test_tracker_ignored_failure_does_not_fail_the_host():
    tracker = PlayTracker()
    tracker.feed(ev("runner_on_failed", "a", res={"msg": "x"}, ignore_errors=True))
    assert tracker.hosts["a"].status == "ok"


def test_tracker_no_log_failure_hides_the_message():
    tracker = PlayTracker()
    tracker.feed(ev("runner_on_failed", "a", task="Set password",
                    res={"msg": "secret value", "_ansible_no_log": True, "censored": "hidden"}))
    assert tracker.hosts["a"].messages == ["Set password: output hidden (no_log)"]


def test_tracker_stats_are_authoritative():
    tracker = PlayTracker()
    tracker.feed(ev("runner_on_ok", "a", task="Check SPSE health through nginx",
                    res={"json": {"version": "1.0"}, "changed": False}))
    tracker.feed({"event": "playbook_on_stats",
                  "event_data": {"ok": {"a": 30}, "changed": {"a": 0}, "failures": {}, "dark": {},
                                 "skipped": {"a": 2}}})
    assert tracker.hosts["a"].ok == 30 and tracker.hosts["a"].changed == 0 and tracker.finished


RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "runner" / "preflight-failed-and-unreachable.json"
"""Events recorded from the demo lab: preflight.yml on site2 (passes), site3 (baseline not met: vCPUs)
and site9 (nothing listens on its SSH port); the failure, the unreachable host and the play recap."""


def test_tracker_recorded_stats_event_records_read_per_host():
    tracker = PlayTracker()
    events = json.loads(RECORDED.read_text())
    for event in events:
        tracker.feed(event)
    assert tracker.finished
    assert sorted(tracker.records) == ["site2", "site3"]  # site9 was unreachable: no record
    passed, failed = tracker.records["site2"], tracker.records["site3"]
    assert (passed["kind"], passed["schema"], passed["complete"], passed["ok"]) == ("preflight", 1, True, True)
    assert (failed["kind"], failed["complete"], failed["ok"]) == ("preflight", True, False)
    assert [c["check"] for c in failed["checks"] if not c["ok"]] == ["vcpus"]
    assert tracker.hosts["site3"].status == "failed" and tracker.hosts["site9"].status == "unreachable"


def test_tracker_stats_event_without_artifact_data_leaves_no_records():
    tracker = PlayTracker()
    tracker.feed({"event": "playbook_on_stats", "event_data": {"ok": {"a": 3}, "changed": {}, "failures": {},
                                                               "dark": {}, "skipped": {}}})
    assert tracker.finished and tracker.records == {}
