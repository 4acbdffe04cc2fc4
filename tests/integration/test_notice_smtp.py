"""The maintenance and completion notices over real SMTP: aiosmtpd (the lab's server, STARTTLS with a
lab CA) delivering into a Maildir, read back and checked as a site's contact would read them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lpse_ops.actions.notice import NoticeRequest, send_notice
from lpse_ops.backends import smtp as smtp_backend
from lpse_ops.lab import smtp as lab_smtp
from lpse_ops.lab import tls
from lpse_ops.main import main
from lpse_ops.state import StateStore

pytest.importorskip("aiosmtpd", reason="the lab's SMTP server needs aiosmtpd: pip install -e '.[dev]'")

# 15:00 UTC is 22.00 WIB on Saturday 28 November and 00.00 WIT on Sunday 29 November 2037.
START = datetime(2037, 11, 28, 15, 0, tzinfo=UTC)
REFUSED = "ditolak@lab03.lpse.test"
CONTACTS = {
    "site1": [{"name": "Kepala LPSE Lab 01", "email": "kepala@lab01.lpse.test"},
              {"name": "Admin PPE", "email": "admin@lab01.lpse.test"}],
    "site3": [{"name": "Kepala LPSE Lab 03", "email": "kepala@lab03.lpse.test"}],
}


@pytest.fixture(scope="module")
def lab_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    ca_cert, ca_key = tls.make_ca(directory, "notice test CA")
    cert, key = tls.make_server_cert(directory, ca_cert, ca_key, "smtp", ["localhost"], ["127.0.0.1"])
    return ca_cert, cert, key


@pytest.fixture
def server(tmp_path: Path, lab_ca: tuple[Path, Path, Path]) -> Iterator[lab_smtp.SmtpServerInfo]:
    ca_cert, cert, key = lab_ca
    info = lab_smtp.start(tmp_path / "smtp", tls_cert=cert, tls_key=key, ca_cert=ca_cert, refuse=(REFUSED,))
    try:
        yield info
    finally:
        assert lab_smtp.stop(tmp_path / "smtp")


@pytest.fixture
def inventory(tmp_path: Path, server: lab_smtp.SmtpServerInfo, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("HOST", "PORT", "FROM", "CA", "USER", "PASSWORD", "STARTTLS"):
        monkeypatch.delenv(f"LPSE_OPS_SMTP_{name}", raising=False)
    sites = {
        "site1": {"ansible_port": 2221, "site_code": "lab01", "site_name": "LPSE Lab 01",
                  "site_timezone": "Asia/Jakarta", "site_contacts": CONTACTS["site1"]},
        "site3": {"ansible_port": 2223, "site_code": "lab03", "site_name": "LPSE Lab 03",
                  "site_timezone": "Asia/Jayapura", "site_contacts": CONTACTS["site3"]},
    }
    data = {"all": {"vars": {"ansible_host": "127.0.0.1", "lpse_smtp_host": server.host,
                             "lpse_smtp_port": server.port, "lpse_smtp_from": "lpse-ops@lkpp.lab.test",
                             "lpse_smtp_ca_cert": server.ca_cert},
                    "children": {"sites": {"hosts": sites}}}}
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def _request(inventory: Path, kind: str = "maintenance", **extra) -> NoticeRequest:
    values = {"duration": timedelta(minutes=30), **extra}
    return NoticeRequest(kind=kind, inventory=inventory, limit="site1,site3", start=START, from_version="1.0",
                         to_version="1.2", **values)


def _by_recipient(maildir: str) -> dict[str, object]:
    return {message["X-RcptTo"]: message for message in lab_smtp.messages(maildir)}


def test_notice_maintenance_two_zones_delivers_indonesian_notice_per_site(inventory, server):
    outcome = send_notice(_request(inventory))

    assert outcome.ok, outcome.as_dict()
    delivered = _by_recipient(server.maildir)
    assert set(delivered) == {"kepala@lab01.lpse.test, admin@lab01.lpse.test", "kepala@lab03.lpse.test"}
    jakarta = delivered["kepala@lab01.lpse.test, admin@lab01.lpse.test"]
    jayapura = delivered["kepala@lab03.lpse.test"]
    assert jakarta["Subject"] == "Pemberitahuan Pemeliharaan SPSE — LPSE Lab 01"
    assert jayapura["Subject"] == "Pemberitahuan Pemeliharaan SPSE — LPSE Lab 03"
    assert [a.addr_spec for a in jakarta["To"].addresses] == ["kepala@lab01.lpse.test", "admin@lab01.lpse.test"]
    assert jakarta["From"] == "lpse-ops@lkpp.lab.test"
    text_jkt = jakarta.get_body(("plain",)).get_content()
    text_jpr = jayapura.get_body(("plain",)).get_content()
    # The same instant in each site's own zone: the date changes in Jayapura.
    assert "Sabtu, 28 November 2037 pukul 22.00 WIB" in text_jkt
    assert "Minggu, 29 November 2037 pukul 00.00 WIT" in text_jpr
    assert "22.30 WIB" in text_jkt and "00.30 WIT" in text_jpr
    for text in (text_jkt, text_jpr):
        assert "Kepada Yth." in text and "30 menit" in text
        assert "Pembaruan SPSE dari versi 1.0 ke versi 1.2" in text
        assert "butir 6.2.13 Service Level Agreement antara LKPP dan LPSE" in text
        assert "halaman pemeliharaan" in text and "helpdesk-lpse@lkpp.go.id" in text
    assert "Kepala LPSE Lab 01\nAdmin PPE\n" in text_jkt
    assert f"PML-{outcome.run_id:06d}-lab01" in text_jkt
    # UTF-8 on the wire (the em dash of the subject, the quotes of the HTML part), decoded intact.
    html = jayapura.get_body(("html",)).get_content()
    assert jayapura.get_body(("html",)).get_content_charset() == "utf-8"
    assert "<html lang=\"id\">" in html and "Minggu, 29 November 2037 pukul 00.00 WIT" in html
    assert jakarta["Message-ID"] == next(r.message_id for r in outcome.results if r.host == "site1")


def test_notice_maintenance_sent_records_run_and_audit(inventory, server):
    with StateStore.open() as store:
        wave = store.start_run("upgrade.wave", {"index": 0}, ["site1", "site3"])
    outcome = send_notice(_request(inventory, parent_run_id=wave))

    with StateStore.open() as store:
        run = store.get_run(outcome.run_id)
        steps = [step["id"] for step in store.list_runs(parent_id=wave)]
        sent = [entry for entry in store.audit_entries() if entry["operation"] == "notice.sent"]
        verified = store.audit_verify()
    assert run["operation"] == "notice.maintenance" and run["result"] == "ok"
    assert run["args"]["parent_run_id"] == wave and sorted(run["hosts"]) == ["site1", "site3"]
    assert run["parent_id"] == wave and steps == [outcome.run_id]  # a step of its wave
    detail = run["host_results"]["site3"]["detail"]
    assert detail["recipients"] == ["kepala@lab03.lpse.test"] and detail["message_id"].startswith("<")
    assert {entry["detail"]["host"] for entry in sent} == {"site1", "site3"}
    assert verified.ok


def test_notice_completion_reports_version_and_interruption(inventory, server):
    outcome = send_notice(_request(inventory, kind="completion", duration=timedelta(minutes=12)))

    assert outcome.ok, outcome.as_dict()
    message = _by_recipient(server.maildir)["kepala@lab03.lpse.test"]
    assert message["Subject"] == "Pemeliharaan SPSE selesai — LPSE Lab 03"
    text = message.get_body(("plain",)).get_content()
    assert "SPSE kini berjalan pada versi 1.2" in text and "12 menit" in text
    assert "Minggu, 29 November 2037 pukul 00.00 WIT sampai 00.12 WIT" in text
    with StateStore.open() as store:
        assert store.get_run(outcome.run_id)["operation"] == "notice.completion"


def test_notice_refused_recipient_reports_clear_error(inventory, server, tmp_path):
    data = yaml.safe_load(inventory.read_text())
    data["all"]["children"]["sites"]["hosts"]["site3"]["site_contacts"].append({"name": "Salah", "email": REFUSED})
    inventory.write_text(yaml.safe_dump(data))

    outcome = send_notice(_request(inventory))

    by_host = {result.host: result for result in outcome.results}
    assert not outcome.ok and by_host["site1"].ok
    assert by_host["site3"].recipients == ["kepala@lab03.lpse.test"] and REFUSED in by_host["site3"].refused
    assert "550" in by_host["site3"].error and "site_contacts of site3" in by_host["site3"].error
    assert set(_by_recipient(server.maildir)) == {"kepala@lab01.lpse.test, admin@lab01.lpse.test",
                                                   "kepala@lab03.lpse.test"}
    with StateStore.open() as store:
        run = store.get_run(outcome.run_id)
    assert run["result"] == "failed" and run["host_results"]["site3"]["status"] == "failed"


def test_notice_server_down_reports_connection_refused(inventory, server, tmp_path):
    lab_smtp.stop(tmp_path / "smtp")

    outcome = send_notice(_request(inventory))

    assert not outcome.ok and all(result.message_id is None for result in outcome.results)
    error = outcome.results[0].error
    assert "connection refused" in error and "LPSE_OPS_SMTP_HOST" in error and "lab up" in error
    lab_smtp.start(tmp_path / "smtp", server.port)  # the fixture stops it again


def test_smtp_send_untrusted_certificate_says_set_ca(server):
    settings = smtp_backend.SmtpSettings(host=server.host, port=server.port, sender="lpse-ops@lkpp.lab.test")
    message = smtp_backend.build_message(settings.sender, [("A", "a@lab01.lpse.test")], "s", "t")
    with pytest.raises(smtp_backend.SmtpTlsError, match="LPSE_OPS_SMTP_CA"):
        smtp_backend.send(settings, message)
    assert lab_smtp.messages(server.maildir) == []


def test_smtp_send_login_over_starttls_accepted_and_wrong_password_refused(tmp_path, lab_ca):
    ca_cert, cert, key = lab_ca
    info = lab_smtp.start(tmp_path / "auth", tls_cert=cert, tls_key=key, ca_cert=ca_cert,
                          credentials={"user": "notices", "password": "right-pw"})
    try:
        base = {"host": info.host, "port": info.port, "sender": "lpse-ops@lkpp.lab.test", "ca_cert": str(ca_cert)}
        message = smtp_backend.build_message(base["sender"], [("A", "a@lab01.lpse.test")], "s", "t")
        sent = smtp_backend.send(smtp_backend.SmtpSettings(**base, user="notices", password="right-pw"), message)
        assert sent.accepted == ["a@lab01.lpse.test"]
        with pytest.raises(smtp_backend.SmtpAuthError, match="LPSE_OPS_SMTP_PASSWORD"):
            smtp_backend.send(smtp_backend.SmtpSettings(**base, user="notices", password="wrong"), message)
    finally:
        lab_smtp.stop(tmp_path / "auth")


def test_notice_cli_json_sends_and_exits_zero(inventory, server):
    result = CliRunner().invoke(main, ["notice", "send", "-i", str(inventory), "--kind", "maintenance",
                                       "--limit", "site3", "--start", "2037-11-28T22:00", "--duration", "30m",
                                       "--from-version", "1.0", "--to-version", "1.2", "--json", "--yes"])

    assert result.exit_code == 0, result.output
    assert '"ok": true' in result.output
    text = lab_smtp.messages(server.maildir)[0].get_body(("plain",)).get_content()
    assert "Minggu, 29 November 2037 pukul 00.00 WIT" in text


def test_notice_cli_json_without_yes_refuses(inventory):
    result = CliRunner().invoke(main, ["notice", "send", "-i", str(inventory), "--start", "2037-11-28T22:00",
                                       "--duration", "30m", "--from-version", "1.0", "--to-version", "1.2", "--json"])

    assert result.exit_code == 1 and "--yes" in result.output
