"""The monthly and compliance reports' data (actions/report_gather.py): gathered from a store that recorded two
months of runs, probes, verifications, incidents, drills and audits through the real store APIs.

The fixture spreads records over October and November 2026 and puts some on the edges that only a WIB
month gets right: an incident opened 2026-10-31 17:30 UTC is 1 November 00:30 WIB (November's), one opened
2026-11-30 17:30 UTC is 1 December 00:30 WIB (not November's).
"""

from __future__ import annotations

import hashlib
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from click.testing import CliRunner

from lpse_ops.actions import report, report_gather, report_request
from lpse_ops.main import main
from lpse_ops.reports import data as report_data
from lpse_ops.state import StateStore, incidents
from lpse_ops.state.audits import record_audit
from lpse_ops.state.drills import finish_drill, start_drill

SITES = {"site01": "Asia/Jakarta", "site02": "Asia/Makassar", "site03": "Asia/Jayapura"}
NAMES = {"site01": "LPSE Kota Satu", "site02": "LPSE Kabupaten Dua", "site03": "LPSE Provinsi Tiga"}
OCTOBER = datetime(2026, 10, 1, tzinfo=UTC)
TARGETS = {"rto_s": 3600.0, "rpo_db_s": 300.0, "rpo_docs_s": 300.0}
RESPONSE_S = {"P1": 1800, "P2": 3600, "P3": 4 * 3600, "P4": 8 * 3600}
RESOLUTION_S = {"P1": 4 * 3600, "P2": 8 * 3600, "P3": 24 * 3600, "P4": 72 * 3600}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# (kind, site, priority, title, opened (UTC unless an offset is given), minutes to respond, minutes to resolve)
INCIDENTS = [
    ("incident", "site01", "P3", "Unggah dokumen lambat", "2026-10-05T03:00:00+00:00", 30, 600),
    ("incident", "site02", "P2", "Halaman lelang galat 500", "2026-10-14T06:00:00+00:00", 20, 300),
    ("incident", "site03", "P3", "Sertifikat TLS hampir kedaluwarsa", "2026-10-22T01:00:00+00:00", 60, 900),
    ("request", "site01", "P4", "Penambahan akun admin agensi", "2026-10-09T02:00:00+00:00", 60, 1200),
    # 1 November 00:30 WIB: November's in WIB, October's in UTC.
    ("incident", "site01", "P2", "Layanan SPSE berhenti setelah pembaruan OS", "2026-10-31T17:30:00+00:00", 15, 240),
    # 23.30 WIT on 3 November: the P1, resolved late (resolution target 4 h, took 6 h), escalated.
    ("incident", "site03", "P1", "Basis data SPSE tidak dapat diakses", "2026-11-03T23:30:00+09:00", 10, 360),
    ("incident", "site02", "P3", "Notifikasi e-mail tertunda", "2026-11-10T04:00:00+00:00", 45, 700),
    ("incident", "site01", "P3", "Laporan rekap lambat", "2026-11-18T02:00:00+00:00", 300, 1000),
    ("incident", "site02", "P4", "Tampilan logo terpotong", "2026-11-25T07:00:00+00:00", 120, 2000),
    ("request", "site02", "P4", "Reset kata sandi PPK", "2026-11-04T03:00:00+00:00", 30, 120),
    ("request", "site03", "P4", "Tambah kategori pengadaan", "2026-11-16T05:00:00+00:00", 30, None),
    ("request", "site01", "P3", "Ekspor data paket", "2026-11-27T02:00:00+00:00", 60, 600),
    # 1 December 00:30 WIB: not November's, though it is 30 November in UTC.
    ("incident", "site02", "P1", "Server mati listrik", "2026-11-30T17:30:00+00:00", 10, 100),
]
NOVEMBER_P1_TITLE = "Basis data SPSE tidak dapat diakses"


def _incident_rows(store: StateStore) -> None:
    """Record :data:`INCIDENTS` through the incidents area's own writers: opened, answered, escalated (P1), resolved."""
    for kind, site, priority, title, opened_text, respond_min, resolve_min in INCIDENTS:
        opened = utc(opened_text)
        responded = opened + timedelta(minutes=respond_min)
        record = incidents.create_incident(
            store, kind=kind, site=site, site_name=NAMES[site], site_timezone=SITES[site], priority=priority,
            title=title, opened_at=opened, response_due=opened + timedelta(seconds=RESPONSE_S[priority]),
            resolution_due=opened + timedelta(seconds=RESOLUTION_S[priority]),
            response_target_s=RESPONSE_S[priority], resolution_target_s=RESOLUTION_S[priority])
        incidents.update_incident(store, record["id"], status="acknowledged", at=responded)
        if priority == "P1":
            incidents.escalate_incident(store, record["id"], kind="functional", to="Tim teknis LKPP",
                                        reason="pemulihan basis data", at=responded + timedelta(minutes=5))
        if resolve_min is not None:
            incidents.update_incident(store, record["id"], status="resolved",
                                      at=opened + timedelta(minutes=resolve_min))


def _runs(store: StateStore) -> None:
    with time_machine.travel(utc("2026-10-02T02:00:00+00:00"), tick=False):
        run = store.start_run("install", {"version": "1.0", "bundle": "spse-1.0.tar.gz"}, list(SITES))
        store.finish_run(run, "ok", {site: {"status": "ok", "changed": 5} for site in SITES})
    with time_machine.travel(utc("2026-11-20T02:00:00+00:00"), tick=False):  # a dry run changes nothing
        run = store.start_run("install", {"version": "1.3", "check": True}, list(SITES))
        store.finish_run(run, "ok", {site: {"status": "ok"} for site in SITES})
    with time_machine.travel(utc("2026-11-12T15:00:00+00:00"), tick=False):  # 22.00 WIB
        rollout = store.start_run("upgrade.rollout", {"target": "1.2"}, list(SITES))
        wave = store.start_run("upgrade.wave", {"index": 0}, list(SITES), parent_id=rollout)
        for site, ok in (("site01", True), ("site02", True), ("site03", False)):
            step = store.start_run("upgrade.site", {"outcome": "upgraded" if ok else "rolled_back"}, [site],
                                   parent_id=wave)
            store.finish_run(step, "ok" if ok else "failed", {site: {"status": "ok" if ok else "failed"}})
        store.finish_run(wave, "failed", {})
        store.finish_run(rollout, "failed", {"site01": {"status": "ok"}, "site02": {"status": "ok"},
                                             "site03": {"status": "failed", "failed": 1}})


def _probes(store: StateStore) -> None:
    """One probe a day per site at 17:30 UTC, which is 00:30 WIB of the next day: 31 October's probe is
    1 November's (WIB), 30 November's is 1 December's."""
    for day in range(29, 61):  # 30 October .. 30 November (UTC)
        moment = OCTOBER + timedelta(days=day, hours=17, minutes=30)
        upgraded = moment >= utc("2026-11-12T16:00:00+00:00")
        for index, site in enumerate(SITES):
            store.record_probe(site, {
                "reachable": not (site == "site03" and day == 45), "fault_codes": [],
                "spse_version": "1.2" if upgraded and site != "site03" else "1.0",
                "disk_used_percent": 40 + day * 0.6 + index * 8,
                "memory_available_percent": 55 - index * 12 + day % 5,
                "load_5m": 0.4 + index * 0.5 + day % 3 / 4, "cpus": 2 + index * 2, "facts": {}}, probed_at=moment)


def _verifications(store: StateStore) -> None:
    for text, site, ok in (("2026-10-10T20:00:00+00:00", "site01", True),
                           ("2026-11-07T21:00:00+00:00", "site01", True),
                           ("2026-11-14T21:00:00+00:00", "site01", True),
                           ("2026-11-08T20:00:00+00:00", "site02", False),
                           ("2026-11-21T20:00:00+00:00", "site02", True)):
        with time_machine.travel(utc(text), tick=False):
            store.record_verification(site, ok, repo="1", backup_label="20261107-040000F", restore_duration_s=95.0)


def _drills(store: StateStore) -> None:
    for scenario, site, start, rto, met in (("database-corrupted", "site01", "2026-11-19T03:00:00+00:00", 1500.0, True),
                                            ("documents-lost", "site02", "2026-11-26T02:00:00+00:00", 5400.0, False),
                                            ("server-lost", "site03", "2026-10-20T02:00:00+00:00", 3000.0, True)):
        started = utc(start)
        drill = start_drill(store, scenario, site, TARGETS, started_at=started)
        finish_drill(store, drill, ok=True, rto_s=rto, rpo_db_s=12.0, rpo_docs_s=240.0, met=met,
                     finished_at=started + timedelta(seconds=rto))


def _audits(store: StateStore) -> None:
    for site, october, november in (("site01", ["ssh-01"], ["ssh-01"]), ("site02", ["fw-02"], ["fw-02", "ssh-03"]),
                                    ("site03", ["pg-01", "ssh-01"], ["pg-01"])):
        record_audit(store, site, score=100 - 10 * len(october), failed=october, lynis_index=70,
                     audited_at=utc("2026-10-15T01:00:00+00:00"))
        record_audit(store, site, score=100 - 10 * len(november), failed=november, lynis_index=72,
                     audited_at=utc("2026-11-15T01:00:00+00:00"))


def record_two_months(url: str) -> None:
    """Record October and November 2026 into the store at *url* through the real store APIs."""
    store = StateStore.open(url)
    try:
        _runs(store)
        _probes(store)
        _verifications(store)
        _incident_rows(store)
        _drills(store)
        _audits(store)
    finally:
        store.close()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A state store with two months recorded (module scope: recording takes a few seconds)."""
    folder = tmp_path_factory.mktemp("report-store")
    url = f"sqlite:///{folder / 'state.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LPSE_OPS_HOME", str(folder / "home"))
        record_two_months(url)
    return url


def gather(url: str, kind: str = "monthly", period: report_data.Period | None = None,
           **options) -> report_data.ReportData:
    store = StateStore.open(url)
    try:
        request = report_request.ReportRequest(kind=kind, period=period or report_request.month_period("2026-11"),
                                               site_zones=dict(SITES), site_names=dict(NAMES), **options)
        return report_gather.gather(store, request)
    finally:
        store.close()


def test_report_month_period_is_a_wib_month() -> None:
    period = report_request.month_period("2026-11")
    assert period.since == utc("2026-10-31T17:00:00+00:00")
    assert period.until == utc("2026-11-30T17:00:00+00:00")
    assert period.label == "November 2026"
    assert report_request.previous_month(period).label == "Oktober 2026"
    december = report_request.month_period("2026-12")
    assert december.until == utc("2026-12-31T17:00:00+00:00")
    assert report_request.previous_month(report_request.month_period("2027-01")).label == "Desember 2026"


@pytest.mark.parametrize("month", ["2026-13", "26-11", "2026/11", "November"])
def test_report_month_period_malformed_refused(month: str) -> None:
    with pytest.raises(report_request.ReportRefused, match="YYYY-MM"):
        report_request.month_period(month)


def test_report_gather_month_edges_follow_wib(recorded: str) -> None:
    data = gather(recorded)
    titles = {incident.title for incident in data.incidents}
    assert "Layanan SPSE berhenti setelah pembaruan OS" in titles  # 1 Nov 00:30 WIB, 31 Oct in UTC
    assert "Server mati listrik" not in titles  # 1 Dec 00:30 WIB, 30 Nov in UTC
    previous = {incident.title for incident in data.incidents_previous}
    assert "Layanan SPSE berhenti setelah pembaruan OS" not in previous
    assert len(data.disturbances) == 5 and len(data.requests) == 3


def test_report_gather_trend_against_previous_month(recorded: str) -> None:
    data = gather(recorded)
    trend = {row.label: (row.previous, row.current) for row in data.trend}
    assert trend == {"Gangguan P1": (0, 1), "Gangguan P2": (1, 1), "Gangguan P3": (2, 2), "Gangguan P4": (0, 1),
                     "Permintaan layanan": (1, 3)}
    assert [incident.title for incident in data.p1] == [NOVEMBER_P1_TITLE]
    p1 = data.p1[0]
    assert p1.resolution_breached and not p1.response_breached
    assert p1.escalations == 1
    compliance = {row.priority: row for row in data.compliance}
    assert compliance["P3"].response_breached == 1  # "Laporan rekap lambat": 5 h against 4 h


def test_report_gather_release_progress_from_runs_and_probes(recorded: str) -> None:
    data = gather(recorded)
    assert data.release.current == "1.2"
    assert data.release.source.endswith("(upgrade.rollout)")  # the rollout that site01 and site02 reached
    versions = {site.host: (site.version, site.on_current) for site in data.release.sites}
    assert versions == {"site01": ("1.2", True), "site02": ("1.2", True), "site03": ("1.0", False)}
    changes = [(change.operation, change.version, change.failed_hosts) for change in data.changes]
    assert changes == [("upgrade.rollout", "1.2", ["site03"])]  # October's install is not November's
    plan = data.work_plan
    assert plan and "1.2" in plan[0].activity and plan[0].sites == "site03"


def test_report_gather_release_named_by_operator_wins(recorded: str) -> None:
    data = gather(recorded, release="1.0")
    assert data.release.current == "1.0" and data.release.source == "--release"
    assert [site.host for site in data.release.sites if site.on_current] == ["site03"]


def test_report_gather_utilisation_days_in_wib(recorded: str) -> None:
    data = gather(recorded)
    rows = {row.host: row for row in data.utilisation}
    assert rows["site03"].probes == 30 and rows["site03"].unreachable == 1
    assert data.probe_count == 90
    days = [point.day.isoformat() for point in data.daily["site01"]]
    assert days[0] == "2026-11-01" and days[-1] == "2026-11-30" and len(days) == 30  # 17:30 UTC = next day WIB
    assert rows["site03"].disk_max == pytest.approx(40 + 59 * 0.6 + 16)
    assert rows["site03"].cpus == 6


def test_report_gather_backups_drills_audits(recorded: str) -> None:
    data = gather(recorded)
    verified = {row.host: (row.ok, row.failed) for row in data.verifications}
    assert verified == {"site01": (2, 0), "site02": (1, 1), "site03": (0, 0)}
    assert [(drill.scenario, drill.met) for drill in data.drills] == [("database-corrupted", True),
                                                                       ("documents-lost", False)]
    audits = {row.site: (row.score, row.previous_score, row.worse, row.better) for row in data.audits}
    assert audits == {"site01": (90.0, 90.0, [], []), "site02": (80.0, 90.0, ["ssh-03"], []),
                      "site03": (90.0, 80.0, [], ["ssh-01"])}
    assert data.audit_log["ok"] is True


def test_report_gather_missing_area_says_so(recorded: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lpse_ops.state.drills", None)  # as if the drills area were not installed
    data = gather(recorded)
    assert data.drills == []
    assert data.sources["drills"].state == "missing"
    assert "lpse_ops.state.drills" in data.sources["drills"].note


def test_report_gather_empty_month_is_empty_not_invented(recorded: str) -> None:
    data = gather(recorded, period=report_request.month_period("2026-08"))
    assert data.incidents == [] and data.drills == [] and data.audits == [] and data.probe_count == 0
    assert {key: source.state for key, source in data.sources.items()} == {
        "probes": "empty", "verifications": "empty", "incidents": "empty", "drills": "empty", "audits": "empty"}
    assert all(row.probes == 0 and row.disk_max is None for row in data.utilisation)


def test_report_compliance_period_by_days(recorded: str) -> None:
    period = report_request.days_period(datetime(2026, 11, 1).date(), datetime(2026, 11, 15).date())
    data = gather(recorded, kind="compliance", period=period)
    assert data.previous is None
    assert [drill.scenario for drill in data.drills] == []
    assert {row.host: row.ok for row in data.verifications} == {"site01": 2, "site02": 0, "site03": 0}
    with pytest.raises(report_request.ReportRefused, match="before --from"):
        report_request.days_period(datetime(2026, 11, 15).date(), datetime(2026, 11, 1).date())


def test_report_work_plan_file_read_and_refused(tmp_path: Path) -> None:
    good = tmp_path / "plan.yml"
    good.write_text("- date: 7 Desember 2026\n  activity: Upgrade SPSE ke versi 1.2\n  sites: [site03]\n"
                    "  clause: 6.2.6\n", encoding="utf-8")
    assert report_request.read_work_plan(good) == [report_data.WorkItem("7 Desember 2026", "Upgrade SPSE ke versi 1.2",
                                                                        "site03", "6.2.6")]
    bad = tmp_path / "bad.yml"
    bad.write_text("- date: 1 Desember\n- activity: x\n  date: y\n  owner: z\n", encoding="utf-8")
    with pytest.raises(report_request.ReportRefused) as refused:
        report_request.read_work_plan(bad)
    assert "item 1: needs 'date' and 'activity'" in str(refused.value)
    assert "item 2: unknown key(s) owner" in str(refused.value)


def test_report_cli_refuses_bad_month_and_mixed_periods(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(main, ["report", "monthly", "--month", "2026-13", "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "--month must be YYYY-MM" in result.output and "Traceback" not in result.output
    result = runner.invoke(main, ["report", "compliance", "--month", "2026-11", "--from", "2026-11-01",
                                  "--to", "2026-11-30"])
    assert result.exit_code == 1 and "not both" in result.output
    result = runner.invoke(main, ["report", "compliance", "--from", "2026-11-01"])
    assert result.exit_code == 1 and "go together" in result.output
    result = runner.invoke(main, ["report", "monthly", "--format", "docx", "--out", str(out)])
    assert result.exit_code == 2 and "html, pdf" in result.output
    assert not out.exists()


def test_report_pdf_without_chromium_refused_before_writing(recorded: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # a machine without chromium
    out = tmp_path / "out"
    with StateStore.open(recorded) as store:
        before = len(store.list_runs(limit=1000))
    with pytest.raises(report_request.ReportRefused, match="apt-get install chromium"):
        report.generate(report_request.ReportRequest(kind="monthly", period=report_request.month_period("2026-11"),
                                                     out_dir=out, formats=("html", "pdf"), state_url=recorded))
    assert not out.exists()
    with StateStore.open(recorded) as store:
        assert len(store.list_runs(limit=1000)) == before  # nothing recorded either


def test_report_html_only_recorded_as_run_with_digest(recorded: str, tmp_path: Path) -> None:
    outcome = report.generate(report_request.ReportRequest(kind="compliance",
                                                           period=report_request.month_period("2026-11"),
                                                           out_dir=tmp_path, formats=("html",), state_url=recorded))
    html = outcome.files["html"]
    assert html.name == "laporan-kepatuhan-2026-11-01_2026-11-30.html" and list(outcome.files) == ["html"]
    store = StateStore.open(recorded)
    try:
        run = store.get_run(outcome.run_id)
        finish = [entry for entry in store.audit_entries() if entry["operation"] == "run.finish"][-1]
    finally:
        store.close()
    assert run["operation"] == "report.compliance" and run["result"] == "ok"
    assert run["summary"]["sha256"]["html"] == hashlib.sha256(html.read_bytes()).hexdigest()
    assert finish["detail"]["run_id"] == outcome.run_id  # the audit log names the report run


def test_report_cli_unreadable_inventory_given_refused(recorded: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", "monthly", "--month", "2026-11", "--format", "html", "--out",
                                       str(tmp_path / "out"), "--state-url", recorded, "-i", str(tmp_path / "none")])
    assert result.exit_code == 1, result.output
    assert "cannot be parsed" in result.output and "fix -i" in result.output
    assert not (tmp_path / "out").exists()


def test_report_large_fleet_lists_only_sites_needing_attention() -> None:
    from lpse_ops.reports import monthly

    store = StateStore.open("sqlite://")
    try:
        for number in range(1, 41):  # 40 sites, 3 of them still on 1.0
            store.record_probe(f"lpse{number:03d}", {
                "reachable": True, "spse_version": "1.0" if number in (7, 21, 33) else "1.2", "fault_codes": [],
                "disk_used_percent": float(number), "memory_available_percent": 50.0, "load_5m": 0.5, "cpus": 2,
                "facts": {}}, probed_at=utc("2026-11-10T03:00:00+00:00"))
            record_audit(store, f"lpse{number:03d}", score=100 - number, failed=[],  # lpse040 lowest: 60
                         audited_at=utc("2026-10-10T03:00:00+00:00"))
            record_audit(store, f"lpse{number:03d}", score=100 - number, failed=["ssh-01"] if number == 2 else [],
                         audited_at=utc("2026-11-10T03:00:00+00:00"))
        data = report_gather.gather(store, report_request.ReportRequest(
            kind="monthly", period=report_request.month_period("2026-11")))
    finally:
        store.close()
    html = monthly.render_html(data)
    section = html[html.index('id="progres-implementasi"'):html.index('id="utilitas"')]
    assert "37 dari 40 situs" in section
    assert "hanya situs yang belum menjalankan rilis terkini (3 dari 3 situs tersebut" in section
    assert all(f"<td>lpse{number:03d}</td>" in section for number in (7, 21, 33))
    assert "<td>lpse001</td>" not in section
    utilisation = html[html.index('id="utilitas"'):html.index('id="permintaan-layanan"')]
    assert "<td>lpse040</td>" in utilisation and "<td>lpse010</td>" not in utilisation  # the 30 fullest disks
    assert "30 situs dengan disk terpakai tertinggi dari 40 situs" in utilisation
    audits = html[html.index('id="audit-kepatuhan"'):html.index('id="sumber-data"')]
    assert "30 dari 40 situs yang diaudit" in audits
    assert "<td>lpse002</td>" in audits  # a control got worse: listed though its score is high
    assert "<td>lpse040</td>" in audits  # then the lowest scores
    assert "lpse005" not in audits  # neither in the table nor among the chart's labels
    assert "lpse040" in audits[audits.index("<svg"):]  # the chart shows the listed sites


def test_report_render_without_incidents_area_says_no_data(recorded: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from lpse_ops.reports import monthly

    monkeypatch.setitem(sys.modules, "lpse_ops.state.incidents", None)  # as if the area were not installed
    html = monthly.render_html(gather(recorded))
    trend = html[html.index('id="laporan-trend"'):html.index('id="laporan-analisis"')]
    assert "tidak ada data (modul lpse_ops.state.incidents belum tersedia)" in trend
    assert "<svg" not in trend  # no chart of zeros invented
    analysis = html[html.index('id="laporan-analisis"'):html.index('id="rencana-kerja"')]
    assert analysis.count("tidak ada data (modul lpse_ops.state.incidents belum tersedia)") == 2  # 3.1 and 3.2
    assert "Gangguan dan permintaan layanan: tidak ada data." in html  # the summary says so too


@pytest.mark.parametrize("machine_zone", ["Asia/Jayapura", "America/Los_Angeles"])
def test_report_gather_same_whatever_the_machine_zone(recorded: str, machine_zone: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from lpse_ops.reports import monthly

    expected = gather(recorded)
    monkeypatch.setenv("TZ", machine_zone)
    time.tzset()
    try:
        data = gather(recorded)
        html = monthly.render_html(data)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert [point.day for point in data.daily["site01"]] == [point.day for point in expected.daily["site01"]]
    assert [row.current for row in data.trend] == [row.current for row in expected.trend]
    assert "Selasa, 3 November 2026 pukul 23.30 WIT" in html


def test_report_month_in_progress_says_so(recorded: str) -> None:
    from lpse_ops.reports import monthly

    data = gather(recorded, now=utc("2026-11-20T05:00:00+00:00"))
    assert "(periode belum berakhir: data sampai Jumat, 20 November 2026 pukul 12.00 WIB)" in monthly.render_html(data)
    data = gather(recorded, now=utc("2026-12-01T01:00:00+00:00"))
    assert "belum berakhir" not in monthly.render_html(data)


def test_report_failed_sites_come_from_host_results_not_from_ok(tmp_path: Path) -> None:
    """An install that changed a site succeeded there: only failed/unreachable hosts are "Situs gagal"."""
    from lpse_ops.reports import monthly

    url = f"sqlite:///{tmp_path / 'state.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LPSE_OPS_HOME", str(tmp_path / "home"))
        with StateStore.open(url) as store, time_machine.travel(utc("2026-11-05T03:00:00+00:00"), tick=False):
            run = store.start_run("install", {"version": "1.4"}, ["site01", "site02", "site03", "site04"])
            store.finish_run(run, "failed", {"site01": {"status": "changed", "changed": 12},
                                             "site02": {"status": "ok"},
                                             "site03": {"status": "failed", "failed": 1},
                                             "site04": {"status": "unreachable", "unreachable": 1}})
        data = gather(url)
    [change] = data.changes
    assert change.failed_hosts == ["site03", "site04"]
    versions = {site.host: site.version for site in data.release.sites}
    assert versions["site01"] == "1.4" and versions["site02"] == "1.4"  # a changed site reached the release
    assert versions.get("site03") is None and versions.get("site04") is None
    assert data.release.current == "1.4"
    html = monthly.render_html(data)
    table = html[html.index("Instalasi dan upgrade pada periode ini"):]
    table = table[:table.index("</table>")]
    assert "<td>site03, site04</td></tr>" in table and "site01" not in table and "site02" not in table


def test_report_drill_row_names_the_runbook_steps_that_failed_and_were_passed(tmp_path: Path) -> None:
    from lpse_ops.reports import monthly

    url = f"sqlite:///{tmp_path / 'state.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LPSE_OPS_HOME", str(tmp_path / "home"))
        with StateStore.open(url) as store:
            drill = start_drill(store, "documents-lost", "site01", TARGETS, started_at=utc("2026-11-10T03:00:00+00:00"))
            finish_drill(store, drill, ok=True, met=True, rto_s=60.0, rpo_db_s=0.0, rpo_docs_s=0.0,
                         detail={"runbook_result": "completed_with_failures",
                                 "continued_failures": [{"step": "site-healthy", "section": "Verification",
                                                         "exit_code": 3}]})
        data = gather(url)
    assert [(row.ok, row.passed_steps) for row in data.drills] == [(True, ["site-healthy"])]
    assert "langkah gagal yang dilewati runbook: site-healthy" in monthly.render_html(data)
