"""README behaviours through the real CLI (click's CliRunner) that need no host: ``drill list``,
``inventory validate --for install``, ``freeze list [--history]`` and the ``warn`` command's refusals.
The state store is each test's own (conftest: a fresh LPSE_OPS_HOME)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from lpse_ops.main import main
from lpse_ops.state import StateStore
from lpse_ops.state import access as sanction_state
from lpse_ops.state import drills as drill_state


def cli(*args: str):
    return CliRunner().invoke(main, list(args), env={"COLUMNS": "200"})


def test_drill_list_shows_recorded_drills_oldest_first_within_the_window():
    with StateStore.open() as store:
        first = drill_state.start_drill(store, "rows-deleted", "site1", {"rto_s": 1800, "rpo_db_s": 60},
                                        started_at=datetime(2026, 11, 20, 2, 0, tzinfo=UTC))
        drill_state.finish_drill(store, first, ok=True, rto_s=95.5, rpo_db_s=1.2, rpo_docs_s=0.0, met=True)
        second = drill_state.start_drill(store, "documents-lost", "site2", {"rto_s": 1800},
                                         started_at=datetime(2026, 11, 28, 2, 0, tzinfo=UTC))
        drill_state.finish_drill(store, second, ok=False, failed_step="restore-to-snapshot", met=False)

    listed = cli("drill", "list", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)["drills"]
    assert [(row["scenario"], row["ok"], row["failed_step"]) for row in rows] == [
        ("rows-deleted", True, None), ("documents-lost", False, "restore-to-snapshot")]
    window = cli("drill", "list", "--since", "2026-11-25T00:00:00Z", "--json")
    assert [row["id"] for row in json.loads(window.output)["drills"]] == [second], window.output
    table = cli("drill", "list")
    assert table.exit_code == 0, table.output
    line = next(line for line in table.output.splitlines() if "documents-lost" in line)
    assert "restore-to-snapshot" in line and "site2" in line and "2026-11-28 02:00:00" in line, line


def test_inventory_validate_for_install_requires_the_database_password(tmp_path: Path):
    path = tmp_path / "hosts.yml"
    path.write_text("sites:\n  hosts:\n    a: {ansible_host: 10.1.0.1, site_code: lebong}\n"
                    "    b: {ansible_host: 10.1.0.2, site_code: rejang, postgresql_spse_password: s3cret}\n")
    plain = cli("inventory", "validate", "-i", str(path))
    assert plain.exit_code == 0, plain.output  # without --for nothing more is required
    for_install = cli("inventory", "validate", "-i", str(path), "--for", "install", "--json")
    assert for_install.exit_code == 1, for_install.output
    report = json.loads(for_install.stdout)
    assert report["problems"] == ["a: missing variable postgresql_spse_password (keep it in an ansible-vault file, "
                                  "see docs)"], report
    unknown = cli("inventory", "validate", "-i", str(path), "--for", "deploy")
    assert unknown.exit_code == 2 and "'deploy' is not one of" in unknown.output, unknown.output


def test_freeze_list_and_history_read_the_recorded_sanctions():
    with StateStore.open() as store:
        for action, day, applied in (("warn", 1, True), ("freeze", 5, True), ("freeze", 6, False),
                                     ("unfreeze", 9, True), ("freeze", 12, True)):
            sanction_state.record_sanction(store, site="site1", action=action, reason=f"{action} on day {day}",
                                           applied=applied, run_id=None, actor="lkpp@control",
                                           at=datetime(2026, 11, day, 3, 0, tzinfo=UTC))
        sanction_state.record_sanction(store, site="site2", action="warn", reason="late reports", applied=True,
                                       run_id=None, at=datetime(2026, 11, 2, 3, 0, tzinfo=UTC))

    history = cli("freeze", "list", "--history", "--site", "site1", "--json")
    assert history.exit_code == 0, history.output
    rows = json.loads(history.output)
    assert [(row["action"], row["applied"]) for row in rows] == [
        ("warn", True), ("freeze", True), ("freeze", False), ("unfreeze", True), ("freeze", True)]
    assert [row["reason"] for row in rows][0] == "warn on day 1" and {row["site"] for row in rows} == {"site1"}
    table = cli("freeze", "list", "--history")
    assert table.exit_code == 0, table.output
    assert "late reports" in table.output and "freeze on day 6" in table.output
    state = {row["site"]: row for row in json.loads(cli("freeze", "list", "--json").output)}
    assert state["site1"]["frozen"] is True and state["site1"]["warnings"] == 1
    assert state["site2"]["frozen"] is False and state["site2"]["warnings"] == 1


def test_warn_refuses_before_running_anything_and_records_nothing(tmp_path: Path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("sites:\n  hosts:\n    site1: {ansible_host: 127.0.0.1, site_code: one}\n")
    group = cli("warn", "--site", "sites", "--reason", "no", "-i", str(inventory), "--yes")
    assert group.exit_code == 1, group.output
    assert "--reason must say why" in group.output and "--site must name one site" in group.output
    unknown = cli("warn", "--site", "site9", "--reason", "laporan terlambat", "-i", str(inventory), "--yes")
    assert unknown.exit_code == 1 and "site9 is not a site of inventory" in unknown.output, unknown.output
    unasked = cli("warn", "--site", "site1", "--reason", "laporan terlambat", "-i", str(inventory), "--json")
    assert unasked.exit_code == 1 and "--json never prompts" in unasked.output, unasked.output
    declined = CliRunner().invoke(main, ["warn", "--site", "site1", "--reason", "laporan terlambat", "-i",
                                         str(inventory)], input="n\n")
    assert declined.exit_code == 1 and "Warn site1?" in declined.output, declined.output
    with StateStore.open() as store:
        assert store.list_runs(limit=10) == [] and sanction_state.list_sanctions(store) == []
