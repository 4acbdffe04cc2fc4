"""The LKPP SSH CA on the control side, with the real ssh-keygen (no mock): CA creation, signing with absolute UTC
times whatever the zone, serials from the state store, the KRL, the parsers, and the refusals with their reasons."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from click.testing import CliRunner

from lpse_ops.actions import access
from lpse_ops.backends import sshca
from lpse_ops.main import main
from lpse_ops.state import StateStore
from lpse_ops.state import access as access_state

PASSPHRASE = "unit-test-ca-passphrase"
LISTING = """engineer-cert.pub:
        Type: ssh-ed25519-cert-v01@openssh.com user certificate
        Public key: ED25519-CERT SHA256:kyCBJ0iL1kHFm5Xe7opcN+WOnhkO5cyOFtRlePr78CI
        Signing CA: ED25519 SHA256:ry45+c/Nu6Tq3ivItG94b4gt0c6l+D/42IJ/iUE4Zn0 (using ssh-ed25519)
        Key ID: "lpse-ops:budi:7"
        Serial: 7
        Valid: from 2026-11-28T09:00:00 to 2026-11-28T10:00:00
        Principals: {space}
                site:site1
                site:site2
        Critical Options: (none)
        Extensions: {space}
                permit-pty
""".format(space=" ")  # ssh-keygen prints a space after these headings


@pytest.fixture
def ca(monkeypatch, lpse_home) -> access.CAPaths:
    monkeypatch.setenv("LPSE_OPS_ACCESS_CA_PASSPHRASE", PASSPHRASE)
    access.ca_init(access.CAInitRequest())
    return access.CAPaths.default()


@pytest.fixture
def inventory(tmp_path) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {"children": {"sites": {"hosts": {
        name: {"ansible_host": "127.0.0.1", "site_code": name} for name in ("site1", "site2", "site3")}}}}}))
    return path


@pytest.fixture
def engineer_key(tmp_path) -> Path:
    key = tmp_path / "engineer"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "budi", "-f", str(key)], check=True)
    return key


def _grant(inventory: Path, key: Path, **overrides) -> dict:
    request = access.GrantRequest(engineer="budi", public_key=key.with_suffix(".pub"), hours=2,
                                  reason="upgrade stuck at migration 0003", inventory=inventory, sites=["site1"])
    for name, value in overrides.items():
        setattr(request, name, value)
    return access.grant(request)


def _listing(certificate_text: str, folder: Path) -> sshca.CertificateInfo:
    path = folder / "listed-cert.pub"
    path.write_text(certificate_text)
    return sshca.parse_certificate(sshca.run(sshca.show_certificate_argv(path)).stdout)


def test_utc_stamp_same_instant_in_every_indonesian_zone_gives_one_utc_time():
    instant = datetime(2026, 11, 28, 9, 30, 5, tzinfo=UTC)
    stamps = {sshca.utc_stamp(instant.astimezone(ZoneInfo(zone)))
              for zone in ("Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura", "UTC")}
    assert stamps == {"20261128093005Z"}
    with pytest.raises(ValueError, match="naive"):
        sshca.utc_stamp(datetime(2026, 11, 28, 9, 30))


def test_ca_init_key_is_encrypted_private_and_refused_a_second_time(ca):
    mode = stat.S_IMODE(ca.key.stat().st_mode)
    assert mode == 0o600
    assert PASSPHRASE.encode() not in ca.key.read_bytes()
    # Without the passphrase ssh-keygen cannot read the key (it is encrypted).
    done = subprocess.run(["ssh-keygen", "-y", "-P", "", "-f", str(ca.key)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, check=False)
    assert done.returncode != 0 and "passphrase" in done.stderr
    with pytest.raises(access.AccessRefused, match="already exists"):
        access.ca_init(access.CAInitRequest())
    # The empty KRL revokes nothing and lists no serial.
    assert sshca.parse_krl_serials(sshca.run(sshca.krl_list_argv(ca.krl)).stdout) == []


def test_ca_init_without_passphrase_is_refused_with_the_variable_named(monkeypatch):
    monkeypatch.delenv("LPSE_OPS_ACCESS_CA_PASSPHRASE", raising=False)
    with pytest.raises(access.AccessRefused, match="LPSE_OPS_ACCESS_CA_PASSPHRASE"):
        access.ca_init(access.CAInitRequest())
    assert not access.CAPaths.default().key.exists()


@pytest.mark.parametrize("zone", ["Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura"])
def test_grant_window_is_absolute_utc_whatever_the_control_zone(ca, inventory, engineer_key, tmp_path, monkeypatch,
                                                               zone):
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        moment = datetime(2026, 11, 28, 9, 30, 0, tzinfo=UTC)
        granted = _grant(inventory, engineer_key, hours=1.5, now=lambda: moment)
        listed = _listing(granted["certificate"], tmp_path)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert listed.valid_before == moment + timedelta(hours=1.5)
    assert listed.valid_after == moment - timedelta(seconds=access.CLOCK_SKEW_S)
    assert granted["valid_before"] == "2026-11-28T11:00:00+00:00"
    assert listed.principals == ["site:site1"] and listed.kind == "user"
    assert listed.extensions == ["permit-pty"]  # no agent, port or X11 forwarding
    assert listed.key_id == f"lpse-ops:budi:{granted['serial']}" and listed.serial == granted["serial"]


def test_grant_serials_come_from_the_store_and_are_recorded_and_audited(ca, inventory, engineer_key, tmp_path):
    first = _grant(inventory, engineer_key)
    second = _grant(inventory, engineer_key, sites=[], limit="site2:site3")
    assert (first["serial"], second["serial"]) == (1, 2)
    assert second["sites"] == ["site2", "site3"] and second["principals"] == ["site:site2", "site:site3"]
    with StateStore.open() as store:
        grants = access_state.list_grants(store)
        entries = [e for e in store.audit_entries() if e["operation"] == "access.grant"]
    assert [g["serial"] for g in grants] == [2, 1]
    assert [e["detail"]["serial"] for e in entries] == [1, 2]
    assert entries[0]["detail"]["reason"] == "upgrade stuck at migration 0003"
    assert "certificate" not in entries[0]["detail"]


def test_grant_with_a_wrong_passphrase_signs_and_records_nothing(ca, inventory, engineer_key, monkeypatch):
    monkeypatch.setenv("LPSE_OPS_ACCESS_CA_PASSPHRASE", "not-the-right-passphrase")
    with pytest.raises(access.AccessRefused, match="incorrect passphrase"):
        _grant(inventory, engineer_key)
    assert access.list_grants() == []
    assert not engineer_key.with_name("engineer-cert.pub").exists()


@pytest.mark.parametrize("overrides, reason", [
    ({"hours": 0}, "--hours must be more than 0"),
    ({"hours": 1000}, "longer than the longest grant, 168 hours"),
    ({"reason": "x"}, "--reason must say why"),
    ({"sites": [], "limit": None}, "exactly one of --sites"),
    ({"limit": "site2"}, "exactly one of --sites"),
    ({"engineer": "budi; rm -rf"}, "--engineer must be a name"),
])
def test_grant_bad_input_is_refused_with_its_reason(ca, inventory, engineer_key, overrides, reason):
    with pytest.raises(access.AccessRefused, match=reason.replace("-", r"\-").replace(".", r"\.")):
        _grant(inventory, engineer_key, **overrides)
    assert access.list_grants() == []


def test_grant_of_a_private_key_or_unknown_site_is_refused(ca, inventory, engineer_key):
    with pytest.raises(access.AccessRefused, match="not one OpenSSH public key line"):
        _grant(inventory, engineer_key, public_key=engineer_key)
    with pytest.raises(access.AccessRefused, match="not a site of inventory .*: site9"):
        _grant(inventory, engineer_key, sites=["site1", "site9"])


def test_krl_revokes_exactly_the_revoked_serials(ca, inventory, engineer_key, tmp_path):
    kept = _grant(inventory, engineer_key)
    gone = _grant(inventory, engineer_key)
    for name, granted in (("kept", kept), ("gone", gone)):
        (tmp_path / f"{name}-cert.pub").write_text(granted["certificate"])
    access._write_krl(ca, [gone["serial"]], version=1)
    listing = sshca.run(sshca.krl_list_argv(ca.krl)).stdout
    assert sshca.parse_krl_serials(listing) == [gone["serial"]] and sshca.parse_krl_version(listing) == 1
    env = sshca.environment()
    assert subprocess.run(sshca.krl_check_argv(ca.krl, tmp_path / "kept-cert.pub"), env=env,
                          capture_output=True, check=False).returncode == 0
    checked = subprocess.run(sshca.krl_check_argv(ca.krl, tmp_path / "gone-cert.pub"), env=env, capture_output=True,
                             text=True, check=False)
    assert checked.returncode == 1 and "REVOKED" in checked.stdout


def test_mark_revoked_records_once_and_audits_with_the_krl_version(ca, inventory, engineer_key):
    granted = _grant(inventory, engineer_key)
    with StateStore.open() as store:
        marked = access_state.mark_revoked(store, [granted["serial"]], "engineer left", krl_version=1)
        again = access_state.mark_revoked(store, [granted["serial"]], "again", krl_version=1)
        assert access_state.revoked_serials(store) == [granted["serial"]]
        entry = [e for e in store.audit_entries() if e["operation"] == "access.revoke"][0]
    assert marked[0]["revoked"] and marked[0]["revoke_reason"] == "engineer left"
    assert again == []  # already revoked: not marked twice
    assert entry["detail"]["serials"] == [granted["serial"]] and entry["detail"]["krl_version"] == 1


def test_revocation_without_a_target_or_reason_is_refused(ca, inventory):
    with pytest.raises(access.AccessRefused, match="--engineer NAME, --id KEY_ID or --serial N"):
        access.plan_revocation(access.RevokeRequest(reason="left the team", inventory=inventory))
    with pytest.raises(access.AccessRefused, match="--reason must say why"):
        access.plan_revocation(access.RevokeRequest(reason="", inventory=inventory, engineer="budi"))
    with pytest.raises(access.AccessRefused, match="no grant matches"):
        access.plan_revocation(access.RevokeRequest(reason="left the team", inventory=inventory, engineer="nobody"))


def test_grant_dict_expired_and_active_at_the_boundary():
    start = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    row = access_state.AccessGrant(serial=1, key_id="k", engineer="e", key_fingerprint="f", principals=[], sites=[],
                                   valid_after=start, valid_before=start + timedelta(hours=1), reason="r",
                                   granted_by="a", granted_at=start, certificate="c")
    assert access_state.grant_dict(row, start + timedelta(minutes=59, seconds=59))["active"] is True
    at_end = access_state.grant_dict(row, start + timedelta(hours=1))
    assert at_end["expired"] is True and at_end["active"] is False


def test_parse_certificate_recorded_listing():
    info = sshca.parse_certificate(LISTING)
    assert (info.key_id, info.serial, info.kind) == ("lpse-ops:budi:7", 7, "user")
    assert info.principals == ["site:site1", "site:site2"] and info.extensions == ["permit-pty"]
    assert info.options == []
    assert info.valid_before == datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    with pytest.raises(ValueError):
        sshca.parse_certificate("not a certificate")


@pytest.mark.parametrize("output, serials", [
    ("# KRL version 3\n# CA key ssh-ed25519 SHA256:x\nserial: 1\nserial: 4-6\n", [1, 4, 5, 6]),
    ("# KRL version 0\n# Generated at 20261128T090324\n", []),
])
def test_parse_krl_serials(output, serials):
    assert sshca.parse_krl_serials(output) == serials


@pytest.mark.parametrize("text, ok", [
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOq budi@laptop\n", True),
    ("ssh-ed25519-cert-v01@openssh.com AAAA budi\n", False),
    ("-----BEGIN OPENSSH " + "PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH " + "PRIVATE KEY-----\n", False),
    ("ssh-ed25519 AAAA a\nssh-ed25519 AAAA b\n", False),
])
def test_is_public_key_line(text, ok):
    assert sshca.is_public_key_line(text) is ok


def test_cli_grant_refusal_is_one_line_without_traceback(ca, inventory, engineer_key):
    result = CliRunner().invoke(main, ["access", "grant", "--engineer", "budi", "--key", str(engineer_key),
                                       "--sites", "site1", "--hours", "1", "--reason", "upgrade stuck", "-i",
                                       str(inventory)])
    assert result.exit_code == 1, result.output
    assert "not one OpenSSH public key line" in result.output and "Traceback" not in result.output


def test_cli_revoke_json_needs_yes(ca, inventory):
    result = CliRunner().invoke(main, ["access", "revoke", "--engineer", "budi", "--reason", "left the team",
                                       "-i", str(inventory), "--json"], env={"LPSE_OPS_YES": ""})
    assert result.exit_code == 1 and "--json never prompts" in result.output, result.output


def test_passphrase_never_reaches_argv_or_files(ca, inventory, engineer_key, monkeypatch):
    seen: list[list[str]] = []
    real_run = sshca.run

    def spy(argv, env=None):
        seen.append(list(argv))
        return real_run(argv, env)

    monkeypatch.setattr(sshca, "run", spy)
    _grant(inventory, engineer_key)
    assert seen and not any(PASSPHRASE in " ".join(argv) for argv in seen)
    for path in access.CAPaths.default().root.rglob("*"):
        if path.is_file():
            assert PASSPHRASE.encode() not in path.read_bytes(), path
    assert os.environ["LPSE_OPS_ACCESS_CA_PASSPHRASE"] == PASSPHRASE
