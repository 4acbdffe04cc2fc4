"""Install SPSE 1.0 from a signed bundle on the lab sites, through the CLI, and prove it serves."""

from __future__ import annotations

import json
import ssl
import urllib.request

import pytest
import testinfra

from tests.lab.labkit import SITE, SITES, run_cli
from tests.lab.test_secrets_cmdline import assert_no_secret_on_a_command_line


def https(port: int, path: str, data: bytes | None = None, method: str = "GET", content_type: str | None = None):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(f"https://127.0.0.1:{port}{path}", data=data, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, context=context, timeout=15) as answer:
        return answer.status, answer.read()


def site_hosts(lab) -> list[dict]:
    return [h for h in lab["hosts"] if h["role"] == "site"]


def test_install_every_site_serves_version_through_nginx(lab, installed):
    assert installed["result"] == "ok"
    for host in site_hosts(lab):
        assert installed["health"][host["name"]]["version"] == "1.0"
        status, body = https(host["https_port"], "/health")
        health = json.loads(body)
        assert status == 200 and health["version"] == "1.0" and health["schema_version"] == 1, health


# The second run and the check-mode run each take one site (the roles run alike on every site; the CPU of
# a whole-fleet rerun is CI time): SITE, whose every command line the second run also reads for secrets, and the
# last site (its own zone). The second run is also the proof that the guard lets the same version in again.
LAST = f"site{SITES}"


def test_install_second_run_is_allowed_changes_nothing_and_puts_no_secret_on_a_command_line(lab, installed, release):
    report = assert_no_secret_on_a_command_line(
        lambda: run_cli("install", str(release["bundles"]["1.0"]), "--trusted-keys", str(release["trusted"]),
                        "--limit", SITE, "--json"),
        expect_on_site="psql-login-probe")  # the login probe with the password on stdin (roles/postgresql)
    changed = {name: host["changed"] for name, host in report["hosts"].items()}
    assert changed == {SITE: 0}, changed
    assert report["result"] == "ok" and report["health"][SITE]["version"] == "1.0", report


def test_install_check_mode_on_installed_sites_changes_nothing(lab, installed, release):
    code, report, output = run_cli("install", str(release["bundles"]["1.0"]), "--trusted-keys",
                                   str(release["trusted"]), "--limit", LAST, "--check", "--json")
    assert code == 0, output
    changed = {name: host["changed"] for name, host in report["hosts"].items()}
    assert changed == {LAST: 0}, changed


def test_install_recorded_in_state_store_and_audit_log(lab, installed):
    code, run, output = run_cli("runs", "show", str(installed["run_id"]), "--json")
    assert code == 0, output
    assert run["operation"] == "install" and run["result"] == "ok"
    assert sorted(run["hosts"]) == sorted(h["name"] for h in site_hosts(lab))
    code, verdict, output = run_cli("audit-log", "verify", "--json")
    assert code == 0 and verdict["ok"], output


def test_tender_and_document_round_trip_through_nginx(lab, installed):
    port = site_hosts(lab)[0]["https_port"]
    tender = json.dumps({"code": "T-2026-001", "title": "Pengadaan laptop", "agency": "Dinas Kominfo"}).encode()
    status, body = https(port, "/tenders", tender, "POST", "application/json")
    assert status == 201
    tender_id = json.loads(body)["id"]
    document = b"%PDF-1.4 dokumen penawaran\n" * 100
    status, body = https(port, f"/tenders/{tender_id}/documents?name=penawaran.pdf", document, "POST",
                         "application/octet-stream")
    assert status == 201
    document_id = json.loads(body)["id"]
    status, body = https(port, f"/documents/{document_id}")
    assert status == 200 and body == document


@pytest.mark.parametrize("index", [0, 1])
def test_site_host_state_with_testinfra(lab, installed, index):
    from lpse_ops.lab import lab as lab_actions

    site = site_hosts(lab)[index]
    key = lab_actions.lab_dir() / "id_ed25519"
    known = lab_actions.lab_dir() / "known_hosts"
    host = testinfra.get_host(f"ssh://lpse-admin@127.0.0.1:{site['ssh_port']}", ssh_identity_file=str(key),
                              sudo=True, ssh_extra_args=f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=no")
    for service in ("spse", "nginx", "postgresql"):
        assert host.service(service).is_running, service
        assert host.service(service).is_enabled, service
    current = host.file("/opt/spse/current")
    assert current.is_symlink and current.linked_to == "/opt/spse/releases/1.0"
    documents = host.file("/var/lib/spse/documents")
    assert documents.is_directory and documents.user == "spse" and documents.mode == 0o750
    assert host.socket("tcp://127.0.0.1:5432").is_listening
    assert not host.socket("tcp://0.0.0.0:5432").is_listening
    assert host.socket("tcp://0.0.0.0:443").is_listening
    assert host.file("/etc/spse/spse.env").mode == 0o640
