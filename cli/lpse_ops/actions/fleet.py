"""The fleet a command targets, read once: the inventory (hosts, groups, host variables) and the hosts matched;
and how a command goes through it in waves, against a failure budget.

One ``ansible-inventory --list`` (validation and every host's variables) and one host match per command
(Ansible's own ``--limit`` semantics); the result is passed down, so nothing below reads the inventory
again. Reading a site's state is one SSH connection and one command per site (the probe's path,
:func:`probe_sites`), never a playbook.

Waves (:func:`assign_waves`): a canary first, then the inventory's ``wave_N`` groups or waves of a size
(:class:`WaveSize`). :func:`run_waves` runs them in order and halts before the next wave once the failed
sites exceed the :class:`Budget`; the caller runs and records each wave (the run tree: rollout -> wave ->
site step).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self

from lpse_ops import inventory
from lpse_ops.backends import ansible, ssh_probe

GROUP = "sites"
PLAIN_LIMIT = re.compile(r"[A-Za-z0-9_-]+(?:,[A-Za-z0-9_-]+)*")
"""A --limit of plain host or group names, comma separated: matched from the reading itself (plain_match)."""


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


def validated_inventory(path: Path, operation: str | None) -> inventory.InventoryReport:
    """Read and validate the inventory at *path* for *operation*; raise OperationRefused listing every problem.

    *operation* None: a read-only look; only an inventory Ansible cannot read is refused.
    """
    try:
        report = inventory.validate(path, operation or "validate")
    except inventory.InventoryError as error:
        raise OperationRefused(str(error)) from error
    if operation is not None and not report.ok:
        listing = "\n  - ".join(report.problems)
        raise OperationRefused(f"inventory {path} has {len(report.problems)} problem(s); "
                               f"no host was touched:\n  - {listing}")
    return report


def plain_match(report: inventory.InventoryReport, group: str, limit: str) -> list[str] | None:
    """The hosts of *group* that a --limit of plain names selects, as Ansible matches it; None for any other
    pattern (wildcards, ranges, regexes, ``!``, ``&``, ``:``, dots): Ansible itself is then asked.

    Ansible's rule for a name without special characters: the hosts of the group of that name, else the
    host of that name; a name matching neither selects nothing. Pure: the reading already holds every
    group's members (nested children included) and every host. (A name that is both a group and a host is
    left to Ansible too: which one its inventory plugins kept is theirs to say.)
    """
    if not PLAIN_LIMIT.fullmatch(limit):
        return None
    known = {host for members in report.groups.values() for host in members}
    chosen: set[str] = set()
    for name in limit.split(","):
        if name in report.groups and name in known:
            return None  # a group and a host of one name: Ansible's reading of that inventory decides
        if name in report.groups:
            chosen.update(report.groups[name])
        elif name in known:
            chosen.add(name)
    return [host for host in report.groups.get(group, []) if host in chosen]


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
    report = validated_inventory(inventory_path, validate_for)
    # Without --limit, or with one of plain names, the hosts come from Ansible's own --list output (one
    # process fewer: about half a second of CPU); any other limit pattern is matched by Ansible itself.
    hosts = report.groups.get(group, []) if limit is None else plain_match(report, group, limit)
    if hosts is None:
        hosts = target_hosts(inventory_path, group, limit or "")
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


# ------------------------------------------------------------------------------------------------ waves


def natural_key(name: str) -> tuple:
    """Sort key putting site2 before site10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def count_or_share(text: str, *, least: int, what: str, example: str) -> tuple[int | None, float | None]:
    """Parse a count of sites (at least *least*) or a share "P%" (above 0 when *least* is 1, at most 100).

    Returns (count, None) or (None, percent); raises ValueError naming *what* and how to write it.
    """
    value = str(text).strip()
    try:
        if value.endswith("%"):
            percent = float(value[:-1])
            lowest_ok = percent > 0 if least else percent >= 0
            if not lowest_ok or percent > 100:
                raise ValueError
            return None, percent
        count = int(value)
        if count < least:
            raise ValueError
        return count, None
    except ValueError:
        raise ValueError(f"{what} {text!r}: use a count of sites ({example}) or a percentage (25%)") from None


@dataclass
class SiteCount:
    """A number of sites given as a count ("10") or a share of some total ("25%"); :meth:`of` resolves it."""

    count: int | None = None
    percent: float | None = None
    LEAST: ClassVar[int] = 0
    WHAT: ClassVar[str] = "count"
    EXAMPLE: ClassVar[str] = "2"

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse a count (at least LEAST) or "P%"; raise ValueError naming WHAT and how to write it."""
        count, percent = count_or_share(text, least=cls.LEAST, what=cls.WHAT, example=cls.EXAMPLE)
        return cls(count=count, percent=percent)

    def of(self, total: int, rounding: Callable[[float], int]) -> int:
        return self.count if self.count is not None else rounding(total * (self.percent or 0) / 100)

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else str(self.count)


class WaveSize(SiteCount):
    """How many sites per wave after the canary: a count, or a percentage of the eligible sites."""

    LEAST, WHAT, EXAMPLE = 1, "wave size", "10"

    def sites(self, eligible: int) -> int:
        if self.count is None and self.percent is None:
            return max(1, eligible)  # no size given: one wave of every site after the canary
        return max(1, self.of(eligible, math.ceil))


class Budget(SiteCount):
    """How many failed sites a run in waves tolerates: a count, or a share of its planned sites.

    The run halts before the next wave once the failures EXCEED the budget (budget 0: the first failed
    site halts it, the canary included).
    """

    LEAST, WHAT, EXAMPLE = 0, "failure budget", "0, 2"

    def allowed(self, planned: int) -> int:
        return self.of(planned, math.floor)


@dataclass
class Wave:
    """One wave: its name (``canary``, ``wave_2``, ``wave 1``, ``unassigned``) and its hosts, in natural order."""

    name: str
    hosts: list[str]


def assign_waves(hosts: Iterable[str], groups: Mapping[str, Iterable[str]], canary: int,
                 wave_size: WaveSize) -> list[Wave]:
    """Put every one of *hosts* in exactly one wave.

    Wave 0 is the canary: the members of group ``canary`` among *hosts*, else the first *canary* hosts in
    natural name order. Then one wave per group ``wave_N`` (in N order, a host in its first group only)
    when any exists, with the hosts in none of them last; else waves of *wave_size* hosts. Pure.
    """
    ordered = sorted(set(hosts), key=natural_key)
    if not ordered:
        return []
    placed: set[str] = set()

    def take(members: Iterable[str], name: str) -> Wave:
        wave = Wave(name, [])
        for host in sorted(set(members), key=natural_key):
            if host in ordered_set and host not in placed:
                placed.add(host)
                wave.hosts.append(host)
        return wave

    ordered_set = set(ordered)
    canary_group = [host for host in groups.get("canary", ()) if host in ordered_set]
    waves = [take(canary_group, "canary") if canary_group else take(ordered[:max(canary, 1)], "canary")]
    numbered = sorted((int(name.split("_", 1)[1]), name) for name in groups if re.fullmatch(r"wave_\d+", name))
    if numbered:
        for _, name in numbered:
            wave = take(groups[name], name)
            if wave.hosts:
                waves.append(wave)
        rest = take([host for host in ordered if host not in placed], "unassigned")
        return waves + ([rest] if rest.hosts else [])
    size = wave_size.sites(len(ordered))
    remaining = [host for host in ordered if host not in placed]
    for start in range(0, len(remaining), size):
        waves.append(take(remaining[start:start + size], f"wave {len(waves)}"))
    return waves


@dataclass
class WavesRun:
    """How a run in waves went: the failed sites counted, and why it halted (None: every wave ran)."""

    allowed_failures: int
    failures: int = 0
    halted: str | None = None
    not_started: list[list[str]] = field(default_factory=list)


def run_waves(waves: list[list[str]], run_wave: Callable[[int, list[str]], int], budget: Budget) -> WavesRun:
    """Run *waves* in order: ``run_wave(index, hosts)`` runs and records one wave and returns how many of its
    sites failed. Before each wave, halt once the failures so far exceed *budget* (of all planned sites):
    the waves not started are named in the result, never run."""
    planned = sum(len(wave) for wave in waves)
    run = WavesRun(allowed_failures=budget.allowed(planned))
    for index, hosts in enumerate(waves):
        if run.failures > run.allowed_failures:
            run.halted = (f"{run.failures} site(s) failed, more than the failure budget ({budget} = "
                          f"{run.allowed_failures} site(s)): waves {index} onwards not started")
            run.not_started = [list(later) for later in waves[index:]]
            break
        run.failures += run_wave(index, hosts)
    return run
