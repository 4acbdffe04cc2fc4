"""The inventory cache: ``ansible-inventory --list`` runs again when anything it reads changed, never caches
what it must not (vault plaintext, dynamic sources), and is reused otherwise (real ansible-inventory)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lpse_ops import config
from lpse_ops.backends import ansible, inventory_cache

pytestmark = pytest.mark.clock_free("keys from file contents and ansible-inventory output; no clock read")

HOSTS = "sites:\n  hosts:\n    site1: {ansible_host: 127.0.0.1, site_code: one}\n"


def cache_dir() -> Path:
    return config.home() / "cache" / "inventory"


def entries() -> list[Path]:
    return sorted(cache_dir().glob("*.json")) if cache_dir().is_dir() else []


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    inventory = tmp_path / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(HOSTS)
    (inventory / "group_vars" / "sites.yml").write_text("site_zone: WIB\n")
    return inventory


def poison(marker: str) -> None:
    """Replace every cached entry's content: a later read that returns it came from the cache."""
    for entry in entries():
        entry.write_text(json.dumps({"_marker": marker}))


def test_a_second_read_comes_from_the_cache_and_a_changed_group_vars_file_reads_anew(folder: Path):
    first = ansible.inventory_list(folder)
    assert first["_meta"]["hostvars"]["site1"]["site_zone"] == "WIB"
    assert len(entries()) == 1 and entries()[0].stat().st_mode & 0o777 == 0o600
    poison("cached")
    assert ansible.inventory_list(folder) == {"_marker": "cached"}
    (folder / "group_vars" / "sites.yml").write_text("site_zone: WITA\n")  # same size, new content
    assert ansible.inventory_list(folder)["_meta"]["hostvars"]["site1"]["site_zone"] == "WITA"


def test_a_single_file_inventory_keys_on_its_neighbouring_host_vars(tmp_path: Path):
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(HOSTS)
    ansible.inventory_list(hosts)
    poison("cached")
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "site1.yml").write_text("site_zone: WIT\n")
    assert ansible.inventory_list(hosts)["_meta"]["hostvars"]["site1"]["site_zone"] == "WIT"


def test_ansible_environment_is_part_of_the_key(folder: Path, monkeypatch: pytest.MonkeyPatch):
    env = ansible.process_environment()
    first = inventory_cache.key(folder, env)
    assert first == inventory_cache.key(folder, env)
    assert inventory_cache.key(folder, {**env, "ANSIBLE_INVENTORY_ENABLED": "ini"}) != first
    assert inventory_cache.key(folder, {**env, "UNRELATED": "x"}) == first


def test_vault_content_is_never_written_to_the_cache(folder: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    password = tmp_path / "vault-pass"
    password.write_text("correct horse\n")
    vault = folder / "group_vars" / "sites.yml"
    vault.write_text("postgresql_spse_password: s3cret-in-vault\n")
    subprocess.run([str(Path(sys.executable).with_name("ansible-vault")), "encrypt", "--vault-password-file",
                    str(password), str(vault)], check=True, capture_output=True)
    monkeypatch.setenv("LPSE_OPS_VAULT_PASSWORD_FILE", str(password))
    assert ansible.inventory_list(folder)["_meta"]["hostvars"]["site1"]["postgresql_spse_password"]
    assert entries() == []
    assert inventory_cache.key(folder, ansible.process_environment()) is None


def test_dynamic_sources_are_never_cached(tmp_path: Path):
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "aws_ec2.yml").write_text("plugin: amazon.aws.aws_ec2\nregions: [ap-southeast-3]\n")
    script = tmp_path / "script"
    script.mkdir()
    (script / "hosts.py").write_text("#!/bin/sh\necho '{}'\n")
    (script / "hosts.py").chmod(0o755)
    assert inventory_cache.key(plugin, {}) is None
    assert inventory_cache.key(script, {}) is None


def test_a_failed_parse_is_not_cached_and_raises_each_time(tmp_path: Path):
    broken = tmp_path / "broken.yml"
    broken.write_text("sites:\n  hosts:\n    site1: [oops\n")
    for _ in range(2):
        with pytest.raises(ansible.AnsibleError, match="cannot be parsed"):
            ansible.inventory_list(broken)
    assert entries() == []


def test_only_the_newest_entries_are_kept(tmp_path: Path):
    folder = tmp_path / "cache"
    for number in range(inventory_cache.KEPT + 3):
        inventory_cache.store(folder, f"k{number}", {"n": number})
    kept = sorted(folder.glob("*.json"))
    assert len(kept) == inventory_cache.KEPT
    assert inventory_cache.load(folder, f"k{inventory_cache.KEPT + 2}") == {"n": inventory_cache.KEPT + 2}
    assert not list(folder.glob(".*.tmp"))
