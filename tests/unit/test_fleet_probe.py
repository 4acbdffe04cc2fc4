"""The fleet probe: the parser on outputs captured from the demo lab, each fault rule on both sides of its
threshold, connection failures provoked for real (a closed port, a silent listener), and migration 0005 on
an SQLite store. A real sshd with a wrong key or host key: tests/lab/test_fleet_probe.py."""

from __future__ import annotations

import json
import socket
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest
from alembic import command
from sqlalchemy import inspect

from lpse_ops.actions import backup, fleet_status, probe_rules
from lpse_ops.backends import ssh_probe
from lpse_ops.state import StateStore
from lpse_ops.state.store import alembic_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "probe"
NOW = datetime(2026, 11, 28, 6, 48, 0, tzinfo=UTC)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def parsed(name: str = "site1-healthy-backups.txt", now: datetime = NOW) -> ssh_probe.SiteProbe:
    return ssh_probe.parse_output("site1", "127.0.0.1:2221", fixture(name), now)


def codes(faults: list[ssh_probe.Fault]) -> set[str]:
    return {fault.code for fault in faults}


# -- the parser, on real outputs ----------------------------------------------------------------


def test_parse_output_healthy_site_reads_every_fact() -> None:
    probe = parsed()
    assert probe.reachable and probe.spse_active == "active" and probe.nginx_active == "active"
    assert probe.postgresql_active == "active" and probe.postgresql_ready is True
    assert probe.spse_version == "1.2" and probe.schema_version == 3 and probe.spse_health["status"] == "ok"
    assert [d.path for d in probe.disks] == ["/", "/var/lib/postgresql/15/main", "/var/lib/spse"]
    assert probe.disks[0].mount == "/" and probe.disks[0].used_percent == pytest.approx(30.1, abs=0.1)
    assert probe.memory_total_kb == 24684096 and probe.cpus == 2 and probe.load == (3.05, 3.38, 4.83)
    assert probe.cert_not_after == "2029-03-02T05:57:42+00:00" and probe.cert_error is None
    assert probe.security_updates == 17 and probe.frozen is False
    assert probe.backup["pgbackrest"]["repos"]["1"]["backups"] == 18
    assert probe.clock_skew_s is not None


def test_parse_output_site_without_backup_tool_has_no_backup() -> None:
    probe = parsed("site2-no-backup-tool.txt")
    assert probe.backup is None and probe.backup_error is None and probe.spse_version == "1.0"
    assert codes(fleet_status.backup_faults(probe, None, backup.Thresholds(), NOW)) == {"backup_not_set_up"}


@pytest.mark.parametrize(("line", "expected"), [("tool_sha256=" + "ab" * 32, "ab" * 32), ("tool_sha256=", None),
                                              ("tool_sha256=not a digest", None), ("", None)])
def test_parse_output_reads_the_site_tools_sha256_and_nothing_else(line: str, expected: str | None) -> None:
    """The upgrade plan skips copying a site tool the site already has: only a whole sha256 counts."""
    text = fixture("site1-healthy-backups.txt").replace("backup_rc=", f"{line}\nbackup_rc=", 1)
    assert ssh_probe.parse_output("site1", "127.0.0.1:2221", text, NOW).tool_sha256 == expected


def test_parse_output_postgresql_stopped_is_a_postgresql_and_spse_fault() -> None:
    probe = parsed("site2-postgresql-stopped.txt")
    assert probe.postgresql_active == "inactive" and probe.postgresql_ready is False
    found = codes(probe_rules.system_faults(probe, now=NOW))
    assert {"postgresql_down", "spse_unhealthy"} <= found and "nginx_down" not in found


def test_parse_output_truncated_output_is_refused() -> None:
    text = fixture("site1-healthy-backups.txt")
    with pytest.raises(ssh_probe.ProbeOutputError, match="ends early"):
        ssh_probe.parse_output("site1", "a", text.replace("end=1", ""), NOW)
    with pytest.raises(ssh_probe.ProbeOutputError, match="not a probe output"):
        ssh_probe.parse_output("site1", "a", "Welcome!\n", NOW)


def test_parse_cert_date_reads_openssl_enddate() -> None:
    assert ssh_probe.parse_cert_date("notAfter=Mar  2 05:57:42 2029 GMT") == datetime(2029, 3, 2, 5, 57, 42, tzinfo=UTC)
    assert ssh_probe.parse_cert_date("notAfter=Dec 31 23:59:59 2030 GMT") == datetime(2030, 12, 31, 23, 59, 59,
                                                                                       tzinfo=UTC)
    assert ssh_probe.parse_cert_date("Could not open file") is None
    assert ssh_probe.parse_cert_date("notAfter=Mar  2 05:57:42 2029 WIB") is None  # openssl prints GMT only
    assert ssh_probe.parse_cert_date("notAfter=Mrz  2 05:57:42 2029 GMT") is None
    assert ssh_probe.parse_cert_date("notAfter=Feb 30 05:57:42 2029 GMT") is None


def test_probe_script_runs_under_sh_and_prints_one_complete_probe(tmp_path: Path) -> None:
    # the real script, run here by dash: valid shell, collected and printed at once, parsed whole
    facts = replace(ssh_probe.site_facts({}), spse_base_dir=str(tmp_path / "spse"), spse_data_dir=str(tmp_path),
                    spse_url="http://127.0.0.1:9", nginx_cert_path=str(tmp_path / "missing.crt"))
    (tmp_path / "spse" / "current").mkdir(parents=True)
    (tmp_path / "spse" / "current" / "VERSION").write_text("1.2\n")
    done = subprocess.run(["sh", "-c", ssh_probe.probe_script(facts)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.stdout.startswith("probe=1\n") and done.stdout.endswith("\nend=1\n"), done.stdout[-300:]
    probe = ssh_probe.parse_output("here", "127.0.0.1:22", done.stdout)
    assert probe.spse_version == "1.2" and probe.cert_not_after is None and probe.cpus
    assert any(disk.path == str(tmp_path) and disk.size_kb for disk in probe.disks), probe.disks



def _cert_with_end(directory: Path, stem: str, days: int) -> tuple[Path, Path, datetime]:
    """A self-signed certificate valid for *days* from now (whole seconds); returns (cert, key, notAfter)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)])
    now = datetime.now(UTC).replace(microsecond=0)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=days)).sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, now + timedelta(days=days)


def _probe_cert(tmp_path: Path, cert_file: Path) -> ssh_probe.SiteProbe:
    facts = replace(ssh_probe.site_facts({}), spse_base_dir=str(tmp_path / "spse"), spse_data_dir=str(tmp_path),
                    spse_url="http://127.0.0.1:9", nginx_cert_path=str(cert_file))
    done = subprocess.run(["sh", "-c", ssh_probe.probe_script(facts)], capture_output=True, text=True, timeout=120,
                          check=False)
    return ssh_probe.parse_output("here", "127.0.0.1:22", done.stdout)


def test_probe_reads_the_certificate_nginx_serves_not_the_file(tmp_path: Path, monkeypatch) -> None:
    # acme mode: nginx serves certbot's certificate while /etc/nginx/tls/spse.crt holds the self-signed fallback
    import ssl
    import threading

    from lpse_ops.backends import probe_output

    served_cert, served_key, served_end = _cert_with_end(tmp_path, "served", 60)
    file_cert, _, _ = _cert_with_end(tmp_path, "file", 300)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(served_cert, served_key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    monkeypatch.setattr(probe_output, "NGINX_HTTPS_PORT", port)

    def serve() -> None:
        with listener:
            connection, _ = listener.accept()
            try:
                with context.wrap_socket(connection, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    probe = _probe_cert(tmp_path, file_cert)
    thread.join(timeout=30)
    assert probe.cert_not_after == served_end.isoformat(), (probe.cert_not_after, probe.cert_error)


def test_probe_reads_the_certificate_file_when_no_handshake_completes(tmp_path: Path, monkeypatch) -> None:
    from lpse_ops.backends import probe_output

    file_cert, _, file_end = _cert_with_end(tmp_path, "file", 300)
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    monkeypatch.setattr(probe_output, "NGINX_HTTPS_PORT", port)  # nothing listens there now (nginx down)
    probe = _probe_cert(tmp_path, file_cert)
    assert probe.cert_not_after == file_end.isoformat(), (probe.cert_not_after, probe.cert_error)


# -- the fault rules, each side of its threshold ------------------------------------------------


def healthy() -> ssh_probe.SiteProbe:
    probe = parsed()
    probe.security_updates = 0
    probe.clock_skew_s = 0.0
    return probe


def test_system_faults_healthy_site_has_none() -> None:
    assert probe_rules.system_faults(healthy(), now=NOW) == []


@pytest.mark.parametrize(("field", "value", "code"), [
    ("spse_active", "failed", "spse_down"), ("nginx_active", "inactive", "nginx_down"),
    ("postgresql_active", "inactive", "postgresql_down"), ("postgresql_ready", False, "postgresql_down"),
    ("spse_health", {"status": "degraded"}, "spse_unhealthy"),
    ("spse_health", None, "spse_unhealthy"),
    ("spse_health", {"status": "ok", "expected_schema_version": 4}, "schema_mismatch"),
])
def test_system_faults_service_stopped_is_critical(field: str, value: object, code: str) -> None:
    probe = replace(healthy(), **{field: value})
    faults = [fault for fault in probe_rules.system_faults(probe, now=NOW) if fault.code == code]
    assert faults and faults[0].severity == ssh_probe.CRITICAL


def test_system_faults_no_release_installed_warns() -> None:
    faults = probe_rules.system_faults(replace(healthy(), spse_version=None), now=NOW)
    assert [(f.code, f.severity) for f in faults] == [("version_unknown", ssh_probe.WARNING)]


@pytest.mark.parametrize(("used", "available", "severity"), [
    (90, 10, None), (901, 99, ssh_probe.WARNING), (95, 5, ssh_probe.WARNING), (951, 49, ssh_probe.CRITICAL)])
def test_system_faults_disk_above_90_percent_warns_above_95_is_critical(used: int, available: int,
                                                                        severity: str | None) -> None:
    probe = healthy()
    probe.disks = [ssh_probe.Disk("/var/lib/spse", "/srv", 1000, used, available)]
    faults = [f for f in probe_rules.system_faults(probe, now=NOW) if f.code == "disk_full"]
    assert [f.severity for f in faults] == ([severity] if severity else [])


def test_system_faults_same_mount_counted_once_missing_path_reported() -> None:
    probe = healthy()
    probe.disks = [ssh_probe.Disk("/", "/", 100, 99, 1), ssh_probe.Disk("/var/lib/spse", "/", 100, 99, 1),
                   ssh_probe.Disk("/var/lib/postgresql/15/main", None, None, None, None)]
    assert [f.code for f in probe_rules.system_faults(probe, now=NOW)] == ["disk_full", "disk_path_missing"]


@pytest.mark.parametrize(("days", "code"), [(14.01, None), (13.99, "cert_expiring"), (0.5, "cert_expiring"),
                                            (-0.01, "cert_expired")])
def test_system_faults_certificate_expiring_within_14_days(days: float, code: str | None) -> None:
    probe = replace(healthy(), cert_not_after=(NOW + timedelta(days=days)).isoformat())
    found = codes(probe_rules.system_faults(probe, now=NOW)) & {"cert_expiring", "cert_expired"}
    assert found == ({code} if code else set())


def test_system_faults_unreadable_certificate_warns() -> None:
    probe = replace(healthy(), cert_not_after=None, cert_error="unable to load certificate")
    assert codes(probe_rules.system_faults(probe, now=NOW)) == {"cert_unreadable"}


@pytest.mark.parametrize(("available_kb", "low"), [(1000, False), (999, True)])
def test_system_faults_memory_below_10_percent(available_kb: int, low: bool) -> None:
    probe = replace(healthy(), memory_total_kb=10000, memory_available_kb=available_kb)
    assert ("memory_low" in codes(probe_rules.system_faults(probe, now=NOW))) is low


@pytest.mark.parametrize(("load5", "high"), [(4.0, False), (4.01, True)])
def test_system_faults_load_above_twice_the_cpus(load5: float, high: bool) -> None:
    probe = replace(healthy(), load=(9.0, load5, 1.0), cpus=2)
    assert ("load_high" in codes(probe_rules.system_faults(probe, now=NOW))) is high


@pytest.mark.parametrize(("count", "skew", "expected"), [(0, 120, set()), (1, 0, {"security_updates"}),
                                                         (0, -121, {"clock_skew"})])
def test_system_faults_security_updates_and_clock(count: int, skew: float, expected: set[str]) -> None:
    probe = replace(healthy(), security_updates=count, clock_skew_s=skew)
    assert codes(probe_rules.system_faults(probe, now=NOW)) == expected


def site1_backup(now_offset: timedelta) -> tuple[ssh_probe.SiteProbe, datetime]:
    """The captured site1 probe, judged *now_offset* after its newest backup and archived WAL."""
    probe = parsed()
    newest = datetime.fromisoformat(probe.backup["pgbackrest"]["repos"]["1"]["last_backup"]["time"])
    output = json.loads(json.dumps(probe.backup))
    for repo in output["restic"].values():
        repo["last_snapshot_time"] = output["pgbackrest"]["repos"]["1"]["last_backup"]["time"]
    output["wal_archiving"]["last_archived_time"] = (newest + now_offset - timedelta(minutes=1)).isoformat()
    output["last_verify"]["finished_at"] = newest.isoformat()
    probe.backup = output
    return probe, newest + now_offset


@pytest.mark.parametrize(("hours", "old"), [(25.9, False), (26.1, True)])
def test_backup_faults_backup_older_than_26_hours(hours: float, old: bool) -> None:
    probe, now = site1_backup(timedelta(hours=hours))
    verified = {"ok": True, "verified_at": probe.backup["last_verify"]["finished_at"]}
    found = codes(fleet_status.backup_faults(probe, verified, backup.Thresholds(), now))
    assert ("backup_too_old" in found) is old
    assert found <= {"backup_too_old", "snapshot_too_old"}
    assert probe.backup_ages["backup_local_s"] == pytest.approx(hours * 3600, abs=5)


def test_backup_faults_never_verified_and_failed_verification() -> None:
    probe, now = site1_backup(timedelta(hours=1))
    probe.backup["last_verify"] = None
    faults = fleet_status.backup_faults(probe, None, backup.Thresholds(), now)
    assert [(f.code, f.severity) for f in faults] == [("no_verification", ssh_probe.WARNING)]
    failed = {"ok": False, "verified_at": (now - timedelta(hours=1)).isoformat()}
    faults = fleet_status.backup_faults(probe, failed, backup.Thresholds(), now)
    assert [(f.code, f.severity) for f in faults] == [("verification_failed", ssh_probe.CRITICAL)]


def test_exit_code_and_order_unreachable_then_critical_then_warning() -> None:
    ok = replace(healthy(), host="a-ok", faults=[])
    warn = replace(healthy(), host="b-warn", faults=[ssh_probe.Fault("security_updates", ssh_probe.WARNING, "")])
    crit = replace(healthy(), host="c-crit", faults=[ssh_probe.Fault("nginx_down", ssh_probe.CRITICAL, "")])
    down = ssh_probe.SiteProbe("d-down", "x:22", reachable=False, error="timeout")
    assert [p.host for p in fleet_status.worst_first([ok, warn, crit, down])] == ["d-down", "c-crit", "b-warn", "a-ok"]
    assert fleet_status.exit_code([ok]) == 0
    assert fleet_status.exit_code([ok, warn]) == fleet_status.EXIT_WARNING == 5  # warnings only: not a fault
    assert fleet_status.exit_code([ok, warn, crit]) == fleet_status.EXIT_FAULT == 3
    assert fleet_status.exit_code([ok, warn, crit, down]) == 4


def test_a_site_healthy_runbook_step_fails_on_a_critical_fault_not_on_warnings() -> None:
    """The runbooks' ``site-healthy`` step runs ``fleet status``: its exit code is the step's status."""
    from lpse_ops.actions import runbook_run

    updates = replace(healthy(), host="site1", faults=[
        ssh_probe.Fault("security_updates", ssh_probe.WARNING, "3 security updates pending"),
        ssh_probe.Fault("no_verification", ssh_probe.WARNING, "no verified restore yet")])
    down = replace(healthy(), host="site1", faults=[ssh_probe.Fault("spse_down", ssh_probe.CRITICAL, "")])
    assert runbook_run.step_status(fleet_status.exit_code([updates])) == "warning"
    assert runbook_run.step_status(fleet_status.exit_code([down])) == "failed"
    assert runbook_run.step_status(fleet_status.exit_code([healthy()])) == "ok"


# -- inventory connection settings --------------------------------------------------------------


def test_target_from_hostvars_reads_the_lab_connection_settings() -> None:
    target = ssh_probe.target_from_hostvars("site1", {
        "ansible_host": "127.0.0.1", "ansible_port": 2221, "ansible_user": "lpse-admin",
        "ansible_ssh_private_key_file": "/k/id_ed25519", "site_spse_port": 9090,
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=/k/known_hosts"})
    assert (target.address, target.port, target.user, target.key_file) == ("127.0.0.1", 2221, "lpse-admin",
                                                                            "/k/id_ed25519")
    assert target.known_hosts_file == "/k/known_hosts" and target.strict_host_key_checking == "accept-new"
    assert target.facts.health_url == "http://127.0.0.1:9090/health"  # derived from the host's site_spse_port
    assert target.facts.nginx_cert_path == "/etc/nginx/tls/spse.crt"
    script = ssh_probe.probe_script(target.facts)
    assert "HEALTH_URL=http://127.0.0.1:9090/health" in script and script.count("\n") < 60


def test_ssh_options_forms() -> None:
    assert ssh_probe.ssh_options("-oStrictHostKeyChecking=no -o 'UserKnownHostsFile /a b'") == {
        "stricthostkeychecking": "no", "userknownhostsfile": "/a b"}


# -- connection failures, provoked for real -----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raw(target: ssh_probe.Target, timeout: float = 3.0) -> ssh_probe.RawResult:
    return ssh_probe.run_probes([target], timeout=timeout)[0]


def test_run_probes_closed_port_is_unreachable_at_once() -> None:
    result = raw(ssh_probe.Target("gone", "127.0.0.1", free_port()))
    assert result.error == "unreachable" and "refused" in result.error_detail and result.duration_s < 1


def test_run_probes_silent_listener_is_a_timeout_within_the_bound_and_others_finish() -> None:
    with socket.socket() as silent:  # accepts TCP (the kernel's backlog) but never says a word of SSH
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        hung = ssh_probe.Target("hung", "127.0.0.1", silent.getsockname()[1])
        closed = ssh_probe.Target("closed", "127.0.0.1", free_port())
        results = ssh_probe.run_probes([hung, closed], timeout=1.0, concurrency=2)
    assert [(r.target.host, r.error) for r in results] == [("hung", "timeout"), ("closed", "unreachable")]
    assert 0.9 <= results[0].duration_s < 2.0


def _target() -> ssh_probe.Target:
    return ssh_probe.Target("site1", "127.0.0.1", 2221, user="lpse-admin", facts=ssh_probe.site_facts({}))


def test_loaded_known_hosts_and_keys_are_read_once(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    key = tmp_path / "key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(key))
    loaded = ssh_probe._Loaded()
    assert loaded.known(str(known)) is loaded.known(str(known))
    assert loaded.key(str(key)) is loaded.key(str(key))


# -- the state store ----------------------------------------------------------------------------


def test_migration_0005_upgrades_a_0004_sqlite_store_keeping_its_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    command.upgrade(alembic_config(url), "0004")
    with StateStore.open(url) as store:  # opening migrates to head
        tables = set(inspect(store.engine).get_table_names())
        run_id = store.start_run(fleet_status.OPERATION, {}, ["site1"])
        probe = probe_rules.to_probe(ssh_probe.RawResult(_target(), stdout=fixture("site1-healthy-backups.txt"),
                                                       exit_status=0))
        store.record_probe("site1", fleet_status.stored(probe), run_id=run_id)
        down = ssh_probe.SiteProbe("site2", "x:22", reachable=False, error="timeout")
        store.record_probe("site2", fleet_status.stored(down), run_id=run_id)
        rows = store.list_probes()
        assert store.list_probes(host="site1")[0]["spse_version"] == "1.2"
    assert "site_probes" in tables
    assert [(r["host"], r["reachable"], r["error"]) for r in rows] == [("site2", False, "timeout"),
                                                                       ("site1", True, None)]
    assert rows[1]["facts"]["spse_version"] == "1.2" and rows[1]["disk_used_percent"] == pytest.approx(30.1, abs=0.1)
    assert "security_updates" in rows[1]["fault_codes"] and rows[1]["run_id"] == run_id
    command.downgrade(alembic_config(url), "0004")
    with StateStore.open(url) as store:
        assert store.list_runs()[0]["id"] == run_id


@pytest.mark.parametrize(("args", "message"), [
    (["--rounds", "2"], "--rounds needs --watch SECONDS"),
    (["--watch", "5", "--json"], "--watch with --json needs --rounds N"),
])
def test_fleet_status_watch_options_refused_before_any_host(args: list[str], message: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lpse_ops.main import main

    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  children:\n    sites:\n      hosts:\n        site1:\n"
                         "          ansible_host: 192.0.2.1\n")  # TEST-NET: never reached, the options are refused
    result = CliRunner().invoke(main, ["fleet", "status", "-i", str(inventory), *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_probe_script_asks_the_site_tool_what_the_caller_needs() -> None:
    """The fleet view asks for every backup fact; the upgrade plan only for the verifications (no engine run)."""
    facts = ssh_probe.site_facts({})
    assert "BACKUP_ARGS=status\n" in ssh_probe.probe_script(facts)
    assert "BACKUP_ARGS='status --verifications-only'\n" in ssh_probe.probe_script(facts, ssh_probe.VERIFICATIONS_ONLY)


def test_host_result_fails_a_site_for_a_critical_fault_not_for_a_warning() -> None:
    """A round with warnings only is an ok run: the reports' failed sites come from these host results."""
    warned = ssh_probe.SiteProbe("w", "127.0.0.1:1", reachable=True,
                                 faults=[ssh_probe.Fault("security_updates", ssh_probe.WARNING, "22 pending")])
    broken = ssh_probe.SiteProbe("c", "127.0.0.1:2", reachable=True,
                                 faults=[ssh_probe.Fault("spse_down", ssh_probe.CRITICAL, "SPSE inactive"),
                                         ssh_probe.Fault("security_updates", ssh_probe.WARNING, "22 pending")])
    gone = ssh_probe.SiteProbe("u", "127.0.0.1:3", reachable=False, error="unreachable",
                               faults=[ssh_probe.Fault("unreachable", ssh_probe.CRITICAL, "no route")])
    assert fleet_status.host_result(warned) == {"status": "ok", "unreachable": 0, "failed": 0, "warnings": 1,
                                                "faults": ["security_updates"]}
    assert fleet_status.host_result(broken)["status"] == "failed" and fleet_status.host_result(broken)["failed"] == 1
    assert fleet_status.host_result(gone)["status"] == "unreachable"
