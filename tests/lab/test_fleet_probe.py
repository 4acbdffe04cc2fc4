"""The fleet probe against the lab's real sshd and SPSE: a full probe, a wrong key, a wrong or unknown host
key; a stopped PostgreSQL, a full file system and an expired certificate, each shown as its own site's
fault while the others are unaffected."""

from __future__ import annotations

import asyncio
import shlex
import ssl
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest

from lpse_ops.actions import probe_rules
from lpse_ops.backends import ssh_probe
from tests.lab.labkit import PORT_BASE, SITES, on_site, run_cli, ssh_logins

# Seconds each site has to answer in these tests: the lab shares two cores with other work, where a
# probe (an SSH handshake, apt's list, lpse-backup status) has been seen to take over 10 s.
PROBE_TIMEOUT = "60"


@pytest.fixture
def site1_target(lab) -> ssh_probe.Target:
    from lpse_ops.lab import lab as lab_actions

    folder = lab_actions.lab_dir()
    return ssh_probe.Target("site1", "127.0.0.1", PORT_BASE + 1, user="lpse-admin", key_file=str(folder / "id_ed25519"),
                            known_hosts_file=str(folder / "known_hosts"), strict_host_key_checking="yes",
                            facts=ssh_probe.site_facts({}))


def raw(target: ssh_probe.Target, timeout: float = 15.0) -> ssh_probe.RawResult:
    return ssh_probe.run_probes([target], timeout=timeout)[0]


def test_probe_of_a_lab_site_reads_a_full_probe(site1_target, installed):
    result = raw(site1_target)
    assert result.error is None, result.error_detail
    probe = probe_rules.to_probe(result)
    assert probe.reachable and probe.spse_version == "1.0" and probe.cpus and probe.disks


def logins_now(host: str, bound_s: float = 15) -> int:
    """Return the SSH logins the host's journal holds once every message logged before this call is in it.

    A marker goes through the same syslog socket as sshd's messages; once the journal shows it (polled,
    bounded), every login made before it is counted.
    """
    mark = f"barrier-{time.time_ns()}"
    on_site(f"logger -t fleet-probe-test {mark}", site=host)
    deadline = time.monotonic() + bound_s
    while mark not in on_site("journalctl --no-pager -o cat -t fleet-probe-test", site=host):
        assert time.monotonic() < deadline, f"the journal of {host} never showed {mark}"
        time.sleep(0.2)
    return ssh_logins(host)


def test_kept_probes_reuse_one_login_and_reconnect_a_broken_connection(site1_target, installed):
    logins = [logins_now("site1")]

    async def rounds() -> list[ssh_probe.RawResult]:
        async with ssh_probe.KeptProbes(timeout=60) as kept:
            results = await kept.run([site1_target])
            logins.append(logins_now("site1"))
            results += await kept.run([site1_target])  # the same connection and shell: no new login
            logins.append(logins_now("site1"))
            kept.shells["site1"].conn.abort()  # the connection breaks: the next round connects again
            results += await kept.run([site1_target])
            logins.append(logins_now("site1"))
        return results

    results = asyncio.run(rounds())
    for result in results:
        assert result.error is None, result.error_detail
        probe = probe_rules.to_probe(result)
        assert probe.reachable and probe.error_detail is None and probe.spse_version == "1.0", probe
    first = logins[0]
    assert logins == [first, first + 1, first + 1, first + 2], logins  # logins in rounds 1 and 3 only


def test_fleet_status_watch_probes_twice_over_one_login(installed):
    before = logins_now("site1")
    code, report, output = run_cli("fleet", "status", "--limit", "site1", "--timeout", PROBE_TIMEOUT, "--watch", "0",
                                   "--rounds", "2", "--json")
    assert report is not None and len(report["rounds"]) == 2, output
    first, second = report["rounds"]
    assert first["run_id"] != second["run_id"]  # each round is its own run, stored
    for status in (first, second):
        (site,) = status["sites"]
        assert site["host"] == "site1" and site["reachable"] and site["spse_version"] == "1.0", site
    assert logins_now("site1") == before + 1  # the second round reused the first round's login


def test_wrong_private_key_is_auth_failed(site1_target, tmp_path: Path):
    key = tmp_path / "wrong"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(key))
    result = raw(replace(site1_target, key_file=str(key)))
    assert result.error == "auth_failed", result.error_detail


def test_wrong_host_key_is_host_key_mismatch_even_with_accept_new(site1_target, tmp_path: Path):
    known = tmp_path / "known_hosts"
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    known.write_text(f"[127.0.0.1]:{PORT_BASE + 1} {impostor}\n")
    result = raw(replace(site1_target, known_hosts_file=str(known), strict_host_key_checking="accept-new"))
    assert result.error == "host_key_mismatch", result.error_detail


def test_unknown_host_key_refused_only_when_strict(site1_target, tmp_path: Path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    assert raw(replace(site1_target, known_hosts_file=str(empty))).error == "host_key_unknown"
    accepted = raw(replace(site1_target, known_hosts_file=str(empty), strict_host_key_checking="accept-new"))
    assert accepted.error is None, accepted.error_detail


def fleet_status() -> tuple[int, dict, str]:
    code, report, output = run_cli("fleet", "status", "--json", "--timeout", PROBE_TIMEOUT)
    assert report is not None, output
    return code, report, output


def test_stopped_postgresql_is_that_sites_fault_and_the_others_are_unaffected(installed):
    code, before, output = fleet_status()
    on_site("systemctl stop postgresql@15-main", site="site2")
    try:
        code, after, output = fleet_status()
    finally:
        on_site("systemctl start postgresql@15-main", site="site2")
    assert code in (3, 4) and after is not None, output

    def faults(report: dict) -> dict[str, set[str]]:
        return {site["host"]: {fault["code"] for fault in site["faults"]} for site in report["sites"]}

    now, then = faults(after), faults(before)
    assert "postgresql_down" in now["site2"] and "postgresql_down" not in then["site2"], now
    # the others are probed as before: reachable, their database and SPSE up (load or backup ages may move)
    for host in now.keys() - {"site2"}:
        assert not now[host] & {"postgresql_down", "spse_unhealthy", "spse_down", "unreachable", "timeout"}, now
    assert {site["host"] for site in after["sites"]} == {site["host"] for site in before["sites"]}


# -- a full file system and an expired certificate, at once, on two sites ----------------------------

CERT_SITE = "site1"
DISK_SITE = f"site{SITES}"  # the last site: no backups or timers on it (the backup tests use site1)
DATA_DIR = "/var/lib/spse"  # site_spse_data_dir, one of the paths the probe measures with df
TLS = "/etc/nginx/tls"
KEEP = "/root/fleet-probe-test"


def expired_certificate() -> tuple[str, str, datetime]:
    """Return (certificate PEM, key PEM, notAfter) of a self-signed certificate that expired a day ago."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{CERT_SITE}.lab.test")])
    now = datetime.now(UTC).replace(microsecond=0)
    not_after = now - timedelta(days=1)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=30))
            .not_valid_after(not_after).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem, not_after


def served_certificate(site: str) -> str:
    """Return the PEM certificate nginx presents on *site*'s published HTTPS port (no verification)."""
    port = PORT_BASE + 100 + int(site.removeprefix("site"))
    return ssl.get_server_certificate(("127.0.0.1", port), timeout=10)


def same_pem(one: str, other: str) -> bool:
    return ssl.PEM_cert_to_DER_cert(one) == ssl.PEM_cert_to_DER_cert(other)


def wait_served(site: str, pem: str, bound_s: float = 30) -> None:
    """Poll (bounded) until nginx on *site* presents certificate *pem* (a reload is graceful)."""
    deadline = time.monotonic() + bound_s
    while not same_pem(served_certificate(site), pem):
        assert time.monotonic() < deadline, f"nginx on {site} still presents another certificate"
        time.sleep(0.2)


def install_certificate(site: str, cert_pem: str, key_pem: str) -> None:
    on_site(f"printf %s {shlex.quote(key_pem)} > {TLS}/spse.key && printf %s {shlex.quote(cert_pem)} > {TLS}/spse.crt"
            " && nginx -t -q && systemctl reload nginx", site=site)


def fill_data_dir(site: str) -> int:
    """Put DATA_DIR on a small tmpfs holding a copy of its files, fill it to the last byte; return its KiB."""
    used_kib = int(on_site(f"du -sk {DATA_DIR} | cut -f1", site=site).split()[0])
    size_kib = used_kib + 16 * 1024
    on_site(f"rm -rf /tmp/spse-copy && cp -a {DATA_DIR} /tmp/spse-copy && "
            f"mount -t tmpfs -o size={size_kib}k,mode=0755 tmpfs {DATA_DIR} && cp -a /tmp/spse-copy/. {DATA_DIR}/ && "
            f"rm -rf /tmp/spse-copy", site=site)
    # dd stops at ENOSPC: the file system is full for real, not a df figure made up
    out = on_site(f"dd if=/dev/zero of={DATA_DIR}/zz-fill bs=64k 2>&1; df -Pk {DATA_DIR} | tail -n1", check=False,
                  site=site)
    assert "No space left on device" in out, out
    return size_kib


def free_data_dir(site: str) -> None:
    on_site(f"rm -f {DATA_DIR}/zz-fill; umount {DATA_DIR} || umount -l {DATA_DIR}", site=site)
    assert on_site(f"findmnt -n {DATA_DIR}", check=False, site=site).strip() == ""


def by_host(report: dict) -> dict[str, dict]:
    return {site["host"]: site for site in report["sites"]}


def codes_of(site: dict) -> set[str]:
    return {fault["code"] for fault in site["faults"]}


def test_full_disk_and_expired_certificate_are_each_their_own_sites_fault(installed):
    if CERT_SITE == DISK_SITE:
        pytest.skip("needs two sites")
    code, before, output = fleet_status()
    for host, site in by_host(before).items():
        assert not codes_of(site) & {"disk_full", "cert_expired", "cert_expiring"}, (host, site["faults"])
    original = served_certificate(CERT_SITE)
    cert_pem, key_pem, not_after = expired_certificate()
    on_site(f"mkdir -p {KEEP} && cp -p {TLS}/spse.crt {TLS}/spse.key {KEEP}/", site=CERT_SITE)
    try:
        install_certificate(CERT_SITE, cert_pem, key_pem)
        wait_served(CERT_SITE, cert_pem)  # nginx presents the expired certificate: the fault is real
        size_kib = fill_data_dir(DISK_SITE)
        try:
            code, after, output = fleet_status()
        finally:
            free_data_dir(DISK_SITE)
    finally:
        on_site(f"cp -p {KEEP}/spse.crt {KEEP}/spse.key {TLS}/ && nginx -t -q && systemctl reload nginx && "
                f"rm -rf {KEEP}", site=CERT_SITE)
    wait_served(CERT_SITE, original)
    assert code in (3, 4), output
    sites = by_host(after)
    assert sites.keys() == by_host(before).keys()

    # the certificate: read from the site by openssl (its notAfter to the second), judged expired
    cert_site = sites[CERT_SITE]
    assert datetime.fromisoformat(cert_site["cert_not_after"]) == not_after, cert_site["cert_not_after"]
    expired = [f for f in cert_site["faults"] if f["code"] == "cert_expired"]
    assert expired and expired[0]["severity"] == "critical", cert_site["faults"]
    assert "disk_full" not in codes_of(cert_site), cert_site["faults"]

    # the disk: df of the data folder on the site, the tmpfs's own size, no space left: critical
    disk_site = sites[DISK_SITE]
    data = next(disk for disk in disk_site["disks"] if disk["path"] == DATA_DIR)
    assert data["mount"] == DATA_DIR and data["size_kb"] == size_kib, data
    assert data["available_kb"] < 64 and data["used_percent"] > 99, data
    full = [f for f in disk_site["faults"] if f["code"] == "disk_full"]
    assert full and full[0]["severity"] == "critical" and DATA_DIR in full[0]["message"], disk_site["faults"]
    assert not codes_of(disk_site) & {"cert_expired", "cert_expiring"}, disk_site["faults"]

    # every other site: probed as before, neither fault, and nothing else down
    for host in sites.keys() - {CERT_SITE, DISK_SITE}:
        assert sites[host]["reachable"], sites[host]
        assert not codes_of(sites[host]) & {"disk_full", "cert_expired", "unreachable", "timeout"}, sites[host]
    # and the two sites' other facts are unaffected by the other's fault
    assert not any(d["used_percent"] and d["used_percent"] > 90 for d in cert_site["disks"]), cert_site["disks"]
    assert datetime.fromisoformat(disk_site["cert_not_after"]) > datetime.now(UTC), disk_site["cert_not_after"]
