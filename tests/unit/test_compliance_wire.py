"""The audit's wire controls (issue 19): the look from the control node against a real OpenSSL server, the SSH
KEXINIT parser, and each control's rule with the offer that breaks it.

The lab test (tests/lab/test_wire_audit.py) audits real sites against ssh-audit and sslscan.
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from lpse_ops.actions import compliance, compliance_wire
from lpse_ops.backends import wire

INTERMEDIATE = ":".join(sorted(compliance_wire.INTERMEDIATE_TLS12))


def kexinit(kex: list[str], host_keys: list[str], ciphers: list[str] | None = None) -> bytes:
    lists = [kex, host_keys, ciphers or ["chacha20-poly1305@openssh.com"], ciphers or ["chacha20-poly1305@openssh.com"],
             ["hmac-sha2-256-etm@openssh.com"], ["hmac-sha2-256-etm@openssh.com"], ["none"], ["none"], [], []]
    body = bytes([wire.SSH_MSG_KEXINIT]) + b"\x07" * 16
    for names in lists:
        text = ",".join(names).encode()
        body += struct.pack(">I", len(text)) + text
    return body + b"\x00" + struct.pack(">I", 0)


def test_a_kexinit_gives_its_lists_and_a_broken_one_is_refused():
    found = wire.parse_kexinit(kexinit(["sntrup761x25519-sha512@openssh.com", "curve25519-sha256"], ["ssh-ed25519"]))
    assert found["kex"] == ["sntrup761x25519-sha512@openssh.com", "curve25519-sha256"]
    assert found["host_keys"] == ["ssh-ed25519"] and found["languages_c2s"] == []
    with pytest.raises(ValueError, match="runs past"):
        wire.parse_kexinit(kexinit(["curve25519-sha256"], ["ssh-ed25519"])[:30])
    with pytest.raises(ValueError, match="not an SSH_MSG_KEXINIT"):
        wire.parse_kexinit(b"\x15" + b"\0" * 40)


def test_ssh_offer_reads_a_servers_kexinit_after_its_version_line():
    """A server speaking the protocol's first steps (a line before its version, then one binary packet)."""
    payload = kexinit(["curve25519-sha256", "ecdh-sha2-nistp256"], ["ecdsa-sha2-nistp256", "ssh-ed25519"])
    padding = 8 - (len(payload) + 5) % 8 + 8
    packet = struct.pack(">IB", len(payload) + padding + 1, padding) + payload + b"\0" * padding
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            connection.sendall(b"hello\r\nSSH-2.0-OpenSSH_9.2p1 Debian-2\r\n" + packet)
            connection.recv(100)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    offer = wire.ssh_offer("127.0.0.1", server.getsockname()[1], timeout=5)
    server.close()
    assert offer["banner"] == "SSH-2.0-OpenSSH_9.2p1 Debian-2"
    assert offer["kex"] == ["curve25519-sha256", "ecdh-sha2-nistp256"]
    assert offer["host_keys"] == ["ecdsa-sha2-nistp256", "ssh-ed25519"]
    assert "error" in wire.ssh_offer("127.0.0.1", 1, timeout=2)  # nothing listens on port 1


@pytest.fixture
def tls_server(tmp_path: Path):
    """Start ``openssl s_server`` (OpenSSL's own server) with the given suites and groups; yield a starter."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: bash scripts/setup.sh installs it")
    from lpse_ops.lab import tls

    ca_cert, ca_key = tls.make_ca(tmp_path, "test CA")
    cert, key = tls.make_server_cert(tmp_path, ca_cert, ca_key, "site", ["site.test"], ["127.0.0.1"])
    started: list[subprocess.Popen] = []

    def start(ciphers: str, groups: str, *extra: str) -> wire.WireTarget:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        process = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert),
                                    "-key", str(key), "-cipher", ciphers, "-groups", groups, "-www", *extra],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started.append(process)
        deadline = time.monotonic() + 15
        while wire.tcp_state("127.0.0.1", port, timeout=1) != "open":
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "openssl s_server did not start"
            time.sleep(0.05)
        return wire.WireTarget(host="site.test", address="127.0.0.1", https_port=port)

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=10)


def test_the_look_finds_exactly_the_suites_and_groups_a_real_openssl_server_accepts(tls_server):
    target = tls_server(INTERMEDIATE, "X25519:prime256v1:secp384r1")
    offer = wire.tls_offer(target, timeout=5)
    assert offer["protocols"] == {"TLSv1": False, "TLSv1.1": False, "TLSv1.2": True, "TLSv1.3": True}, offer
    assert set(offer["tls12_suites"]) == {"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                                          "ECDHE-ECDSA-CHACHA20-POLY1305"}  # an ECDSA key: only its suites
    assert offer["groups"]["X25519"] and offer["groups"]["secp384r1"]
    assert not offer["groups"]["X448"] and not offer["groups"]["secp521r1"]
    assert offer["certificate"]["lifetime_days"] == pytest.approx(397, abs=0.1)
    facts = {"wire": {"tls": offer, "tls_profile": "intermediate"}}
    assert compliance_wire.tls_protocols(facts)[0] == "pass"
    assert compliance_wire.tls_suites(facts)[0] == "pass"
    assert compliance_wire.tls_groups(facts)[0] == "pass"
    # the lab CA's 397 days is over the profile's 366; s_server -www sends no HSTS
    assert compliance_wire.tls_certificate_lifetime(facts) == (
        "fail", "the served certificate is valid for 397 days (at most 366); renew it shorter")
    assert compliance_wire.https_hsts(facts) == ("fail", "no Strict-Transport-Security header on GET /")


def test_a_cbc_suite_an_old_protocol_and_x448_let_in_are_each_named(tls_server):
    target = tls_server(INTERMEDIATE + ":ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0", "X25519:X448", "-min_protocol", "TLSv1.1")
    offer = wire.tls_offer(target, timeout=5)
    facts = {"wire": {"tls": offer, "tls_profile": "intermediate"}}
    status, evidence = compliance_wire.tls_suites(facts)
    assert status == "fail" and evidence.endswith(": ECDHE-ECDSA-AES128-SHA"), evidence
    assert compliance_wire.tls_groups(facts) == (
        "fail", "accepts the key-exchange group(s) X448 (allowed: X25519, prime256v1, secp384r1)")
    assert compliance_wire.tls_protocols(facts) == (
        "fail", "accepts TLSv1.1 (the intermediate profile allows TLSv1.2, TLSv1.3)")


def tls_facts(**changes) -> dict:
    tls = {"protocols": {"TLSv1": False, "TLSv1.1": False, "TLSv1.2": True, "TLSv1.3": True},
           "tls12_suites": ["ECDHE-RSA-AES128-GCM-SHA256"], "groups": {"X25519": True, "X448": False},
           "certificate": {"lifetime_days": 90, "days_left": 60, "not_after": "2027-02-01", "serial": "ab"},
           "hsts": "max-age=63072000"}
    tls.update(changes)
    return {"wire": {"tls": tls, "tls_profile": "intermediate"}}


def test_each_tls_rule_fails_on_the_offer_that_breaks_it():
    assert compliance_wire.tls_protocols(tls_facts(protocols={"TLSv1.1": True, "TLSv1.2": True}))[1].startswith(
        "accepts TLSv1.1")
    modern = tls_facts()
    modern["wire"]["tls_profile"] = "modern"
    assert compliance_wire.tls_protocols(modern) == (
        "fail", "accepts TLSv1.2 (the modern profile allows TLSv1.3)")
    assert compliance_wire.tls_certificate_lifetime(tls_facts(certificate={"lifetime_days": 825, "days_left": 700}))[
        0] == "fail"
    assert compliance_wire.tls_certificate_lifetime(tls_facts(certificate={"lifetime_days": 90, "days_left": -1,
                                                                           "not_after": "x"}))[1].startswith(
        "the served certificate expired")
    assert compliance_wire.https_hsts(tls_facts(hsts="max-age=300"))[0] == "fail"
    assert compliance_wire.https_hsts(tls_facts())[0] == "pass"


def test_a_site_whose_tls_could_not_be_looked_at_fails_every_tls_control_with_the_reason():
    audit = compliance.evaluate("site1", {"wire": {"tls": {"error": "ConnectionRefusedError: refused"}}},
                                compliance.load_catalogue())
    tls = {c["id"]: c for c in audit.controls if c["id"].startswith("tls-")}
    assert set(tls) == {"tls-protocols", "tls-suites", "tls-groups", "tls-certificate-lifetime"}
    assert all(c["status"] == "fail" and "ConnectionRefusedError" in c["evidence"] for c in tls.values()), tls


def ssh_facts(kex: list[str], host_keys: list[str], rsa: bool = False) -> dict:
    return {"wire": {"ssh": {"kex": kex, "host_keys": host_keys}, "ssh_rsa_host_key": rsa}}


GOOD_KEX = ["sntrup761x25519-sha512@openssh.com", "curve25519-sha256", "curve25519-sha256@libssh.org",
            "kex-strict-s-v00@openssh.com"]


def test_ssh_host_keys_and_kex_rules():
    assert compliance_wire.ssh_host_keys_wire(ssh_facts(GOOD_KEX, ["ssh-ed25519"]))[0] == "pass"
    assert compliance_wire.ssh_host_keys_wire(ssh_facts(GOOD_KEX, ["ecdsa-sha2-nistp256", "ssh-ed25519"])) == (
        "fail", "sshd offers host key type(s) ecdsa-sha2-nistp256 (allowed: ed25519)")
    assert compliance_wire.ssh_host_keys_wire(ssh_facts(GOOD_KEX, ["rsa-sha2-512", "ssh-ed25519"]))[0] == "fail"
    assert compliance_wire.ssh_host_keys_wire(ssh_facts(GOOD_KEX, ["rsa-sha2-512", "ssh-ed25519"], rsa=True))[0] == (
        "pass")
    assert compliance_wire.ssh_kex_wire(ssh_facts(GOOD_KEX, []))[0] == "pass"
    status, evidence = compliance_wire.ssh_kex_wire(ssh_facts(["curve25519-sha256", "ecdh-sha2-nistp256"], []))
    assert status == "fail" and "ecdh-sha2-nistp256" in evidence and "no post-quantum hybrid" in evidence
    assert compliance_wire.ssh_kex_wire(ssh_facts(["sntrup761x25519-sha512", *GOOD_KEX], []))[0] == "pass"


def test_postgresql_rules():
    own = {"present": True, "listen_addresses": "localhost", "listening": ["127.0.0.1:5432", "[::1]:5432"],
           "hba": [{"line_number": 3, "type": "local", "database": ["all"], "user_name": ["postgres"],
                    "auth_method": "peer"},
                   {"line_number": 6, "type": "host", "database": ["all"], "user_name": ["all"],
                    "auth_method": "scram-sha-256"}]}
    closed = {"wire": {"postgresql": {"from_control_node": "no answer"}}, "postgresql": own}
    assert compliance_wire.postgresql_local_only(closed)[0] == "pass"
    assert compliance_wire.postgresql_auth(closed)[0] == "pass"
    exposed = {"wire": {"postgresql": {"from_control_node": "open"}},
               "postgresql": {**own, "listen_addresses": "*", "listening": ["0.0.0.0:5432", "[::]:5432"]}}
    status, evidence = compliance_wire.postgresql_local_only(exposed)
    assert status == "fail" and "listens on 0.0.0.0:5432, [::]:5432" in evidence and "answers from" in evidence
    # listening everywhere is a finding even when a firewall keeps the port from answering
    assert compliance_wire.postgresql_local_only({**exposed, "wire": closed["wire"]})[0] == "fail"
    trust = {**own, "hba": own["hba"] + [{"line_number": 9, "type": "host", "database": ["all"],
                                           "user_name": ["all"], "auth_method": "trust"}]}
    assert compliance_wire.postgresql_auth({"postgresql": trust}) == (
        "fail", "line 9: host all all uses trust over TCP (only scram-sha-256)")


def test_the_audits_tls_12_suites_are_the_ones_the_nginx_role_writes():
    """One list in two places (the role's vars, the audit's rule): a suite added to one only would make the audit
    fail a site the role configured, or pass one it did not."""
    import yaml

    role_vars = yaml.safe_load((Path(__file__).resolve().parents[2] / "roles" / "nginx" / "vars" / "main.yml")
                               .read_text())
    assert set(role_vars["__nginx_intermediate_ciphers"]) == compliance_wire.INTERMEDIATE_TLS12
    assert set(role_vars["__nginx_curves"]) == compliance_wire.GOOD_GROUPS
