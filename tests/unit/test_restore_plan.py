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
    hosts = {name: {"ansible_host": "127.0.0.1", "ansible_port": port, "site_code": name}
             for name, port in (("site1", 2421), ("site2", 2422))}
    backup_vars = {"backup_cipher_pass": "x", "backup_restic_password": "x", "backup_s3_access_key": "x",
                   "backup_s3_secret_key": "x", "backup_s3_endpoint": "https://s3.invalid", "backup_s3_bucket": "b",
                   "backup_s3_ca_cert": "x", "backup_s3_lock_days": 7}
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {"vars": backup_vars, "children": {"sites": {"hosts": hosts}}}}))
    return backup.BackupContext(inventory=path, state_url=f"sqlite:///{tmp_path / 'state.db'}")


def test_a_restore_names_exactly_one_site(ctx: backup.BackupContext) -> None:
    with pytest.raises(operation.OperationRefused, match=r"exactly one site \(it matches 2: site1, site2\)"):
        restoring.plan(restoring.RestoreRequest(ctx, "sites", None))
    with pytest.raises(operation.OperationRefused, match=r"exactly one site \(it matches 0\)"):
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


def test_a_bad_inventory_is_refused_by_the_plan_with_every_problem(ctx: backup.BackupContext) -> None:
    """The plan validates the inventory for backups (the run it leads to uses that same reading), so a missing
    secret is refused before the operator is asked anything."""
    data = yaml.safe_load(ctx.inventory.read_text())
    del data["all"]["vars"]["backup_s3_bucket"]
    ctx.inventory.write_text(yaml.safe_dump(data))
    with pytest.raises(operation.OperationRefused, match="missing variable backup_s3_bucket") as caught:
        restoring.plan(restoring.RestoreRequest(ctx, "site1", None))
    assert "no host was touched" in str(caught.value)


def test_a_restore_reads_the_inventory_once_from_plan_to_run(ctx: backup.BackupContext, monkeypatch) -> None:
    """Plan and run of a restore start one ansible-inventory in all (real Ansible; the playbook itself is not
    run here), where each step used to read the inventory again; the site's name is matched from that
    reading (fleet.plain_match), no `ansible --list-hosts` of its own."""
    from lpse_ops.backends import ansible

    started: list[str] = []
    for name in ("inventory_list", "list_hosts"):
        real = getattr(ansible, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            started.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(ansible, name, counted)
    ran: list[str | None] = []

    def playbook(name, inventory, on_event, *, limit=None, **_kwargs):
        ran.append(limit)
        return ansible.PlaybookRun(ident="fake", status="successful", rc=0, artifact_dir="")

    monkeypatch.setattr(ansible, "run_playbook", playbook)
    plan = restoring.plan(restoring.RestoreRequest(ctx, "site2", None))
    result, _outputs = restoring.execute(plan)
    assert ran == ["site2"] and result.hosts == ["site2"]
    assert started == ["inventory_list"], started


def test_serve_first_takes_the_sites_first_mb_or_the_default_and_says_so(ctx: backup.BackupContext) -> None:
    plan = restoring.plan(restoring.RestoreRequest(ctx, "site1", None, "offsite", serve_first=True))
    assert plan.args == ["--target-time", "latest", "--repo", "2", "--serve-first", "--first-mb", "1024"]
    assert any("up to 1024 MB of documents" in line and "503" in line for line in plan.describe())
    data = yaml.safe_load(ctx.inventory.read_text())
    data["all"]["children"]["sites"]["hosts"]["site2"]["site_restore_first_mb"] = 64
    ctx.inventory.write_text(yaml.safe_dump(data))
    assert restoring.plan(restoring.RestoreRequest(ctx, "site2", None, serve_first=True)).args[-1] == "64"
    assert restoring.plan(restoring.RestoreRequest(ctx, "site2", None, serve_first=True, first_mb=0)).args[-1] == "0"
    assert "--serve-first" not in restoring.plan(restoring.RestoreRequest(ctx, "site2", None)).args


def test_the_hydration_note_names_what_is_still_coming_back() -> None:
    assert restoring.hydration_note({"hydration": {"state": "running", "files": 12, "bytes": 48_000_000}}) == (
        "; serving, 12 documents (48 MB) coming back in the background (lpse-ops backup status)")
    assert restoring.hydration_note({"hydration": {"state": "none"}}) == ""
    assert restoring.hydration_note({}) == ""
