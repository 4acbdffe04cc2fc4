"""Bad input is refused before any host is touched: the host's sshd accepts no login at all."""

from __future__ import annotations

import tarfile

import pytest

from tests.lab.labkit import PORT_BASE, extra_host, inventory_for, remove_extra_host, run_cli, ssh_logins


@pytest.fixture(scope="module")
def spare(lab):
    yield extra_host(lab, "spare", PORT_BASE + 60, PORT_BASE + 160)
    remove_extra_host(lab, "spare")


@pytest.mark.parametrize("hosts, problem", [
    ({"spare": {"site_code": "spare"}, "spare-twin": {"site_code": "spare"}}, "duplicate site_code 'spare'"),
    ({"spare": {}}, "missing variable site_code"),
    ({"spare": {"site_code": "spare", "ansible_host": "127.0.0.300"}}, "bad address '127.0.0.300'"),
])
def test_install_bad_inventory_touches_no_host(lab, release, spare, tmp_path, hosts, problem):
    for variables in hosts.values():
        variables.setdefault("ansible_port", spare.ssh_port)
    inventory = inventory_for(tmp_path / "bad.yml", hosts)
    before = ssh_logins("spare")
    code, _, output = run_cli("install", str(release["bundles"]["1.0"]), "-i", str(inventory),
                              "--trusted-keys", str(release["trusted"]))
    assert code == 1 and problem in output and "no host was touched" in output, output
    assert "Traceback" not in output
    assert ssh_logins("spare") == before


def test_install_unknown_group_touches_no_host(lab, release, spare, tmp_path):
    hosts = {"spare": {"ansible_port": spare.ssh_port, "site_code": "spare"}}
    inventory = inventory_for(tmp_path / "groups.yml", hosts, extra_groups={"wvae_1": ["spare"]})
    before = ssh_logins("spare")
    code, _, output = run_cli("install", str(release["bundles"]["1.0"]), "-i", str(inventory),
                              "--trusted-keys", str(release["trusted"]))
    assert code == 1 and "unknown group 'wvae_1'" in output, output
    assert ssh_logins("spare") == before


def tampered_copy(original, target):
    """Rewrite the bundle with one payload byte changed, keeping the signed manifest."""
    with tarfile.open(original) as source, tarfile.open(target, "w:gz") as out:
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isfile() else None
            if member.name.endswith("migrations/0001_initial.sql"):
                data = data.replace(b"CREATE", b"create", 1)
            out.addfile(member, None if data is None else __import__("io").BytesIO(data))
    return target


def test_install_bad_bundle_touches_no_host(lab, release, spare, tmp_path):
    inventory = inventory_for(tmp_path / "good.yml", {"spare": {"ansible_port": spare.ssh_port, "site_code": "spare"}})
    before = ssh_logins("spare")
    bad = tampered_copy(release["bundles"]["1.0"], tmp_path / "spse-1.0.tar.gz")
    code, _, output = run_cli("install", str(bad), "-i", str(inventory), "--trusted-keys", str(release["trusted"]))
    assert code == 1 and "sha256 mismatch" in output and "no host was touched" in output, output
    untrusted = tmp_path / "empty-keys"
    untrusted.mkdir()
    code, _, output = run_cli("install", str(release["bundles"]["1.0"]), "-i", str(inventory),
                              "--trusted-keys", str(untrusted))
    assert code == 1 and "no host was touched" in output, output
    assert ssh_logins("spare") == before
