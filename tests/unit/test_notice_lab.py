"""The lab's SMTP wiring without containers: the server on BASE+99 (idempotent, STARTTLS with the lab CA)
and the inventory's lpse_smtp_* variables and site_contacts."""

from __future__ import annotations

import pytest
import yaml

from lpse_ops.actions.notice import site_targets
from lpse_ops.backends import smtp as smtp_backend
from lpse_ops.lab import lab as lab_actions
from lpse_ops.lab import smtp as lab_smtp
from lpse_ops.lab import tls

pytest.importorskip("aiosmtpd", reason="the lab's SMTP server needs aiosmtpd: pip install -e '.[dev]'")


def _free_base() -> int:
    while True:
        port = lab_smtp.free_port()
        if port - lab_actions.SMTP_PORT_OFFSET >= 1024:
            return port - lab_actions.SMTP_PORT_OFFSET


def _send_one(mail: dict) -> list[str]:
    """Send one message through the lab's SMTP server *mail* (start_smtp's settings), STARTTLS required and the
    server's certificate verified against the lab CA; return the recipients it accepted."""
    settings = smtp_backend.settings({"lpse_smtp_host": mail["host"], "lpse_smtp_port": mail["port"],
                                      "lpse_smtp_from": mail["from"], "lpse_smtp_ca_cert": mail["ca_cert"]},
                                     environ={"LPSE_OPS_SMTP_STARTTLS": "require"})
    message = smtp_backend.build_message(settings.sender, [("Kepala LPSE Lab 01", "kepala@lab01.lpse.test")],
                                         "Uji", "isi")
    return smtp_backend.send(settings, message).accepted


@pytest.mark.real_clock("the lab CA is made with Python's clock, OpenSSL verifies it with the C library's")
def test_lab_start_smtp_twice_same_server_delivers_over_verified_tls():
    tls_dir = lab_actions.lab_dir() / "tls"
    tls_dir.mkdir()
    tls.make_ca(tls_dir, "unit lab CA")
    base = _free_base()
    try:
        first = lab_actions.start_smtp(base)
        pid = lab_smtp.running(lab_actions.lab_dir() / "smtp").pid
        second = lab_actions.start_smtp(base)

        assert first == second and first["port"] == base + 99 and first["host"] == "127.0.0.1"
        assert lab_smtp.running(lab_actions.lab_dir() / "smtp").pid == pid
        assert _send_one(first) == ["kepala@lab01.lpse.test"]
        assert [m["Subject"] for m in lab_smtp.messages(first["maildir"])] == ["Uji"]
    finally:
        assert lab_smtp.stop(lab_actions.lab_dir() / "smtp")
    assert lab_smtp.running(lab_actions.lab_dir() / "smtp") is None


@pytest.mark.real_clock("the lab CA is made with Python's clock, OpenSSL verifies it with the C library's")
def test_a_lab_brought_up_again_with_a_new_ca_gets_an_smtp_certificate_from_that_ca():
    """`lab down` keeps the lab's folder; the next `lab up` makes a new CA. The SMTP server's certificate from
    before was then kept, signed by the old CA, and every maintenance notice failed with "certificate signature
    failure" (seen on a lab brought up again). Now it is issued again by the new CA, as a real client checks."""
    tls_dir = lab_actions.lab_dir() / "tls"
    tls_dir.mkdir()
    tls.make_ca(tls_dir, "unit lab CA")
    base = _free_base()
    try:
        lab_actions.start_smtp(base)
        old = (tls_dir / "smtp.crt").read_bytes()
        assert lab_smtp.stop(lab_actions.lab_dir() / "smtp")  # lab down
        tls.make_ca(tls_dir, "unit lab CA, the second")  # lab up: a new CA
        assert not tls.issued_by(tls_dir / "smtp.crt", tls_dir / "ca.crt")
        mail = lab_actions.start_smtp(base)
        assert (tls_dir / "smtp.crt").read_bytes() != old and tls.issued_by(tls_dir / "smtp.crt", tls_dir / "ca.crt")
        assert _send_one(mail) == ["kepala@lab01.lpse.test"]
    finally:
        lab_smtp.stop(lab_actions.lab_dir() / "smtp")


def test_lab_write_inventory_smtp_vars_and_contacts_for_every_site():
    plan = lab_actions.plan(sites=3, port_base=2220, name="unit")
    offsite = {"endpoint_hosts": "https://offsite:8333", "bucket": "b", "region": "us-east-1", "ca_cert": "/ca",
               "lock_days": 1, "credentials": {f"site-lab0{i}": {"access_key": "A", "secret_key": "S"}
                                               for i in (1, 2, 3)}}
    mail = {"host": "127.0.0.1", "port": 2319, "maildir": "/m", "ca_cert": "/ca.crt", "from": "lpse-ops@lkpp.lab.test"}

    path = lab_actions.write_inventory(plan, offsite, mail)

    data = yaml.safe_load(path.read_text())["all"]
    assert {key: data["vars"][key] for key in ("lpse_smtp_host", "lpse_smtp_port", "lpse_smtp_from")} == \
        {"lpse_smtp_host": "127.0.0.1", "lpse_smtp_port": 2319, "lpse_smtp_from": "lpse-ops@lkpp.lab.test"}
    hosts = data["children"]["sites"]["hosts"]
    assert hosts["site1"]["site_contacts"] == [{"name": "Kepala LPSE Lab 01", "email": "kepala@lab01.lpse.test"},
                                               {"name": "Admin PPE", "email": "admin@lab01.lpse.test"}]
    targets, problems = site_targets(hosts, ["site1", "site2", "site3"])
    assert problems == [] and [t.timezone for t in targets] == ["Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura"]
