"""The Disaster Recovery Plan (clause 10.2): compiled in Indonesian from the runbooks, the inventory's contacts and
the latest drills recorded in the state store; "belum pernah diuji" for a scenario never drilled."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from lpse_ops import runbooks
from lpse_ops.actions.drp import DrpRequest, latest_drills, render_drp, site_contacts
from lpse_ops.actions.operation import OperationRefused
from lpse_ops.main import main
from lpse_ops.reports.drp import NEVER_DRILLED
from lpse_ops.state import StateStore
from lpse_ops.state import drills as drill_store

INVENTORY = """\
all:
  children:
    sites:
      hosts:
        site1:
          ansible_host: 127.0.0.1
          site_code: lab01
          site_name: LPSE Kabupaten Lebong
          site_timezone: Asia/Jakarta
          lpse_helpdesk: "Helpdesk LPSE Kabupaten Lebong, telepon (0738) 21003"
          site_contacts: [{name: Kepala LPSE Lebong, email: kepala@lebong.example}]
        site3:
          ansible_host: 127.0.0.3
          site_code: lab03
          site_name: LPSE Kabupaten Jayapura
          site_timezone: Asia/Jayapura
          site_contacts: [{name: Admin PPE Jayapura, email: ppe@jayapura.example}]
"""


def _record_drill(scenario: str, site: str, started: datetime, *, ok: bool, met: bool | None, rto_s: float,
                  failed_step: str | None = None) -> None:
    with StateStore.open() as store:
        drill_id = drill_store.start_drill(store, scenario, site, {"rto_s": 1800, "rpo_db_s": 60, "rpo_docs_s": 300},
                                           started_at=started)
        drill_store.finish_drill(store, drill_id, ok=ok, met=met, rto_s=rto_s, rpo_db_s=12.0, rpo_docs_s=200.0,
                                 failed_step=failed_step, finished_at=started.replace(minute=30))


def test_drp_lists_every_runbook_scenario_with_targets_and_never_drilled() -> None:
    result = render_drp(DrpRequest(output_format="md"))
    text = result.text
    expected = sorted(path.stem for path in runbooks.runbook_paths())
    assert sorted(result.scenarios) == expected and result.drilled == []
    assert "Rencana Pemulihan Bencana" in text and "butir 10.2" in text
    assert "| Server hilang (`server-lost`) | 10 menit | 1 menit | 5 menit | belum pernah diuji |" in text
    assert text.count(f"{NEVER_DRILLED}.") == len(expected)
    # every step of a runbook is in the plan, as the command it runs
    for step in runbooks.read(runbooks.find("rows-deleted")).steps:
        assert f"`{step.command}`" in text
    assert "Data kontak lokasi tidak tersedia" in text  # no inventory given
    with StateStore.open() as store:
        entry = store.audit_entries()[-1]
    assert entry["operation"] == "drp.render" and entry["detail"]["sha256"] == result.sha256


def test_drp_shows_a_recorded_drill_and_keeps_the_others_never_drilled() -> None:
    _record_drill("rows-deleted", "site3", datetime(2026, 11, 20, 1, 0, tzinfo=UTC), ok=True, met=True, rto_s=754)
    _record_drill("rows-deleted", "site3", datetime(2026, 11, 26, 1, 0, tzinfo=UTC), ok=False, met=False,
                  rto_s=1900, failed_step="restore-before-mistake")
    _record_drill("documents-lost", "site1", datetime(2026, 11, 25, 2, 0, tzinfo=UTC), ok=True, met=True, rto_s=610)
    result = render_drp(DrpRequest(output_format="md"))
    assert sorted(result.drilled) == ["documents-lost", "rows-deleted"]
    text = result.text
    # the latest of the two rows-deleted drills on site3, and how many there were
    assert "| site3 | Kamis, 26 November 2026 pukul 08.00 WIB | gagal (langkah restore-before-mistake) | " \
           "31 menit | 12 detik | 3 menit | 2 |" in text
    assert "| site1 | Rabu, 25 November 2026 pukul 09.00 WIB | berhasil, target tercapai | 10 menit | " in text
    assert "teruji, ada target yang belum tercapai" in text and "teruji, target tercapai" in text
    assert "| Server hilang (`server-lost`) | 10 menit | 1 menit | 5 menit | belum pernah diuji |" in text


def test_drp_without_drill_store_says_never_drilled(monkeypatch: pytest.MonkeyPatch) -> None:
    _record_drill("rows-deleted", "site1", datetime(2026, 11, 20, 1, 0, tzinfo=UTC), ok=True, met=True, rto_s=754)
    monkeypatch.setitem(sys.modules, "lpse_ops.state.drills", None)  # an lpse-ops built before state/drills.py
    result = render_drp(DrpRequest(output_format="html"))
    assert result.drilled == []
    assert "data hasil uji pemulihan belum tersedia" in result.text
    assert result.text.count(f"<strong>{NEVER_DRILLED}</strong>") == len(result.scenarios)


def test_drp_latest_drills_ignores_unfinished_and_uses_site_zone() -> None:
    drills = [
        {"scenario": "server-lost", "site": "site3", "started_at": "2026-11-20T01:00:00+00:00", "ok": True,
         "met": True, "failed_step": None, "rto_s": 500.0, "rpo_db_s": 30.0, "rpo_docs_s": 100.0},
        {"scenario": "server-lost", "site": "site3", "started_at": "2026-11-27T01:00:00+00:00", "ok": None,
         "met": None, "failed_step": None, "rto_s": None, "rpo_db_s": None, "rpo_docs_s": None},
    ]
    found = latest_drills(drills, {"site3": "Asia/Jayapura"})
    [only] = found["server-lost"]
    assert only.count == 1 and only.rto_s == 500.0 and only.timezone == "Asia/Jayapura"


def test_drp_site_contacts_from_inventory_data() -> None:
    data = {"sites": {"hosts": ["site1", "site3"]}, "_meta": {"hostvars": {
        "site1": {"site_code": "lab01", "site_name": "LPSE A", "site_timezone": "Asia/Makassar",
                  "site_contacts": [{"name": "Kepala", "email": "k@a.example"}]},
        "site3": {"site_code": "lab03"}}}}
    contacts = {site.host: site for site in site_contacts(data)}
    assert contacts["site1"].timezone == "Asia/Makassar (WITA)"
    assert contacts["site1"].contacts == [{"name": "Kepala", "email": "k@a.example"}]
    assert contacts["site3"].contacts == [] and contacts["site3"].name == "LPSE lab03"


def test_drp_refuses_without_usable_runbook_and_notes_a_skipped_one(tmp_path: Path) -> None:
    broken = tmp_path / "broken.md"
    broken.write_text("# no front matter\n", encoding="utf-8")
    with pytest.raises(OperationRefused, match="no usable runbook"):
        render_drp(DrpRequest(runbook_paths=[broken]))
    result = render_drp(DrpRequest(runbook_paths=[broken, runbooks.find("server-lost")]))
    assert result.scenarios == ["server-lost"]
    assert any("broken.md dilewati" in note for note in result.notes)


def test_drp_render_cli_html_with_inventory_contacts_and_drill(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(INVENTORY, encoding="utf-8")
    _record_drill("server-lost", "site3", datetime(2026, 11, 24, 1, 0, tzinfo=UTC), ok=True, met=True, rto_s=480)
    out = tmp_path / "drp.html"
    result = CliRunner().invoke(main, ["drp", "render", "--format", "html", "--out", str(out), "-i", str(inventory),
                                       "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["drilled"] == ["server-lost"] and summary["sites"] == 2
    html = out.read_text(encoding="utf-8")
    assert '<html lang="id">' in html
    assert "Kepala LPSE Lebong &lt;kepala@lebong.example&gt;" in html
    assert "Helpdesk LPSE Kabupaten Lebong, telepon (0738) 21003" in html
    # the drill on the Jayapura site is dated in WIT
    assert "Selasa, 24 November 2026 pukul 10.00 WIT" in html
    bad = CliRunner().invoke(main, ["drp", "render", "--format", "pdf"])
    assert bad.exit_code == 2 and "pdf" in bad.output
