"""The fleet probe against the lab's real sshd and SPSE: a full probe, a wrong key, a wrong or unknown host
key, and a stopped PostgreSQL on one site shown as that site's fault while the others are unaffected."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import asyncssh
import pytest

from lpse_ops.backends import ssh_probe
from tests.lab.labkit import PORT_BASE, on_site, run_cli


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
    probe = ssh_probe.to_probe(result)
    assert probe.reachable and probe.spse_version == "1.0" and probe.cpus and probe.disks


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


def test_stopped_postgresql_is_that_sites_fault_and_the_others_are_unaffected(installed):
    code, before, output = run_cli("fleet", "status", "--json")
    assert before is not None, output
    on_site("systemctl stop postgresql@15-main", site="site2")
    try:
        code, after, output = run_cli("fleet", "status", "--json")
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
