"""The fleet probe: one SSH connection and one read-only remote command per site, no Ansible.

Three parts, each usable alone:

- :func:`site_facts` and :func:`probe_script`: where SPSE, PostgreSQL and nginx live on a site (read
  from ``roles/site`` and ``roles/nginx``, the one place those facts are written, overridden by the
  host's inventory variables), and the POSIX ``sh`` script that collects every fact in one round trip,
  printing ``key=value`` lines;
- :func:`parse_output` and :func:`system_faults`: pure functions from that output to a typed
  :class:`SiteProbe` and its faults (code, severity, message);
- :func:`probe_hosts`: asyncssh, every host in parallel under a semaphore, each bounded by a timeout,
  every failure classified (``unreachable``, ``auth_failed``, ``host_key_mismatch``, ``host_key_unknown``,
  ``timeout``, ``ssh_error``); every host asked for is in the answer.

Connection settings come from the inventory's host variables (``ansible_host``, ``ansible_port``,
``ansible_user``, ``ansible_ssh_private_key_file`` and the ``UserKnownHostsFile`` and
``StrictHostKeyChecking`` options of ``ansible_ssh_common_args``/``ansible_ssh_extra_args``). A
known_hosts file and a private key are read once per process, however many hosts use them. The key
exchange prefers curve25519-sha256: OpenSSH's default post-quantum exchange costs several times its
CPU on both ends.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import shlex
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from lpse_ops import config

PROBE_FORMAT = 1
"""The version of the script's output (its first line: ``probe=1``)."""

KEX_ALGS = ("curve25519-sha256", "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256",
            "diffie-hellman-group14-sha256")
"""Key exchanges offered, cheapest first; the post-quantum hybrids are left out on purpose."""

ENCRYPTION_ALGS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
                   "aes128-ctr", "aes256-ctr")
"""Ciphers offered, cheapest for the client first: asyncssh's chacha20-poly1305 (its default) builds a
new cipher context for every packet; AES-GCM, in hardware, does not (bench/fleet_probe.py)."""

CONNECTION_ERRORS = ("unreachable", "auth_failed", "host_key_mismatch", "host_key_unknown", "timeout", "ssh_error")
"""How a probe that got no answer failed (``SiteProbe.error``)."""

CRITICAL, WARNING = "critical", "warning"

# -- site facts ---------------------------------------------------------------------------------

FACT_FILES = (("roles", "site", "defaults", "main.yml"), ("roles", "nginx", "vars", "main.yml"))
"""Where the facts the probe needs are written once: the site facts, and nginx's certificate path."""

_REFERENCE = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class SiteFacts:
    """Where things live on one site (``roles/site`` defaults, overridden by the host's variables)."""

    spse_unit: str
    spse_url: str
    spse_base_dir: str
    spse_conf_dir: str
    spse_data_dir: str
    pg_unit: str
    pg_port: int
    pg_data_dir: str
    nginx_cert_path: str

    @property
    def health_url(self) -> str:
        return self.spse_url.rstrip("/") + "/health"


_defaults_cache: dict[Path, dict[str, Any]] = {}


def role_defaults(project_dir: Path | None = None) -> dict[str, Any]:
    """Return the variables of ``roles/site/defaults`` and ``roles/nginx/vars`` (read once per process)."""
    root = project_dir or config.PROJECT_DIR
    if root not in _defaults_cache:
        merged: dict[str, Any] = {}
        for parts in FACT_FILES:
            merged.update(yaml.safe_load(root.joinpath(*parts).read_text()) or {})
        _defaults_cache[root] = merged
    return _defaults_cache[root]


def _render(name: str, variables: Mapping[str, Any], depth: int = 0) -> str:
    """Return variable *name* with its plain ``{{ other }}`` references resolved (no filters)."""
    value = str(variables.get(name, ""))
    if depth > 10:
        raise ValueError(f"{name}: references nest too deep")
    return _REFERENCE.sub(lambda m: _render(m.group(1), variables, depth + 1), value)


def site_facts(hostvars: Mapping[str, Any], project_dir: Path | None = None) -> SiteFacts:
    """Return *hostvars*' site facts: the roles' defaults with the host's own ``site_*`` values on top."""
    variables = {**role_defaults(project_dir), **{k: v for k, v in hostvars.items() if k.startswith("site_")}}
    return SiteFacts(
        spse_unit=_render("site_spse_unit", variables), spse_url=_render("site_spse_url", variables),
        spse_base_dir=_render("site_spse_base_dir", variables),
        spse_conf_dir=_render("site_spse_conf_dir", variables),
        spse_data_dir=_render("site_spse_data_dir", variables), pg_unit=_render("site_pg_unit", variables),
        pg_port=int(_render("site_pg_port", variables)), pg_data_dir=_render("site_pg_data_dir", variables),
        nginx_cert_path=_render("__nginx_cert_path", variables))


# -- the remote command -------------------------------------------------------------------------

BACKUP_TOOL = "/usr/local/sbin/lpse-backup"
"""The site tool the backup role installs; ``status`` prints one JSON record."""

_SCRIPT = r"""
export LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
S=""; [ "$(id -u)" -eq 0 ] || S="sudo -n"
echo "probe=1"
echo "now=$(date +%s)"
echo "spse_active=$(systemctl is-active "$SPSE_UNIT" 2>/dev/null | head -n1)"
echo "pg_active=$(systemctl is-active "$PG_UNIT" 2>/dev/null | head -n1)"
if command -v pg_isready >/dev/null 2>&1; then pg_isready -q -t 3 -h 127.0.0.1 -p "$PG_PORT" >/dev/null 2>&1
  echo "pg_ready=$?"; fi
echo "nginx_active=$(systemctl is-active nginx 2>/dev/null | head -n1)"
if [ -r "$SPSE_BASE/current/VERSION" ]; then echo "version=$(head -c 64 "$SPSE_BASE/current/VERSION" | head -n1)"; fi
if [ -L "$SPSE_BASE/current" ]; then echo "release_link=$(basename "$(readlink "$SPSE_BASE/current")" | head -c 64)"; fi
if [ -d "$SPSE_BASE" ]; then df -Pk "$SPSE_BASE" 2>/dev/null | awk 'NR==2 {print "spse_free_kb=" $4}'; fi
if command -v curl >/dev/null 2>&1; then H=$(curl -s -m 3 "$HEALTH_URL" 2>/dev/null); echo "health_rc=$?"
else H=$(python3 -c 'import sys,urllib.request as u;print(u.urlopen(sys.argv[1],timeout=3).read().decode())' \
  "$HEALTH_URL" 2>/dev/null); echo "health_rc=$?"; fi
echo "health=$(printf '%s' "$H" | tr '\n' ' ' | head -c 2000)"
for P in / "$PG_DATA" "$SPSE_DATA"; do
  if [ -e "$P" ]; then df -Pk "$P" 2>/dev/null | awk -v p="$P" 'NR==2 {print "disk=" p " " $2 " " $3 " " $4 " " $6}'
  else echo "disk=$P missing"; fi
done
awk '/^(MemTotal|MemAvailable):/ {print "mem_" $1 "=" $2}' /proc/meminfo | tr -d ':'
echo "loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
echo "cpus=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)"
E=$($S openssl x509 -noout -enddate -in "$CERT" 2>&1 </dev/null); echo "cert_rc=$?"
echo "cert=$(printf '%s' "$E" | head -n1)"
echo "security_updates=$(apt list --upgradable 2>/dev/null | grep -c security)"
if [ -e "$SPSE_CONF/frozen" ]; then echo "frozen=yes"; else echo "frozen=no"; fi
if [ -x "$BACKUP_TOOL" ]; then B=$($S "$BACKUP_TOOL" $BACKUP_ARGS 2>/dev/null); echo "backup_rc=$?"
  echo "backup=$(printf '%s' "$B" | tr '\n' ' ')"
else echo "backup_rc=absent"; fi
echo "end=1"
"""


BACKUP_STATUS = "status"
"""What the fleet view asks the site tool: every backup fact (``pgbackrest info``, both restic repositories)."""
VERIFICATIONS_ONLY = "status --verifications-only"
"""What the upgrade plan asks: the site's verifications alone (read from its own files, no engine run)."""


def probe_script(facts: SiteFacts, backup_args: str = BACKUP_STATUS) -> str:
    """Return the one remote command: the facts' paths as shell variables, then the read-only script.

    *backup_args*: the site tool's arguments (:data:`BACKUP_STATUS` or :data:`VERIFICATIONS_ONLY`), fixed
    words of this module, never operator text.

    The script's lines are collected and printed with one write at the end: sshd forwards each write
    of the command as its own SSH packet, and every packet costs the client a receive, a decryption and
    a turn of its event loop (about 30 packets a probe otherwise; bench/fleet_probe.py).
    """
    values = {"SPSE_UNIT": facts.spse_unit, "PG_UNIT": facts.pg_unit, "PG_PORT": str(facts.pg_port),
              "SPSE_BASE": facts.spse_base_dir, "HEALTH_URL": facts.health_url, "PG_DATA": facts.pg_data_dir,
              "SPSE_DATA": facts.spse_data_dir, "CERT": facts.nginx_cert_path, "SPSE_CONF": facts.spse_conf_dir,
              "BACKUP_TOOL": BACKUP_TOOL, "BACKUP_ARGS": backup_args}
    header = "".join(f"{name}={shlex.quote(value)}\n" for name, value in values.items())
    return f"lpse_probe_out=$(\n{header}{_SCRIPT.strip()}\n)\nprintf '%s\\n' \"$lpse_probe_out\"\n"


# -- the parsed probe ---------------------------------------------------------------------------


@dataclass
class Fault:
    """One thing wrong on a site: a stable ``code``, ``critical`` or ``warning``, and what it is."""

    code: str
    severity: str
    message: str


@dataclass
class Disk:
    path: str
    mount: str | None
    size_kb: int | None
    used_kb: int | None
    available_kb: int | None

    @property
    def used_percent(self) -> float | None:
        """Used space as df counts it (used / (used + available): root's reserve counts as full)."""
        if self.used_kb is None or self.available_kb is None or self.used_kb + self.available_kb == 0:
            return None
        return round(100.0 * self.used_kb / (self.used_kb + self.available_kb), 1)


@dataclass
class SiteProbe:
    """What one probe of one site found: facts, or why there are none (``error``), and its faults."""

    host: str
    address: str
    reachable: bool
    error: str | None = None
    """One of CONNECTION_ERRORS when the site did not answer."""
    error_detail: str | None = None
    probed_at: str | None = None
    duration_s: float | None = None
    spse_active: str | None = None
    spse_health: dict[str, Any] | None = None
    spse_version: str | None = None
    release_link: str | None = None
    """The name of the release folder ``current`` points at (the version when VERSION is unreadable)."""
    spse_free_bytes: int | None = None
    """Bytes available to the SPSE folder (``df``), what an upgrade unpacks into."""
    schema_version: int | None = None
    postgresql_active: str | None = None
    postgresql_ready: bool | None = None
    nginx_active: str | None = None
    disks: list[Disk] = field(default_factory=list)
    memory_total_kb: int | None = None
    memory_available_kb: int | None = None
    load: tuple[float, float, float] | None = None
    cpus: int | None = None
    cert_not_after: str | None = None
    cert_error: str | None = None
    security_updates: int | None = None
    frozen: bool | None = None
    backup: dict[str, Any] | None = None
    """``lpse-backup status`` JSON; None when the tool is absent (backups not set up)."""
    backup_error: str | None = None
    backup_ages: dict[str, float | None] | None = None
    """Seconds since each backup, snapshot, archived WAL and verified restore (set by the fleet action)."""
    verification: dict[str, Any] | None = None
    """The site's current restore verification as the state store holds it (set by the fleet action)."""
    clock_skew_s: float | None = None
    faults: list[Fault] = field(default_factory=list)

    @property
    def memory_available_percent(self) -> float | None:
        if not self.memory_total_kb or self.memory_available_kb is None:
            return None
        return 100.0 * self.memory_available_kb / self.memory_total_kb

    @property
    def worst(self) -> int:
        """Sort rank, worst first: 0 unreachable, 1 a critical fault, 2 a warning, 3 healthy."""
        if not self.reachable:
            return 0
        severities = {fault.severity for fault in self.faults}
        return 1 if CRITICAL in severities else 2 if severities else 3

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        available = self.memory_available_percent
        data["memory_available_percent"] = round(available, 1) if available is not None else None
        for disk, raw in zip(self.disks, data["disks"], strict=True):
            raw["used_percent"] = disk.used_percent
        return data


class ProbeOutputError(ValueError):
    """The remote command's output is not a complete probe."""


def _int(value: str | None) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def parse_lines(text: str) -> dict[str, list[str]]:
    """Return the ``key=value`` lines of *text*, each key's values in order (``disk`` repeats)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[a-z_A-Z]+", key):
            found.setdefault(key, []).append(value)
    return found


_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}


def parse_cert_date(line: str) -> datetime | None:
    """Return the time of openssl's ``notAfter=Mar  2 05:57:42 2029 GMT``, or None.

    Read by hand, not by ``strptime``: the month names are openssl's own (C locale), whatever this
    machine's locale, and it costs a tenth as much per site.
    """
    _, _, stamp = line.partition("=")
    parts = stamp.split()
    try:
        month, day, clock, year, zone = parts
        hour, minute, second = (int(x) for x in clock.split(":"))
        if zone != "GMT" or month not in _MONTHS:
            return None
        return datetime(int(year), _MONTHS[month], int(day), hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None


def parse_output(host: str, address: str, text: str, now: datetime | None = None) -> SiteProbe:
    """Turn the probe script's output into a :class:`SiteProbe` (faults not yet computed); pure.

    Raises ProbeOutputError when the output is not the probe's (no ``probe=1`` first, no ``end=1``).
    """
    now = now or datetime.now(UTC)
    lines = parse_lines(text)

    def one(key: str) -> str | None:
        values = lines.get(key)
        return values[-1] if values else None

    if one("probe") != str(PROBE_FORMAT):
        raise ProbeOutputError(f"not a probe output (format {one('probe')!r}): {text[:200]!r}")
    if one("end") != "1":
        raise ProbeOutputError("the probe output ends early (no end=1 line)")
    probe = SiteProbe(host=host, address=address, reachable=True, probed_at=now.isoformat(timespec="seconds"))
    remote_now = _int(one("now"))
    probe.clock_skew_s = round(remote_now - now.timestamp(), 1) if remote_now is not None else None
    probe.spse_active = one("spse_active") or None
    probe.postgresql_active = one("pg_active") or None
    probe.postgresql_ready = None if one("pg_ready") is None else one("pg_ready") == "0"
    probe.nginx_active = one("nginx_active") or None
    probe.spse_version = (one("version") or "").strip() or None
    probe.release_link = (one("release_link") or "").strip() or None
    free_kb = _int(one("spse_free_kb"))
    probe.spse_free_bytes = free_kb * 1024 if free_kb is not None else None
    health_text = (one("health") or "").strip()
    if health_text:
        try:
            health = json.loads(health_text)
            probe.spse_health = health if isinstance(health, dict) else {"status": str(health)}
        except json.JSONDecodeError:
            probe.spse_health = {"status": "unreadable", "body": health_text[:200]}
    if probe.spse_health:
        probe.schema_version = _int(probe.spse_health.get("schema_version"))
    for value in lines.get("disk", []):
        parts = value.split()
        if len(parts) >= 2 and parts[-1] == "missing":
            probe.disks.append(Disk(" ".join(parts[:-1]), None, None, None, None))
        elif len(parts) >= 5:
            probe.disks.append(Disk(parts[0], parts[4], _int(parts[1]), _int(parts[2]), _int(parts[3])))
    probe.memory_total_kb = _int(one("mem_MemTotal"))
    probe.memory_available_kb = _int(one("mem_MemAvailable"))
    try:
        load = [float(x) for x in (one("loadavg") or "").split()[:3]]
        probe.load = (load[0], load[1], load[2]) if len(load) == 3 else None
    except ValueError:
        probe.load = None
    probe.cpus = _int(one("cpus"))
    cert_line = one("cert") or ""
    when = parse_cert_date(cert_line) if one("cert_rc") == "0" else None
    probe.cert_not_after = when.isoformat() if when else None
    probe.cert_error = None if when else (cert_line.strip() or "no answer from openssl")
    probe.security_updates = _int(one("security_updates"))
    probe.frozen = {"yes": True, "no": False}.get(one("frozen") or "")
    backup_rc = one("backup_rc")
    if backup_rc == "absent":
        probe.backup = None
    else:
        try:
            probe.backup = json.loads(one("backup") or "")
        except json.JSONDecodeError:
            probe.backup_error = f"lpse-backup status printed no JSON (exit {backup_rc})"
    return probe


# -- the fault rules (clause numbers: docs/fleet-status.md) -------------------------------------


@dataclass(frozen=True)
class Limits:
    """The thresholds of the system faults."""

    disk_warning_percent: float = 90.0
    disk_critical_percent: float = 95.0
    memory_available_percent: float = 10.0
    load_per_cpu: float = 2.0
    cert_days: int = 14
    clock_skew_s: float = 120.0


def _service_faults(probe: SiteProbe) -> list[Fault]:
    found: list[Fault] = []
    if probe.spse_active != "active":
        found.append(Fault("spse_down", CRITICAL, f"SPSE service is {probe.spse_active or 'unknown'}"))
    else:
        status = (probe.spse_health or {}).get("status")
        if status != "ok":
            found.append(Fault("spse_unhealthy", CRITICAL,
                               f"SPSE health endpoint: {status or 'no answer'}"
                               + "".join(f"; {k} {v}" for k, v in (probe.spse_health or {}).items()
                                         if k in ("database", "documents_dir") and v != "ok")))
        expected = _int((probe.spse_health or {}).get("expected_schema_version"))
        if expected is not None and probe.schema_version is not None and expected != probe.schema_version:
            found.append(Fault("schema_mismatch", CRITICAL,
                               f"database schema {probe.schema_version}, release expects {expected}"))
    if probe.postgresql_active != "active" or probe.postgresql_ready is False:
        found.append(Fault("postgresql_down", CRITICAL,
                           f"PostgreSQL service is {probe.postgresql_active or 'unknown'}"
                           + (", not accepting connections" if probe.postgresql_ready is False else "")))
    if probe.nginx_active != "active":
        found.append(Fault("nginx_down", CRITICAL, f"nginx is {probe.nginx_active or 'unknown'}"))
    if probe.spse_version is None:
        found.append(Fault("version_unknown", WARNING, "no SPSE release installed (current/VERSION unreadable)"))
    return found


def _capacity_faults(probe: SiteProbe, limits: Limits) -> list[Fault]:
    found: list[Fault] = []
    seen: set[str] = set()
    for disk in probe.disks:
        if disk.mount is None:
            found.append(Fault("disk_path_missing", WARNING, f"{disk.path} does not exist"))
            continue
        percent = disk.used_percent
        if percent is None or disk.mount in seen:
            continue
        seen.add(disk.mount)
        if percent > limits.disk_warning_percent:
            severity = CRITICAL if percent > limits.disk_critical_percent else WARNING
            found.append(Fault("disk_full", severity, f"{disk.mount} ({disk.path}) {percent:.0f}% used, "
                                                      f"{(disk.available_kb or 0) // 1024} MiB free"))
    available = probe.memory_available_percent
    if available is not None and available < limits.memory_available_percent:
        found.append(Fault("memory_low", WARNING, f"{available:.0f}% of memory available"))
    if probe.load and probe.cpus and probe.load[1] > limits.load_per_cpu * probe.cpus:
        found.append(Fault("load_high", WARNING, f"load {probe.load[1]:.1f} (5 min) on {probe.cpus} CPU(s)"))
    return found


def _security_faults(probe: SiteProbe, limits: Limits, now: datetime) -> list[Fault]:
    found: list[Fault] = []
    if probe.cert_not_after is None:
        found.append(Fault("cert_unreadable", WARNING, f"nginx certificate unreadable: {probe.cert_error}"))
    else:
        left = datetime.fromisoformat(probe.cert_not_after) - now
        if left <= timedelta(0):
            found.append(Fault("cert_expired", CRITICAL, f"nginx certificate expired {probe.cert_not_after}"))
        elif left < timedelta(days=limits.cert_days):
            found.append(Fault("cert_expiring", WARNING,
                               f"nginx certificate expires in {left.total_seconds() / 86400:.1f} days "
                               f"({probe.cert_not_after})"))
    if probe.security_updates:
        found.append(Fault("security_updates", WARNING, f"{probe.security_updates} security update(s) pending"))
    if probe.clock_skew_s is not None and abs(probe.clock_skew_s) > limits.clock_skew_s:
        found.append(Fault("clock_skew", WARNING, f"clock {probe.clock_skew_s:+.0f} s off the control machine's"))
    return found


def system_faults(probe: SiteProbe, limits: Limits | None = None, now: datetime | None = None) -> list[Fault]:
    """Return the faults of a reachable *probe*'s services, capacity and certificate (pure).

    Backups are judged once, by the backup status rules (``actions.backup.assess``), not here.
    """
    limits = limits or Limits()
    now = now or datetime.now(UTC)
    return _service_faults(probe) + _capacity_faults(probe, limits) + _security_faults(probe, limits, now)


# -- connections --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """How to reach one host: from its inventory variables (:func:`target_from_hostvars`)."""

    host: str
    address: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    known_hosts_file: str | None = None
    strict_host_key_checking: str = "yes"
    """OpenSSH's values: ``yes`` (unknown keys refused), ``accept-new`` (unknown accepted, not written), ``no``."""
    facts: SiteFacts | None = None


def ssh_options(args: str) -> dict[str, str]:
    """Return the ``-o Name=Value`` options of an ssh argument string, names lower-cased (pure).

    A fleet's hosts share one argument string (group variables): it is split once (``shlex`` costs about
    0.2 ms a host otherwise; bench/fleet_probe.py)."""
    return dict(_ssh_options(args or ""))


@functools.lru_cache(maxsize=64)
def _ssh_options(args: str) -> tuple[tuple[str, str], ...]:
    options: dict[str, str] = {}
    words = shlex.split(args or "")
    for index, word in enumerate(words):
        value = None
        if word == "-o" and index + 1 < len(words):
            value = words[index + 1]
        elif word.startswith("-o") and len(word) > 2:
            value = word[2:]
        if value:
            name, sep, rest = value.partition("=")
            if not sep:
                name, _, rest = value.partition(" ")
            options[name.strip().lower()] = rest.strip()
    return tuple(options.items())


def target_from_hostvars(host: str, hostvars: Mapping[str, Any], project_dir: Path | None = None) -> Target:
    """Return the :class:`Target` of *host* from its Ansible variables (connection and site facts)."""
    options = ssh_options(f"{hostvars.get('ansible_ssh_common_args', '')} "
                          f"{hostvars.get('ansible_ssh_extra_args', '')}")
    checking = options.get("stricthostkeychecking", "yes").lower()
    checking = {"yes": "yes", "no": "no", "off": "no", "accept-new": "accept-new", "ask": "yes"}.get(checking, "yes")
    known = options.get("userknownhostsfile")
    return Target(host=host, address=str(hostvars.get("ansible_host") or host),
                  port=int(hostvars.get("ansible_port") or 22),
                  user=str(hostvars.get("ansible_user")) if hostvars.get("ansible_user") else None,
                  key_file=str(hostvars["ansible_ssh_private_key_file"])
                  if hostvars.get("ansible_ssh_private_key_file") else None,
                  known_hosts_file=str(Path(known.split()[0]).expanduser()) if known else None,
                  strict_host_key_checking=checking, facts=site_facts(hostvars, project_dir))


class _Loaded:
    """known_hosts files and private keys read once per process, shared by every connection."""

    def __init__(self) -> None:
        self.known_hosts: dict[str, Any] = {}
        self.keys: dict[str, Any] = {}

    def known(self, path: str | None) -> Any:
        import asyncssh

        path = path or str(Path("~/.ssh/known_hosts").expanduser())
        if path not in self.known_hosts:
            try:
                self.known_hosts[path] = asyncssh.read_known_hosts(path)
            except OSError:
                self.known_hosts[path] = asyncssh.import_known_hosts("")
        return self.known_hosts[path]

    def key(self, path: str) -> Any:
        import asyncssh

        if path not in self.keys:
            self.keys[path] = asyncssh.read_private_key(str(Path(path).expanduser()))
        return self.keys[path]


LOADED = _Loaded()


@functools.cache
def _client_class() -> type:
    import asyncssh

    class ProbeClient(asyncssh.SSHClient):
        """Checks a host key asyncssh did not find trusted: mismatch, unknown, or accepted new."""

        def __init__(self, target: Target, known: Any, state: dict[str, str]) -> None:
            self.target, self.known, self.state = target, known, state

        def connection_made(self, conn: Any) -> None:
            self.state["phase"] = "handshake"

        def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
            listed = self.known.match(host, addr, port)[0]
            if listed:
                self.state["host_key"] = "mismatch"
                return self.target.strict_host_key_checking == "no"
            self.state["host_key"] = "unknown"
            return self.target.strict_host_key_checking in ("accept-new", "no")

    return ProbeClient


def classify(error: BaseException, state: Mapping[str, str], timeout: float) -> tuple[str, str]:
    """Return (code, detail) for a probe that failed with *error* in connection phase ``state['phase']``.

    A timeout before the TCP connection was made is ``unreachable`` (nothing answered); after it,
    ``timeout`` (the host answered but the handshake or the command did not finish in time).
    """
    import asyncssh

    phase = state.get("phase", "connect")
    if isinstance(error, TimeoutError | asyncio.TimeoutError):
        if phase == "connect":
            return "unreachable", f"no TCP answer within {timeout:g} s"
        return "timeout", f"no answer within {timeout:g} s (during the {phase})"
    if isinstance(error, asyncssh.HostKeyNotVerifiable):
        if state.get("host_key") == "unknown":
            return "host_key_unknown", "host key not in known_hosts (StrictHostKeyChecking=yes)"
        return "host_key_mismatch", "host key differs from known_hosts: possible impostor, or a reinstalled host"
    if isinstance(error, asyncssh.PermissionDenied):
        return "auth_failed", f"authentication refused: {error.reason}"
    if isinstance(error, asyncssh.KeyImportError | asyncssh.KeyEncryptionError):
        return "auth_failed", f"cannot use the private key: {error}"
    if isinstance(error, socket.gaierror):
        return "unreachable", f"name does not resolve: {error}"
    if isinstance(error, ConnectionRefusedError):
        return "unreachable", "connection refused (no sshd on that port)"
    if isinstance(error, OSError) and phase == "connect":
        return "unreachable", str(error) or type(error).__name__
    if isinstance(error, asyncssh.DisconnectError):
        return "ssh_error", f"disconnected: {error.reason}"
    return "ssh_error", f"{type(error).__name__}: {error}"


@dataclass
class RawResult:
    """The remote command's output of one host, or how reaching it failed."""

    target: Target
    stdout: str = ""
    stderr: str = ""
    exit_status: int | None = None
    error: str | None = None
    error_detail: str | None = None
    duration_s: float = 0.0


async def _connect(target: Target, timeout: float, state: dict[str, str]) -> Any:
    """Open one SSH connection to *target* (handshake and authentication); raises what asyncssh raises."""
    import asyncssh

    known = LOADED.known(target.known_hosts_file)
    client = _client_class()
    keys = [LOADED.key(target.key_file)] if target.key_file else ()
    return await asyncssh.connect(
        target.address, port=target.port, username=target.user or (), client_keys=keys, known_hosts=known,
        kex_algs=list(KEX_ALGS), encryption_algs=list(ENCRYPTION_ALGS),
        client_factory=lambda: client(target, known, state), config=None,
        agent_path=None, x509_trusted_certs=None, connect_timeout=timeout, login_timeout=timeout,
        keepalive_interval=0)


async def _command(conn: Any, target: Target, command: str, state: dict[str, str]) -> RawResult:
    state["phase"] = "command"
    done = await conn.run(command, check=False)
    return RawResult(target, stdout=str(done.stdout or ""), stderr=str(done.stderr or ""),
                     exit_status=done.exit_status)


async def _run_one(target: Target, command: str, timeout: float) -> RawResult:
    """Connect, run *command* once and close, all within *timeout* s; never raises (failures are classified)."""
    state: dict[str, str] = {"phase": "connect"}
    started = time.monotonic()

    async def session() -> RawResult:
        async with await _connect(target, timeout, state) as conn:
            return await _command(conn, target, command, state)

    try:
        result = await asyncio.wait_for(session(), timeout)
    except Exception as error:  # noqa: BLE001 - every failure is classified, none escapes
        code, detail = classify(error, state, timeout)
        result = RawResult(target, error=code, error_detail=detail)
    result.duration_s = round(time.monotonic() - started, 3)
    return result


class _Scripts:
    """The probe command of each distinct set of site facts, built once (hosts sharing facts share it)."""

    def __init__(self, backup_args: str = BACKUP_STATUS) -> None:
        self.made: dict[SiteFacts | None, str] = {}
        self.backup_args = backup_args

    def of(self, target: Target) -> str:
        if target.facts not in self.made:
            self.made[target.facts] = probe_script(target.facts or site_facts({}), self.backup_args)
        return self.made[target.facts]


async def _run_all(targets: list[Target], timeout: float, concurrency: int,
                   on_done: Callable[[RawResult], None] | None, backup_args: str = BACKUP_STATUS) -> list[RawResult]:
    gate = asyncio.Semaphore(max(1, concurrency))
    scripts = _Scripts(backup_args)

    async def bounded(target: Target) -> RawResult:
        async with gate:
            try:
                command = scripts.of(target)
            except (OSError, ValueError) as error:
                return RawResult(target, error="ssh_error", error_detail=f"no probe command: {error}")
            result = await _run_one(target, command, timeout)
        if on_done:
            on_done(result)
        return result

    return list(await asyncio.gather(*(bounded(target) for target in targets)))


def run_probes(targets: list[Target], *, timeout: float = 10.0, concurrency: int = 20,
               on_done: Callable[[RawResult], None] | None = None,
               backup_args: str = BACKUP_STATUS) -> list[RawResult]:
    """Run the probe command on every target, at most *concurrency* at a time, each within *timeout* s.

    *backup_args*: what the site tool is asked (:data:`BACKUP_STATUS`, or :data:`VERIFICATIONS_ONLY`).
    Returns one RawResult per target, in the targets' order; a failure is classified, never raised.
    """
    return asyncio.run(_run_all(targets, timeout, concurrency, on_done, backup_args))


KEPT_FUNCTION = "lpse_probe"
"""The shell function a kept shell defines once (the probe script) and each later round calls."""
_KEPT_END = "\nend=1\n"


@dataclass
class _Shell:
    """One kept connection and the ``sh`` it runs, in which the probe script is a function."""

    conn: Any
    process: Any
    script: str

    async def probe(self, target: Target, state: dict[str, str]) -> RawResult:
        state["phase"] = "command"
        self.process.stdin.write(f"{KEPT_FUNCTION}\n")
        output = await self.process.stdout.readuntil(_KEPT_END)
        return RawResult(target, stdout=output, exit_status=0)

    def abort(self) -> None:
        self.conn.abort()


class KeptProbes:
    """Probes that keep their connections open between rounds: a watch loop, or a daemon's.

    Use inside one event loop (``async with KeptProbes() as kept: await kept.run(targets)`` as often as
    needed). The first round connects every host and starts one ``sh`` on it, which defines the probe
    script as a shell function (its stdin from /dev/null) and runs it; each later round writes the
    function's name to that shell and reads the output up to ``end=1``: no TCP or SSH handshake, no new
    session, one small packet each way. A host whose shell or connection broke, or did not answer in
    time, is dropped and connected again in the next round (within that round's bound). Leaving the
    ``async with`` closes every connection.
    """

    def __init__(self, *, timeout: float = 10.0, concurrency: int = 20) -> None:
        self.timeout, self.concurrency = timeout, concurrency
        self.shells: dict[str, _Shell] = {}
        self.scripts = _Scripts()

    @property
    def connections(self) -> dict[str, Any]:
        return {host: shell.conn for host, shell in self.shells.items()}

    async def __aenter__(self) -> KeptProbes:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _open(self, target: Target, script: str, state: dict[str, str]) -> _Shell:
        import asyncssh

        conn = await _connect(target, self.timeout, state)
        try:
            state["phase"] = "command"
            process = await conn.create_process("sh", stderr=asyncssh.DEVNULL)
            process.stdin.write(f"{KEPT_FUNCTION}() {{\n{script}\n}} </dev/null\n")
        except BaseException:
            conn.abort()
            raise
        return _Shell(conn, process, script)

    async def _probe(self, target: Target) -> RawResult:
        state: dict[str, str] = {"phase": "connect"}
        started = time.monotonic()
        try:
            script = self.scripts.of(target)
        except (OSError, ValueError) as error:
            return RawResult(target, error="ssh_error", error_detail=f"no probe command: {error}")
        shell = self.shells.pop(target.host, None)

        async def attempt() -> RawResult:
            nonlocal shell
            if shell is not None and shell.script == script:
                try:
                    return await shell.probe(target, state)
                except Exception:  # noqa: BLE001 - a broken kept shell: connect again below
                    state["phase"] = "connect"
            if shell is not None:
                shell.abort()
            shell = await self._open(target, script, state)
            return await shell.probe(target, state)

        try:
            result = await asyncio.wait_for(attempt(), self.timeout)
            if shell is not None:
                self.shells[target.host] = shell
        except Exception as error:  # noqa: BLE001 - every failure is classified, none escapes
            if shell is not None:
                shell.abort()
            code, detail = classify(error, state, self.timeout)
            result = RawResult(target, error=code, error_detail=detail)
        result.duration_s = round(time.monotonic() - started, 3)
        return result

    async def run(self, targets: list[Target], on_done: Callable[[RawResult], None] | None = None,
                  ) -> list[RawResult]:
        """One round: a RawResult per target, in their order (as :func:`run_probes`)."""
        gate = asyncio.Semaphore(max(1, self.concurrency))

        async def bounded(target: Target) -> RawResult:
            async with gate:
                result = await self._probe(target)
            if on_done:
                on_done(result)
            return result

        return list(await asyncio.gather(*(bounded(target) for target in targets)))

    async def close(self) -> None:
        shells, self.shells = list(self.shells.values()), {}
        for shell in shells:
            shell.conn.close()
        await asyncio.gather(*(shell.conn.wait_closed() for shell in shells), return_exceptions=True)


def to_probe(raw: RawResult, now: datetime | None = None, limits: Limits | None = None) -> SiteProbe:
    """Return the SiteProbe of one raw result: classified failure, or parsed facts with system faults."""
    target = raw.target
    address = f"{target.address}:{target.port}"
    now = now or datetime.now(UTC)
    if raw.error:
        probe = SiteProbe(host=target.host, address=address, reachable=False, error=raw.error,
                          error_detail=raw.error_detail, probed_at=now.isoformat(timespec="seconds"),
                          duration_s=raw.duration_s)
        probe.faults = [Fault(raw.error, CRITICAL, raw.error_detail or raw.error)]
        return probe
    try:
        probe = parse_output(target.host, address, raw.stdout, now)
    except ProbeOutputError as error:
        detail = f"{error}; exit {raw.exit_status}; stderr: {raw.stderr.strip()[:300]}"
        probe = SiteProbe(host=target.host, address=address, reachable=True, error_detail=detail,
                          probed_at=now.isoformat(timespec="seconds"))
        probe.faults = [Fault("probe_failed", CRITICAL, detail)]
        probe.duration_s = raw.duration_s
        return probe
    probe.duration_s = raw.duration_s
    probe.faults = system_faults(probe, limits, now)
    return probe
