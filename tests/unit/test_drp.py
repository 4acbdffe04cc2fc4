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
from lpse_ops.actions import drp_rto
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


SERVED_FIRST = {"hydration": {
    "rto_serving_s": 300.0, "link_mbit": 100, "first_bytes": 1 << 30,
    "database": {"bytes": 2_000_000_000, "restore_s": 100.0},
    "hydration": {"state": "done", "files_total": 5000, "bytes_total": 10_000_000_000, "hydration_s": 900.0,
                  "rate_bytes_s": 11_250_000, "runs": 1, "missing_count": 0}}}


def test_the_rto_model_takes_its_rates_from_a_served_first_drill_and_scales_with_size_and_link() -> None:
    rates = drp_rto.rates_from_drill({"id": 7, "ok": True, "site": "site1", "finished_at": "x",
                                      "detail": SERVED_FIRST})
    link_bytes_s = 100e6 / 8
    assert rates.efficiency == 0.9 and rates.database_bytes_s == 20_000_000
    # 300 s to serving = fixed + 100 s of database + 1 GiB of first documents at 90 % of the link
    assert rates.fixed_s == round(300 - 100 - (1 << 30) / (0.9 * link_bytes_s), 1)
    same = drp_rto.estimate(rates, "site1", 100, 2_000_000_000, 10_000_000_000 + (1 << 30), first_mb=1024)
    assert same.rto_serving_s == pytest.approx(300, abs=0.2)  # the drill's own site comes out as measured
    assert same.hydration_s == pytest.approx(10_000_000_000 / (0.9 * link_bytes_s), abs=0.2)
    slow = drp_rto.estimate(rates, "site2", 20, 2_000_000_000, 200_000_000_000, first_mb=1024)
    assert slow.rto_serving_s > same.rto_serving_s and slow.hydration_s > 20 * 3600  # 200 GB at 20 Mbit/s
    unknown = drp_rto.estimate(rates, "site3", None, None, 5)
    assert unknown.rto_serving_s is None and unknown.missing == "site_wan_mbit, ukuran basis data"
    assert drp_rto.rates_from_drill({"id": 8, "ok": False, "detail": SERVED_FIRST}) is None
    assert drp_rto.rates_from_drill({"id": 9, "ok": True, "detail": {}}) is None


def test_the_drp_states_each_sites_rto_from_its_link_and_its_probed_sizes(tmp_path: Path) -> None:
    data = INVENTORY.replace("site_timezone: Asia/Jakarta", "site_timezone: Asia/Jakarta\n          site_wan_mbit: 100")
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(data, encoding="utf-8")
    text = render_drp(DrpRequest(output_format="md", inventory=inventory)).text
    assert "Belum ada uji server hilang yang melayani lebih dahulu" in text
    with StateStore.open() as store:
        drill_id = drill_store.start_drill(store, "server-lost", "site1", {"rto_s": 600, "rpo_db_s": 60,
                                                                           "rpo_docs_s": 300},
                                           started_at=datetime(2026, 11, 30, 1, 0, tzinfo=UTC))
        drill_store.finish_drill(store, drill_id, ok=True, met=True, rto_s=300, rpo_db_s=5, rpo_docs_s=5,
                                 finished_at=datetime(2026, 11, 30, 1, 30, tzinfo=UTC), detail=SERVED_FIRST)
        backup = {"pgbackrest": {"repos": {"1": {"last_backup": {"database_bytes": 4_000_000_000}}}},
                  "files_size": {"bytes": 50_000_000_000}}
        store.record_probe("site1", {"reachable": True, "facts": {"backup": backup}})
    text = render_drp(DrpRequest(output_format="md", inventory=inventory)).text
    assert "## 4. Perkiraan RTO server hilang per lokasi (butir 10.2)" in text
    assert f"uji #{drill_id} (lokasi site1, tautan 100 Mbit/s)" in text
    section = text.split("## 4. Perkiraan RTO")[1]
    row = next(line for line in section.splitlines() if line.startswith("| site1 |"))
    assert row.startswith("| site1 | 100 Mbit/s | 4,0 | 50,0 | 1,1 |") and "dalam target" in row, row
    row3 = next(line for line in section.splitlines() if line.startswith("| site3 |"))
    assert "data belum lengkap: site_wan_mbit, ukuran basis data, ukuran dokumen" in row3
