"""The fleet a command targets, read once: the inventory (hosts, groups, host variables) and the hosts matched.

One ``ansible-inventory --list`` (validation and every host's variables) and one host match per command
(Ansible's own ``--limit`` semantics); the result is passed down, so nothing below reads the inventory
again. Reading a site's state is one SSH connection and one command per site (the probe's path,
:func:`probe_sites`), never a playbook.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lpse_ops import inventory
from lpse_ops.backends import ansible, ssh_probe

GROUP = "sites"


class OperationRefused(Exception):
    """Nothing was run: the input is wrong. The message lists every problem and what to do."""


class NoHostMatches(OperationRefused):
    """The inventory is sound but no host of the group matches the limit."""


def target_hosts(inventory_path: Path, group: str, limit: str | None) -> list[str]:
    """Return the hosts a playbook on *group* with *limit* would touch (Ansible's own host matching).

    An empty match is ``[]``; an inventory Ansible cannot read (bad YAML, a missing vault password) is
    refused with Ansible's own reason, never reported as "no host matches".
    """
    try:
        return ansible.list_hosts(inventory_path, group, limit)
    except ansible.AnsibleError as error:
        raise OperationRefused(str(error)) from error


def validated_inventory(path: Path, operation: str) -> inventory.InventoryReport:
    """Read and validate the inventory at *path* for *operation*; raise OperationRefused listing every problem."""
    try:
        report = inventory.validate(path, operation)
    except inventory.InventoryError as error:
        raise OperationRefused(str(error)) from error
    if not report.ok:
        listing = "\n  - ".join(report.problems)
        raise OperationRefused(f"inventory {path} has {len(report.problems)} problem(s); "
                               f"no host was touched:\n  - {listing}")
    return report


@dataclass
class Fleet:
    """The inventory as read once for one command: its validation report and the hosts the command targets."""

    inventory: Path
    report: inventory.InventoryReport
    hosts: list[str]
    limit: str | None = None

    @property
    def groups(self) -> dict[str, list[str]]:
        return self.report.groups

    def hostvars(self, host: str) -> dict:
        """The Ansible variables of *host* (every source merged, as the playbooks see them)."""
        return self.report.sites.get(host, {})

    def subset(self, hosts: list[str]) -> Fleet:
        """The same reading narrowed to *hosts* (a wave, a group of a wave), limited to exactly them."""
        unknown = sorted(set(hosts) - set(self.hosts))
        if unknown:
            raise OperationRefused(f"not among the hosts this command read: {', '.join(unknown)}")
        return Fleet(self.inventory, self.report, list(hosts), ",".join(hosts))

    def targets(self) -> list[ssh_probe.Target]:
        """The probe's target of each host (connection and site facts); refuses unreadable site facts."""
        try:
            return [ssh_probe.target_from_hostvars(host, self.hostvars(host)) for host in self.hosts]
        except (OSError, ValueError) as error:
            raise OperationRefused(f"cannot read the site facts (roles/site): {error}") from error


def read(inventory_path: Path, *, limit: str | None = None, validate_for: str | None = "validate",
         group: str = GROUP) -> Fleet:
    """Read and validate the inventory once and match *limit* in *group*; return the Fleet.

    Raises OperationRefused listing every problem of the inventory, or when no host matches (no host
    touched). *validate_for* None (a read-only look such as ``fleet status``): only an inventory Ansible
    cannot read is refused; the problems an operation would refuse are left to that operation.
    """
    if validate_for is None:
        try:
            report = inventory.validate(inventory_path)
        except inventory.InventoryError as error:
            raise OperationRefused(str(error)) from error
    else:
        report = validated_inventory(inventory_path, validate_for)
    # Without --limit the group's members are already in Ansible's own --list output (one process fewer:
    # about half a second of CPU); a limit pattern is matched by Ansible itself.
    hosts = report.groups.get(group, []) if limit is None else target_hosts(inventory_path, group, limit)
    if not hosts:
        raise NoHostMatches(f"no host matches group '{group}'{f' with --limit {limit}' if limit else ''}: "
                            "check the names")
    return Fleet(inventory_path, report, hosts, limit)


def read_site(inventory_path: Path, name: str, *, validate_for: str | None = "validate") -> Fleet | None:
    """The inventory read once for the one site *name* (a freeze, a drill); None when *name* is not exactly
    one site of group sites (the caller says so in its own words). Refuses an inventory Ansible cannot read,
    or one with problems for *validate_for*, as :func:`read` does."""
    try:
        found = read(inventory_path, limit=name, validate_for=validate_for)
    except NoHostMatches:
        return None
    return found if found.hosts == [name] else None


def probe_sites(fleet: Fleet, *, timeout: float = 10.0, concurrency: int = 20,
                on_done: Callable[[ssh_probe.RawResult], None] | None = None,
                backup_args: str = ssh_probe.BACKUP_STATUS) -> list[ssh_probe.RawResult]:
    """Read every targeted site over SSH, read-only: one connection and one command each (the probe).

    *backup_args*: what the site tool is asked (``ssh_probe.VERIFICATIONS_ONLY`` when the backup ages are
    not needed: the site then runs no backup engine).
    """
    return ssh_probe.run_probes(fleet.targets(), timeout=timeout, concurrency=concurrency, on_done=on_done,
                                backup_args=backup_args)
