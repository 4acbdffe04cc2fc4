"""Incidents and service requests (clauses 7.1, 7.3, 7.6, 7.7) and the emergency statement (10.3): targets in the
site's working time, breaches, escalations, history, the audit log, and the CLI end to end against a temp home."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from lpse_ops.actions import incidents as actions
from lpse_ops.actions.operation import OperationRefused
from lpse_ops.main import main
from lpse_ops.reports import statement
from lpse_ops.state import StateStore
from lpse_ops.state import incidents as records

WIB = ZoneInfo("Asia/Jakarta")
WIT = ZoneInfo("Asia/Jayapura")
JAKARTA = actions.SiteInfo(host="site1", name="LPSE Kabupaten Lebong", timezone="Asia/Jakarta")
JAYAPURA = actions.SiteInfo(host="site3", name="LPSE Kabupaten Jayapura", timezone="Asia/Jayapura",
                            helpdesk="Helpdesk LPSE Kabupaten Jayapura, telepon (0967) 000000")
FRIDAY_1550_WIB = datetime(2026, 11, 20, 15, 50, tzinfo=WIB)
"""A Friday ten minutes before the end of the working day; the next working day is Monday 23 November."""

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
        site3:
          ansible_host: 127.0.0.3
          site_code: lab03
          site_name: LPSE Kabupaten Jayapura
          site_timezone: Asia/Jayapura
        nozone:
          ansible_host: 127.0.0.4
          site_code: lab04
"""


def _open(site: actions.SiteInfo, priority: str, opened_at: datetime, **extra: object) -> dict:
    return actions.open_incident(actions.OpenRequest(kind=str(extra.pop("kind", "incident")), site=site.host,
                                                     priority=priority, title=str(extra.pop("title", "SPSE mati")),
                                                     opened_at=opened_at, site_info=site, **extra))


def _store() -> StateStore:
    return StateStore.open()


def test_incident_p1_response_counts_working_time_met_and_breached() -> None:
    # Opened Friday 15.50 WIB, P1 response target 30 min of working time: due Monday 08.20 WIB.
    met = _open(JAKARTA, "P1", FRIDAY_1550_WIB)
    late = _open(JAKARTA, "P1", FRIDAY_1550_WIB)
    assert datetime.fromisoformat(met["response_due"]) == datetime(2026, 11, 23, 8, 20, tzinfo=WIB)
    monday = datetime(2026, 11, 23, tzinfo=WIB)
    # 64 hours of calendar time later, but only 20 minutes of working time: met
    actions.update_incident(actions.UpdateRequest(met["id"], status="acknowledged",
                                                  at=monday.replace(hour=8, minute=10)))
    # 40 minutes of working time: breached
    actions.update_incident(actions.UpdateRequest(late["id"], status="acknowledged",
                                                  at=monday.replace(hour=8, minute=30)))
    shown_met = actions.show_incident(met["id"])
    shown_late = actions.show_incident(late["id"])
    assert shown_met["response_breached"] is False
    assert shown_met["response_working_s"] == 20 * 60
    assert shown_late["response_breached"] is True
    assert shown_late["response_working_s"] == 40 * 60
    breached = actions.list_incidents(actions.ListRequest(breached=True))
    assert [row["id"] for row in breached if row["response_breached"]] == [late["id"]]


def test_incident_same_utc_instant_due_differs_between_wib_and_wit_sites() -> None:
    instant = datetime(2026, 11, 24, 7, 30, tzinfo=UTC)  # Tuesday 14.30 WIB, 16.30 WIT (after hours)
    jakarta = _open(JAKARTA, "P2", instant)  # response 1 h: 15.30 WIB the same day
    jayapura = _open(JAYAPURA, "P2", instant)  # 09.00 WIT the next morning
    assert datetime.fromisoformat(jakarta["response_due"]) == datetime(2026, 11, 24, 15, 30, tzinfo=WIB)
    assert datetime.fromisoformat(jayapura["response_due"]) == datetime(2026, 11, 25, 9, 0, tzinfo=WIT)
    assert jakarta["site_timezone"] == "Asia/Jakarta" and jayapura["site_timezone"] == "Asia/Jayapura"


def test_incident_unanswered_past_due_is_breached_and_resolved_in_time_is_not() -> None:
    waiting = _open(JAKARTA, "P1", datetime(2026, 11, 24, 9, 0, tzinfo=WIB))
    quick = _open(JAKARTA, "P1", datetime(2026, 11, 24, 9, 0, tzinfo=WIB))
    actions.update_incident(actions.UpdateRequest(quick["id"], status="in_progress",
                                                  at=datetime(2026, 11, 24, 9, 10, tzinfo=WIB)))
    actions.resolve_incident(quick["id"], "PostgreSQL dipulihkan dari cadangan",
                             at=datetime(2026, 11, 24, 12, 59, tzinfo=WIB))
    rows = {row["id"]: row for row in records.list_incidents(_store())}
    assert rows[waiting["id"]]["response_breached"] and rows[waiting["id"]]["resolution_breached"]
    assert not rows[quick["id"]]["response_breached"] and not rows[quick["id"]]["resolution_breached"]
    assert rows[quick["id"]]["resolved_at"] == datetime(2026, 11, 24, 5, 59, tzinfo=UTC).isoformat()


def test_incident_escalations_recorded_as_distinct_kinds_with_actor_and_audit() -> None:
    row = _open(JAYAPURA, "P1", datetime(2026, 11, 24, 9, 0, tzinfo=WIT))
    actions.escalate_incident(actions.EscalateRequest(row["id"], kind="functional", to="Tim Infrastruktur LKPP",
                                                      reason="berkas data PostgreSQL rusak",
                                                      at=datetime(2026, 11, 24, 9, 15, tzinfo=WIT)))
    shown = actions.escalate_incident(actions.EscalateRequest(row["id"], kind="structural", to="Direktur LPSE",
                                                              reason="perlu server pengganti",
                                                              at=datetime(2026, 11, 24, 10, 0, tzinfo=WIT)))
    assert [(item["kind"], item["to"], item["clause"]) for item in shown["escalations"]] == [
        ("functional", "Tim Infrastruktur LKPP", "7.7.1"), ("structural", "Direktur LPSE", "7.7.2")]
    assert all(item["actor"] == "tester@control" for item in shown["escalations"])
    assert shown["escalations"][0]["at"] == "2026-11-24T00:15:00+00:00"
    with _store() as store:
        operations = [entry["operation"] for entry in store.audit_entries()]
        assert store.audit_verify().ok
    assert operations[-3:] == ["incident.open", "incident.escalate.functional", "incident.escalate.structural"]
    with pytest.raises(OperationRefused, match="functional .*7.7.1.* or structural"):
        actions.escalate_incident(actions.EscalateRequest(row["id"], kind="sideways", to="x", reason="y"))


def test_incident_status_history_and_refused_transitions_name_the_reason() -> None:
    row = _open(JAKARTA, "P3", datetime(2026, 11, 24, 9, 0, tzinfo=WIB), kind="request", title="Akun baru PPK")
    for status, hour in (("acknowledged", 10), ("in_progress", 11), ("resolved", 13), ("closed", 14)):
        actions.update_incident(actions.UpdateRequest(row["id"], status=status, note=f"ke {status}",
                                                      at=datetime(2026, 11, 24, hour, 0, tzinfo=WIB)))
    shown = actions.show_incident(row["id"])
    assert [(event["from_status"], event["to_status"]) for event in shown["events"]] == [
        (None, "open"), ("open", "acknowledged"), ("acknowledged", "in_progress"), ("in_progress", "resolved"),
        ("resolved", "closed")]
    assert {event["actor"] for event in shown["events"]} == {"tester@control"}
    assert shown["responded_at"] == "2026-11-24T03:00:00+00:00"
    assert shown["closed_at"] == "2026-11-24T07:00:00+00:00"
    with pytest.raises(OperationRefused, match="is closed: it can become nothing else"):
        actions.update_incident(actions.UpdateRequest(row["id"], status="in_progress"))
    with pytest.raises(OperationRefused, match="before the incident was opened"):
        actions.update_incident(actions.UpdateRequest(row["id"], note="x", at=datetime(2026, 11, 23, tzinfo=WIB)))
    with pytest.raises(OperationRefused, match="in the future"):
        _open(JAKARTA, "P1", datetime.now(UTC) + timedelta(hours=1))
    with pytest.raises(OperationRefused, match="is a service request"):
        actions.draft_statement(actions.StatementRequest(row["id"]))


def test_incident_priority_change_recomputes_due_times_from_opening() -> None:
    row = _open(JAKARTA, "P4", datetime(2026, 11, 24, 9, 0, tzinfo=WIB))
    changed = actions.update_incident(actions.UpdateRequest(row["id"], priority="P1", note="seluruh layanan mati",
                                                            at=datetime(2026, 11, 24, 9, 5, tzinfo=WIB)))
    assert datetime.fromisoformat(changed["response_due"]) == datetime(2026, 11, 24, 9, 30, tzinfo=WIB)
    assert changed["response_target_s"] == 1800
    assert changed["events"][-1]["kind"] == "priority"


def test_incident_links_runs_and_refuses_an_unknown_run() -> None:
    with _store() as store:
        run_id = store.start_run("drill", {"scenario": "database-corrupted"}, ["site1"])
    row = _open(JAKARTA, "P2", datetime(2026, 11, 24, 9, 0, tzinfo=WIB), run_ids=[run_id])
    assert row["run_ids"] == [run_id]
    with pytest.raises(OperationRefused, match=f"run {run_id + 100} not found"):
        actions.update_incident(actions.UpdateRequest(row["id"], run_ids=[run_id + 100]))
    assert actions.show_incident(row["id"])["run_ids"] == [run_id]


def test_list_incidents_contract_keys_window_and_offsets() -> None:
    first = _open(JAKARTA, "P1", datetime(2026, 10, 30, 9, 0, tzinfo=WIB))
    second = _open(JAYAPURA, "P2", datetime(2026, 11, 2, 9, 0, tzinfo=WIT))
    with _store() as store:
        november = records.list_incidents(store, since=datetime(2026, 11, 1, tzinfo=WIB),
                                          until=datetime(2026, 12, 1, tzinfo=WIB))
        everything = records.list_incidents(store)
    assert [row["id"] for row in november] == [second["id"]]
    assert [row["id"] for row in everything] == [first["id"], second["id"]]
    needed = {"id", "kind", "site", "priority", "title", "status", "opened_at", "responded_at", "resolved_at",
              "response_due", "resolution_due", "response_breached", "resolution_breached", "escalations", "run_ids"}
    for row in everything:
        assert needed <= set(row)
        assert isinstance(row["response_breached"], bool) and isinstance(row["run_ids"], list)
        for key in ("opened_at", "response_due", "resolution_due"):
            assert datetime.fromisoformat(row[key]).utcoffset() is not None


def test_priority_table_bad_file_names_every_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "priorities.yml"
    bad.write_text("working_time: {days: [mon, funday], start: '08:00', end: '16:00',\n"
                   "  holidays: {categories: [public, imaginary]}}\n"
                   "priorities:\n"
                   "  P1: {name: Kritis, response: 4 hours, resolution: 4h}\n"
                   "  P2: {name: Tinggi, response: 9h, resolution: 8h}\n"
                   "  P3: {name: Sedang, response: 4h, resolution: 24h}\n", encoding="utf-8")
    with pytest.raises(actions.PolicyError) as caught:
        actions.load_policy(bad)
    message = str(caught.value)
    assert str(bad) in message
    assert "'P4' is a required property" in message
    assert "working_time.days.1: 'funday' is not one of" in message
    assert "priorities.P1.response: '4 hours' does not match" in message
    monkeypatch.setenv("LPSE_OPS_PRIORITY_TABLE", str(bad))
    result = CliRunner().invoke(main, ["incident", "table"])
    assert result.exit_code == 1, result.output
    assert "'P4' is a required property" in result.output and "Traceback" not in result.output
    # schema-valid but wrong in meaning: response longer than resolution, an unknown holiday category
    bad.write_text(bad.read_text().replace("4 hours", "30m").replace("funday", "fri")
                   + "  P4: {name: Rendah, response: 8h, resolution: 40h}\n", encoding="utf-8")
    with pytest.raises(actions.PolicyError) as caught:
        actions.load_policy(bad)
    assert "priorities.P2: the response target (9h) is longer than the resolution target (8h)" in str(caught.value)
    assert "imaginary" in str(caught.value)


def test_priority_table_extra_dates_file_adds_days_off(tmp_path: Path) -> None:
    table = tmp_path / "priorities.yml"
    default = actions.default_policy_path().read_text(encoding="utf-8")
    table.write_text(default.replace("extra_dates_file: null", "extra_dates_file: cuti.yml"), encoding="utf-8")
    (tmp_path / "cuti.yml").write_text('"2026-11-23": Libur daerah Kabupaten\n', encoding="utf-8")
    policy = actions.load_policy(table)
    response_due, _ = policy.due("P1", FRIDAY_1550_WIB, "Asia/Jakarta")
    assert response_due == datetime(2026, 11, 24, 8, 20, tzinfo=WIB)  # Monday 23 is a day off
    assert "1 extra date" in policy.holiday_source
    # the calendar in force names its days the Indonesian way (as the statement and `incident table` show them)
    assert policy.working_time.holiday(datetime(2026, 12, 25).date()) == "Hari Raya Natal"
    assert policy.working_time.holiday(datetime(2026, 11, 23).date()) == "Libur daerah Kabupaten"


def test_site_info_refuses_site_without_zone_or_outside_sites() -> None:
    hostvars = {"site1": {"site_timezone": "Asia/Jakarta", "site_name": "LPSE A"}, "nozone": {"site_code": "x"}}
    assert actions.site_info(hostvars, ["site1", "nozone"], "site1").timezone == "Asia/Jakarta"
    with pytest.raises(OperationRefused, match="nozone: missing variable site_timezone"):
        actions.site_info(hostvars, ["site1", "nozone"], "nozone")
    with pytest.raises(OperationRefused, match="offsite is not a site of the inventory"):
        actions.site_info(hostvars, ["site1", "nozone"], "offsite")


def test_statement_is_indonesian_names_clause_and_uses_site_zone() -> None:
    row = _open(JAYAPURA, "P1", datetime(2026, 11, 24, 9, 0, tzinfo=WIT), title="SPSE tidak dapat diakses",
                description="Basis data PostgreSQL tidak dapat dijalankan.", impact="Pengguna tidak dapat login.")
    actions.update_incident(actions.UpdateRequest(row["id"], status="in_progress", note="Pemulihan dari cadangan",
                                                  at=datetime(2026, 11, 24, 9, 10, tzinfo=WIT)))
    rendered = actions.draft_statement(actions.StatementRequest(
        row["id"], next_update=datetime(2026, 11, 24, 13, 0, tzinfo=WIT),
        issued_at=datetime(2026, 11, 24, 11, 0, tzinfo=WIT)))
    text = rendered.text
    assert "PERNYATAAN RESMI" in text
    assert f"butir {statement.CLAUSE}" in text and statement.CLAUSE_TEXT in text
    assert "Sejak Selasa, 24 November 2026 pukul 09.00 WIT terjadi gangguan: SPSE tidak dapat diakses." in text
    assert "paling lambat Selasa, 24 November 2026 pukul 13.00 WIT" in text
    assert "Pemulihan dari cadangan" in text and "Pengguna tidak dapat login." in text
    assert JAYAPURA.helpdesk in text
    assert "gangguan sedang dalam penanganan" in text
    for english in ("incident", "Incident", "in_progress", "WIB"):
        assert english not in text
    assert '<html lang="id">' in rendered.html and "butir 10.3" in rendered.html
    assert rendered.reference == f"PRS-{row['id']:06d}-20261124T0200Z"
    with _store() as store:
        assert store.audit_entries()[-1]["operation"] == "incident.statement"


def test_incident_cli_end_to_end_against_temp_home(tmp_path: Path, lpse_home: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(INVENTORY, encoding="utf-8")
    runner = CliRunner()

    def cli(*args: str) -> dict:
        result = runner.invoke(main, ["incident", *args, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    opened = cli("open", "--site", "site1", "-p", "P1", "--title", "SPSE tidak dapat diakses", "--impact",
                 "Seluruh pengguna", "-i", str(inventory), "--at", "2026-11-20T15:50")
    assert opened["site_name"] == "LPSE Kabupaten Lebong" and opened["status"] == "open"
    assert opened["response_due"] == "2026-11-23T01:20:00+00:00"  # Monday 08.20 WIB
    number = str(opened["id"])
    assert cli("update", number, "--status", "acknowledged", "--note", "diperiksa", "--at",
               "2026-11-23T08:10")["response_breached"] is False
    escalated = cli("escalate", number, "--kind", "structural", "--to", "Kepala LPSE", "--reason", "server baru",
                    "--at", "2026-11-23T09:00")
    assert escalated["escalations"][0]["kind"] == "structural"
    resolved = cli("resolve", number, "--note", "dipulihkan", "--at", "2026-11-23T15:00")
    assert resolved["status"] == "resolved" and resolved["resolution_breached"] is True  # 4h target, 7h10m spent
    assert [row["id"] for row in cli("list", "--breached")] == [opened["id"]]
    assert cli("list", "--status", "active") == []
    shown = cli("show", number)
    assert [event["kind"] for event in shown["events"]] == ["opened", "status", "escalation.structural", "status"]
    out = tmp_path / "pernyataan.html"
    made = cli("statement", number, "--format", "html", "--out", str(out))
    assert out.read_text(encoding="utf-8") == made["html"] and "butir 10.3" in made["html"]
    assert "Helpdesk LPSE Kabupaten Lebong" in made["text"]

    for args, reason in ((["open", "--site", "nozone", "-p", "P2", "--title", "x", "-i", str(inventory)],
                          "nozone: missing variable site_timezone"),
                         (["update", "999", "--note", "x"], "incident 999 not found"),
                         (["update", number, "--status", "acknowledged"], "is resolved: it can become closed or "
                                                                          "in_progress, not acknowledged"),
                         (["update", number, "--at", "yesterday", "--note", "x"], "is not a date and time")):
        result = runner.invoke(main, ["incident", *args])
        assert result.exit_code in (1, 2), result.output
        assert reason in result.output and "Traceback" not in result.output
    table = runner.invoke(main, ["incident", "table", "--json"])
    assert table.exit_code == 0, table.output
    assert json.loads(table.stdout)["priorities"]["P1"]["response_s"] == 1800
