"""Freeze, unfreeze and warn (clause 6.2.20) on the control side: what counts as applied, the refusals with their
reasons, the recorded state, and the nginx site's rules (a freeze refuses writes before any maintenance mode is
looked at; no maintenance change lowers the freeze flag)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lpse_ops import config
from lpse_ops.actions import freeze
from lpse_ops.main import main
from lpse_ops.state import StateStore
from lpse_ops.state import access as sanction_state

NGINX = config.PROJECT_DIR / "roles" / "nginx"


@pytest.mark.parametrize("action, record, applied", [
    ("freeze", {"action": "freeze", "complete": True, "frozen": True, "warned": False}, True),
    ("freeze", {"action": "freeze", "complete": False, "frozen": True, "warned": False}, False),
    ("freeze", {"action": "freeze", "complete": True, "frozen": False, "warned": False}, False),
    ("unfreeze", {"action": "unfreeze", "complete": True, "frozen": False, "warned": False}, True),
    ("unfreeze", {"action": "unfreeze", "complete": True, "frozen": None, "warned": None}, False),
    ("warn", {"action": "warn", "complete": True, "frozen": False, "warned": True}, True),
    ("warn", {"action": "freeze", "complete": True, "frozen": True, "warned": True}, False),
    ("freeze", None, False),
])
def test_confirmed_only_when_the_site_record_shows_the_action_done(action, record, applied):
    assert freeze.confirmed(action, record) is applied


@pytest.mark.parametrize("site, reason, problem", [
    ("site1", "", "--reason must say why"),
    ("site1,site2", "penyalahgunaan", "--site must name one site"),
    ("sites", "penyalahgunaan", "--site must name one site"),
    ("site*", "penyalahgunaan", "--site must name one site"),
])
def test_bad_request_is_refused_with_its_reason_before_any_run(site, reason, problem, tmp_path):
    request = freeze.SanctionRequest(action="freeze", site=site, reason=reason, inventory=tmp_path / "none.yml")
    with pytest.raises(freeze.FreezeRefused, match=re.escape(problem)):
        freeze.apply(request)
    with StateStore.open() as store:
        assert sanction_state.list_sanctions(store) == []


def test_unknown_site_is_refused_and_nothing_recorded(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"sites": {"hosts": {"site1": {"site_code": "site1"}}}}}}))
    with pytest.raises(freeze.FreezeRefused, match="site9 is not a site of inventory"):
        freeze.apply(freeze.SanctionRequest(action="freeze", site="site9", reason="penyalahgunaan",
                                            inventory=inventory))
    with StateStore.open() as store:
        assert sanction_state.list_sanctions(store) == [] and store.audit_count() == 0


def test_status_follows_the_last_applied_freeze_or_unfreeze_and_counts_warnings():
    start = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    with StateStore.open() as store:
        record = sanction_state.record_sanction
        record(store, site="site1", action="warn", reason="peringatan pertama", applied=True, run_id=None, at=start)
        record(store, site="site1", action="freeze", reason="dibekukan", applied=True, run_id=None,
               at=start + timedelta(hours=1))
        # a failed unfreeze leaves the site frozen
        record(store, site="site1", action="unfreeze", reason="dicoba", applied=False, run_id=None,
               at=start + timedelta(hours=2))
        record(store, site="site2", action="freeze", reason="dibekukan", applied=True, run_id=None, at=start)
        record(store, site="site2", action="unfreeze", reason="dicabut", applied=True, run_id=None,
               at=start + timedelta(hours=3))
        status = sanction_state.freeze_status(store)
        operations = [e["operation"] for e in store.audit_entries()]
    assert status["site1"]["frozen"] is True and status["site1"]["freeze"]["reason"] == "dibekukan"
    assert status["site1"]["warnings"] == 1 and status["site1"]["last_failed"]["action"] == "unfreeze"
    assert status["site2"]["frozen"] is False and status["site2"]["freeze"] is None
    assert operations == ["site.warn", "site.freeze", "site.unfreeze", "site.freeze", "site.unfreeze"]


def test_recorded_times_are_utc_whatever_zone_they_were_given_in():
    from zoneinfo import ZoneInfo

    jayapura = datetime(2026, 11, 28, 18, 0, tzinfo=ZoneInfo("Asia/Jayapura"))
    with StateStore.open() as store:
        sanction = sanction_state.record_sanction(store, site="site3", action="freeze", reason="dibekukan",
                                                  applied=True, run_id=None, at=jayapura)
    assert sanction["at"] == "2026-11-28T09:00:00+00:00"


def test_cli_freeze_without_site_or_json_without_yes_is_refused():
    runner = CliRunner()
    result = runner.invoke(main, ["freeze", "--reason", "penyalahgunaan"])
    assert result.exit_code == 1 and "give --site SITE and --reason TEXT" in result.output, result.output
    result = runner.invoke(main, ["unfreeze", "--site", "site1", "--reason", "dicabut", "--json", "-i", "x.yml"],
                           env={"LPSE_OPS_YES": ""})
    assert result.exit_code == 1 and "--json never prompts" in result.output, result.output


def test_cli_freeze_list_reads_the_store():
    with StateStore.open() as store:
        sanction_state.record_sanction(store, site="site1", action="freeze", reason="dibekukan", applied=True,
                                       run_id=None)
    result = CliRunner().invoke(main, ["freeze", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert '"frozen": true' in result.output and '"site": "site1"' in result.output


def _location_root(conf: str) -> str:
    return conf[conf.index("    location / {"):]


def test_nginx_site_refuses_writes_of_a_frozen_site_before_maintenance_and_lets_reads_through():
    conf = (NGINX / "templates" / "spse.conf.j2").read_text()
    assert re.search(r'"~\^1:\(GET\|HEAD\)\$"\s+0;', conf) and re.search(r'"~\^1:"\s+1;', conf)
    location = _location_root(conf)
    assert location.index("$spse_frozen_block") < location.index("$spse_maintenance_block")
    assert "return 423;" in location
    assert "error_page 423 /_spse_frozen.html;" in conf and "frozen.html;" in conf
    health = conf[conf.index("location = /health"):conf.index("    location / {")]
    assert "spse_frozen" not in health  # /health always reaches SPSE


def test_no_maintenance_change_lowers_the_freeze_flag():
    nginx_vars = yaml.safe_load((NGINX / "vars" / "main.yml").read_text())
    assert "frozen" not in nginx_vars["__nginx_maintenance_flags"]
    maintenance = (NGINX / "tasks" / "maintenance.yml").read_text()
    assert "frozen" not in maintenance
    lowered = yaml.safe_load(maintenance)[-1]
    assert lowered["loop"] == "{{ __nginx_maintenance_flags | difference([nginx_maintenance_mode]) }}"


def test_notice_page_is_indonesian_cites_the_clause_and_escapes_the_reason():
    from jinja2 import Environment

    page = Environment().from_string((NGINX / "templates" / "frozen.html.j2").read_text()).render(
        ansible_managed="managed", nginx_freeze_reason="<script>x</script>", nginx_freeze_since="28-11-2026 16.00 WIB")
    assert 'lang="id"' in page and "Pasal 6.2.20" in page and "dibekukan" in page and "HTTP 423" in page
    assert "<script>x</script>" not in page and "&lt;script&gt;" in page


def test_freeze_playbook_documents_that_backups_keep_running():
    text = (config.PROJECT_DIR / "playbooks" / "freeze.yml").read_text()
    assert "Backups are not touched" in text
    assert Path(config.PROJECT_DIR / "docs" / "freeze.md").exists()
