"""Inventory validation: each kind of mistake is named, and a good inventory passes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from lpse_ops import inventory
from lpse_ops.main import main


def listing(sites: dict[str, dict], extra_groups: dict[str, list[str]] | None = None) -> dict:
    data = {"_meta": {"hostvars": sites}, "all": {"children": ["sites", "ungrouped"]},
            "sites": {"hosts": list(sites)}, "ungrouped": {"hosts": []}}
    for name, hosts in (extra_groups or {}).items():
        data[name] = {"hosts": hosts}
        data["all"]["children"].append(name)
    return data


GOOD = {"a": {"ansible_host": "10.1.0.1", "site_code": "lebong"},
        "b": {"ansible_host": "lpse.bengkulu.example", "ansible_port": 2222, "site_code": "bengkulu"}}


def test_validate_good_inventory_has_no_problems():
    report = inventory.validate_data(listing(GOOD))
    assert report.ok, report.problems
    assert sorted(report.sites) == ["a", "b"]


def test_validate_unknown_group_suggests_the_known_one():
    report = inventory.validate_data(listing(GOOD, {"stes": ["a"]}))
    assert any("unknown group 'stes'" in p and "did you mean 'sites'" in p for p in report.problems)


def test_validate_wave_and_region_groups_are_known():
    report = inventory.validate_data(listing(GOOD, {"wave_2": ["a"], "region_sumatera": ["b"], "canary": ["a"]}))
    assert report.ok, report.problems


def test_validate_duplicate_site_code_names_both_hosts():
    sites = {**GOOD, "c": {"ansible_host": "10.1.0.3", "site_code": "lebong"}}
    report = inventory.validate_data(listing(sites))
    assert "c: duplicate site_code 'lebong' (also used by a)" in report.problems


def test_validate_missing_site_code_is_reported():
    report = inventory.validate_data(listing({"a": {"ansible_host": "10.1.0.1"}}))
    assert any(p.startswith("a: missing variable site_code") for p in report.problems)


@pytest.mark.parametrize("address, reason", [("10.1.0.256", "not a valid IPv4 address"),
                                             ("bad_host!", "not a valid host name"),
                                             ("0.0.0.0", "unspecified")])
def test_validate_bad_address_is_reported(address, reason):
    report = inventory.validate_data(listing({"a": {"ansible_host": address, "site_code": "lebong"}}))
    assert any(f"bad address {address!r}" in p and reason in p for p in report.problems), report.problems


def test_validate_bad_port_is_reported():
    report = inventory.validate_data(listing({"a": {"ansible_host": "10.1.0.1", "ansible_port": 70000,
                                                    "site_code": "lebong"}}))
    assert any("bad ansible_port 70000" in p for p in report.problems)


def test_validate_two_names_for_one_endpoint_is_reported():
    sites = {"a": {"ansible_host": "10.1.0.1", "site_code": "one"},
             "b": {"ansible_host": "10.1.0.1", "site_code": "two"}}
    report = inventory.validate_data(listing(sites))
    assert any("same address and port as a" in p for p in report.problems)


def test_validate_install_needs_the_database_secret_behind_its_reference():
    sites = {"a": {**GOOD["a"], "postgresql_spse_password": "{{ vault_spse_db_password }}"}}
    assert any("missing variable vault_spse_db_password" in p
               for p in inventory.validate_data(listing(sites), operation="install").problems)
    sites["a"]["vault_spse_db_password"] = "s3cret"
    assert inventory.validate_data(listing(sites), operation="install").ok


def test_validate_install_without_any_database_secret_names_the_role_input():
    problems = inventory.validate_data(listing(GOOD), operation="install").problems
    assert any(p.startswith("a: missing variable postgresql_spse_password") for p in problems), problems


def test_validate_no_sites_is_reported():
    report = inventory.validate_data(listing({}))
    assert any("no host in group 'sites'" in p for p in report.problems)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(textwrap.dedent(text))
    return path


def test_cli_validate_real_file_exit_codes(tmp_path):
    good = write(tmp_path, """
        sites:
          hosts:
            a: {ansible_host: 10.1.0.1, site_code: lebong}
    """)
    result = CliRunner().invoke(main, ["inventory", "validate", "-i", str(good), "--json"])
    assert result.exit_code == 0, result.output
    bad = write(tmp_path, """
        sites:
          hosts:
            a: {ansible_host: 10.1.0.1, site_code: lebong}
            b: {ansible_host: 10.1.0.2, site_code: lebong}
        stes:
          hosts:
            a:
    """)
    result = CliRunner().invoke(main, ["inventory", "validate", "-i", str(bad)])
    assert result.exit_code == 1
    assert "duplicate site_code 'lebong'" in result.output and "unknown group 'stes'" in result.output


def test_cli_validate_unparsable_file_is_one_clear_error(tmp_path):
    broken = tmp_path / "hosts.yml"
    broken.write_text("sites: [unclosed\n")
    result = CliRunner().invoke(main, ["inventory", "validate", "-i", str(broken)])
    assert result.exit_code == 1
    assert "cannot be parsed" in result.output and "Traceback" not in result.output


def test_cli_validate_missing_file_says_what_to_do(tmp_path):
    result = CliRunner().invoke(main, ["inventory", "validate", "-i", str(tmp_path / "nope.yml")])
    assert result.exit_code == 1 and "does not exist" in result.output
