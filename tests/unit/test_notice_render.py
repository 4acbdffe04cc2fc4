"""The notice templates, the site targets read from the inventory, SMTP settings and the CLI's parsers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
import pytest

from lpse_ops.actions.notice import NoticeRequest, SiteTarget, plan_notice, reference_for, site_targets
from lpse_ops.actions.operation import OperationRefused
from lpse_ops.backends import smtp
from lpse_ops.commands.notice import parse_duration, parse_start
from lpse_ops.reports.notice import Contact, NoticeContent, render

START = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)


def _content(**changes) -> NoticeContent:
    values = {"kind": "maintenance", "site_name": "LPSE Kota <Uji> & Co", "timezone": "Asia/Makassar",
              "contacts": [Contact("Kepala LPSE", "kepala@uji.test")], "start": START,
              "duration": timedelta(minutes=45), "from_version": "1.0", "to_version": "1.2",
              "reference": "PML-000007-uji", **changes}
    return NoticeContent(**values)


def test_render_maintenance_every_required_element_present():
    notice = render(_content())

    assert notice.subject == "Pemberitahuan Pemeliharaan SPSE — LPSE Kota <Uji> & Co"
    for expected in ("Kepada Yth.\nKepala LPSE\n", "Sabtu, 28 November 2026 pukul 23.00 WITA", "45 menit",
                     "23.45 WITA", "Pembaruan SPSE dari versi 1.0 ke versi 1.2", "halaman pemeliharaan",
                     "butir 6.2.13 Service Level Agreement antara LKPP dan LPSE",
                     "Memberitahukan kepada LPSE jika akan dilakukan pemeliharaan rutin perangkat",
                     "(021) 50205577", "Nomor referensi: PML-000007-uji"):
        assert expected in notice.text


def test_render_html_escapes_site_name():
    notice = render(_content())

    assert "LPSE Kota &lt;Uji&gt; &amp; Co" in notice.html and "<Uji>" not in notice.html
    assert "<strong>PML-000007-uji</strong>" in notice.html


def test_render_completion_rolled_back_says_version_kept():
    notice = render(_content(kind="completion", served_version="1.0", helpdesk="Helpdesk Uji, 0800"))

    assert notice.subject.startswith("Pemeliharaan SPSE selesai — ")
    assert "pembaruan dibatalkan; SPSE tetap berjalan pada versi 1.0" in notice.text
    assert "Helpdesk Uji, 0800" in notice.text


def test_render_unknown_kind_refused():
    with pytest.raises(ValueError, match="maintenance"):
        render(_content(kind="outage"))


def test_site_targets_missing_contacts_and_bad_zone_all_reported():
    hostvars = {"a": {"site_code": "a1", "site_timezone": "Asia/Jakarta",
                      "site_contacts": [{"name": "K", "email": "k@a.test"}]},
                "b": {"site_code": "b1", "site_timezone": "Europe/Paris"},
                "c": {"site_contacts": [{"name": "X", "email": "not-an-address"}]}}

    targets, problems = site_targets(hostvars, ["a", "b", "c"])

    assert targets[0].contacts == [Contact("K", "k@a.test")] and targets[0].site_name == "LPSE a1"
    assert any(p.startswith("b: missing variable site_contacts") for p in problems)
    assert any(p.startswith("b: time zone 'Europe/Paris'") for p in problems)
    assert any(p.startswith("c: site_contacts[0]") for p in problems)
    assert any(p.startswith("c: missing variable site_timezone") for p in problems)


def test_reference_for_kind_run_and_site():
    assert reference_for("maintenance", 12, "lab01") == "PML-000012-lab01"
    assert reference_for("completion", 12, "lab01") == "SLS-000012-lab01"


def test_smtp_settings_environment_overrides_inventory():
    found = smtp.settings({"lpse_smtp_host": "mail.inv", "lpse_smtp_port": 2319, "lpse_smtp_from": "a@inv.test"},
                          {"LPSE_OPS_SMTP_HOST": "mail.env", "LPSE_OPS_SMTP_USER": "u",
                           "LPSE_OPS_SMTP_PASSWORD": "s3cret-pw"})

    assert (found.host, found.port, found.sender, found.user) == ("mail.env", 2319, "a@inv.test", "u")
    assert "s3cret-pw" not in repr(found) and "password" not in found.describe()


def test_smtp_settings_missing_everything_names_each_setting():
    with pytest.raises(smtp.SmtpSettingsError) as caught:
        smtp.settings({}, {"LPSE_OPS_SMTP_PORT": "x", "LPSE_OPS_SMTP_USER": "u"})

    message = str(caught.value)
    for name in ("LPSE_OPS_SMTP_HOST", "LPSE_OPS_SMTP_PORT", "LPSE_OPS_SMTP_FROM", "LPSE_OPS_SMTP_PASSWORD"):
        assert name in message


def test_build_message_utf8_text_and_html_alternative():
    message = smtp.build_message("lpse-ops@lkpp.go.id", [("Kepala LPSE", "k@a.test")], "Pemeliharaan — A",
                                 "teks", "<p>teks</p>")

    assert message.get_content_type() == "multipart/alternative"
    assert message["Message-ID"].endswith("@lkpp.go.id>")
    assert "=?utf-8?" in message.as_string()  # the subject's em dash is encoded for the wire


@pytest.mark.parametrize("text, minutes", [("30m", 30), ("2h", 120), ("1h30m", 90), ("45", 45)])
def test_parse_duration_forms_accepted(text, minutes):
    assert parse_duration(text) == timedelta(minutes=minutes)


@pytest.mark.parametrize("text", ["", "abc", "1d", "m"])
def test_parse_duration_bad_text_refused(text):
    with pytest.raises(click.BadParameter):
        parse_duration(text)


def test_parse_start_without_offset_read_in_start_zone():
    assert parse_start("2026-11-28T22:00", "Asia/Jakarta") == START
    assert parse_start("2026-11-29T00:00+09:00", "Asia/Jakarta") == START


def test_plan_notice_maintenance_in_the_past_refused_completion_allowed():
    site = SiteTarget("site1", "lab01", "LPSE Lab 01", "Asia/Jakarta", [Contact("K", "k@lab01.lpse.test")])
    settings = smtp.SmtpSettings(host="127.0.0.1", port=25, sender="lpse-ops@lkpp.lab.test")
    past = datetime(2020, 1, 1, tzinfo=UTC)
    request = NoticeRequest(kind="maintenance", start=past, duration=timedelta(minutes=30), from_version="1.0",
                            to_version="1.2", sites=[site], smtp_settings=settings)

    with pytest.raises(OperationRefused, match="starts in the past"):
        plan_notice(request)
    request.kind = "completion"
    assert plan_notice(request).sites == [site]
