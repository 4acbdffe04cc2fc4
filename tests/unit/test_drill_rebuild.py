"""The rebuild drills' pieces that need no host: a server-lost drill only on a lab site, and the bundle it
reinstalls found in the state store as the runbook tells an operator to find it."""

from __future__ import annotations

import pytest

from lpse_ops.actions import drill, drill_rebuild
from lpse_ops.actions.operation import OperationRefused
from lpse_ops.state import StateStore


class NoShell:
    def run(self, script: str, timeout: float = 300.0, check: bool = True) -> str:
        raise AssertionError("nothing may run on the site")


def test_both_rebuild_scenarios_are_drill_scenarios():
    assert {"server-lost", "ransomware"} <= set(drill.SCENARIOS)


def test_server_lost_drill_refuses_a_site_outside_the_lab_before_touching_it():
    with pytest.raises(OperationRefused) as refused:
        drill_rebuild.server_lost("site1", NoShell(), {"lpse_environment": "staging"})
    assert "only the lab can do" in str(refused.value)


def record_install(store: StateStore, limit: str | None, bundle: str, result: str = "ok", check: bool = False) -> None:
    run_id = store.start_run("install", {"limit": limit, "bundle": bundle, "check": check}, ["site1", "site2"])
    store.finish_run(run_id, result)


def test_last_installed_bundle_is_the_newest_successful_real_install_covering_the_site(tmp_path, monkeypatch):
    monkeypatch.setenv("LPSE_OPS_HOME", str(tmp_path))
    monkeypatch.delenv("LPSE_OPS_STATE_URL", raising=False)
    with StateStore.open() as store:
        record_install(store, None, "/b/spse-1.0.tar.gz")
        record_install(store, "site1", "/b/spse-1.1.tar.gz")
        record_install(store, "site2", "/b/spse-1.2.tar.gz")
        record_install(store, "site1", "/b/spse-1.3.tar.gz", result="failed")
        record_install(store, "site1", "/b/spse-1.4.tar.gz", check=True)
    assert drill_rebuild.last_installed_bundle("site1") == "/b/spse-1.1.tar.gz"
    assert drill_rebuild.last_installed_bundle("site2") == "/b/spse-1.2.tar.gz"


def test_last_installed_bundle_refuses_when_the_site_was_never_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("LPSE_OPS_HOME", str(tmp_path))
    monkeypatch.delenv("LPSE_OPS_STATE_URL", raising=False)
    with pytest.raises(OperationRefused) as refused:
        drill_rebuild.last_installed_bundle("site9")
    assert "no successful install of site9" in str(refused.value)
