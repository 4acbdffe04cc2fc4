"""A restore's plan (actions/restore.py): one site, refused before anything when it cannot go, and what it
will run. Real Ansible host matching on a real inventory file, a real SQLite state store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from lpse_ops.actions import backup, operation
from lpse_ops.actions import restore as restoring
from lpse_ops.state import StateStore


@pytest.fixture
def ctx(tmp_path: Path) -> backup.BackupContext:
    hosts = {name: {"ansible_host": "127.0.0.1", "site_code": name.upper()} for name in ("site1", "site2")}
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {"children": {"sites": {"hosts": hosts}}}}))
    return backup.BackupContext(inventory=path, state_url=f"sqlite:///{tmp_path / 'state.db'}")


def test_a_restore_names_exactly_one_site(ctx: backup.BackupContext) -> None:
    with pytest.raises(operation.OperationRefused, match=r"exactly one site \(it matches 2: site1, site2\)"):
        restoring.plan(restoring.RestoreRequest(ctx, "sites", None))
    with pytest.raises(operation.OperationRefused, match=r"exactly one site \(it matches 0: \)"):
        restoring.plan(restoring.RestoreRequest(ctx, "site9", None))


def test_latest_from_the_local_repository(ctx: backup.BackupContext) -> None:
    plan = restoring.plan(restoring.RestoreRequest(ctx, "site1", None))
    assert (plan.host, plan.args, plan.view, plan.target_text) == ("site1", ["--target-time", "latest"], None,
                                                                    "latest")
    assert plan.describe()[0] == "Restore site1 to the end of the archived WAL from local."


def test_a_time_from_the_offsite_repository_in_utc(ctx: backup.BackupContext) -> None:
    wib = datetime(2026, 11, 24, 16, 30, tzinfo=UTC)
    plan = restoring.plan(restoring.RestoreRequest(ctx, "site2", wib, "offsite"))
    assert plan.args == ["--target-time", "2026-11-24 16:30:00+00", "--repo", "2"]
    assert "from offsite" in plan.describe()[0]


def test_a_locked_site_is_refused_before_any_plan_naming_the_holder(ctx: backup.BackupContext) -> None:
    with StateStore.open(ctx.state_url) as store:
        store.acquire_sites(["site1"], "upgrade.site")
    with pytest.raises(operation.OperationRefused, match="no host was touched") as caught:
        restoring.plan(restoring.RestoreRequest(ctx, "site1", None))
    assert "site1" in str(caught.value) and "upgrade.site" in str(caught.value)
