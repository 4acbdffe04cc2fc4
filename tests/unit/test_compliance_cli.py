"""The harden and audit commands: refusals before any host is touched, and the stored history."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from click.testing import CliRunner

from lpse_ops import config
from lpse_ops.main import main as cli
from lpse_ops.state import StateStore
from lpse_ops.state.audits import record_audit

INVENTORY = "all:\n  children:\n    sites:\n      hosts:\n        site1: {ansible_host: 192.0.2.1, site_code: s1}\n"


def test_harden_refuses_an_input_that_is_not_a_hardening_one(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(INVENTORY)
    result = CliRunner().invoke(cli, ["harden", "-i", str(inventory), "-e", "backup_s3_bucket=x", "--yes", "--json"])
    assert result.exit_code == 1, result.output
    assert "only hardening_* role inputs may be set, not: backup_s3_bucket" in result.output


def test_harden_json_without_yes_refuses_instead_of_prompting(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(INVENTORY)
    result = CliRunner().invoke(cli, ["harden", "-i", str(inventory), "--json"])
    assert result.exit_code == 1, result.output
    assert "--json never prompts" in result.output


def test_harden_limit_matching_no_site_is_refused(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(INVENTORY)
    result = CliRunner().invoke(cli, ["harden", "-i", str(inventory), "--limit", "site9", "--yes"])
    assert result.exit_code == 1, result.output
    assert "no host matches group 'sites' with --limit site9" in result.output


def test_audit_history_lists_stored_audits_with_drift():
    with StateStore.open(config.state_url()) as store:
        store.migrate()
        record_audit(store, "site1", score=40.0, failed=["aide-integrity"],
                     audited_at=datetime(2026, 11, 1, tzinfo=UTC))
        record_audit(store, "site1", score=97.0, failed=["antivirus-signatures"], lynis_index=81,
                     audited_at=datetime(2026, 11, 2, tzinfo=UTC))
    result = CliRunner().invoke(cli, ["audit", "history", "--since", "2026-11-02T06:00:00+07:00", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)["audits"]
    assert row["lynis_index"] == 81
    assert row["drift"] == {"worse": ["antivirus-signatures"], "better": ["aide-integrity"]}


def test_audit_history_bad_time_says_how_to_write_it():
    result = CliRunner().invoke(cli, ["audit", "history", "--since", "yesterday"])
    assert result.exit_code == 1
    assert "use ISO 8601" in result.output
