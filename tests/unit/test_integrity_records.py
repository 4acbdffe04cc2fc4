"""A run's integrity-baseline refreshes: read from the typed records, kept with the run, written to the audit log
(actions/integrity.py and the operation runner; issue 21, clause 6.2.19)."""

from __future__ import annotations

from pathlib import Path

from lpse_ops.actions import integrity, operation
from lpse_ops.backends import ansible
from lpse_ops.state import StateStore

REFRESHED = {"action": "integrity-refresh", "ok": True, "ran": True, "refreshed": True, "scope": [],
             "accepted": {"added": ["/etc/new.conf"], "removed": [], "changed": ["/etc/security/pwquality.conf",
                                                                               "/etc/new.conf"]},
             "left": ["/usr/bin/planted"], "limit": "^(?:/etc/new\\.conf|/etc/security/pwquality\\.conf)$"}
NOT_HARDENED = {"ran": False, "refreshed": False, "reason": "no hardening baseline: AIDE is not set up"}
FAILED = {"ran": False, "refreshed": False, "reason": "refresh failed", "error": "aide --check exited 17: x"}


def test_refreshes_summarise_each_host_that_carries_one_with_every_accepted_path_once():
    records = {"site1": {"kind": "harden", "schema": 1, "integrity_baseline": REFRESHED},
               "site2": {"kind": "harden", "schema": 1, "integrity_baseline": None},
               "site3": {"kind": "harden", "schema": 1}}
    found = integrity.refreshes(records)
    assert list(found) == ["site1"]
    assert found["site1"]["paths"] == ["/etc/new.conf", "/etc/security/pwquality.conf"]
    assert found["site1"]["left"] == ["/usr/bin/planted"] and found["site1"]["refreshed"] is True


def test_audit_detail_logs_a_refresh_that_ran_or_failed_but_not_a_site_without_aide():
    assert integrity.audit_detail(7, "harden", "site2", integrity.summary(NOT_HARDENED)) is None
    ran = integrity.audit_detail(7, "harden", "site1", integrity.summary(REFRESHED))
    assert ran == {"run_id": 7, "operation": "harden", "site": "site1", "refreshed": True,
                   "paths": ["/etc/new.conf", "/etc/security/pwquality.conf"], "left": ["/usr/bin/planted"],
                   "limit": REFRESHED["limit"]}
    failed = integrity.audit_detail(7, "harden", "site3", integrity.summary(FAILED))
    assert failed["error"].startswith("aide --check exited 17") and failed["paths"] == []


def _fake_playbook(records: dict):
    def run_playbook(playbook, inventory, on_event, **_kwargs):
        hosts = {host: 1 for host in records}
        on_event({"event": "playbook_on_stats", "event_data": {
            "ok": hosts, "changed": hosts, "failures": {}, "dark": {}, "skipped": {},
            "artifact_data": {"lpse_result": records}}})
        return ansible.PlaybookRun(ident="x", status="successful", rc=0, artifact_dir="")
    return run_playbook


def test_operation_keeps_each_refresh_with_the_run_and_logs_who_which_run_which_paths(monkeypatch, tmp_path):
    records = {"site1": {"kind": "harden", "schema": 1, "integrity_baseline": REFRESHED},
               "site2": {"kind": "harden", "schema": 1, "integrity_baseline": NOT_HARDENED}}
    monkeypatch.setattr(ansible, "run_playbook", _fake_playbook(records))
    ctx = operation.OperationContext(operation="harden", playbook="harden.yml", inventory=Path(tmp_path / "inv"))
    with StateStore.open() as store:
        run_id = store.start_run("harden", {}, ["site1", "site2"], actor="budi")
        result = operation._run_playbook(ctx, store, run_id, ["site1", "site2"])
        run = store.get_run(run_id)
        entries = [entry for entry in store.audit_entries() if entry["operation"] == integrity.AUDIT_OPERATION]
    assert result.result == "ok"
    kept = run["host_results"]["site1"]["detail"]["integrity_baseline"]
    assert kept["paths"] == ["/etc/new.conf", "/etc/security/pwquality.conf"] and kept["refreshed"] is True
    assert run["host_results"]["site2"]["detail"]["integrity_baseline"]["reason"].startswith("no hardening")
    assert len(entries) == 1, entries
    assert entries[0]["actor"] == "budi"
    assert entries[0]["detail"]["run_id"] == run_id and entries[0]["detail"]["site"] == "site1"
    assert entries[0]["detail"]["paths"] == ["/etc/new.conf", "/etc/security/pwquality.conf"]
