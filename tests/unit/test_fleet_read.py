"""The fleet a command targets, read once (actions/fleet.py), with Ansible's own inventory parsing and host matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from lpse_ops.actions import fleet
from lpse_ops.actions.operation import OperationRefused

INVENTORY = """
all:
  vars: {ansible_user: root, site_spse_port: 8081}
  children:
    sites:
      hosts:
        site1: {ansible_host: 127.0.0.1, ansible_port: 2421, site_code: lab01}
        site2: {ansible_host: 127.0.0.1, ansible_port: 2422, site_code: lab02, site_pg_port: 5433}
    canary:
      hosts: {site2: {}}
"""


def test_read_matches_the_limit_and_keeps_every_hosts_variables_and_groups(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yml"
    path.write_text(INVENTORY)
    read = fleet.read(path, limit="canary")
    assert read.hosts == ["site2"] and read.groups["canary"] == ["site2"]
    (target,) = read.targets()
    assert (target.host, target.port, target.facts.pg_port) == ("site2", 2422, 5433)
    assert target.facts.spse_url.endswith(":8081")  # a group variable reached the host's facts
    assert fleet.read(path).hosts == ["site1", "site2"]


def test_read_refuses_a_bad_inventory_and_an_empty_match_before_any_host(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yml"
    path.write_text(INVENTORY.replace("    canary:", "    canari:"))
    with pytest.raises(OperationRefused, match="unknown group 'canari'.*did you mean 'canary'"):
        fleet.read(path)
    path.write_text(INVENTORY)
    with pytest.raises(OperationRefused, match="no host matches group 'sites' with --limit site9"):
        fleet.read(path, limit="site9")


def test_without_a_limit_the_hosts_are_ansibles_own_members_of_the_group_in_one_process(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    """No --limit: the group's members come from the same ansible-inventory output, nested children
    included, and equal what `ansible sites --list-hosts` answers (asked here once, for the comparison)."""
    from lpse_ops.backends import ansible

    path = tmp_path / "hosts.yml"
    path.write_text(INVENTORY.replace("""    canary:""", """      children:
        region_sumatera:
          hosts:
            site3: {ansible_host: 127.0.0.1, ansible_port: 2423, site_code: lab03}
    canary:"""))
    expected = sorted(ansible.list_hosts(path, "sites"))
    assert expected == ["site1", "site2", "site3"]

    def no_second_process(*_args, **_kwargs):
        raise AssertionError("ansible --list-hosts was started without a --limit")

    monkeypatch.setattr(ansible, "list_hosts", no_second_process)
    assert fleet.read(path).hosts == expected


def test_a_wave_runs_on_its_subset_of_the_fleet_without_reading_the_inventory_again(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    """An upgrade reads the inventory once for its plan; each wave's run gets the plan's Fleet narrowed to the
    wave (Fleet.subset) and starts no ansible-inventory nor host match of its own: the playbook is limited
    to exactly the wave's hosts, and those are the hosts the run records."""
    from lpse_ops.actions import operation
    from lpse_ops.backends import ansible
    from lpse_ops.state import StateStore

    path = tmp_path / "hosts.yml"
    path.write_text(INVENTORY)
    read = fleet.read(path)
    with pytest.raises(OperationRefused, match="not among the hosts this command read: site9"):
        read.subset(["site2", "site9"])

    def no_reading(*_args, **_kwargs):
        raise AssertionError("the inventory was read again")

    monkeypatch.setattr(ansible, "inventory_list", no_reading)
    monkeypatch.setattr(ansible, "list_hosts", no_reading)
    limits: list[str | None] = []

    def playbook(name, inventory, on_event, *, limit=None, **_kwargs):
        limits.append(limit)
        return ansible.PlaybookRun(ident="fake", status="successful", rc=0, artifact_dir="")

    monkeypatch.setattr(ansible, "run_playbook", playbook)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    wave = read.subset(["site2"])
    result = operation.run(operation.OperationContext(operation="upgrade.playbook", playbook="upgrade.yml",
                                                      inventory=path, limit=None, state_url=url, fleet=wave))
    assert limits == ["site2"] and result.hosts == ["site2"]
    with StateStore.open(url) as store:
        recorded = store.get_run(result.run_id)
    assert recorded["hosts"] == ["site2"] and recorded["args"]["limit"] == "site2", recorded


def test_a_read_only_look_reads_an_inventory_an_operation_would_refuse(tmp_path: Path) -> None:
    """``fleet status`` reads with validate_for=None: a site without its site_code is still probed, while an
    operation (the default validation) refuses the same inventory naming the problem."""
    path = tmp_path / "hosts.yml"
    path.write_text(INVENTORY.replace(", site_code: lab02", ""))
    with pytest.raises(OperationRefused, match="site2: missing variable site_code"):
        fleet.read(path)
    assert fleet.read(path, validate_for=None).hosts == ["site1", "site2"]
    path.write_text("all: [not, a, mapping\n")
    with pytest.raises(OperationRefused, match="cannot be parsed"):
        fleet.read(path, validate_for=None)


def test_read_site_is_the_one_site_named_or_none(tmp_path: Path) -> None:
    """A freeze or a drill names one site: a group name matching two, or a name matching none, is None (the
    caller refuses in its own words); a bad inventory is still refused with its problems."""
    path = tmp_path / "hosts.yml"
    path.write_text(INVENTORY)
    assert fleet.read_site(path, "site2").hosts == ["site2"]
    assert fleet.read_site(path, "site9") is None and fleet.read_site(path, "sites") is None
    assert fleet.read_site(path, "canary") is None  # matches site2 alone, but is not a site's name
    path.write_text(INVENTORY.replace(", site_code: lab02", ""))
    with pytest.raises(OperationRefused, match="site2: missing variable site_code"):
        fleet.read_site(path, "site2")


NESTED = INVENTORY.replace("""    canary:""", """      children:
        region_sumatera:
          hosts:
            site3: {ansible_host: 127.0.0.1, ansible_port: 2423, site_code: lab03}
            wave_1: {ansible_host: 127.0.0.1, ansible_port: 2424, site_code: lab04}
    wave_1:
      hosts: {site1: {}}
    offsite:
      hosts: {backup1: {ansible_host: 127.0.0.1}}
    canary:""")


@pytest.fixture(scope="module")
def nested(tmp_path_factory):
    """The inventory NESTED, our reading of it, and Ansible's own matcher over it (InventoryManager, in this
    process: what `ansible sites --list-hosts --limit L` runs, without a process per limit)."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    path = tmp_path_factory.mktemp("nested") / "hosts.yml"
    path.write_text(NESTED)
    manager = InventoryManager(loader=DataLoader(), sources=[str(path)])

    def ansible_match(limit: str) -> list[str]:
        manager.subset(limit)
        try:
            return [host.name for host in manager.get_hosts("sites")]
        finally:
            manager.subset(None)

    return path, fleet.validated_inventory(path, "validate"), ansible_match


LIMITS = ["site1", "site2,site3", "canary", "region_sumatera", "site1,canary", "backup1", "offsite,site3", "nosuch",
          "site9,site2", "all", "sites", "SITE1", "site3,site3"]
PATTERNS = ["wave_1", "site3,wave_1", "site*", "sites[0:1]", "~site[12]", "sites:!canary", "sites:&canary",
            "site1:site2", "!site1", "site1,", "127.0.0.1"]


def test_a_limit_of_plain_names_selects_what_ansible_selects_without_asking_it(nested, monkeypatch) -> None:
    """A --limit of plain host or group names is matched from the inventory already read (no `ansible
    --list-hosts`): for every limit the hosts equal Ansible's own matcher's, and one is checked against the
    `ansible` command itself."""
    from lpse_ops.backends import ansible

    path, report, ansible_match = nested
    assert sorted(ansible.list_hosts(path, "sites", "offsite,site3,region_sumatera")) == ["site3", "wave_1"]
    monkeypatch.setattr(ansible, "list_hosts", lambda *_a, **_k: pytest.fail("ansible --list-hosts was started"))
    for limit in LIMITS:
        assert fleet.plain_match(report, "sites", limit) == sorted(ansible_match(limit)), limit
    assert fleet.read(path, limit="offsite,site3,region_sumatera").hosts == ["site3", "wave_1"]


def test_any_other_limit_pattern_is_left_to_ansible(nested) -> None:
    """Patterns, and a name that is both a group and a host (wave_1), are matched by Ansible itself."""
    path, report, ansible_match = nested
    for limit in PATTERNS:
        assert fleet.plain_match(report, "sites", limit) is None, limit
    assert ansible_match("wave_1") == ["wave_1"]  # the host, not the group of that name: Ansible's call
    assert fleet.read(path, limit="wave_1").hosts == ["wave_1"]
    assert fleet.read(path, limit="sites:!canary").hosts == ansible_match("sites:!canary")
