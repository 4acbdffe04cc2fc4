"""Inventory validation: every mistake is reported before any host is touched.

The inventory is parsed by Ansible itself (``ansible-inventory --list``), so YAML, INI, folders with
group_vars/host_vars and vault-encrypted files all work exactly as they will for the playbooks.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from lpse_ops.backends import ansible

KNOWN_GROUPS = ("all", "ungrouped", "sites", "offsite", "canary")
GROUP_PATTERNS = (r"wave_\d+", r"region_[a-z0-9_]+")
SITE_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{1,30}$")
HOSTNAME = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")
# Variables each operation needs on every site host (the first name found wins).
REQUIRED_FOR = {
    "install": (("postgresql_spse_password",),),
    "preflight": (),
    "backup": (("backup_cipher_pass",), ("backup_restic_password",), ("backup_s3_access_key",),
               ("backup_s3_secret_key",), ("backup_s3_endpoint",), ("backup_s3_bucket",), ("backup_s3_ca_cert",),
               ("backup_s3_lock_days",)),
    "validate": (),
}


class InventoryError(Exception):
    """The inventory cannot be read at all; the message says what to do."""


@dataclass
class InventoryReport:
    """What validation found: the site hosts (name -> vars), the groups, and every problem."""

    path: str
    sites: dict[str, dict] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"inventory": self.path, "ok": self.ok, "problems": self.problems,
                "sites": {name: {"site_code": v.get("site_code"), "address": v.get("ansible_host"),
                                 "port": v.get("ansible_port", 22)} for name, v in self.sites.items()},
                "groups": self.groups}


def load(path: Path) -> dict:
    """Return ``ansible-inventory --list`` output for *path*; raise InventoryError when unreadable.

    Ansible runs with the backend's one environment (vault password file, ``ansible.cfg``), so the
    inventory reads here exactly as it will for the playbooks; the error carries Ansible's reason.
    """
    if not path.exists():
        raise InventoryError(f"inventory {path} does not exist: pass -i PATH (see inventory.example/)")
    try:
        return ansible.inventory_list(path)
    except ansible.AnsibleError as error:
        raise InventoryError(str(error)) from error


def _group_members(data: dict, group: str) -> set[str]:
    node = data.get(group, {})
    members = set(node.get("hosts", []))
    for child in node.get("children", []):
        members |= _group_members(data, child)
    return members


def _group_known(name: str) -> bool:
    return name in KNOWN_GROUPS or any(re.fullmatch(p, name) for p in GROUP_PATTERNS)


def validate_data(data: dict, path: str = "<inventory>", operation: str = "validate") -> InventoryReport:
    """Validate parsed inventory *data* (``ansible-inventory --list`` shape); pure, no I/O."""
    report = InventoryReport(path=path)
    hostvars = data.get("_meta", {}).get("hostvars", {})
    groups = [name for name in data if name != "_meta"]
    for group in sorted(groups):
        report.groups[group] = sorted(_group_members(data, group))
        if not _group_known(group):
            close = difflib.get_close_matches(group, KNOWN_GROUPS, n=1)
            hint = f": did you mean '{close[0]}'?" if close else ""
            report.problems.append(
                f"unknown group '{group}' (known: sites, offsite, canary, wave_N, region_NAME){hint}")
    sites = sorted(_group_members(data, "sites"))
    if not sites:
        report.problems.append("no host in group 'sites': every SPSE server belongs to 'sites'")
    codes: dict[str, str] = {}
    endpoints: dict[tuple[str, int], str] = {}
    for host in sites:
        variables = hostvars.get(host, {})
        report.sites[host] = variables
        code = variables.get("site_code")
        if code is None:
            report.problems.append(f"{host}: missing variable site_code (the LPSE's short code, e.g. 'lebong')")
        elif not isinstance(code, str) or not SITE_CODE.match(code):
            report.problems.append(f"{host}: site_code {code!r} must be 2-31 characters of a-z, 0-9 and '-'")
        elif code in codes:
            report.problems.append(f"{host}: duplicate site_code '{code}' (also used by {codes[code]})")
        else:
            codes[code] = host
        address = variables.get("ansible_host", host)
        if "ansible_host" not in variables and not HOSTNAME.match(host):
            report.problems.append(f"{host}: missing variable ansible_host")
        address_problem = check_address(address)
        if address_problem:
            report.problems.append(f"{host}: bad address {address!r}: {address_problem}")
        port = variables.get("ansible_port", 22)
        try:
            port_number = int(port)
        except (TypeError, ValueError):
            port_number = -1
        if not 1 <= port_number <= 65535:
            report.problems.append(f"{host}: bad ansible_port {port!r}: must be a number from 1 to 65535")
        elif not address_problem:
            key = (str(address), port_number)
            if key in endpoints:
                report.problems.append(f"{host}: same address and port as {endpoints[key]} ({address}:{port_number})")
            endpoints[key] = host
        for alternatives in REQUIRED_FOR.get(operation, ()):
            missing = [missing_variable(variables, name) for name in alternatives]
            if all(missing):
                report.problems.append(
                    f"{host}: missing variable {missing[0]} (keep it in an ansible-vault file, see docs)")
    return report


def missing_variable(variables: dict, name: str, depth: int = 0) -> str | None:
    """Return the variable that is undefined at the end of *name*'s plain ``{{ other }}`` references,
    or None when *name* has a value."""
    if name not in variables:
        return name
    value = variables[name]
    match = re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", value) if isinstance(value, str) and depth < 5 else None
    return missing_variable(variables, match.group(1), depth + 1) if match else None


def check_address(address: object) -> str | None:
    """Return why *address* is not a usable IP address or host name, or None when it is."""
    if not isinstance(address, str) or not address:
        return "must be an IP address or a host name"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        if re.fullmatch(r"[0-9.]+", address):
            return "not a valid IPv4 address"
        return None if HOSTNAME.match(address) else "not a valid host name"
    if ip.is_unspecified or ip.is_multicast:
        return "an unspecified or multicast address cannot be a server"
    return None


def validate(path: Path, operation: str = "validate") -> InventoryReport:
    """Parse and validate the inventory at *path* for *operation*."""
    return validate_data(load(path), str(path), operation)
