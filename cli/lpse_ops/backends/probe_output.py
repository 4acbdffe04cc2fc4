"""The probe's remote command and its output: the POSIX ``sh`` script that collects every fact of a site in one
round trip (``key=value`` lines), and the pure parser from that output to a typed :class:`SiteProbe`.

The faults a probe raises are judged by ``lpse_ops.actions.probe_rules``; the transport is
:mod:`lpse_ops.backends.ssh_probe`.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from lpse_ops.site_facts import SiteFacts

PROBE_FORMAT = 1
"""The version of the script's output (its first line: ``probe=1``)."""

CONNECTION_ERRORS = ("unreachable", "auth_failed", "host_key_mismatch", "host_key_unknown", "timeout", "ssh_error")
"""How a probe that got no answer failed (``SiteProbe.error``)."""

CRITICAL, WARNING = "critical", "warning"

NGINX_HTTPS_PORT = 443
"""Where the probe asks nginx, on the site itself, for the certificate it serves (whatever its source: the
self-signed or provided one in /etc/nginx/tls, or certbot's in acme mode); the file at the site facts'
``nginx_cert_path`` is read only when no handshake completes (nginx down)."""

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
E=$(timeout 10 openssl s_client -connect "127.0.0.1:$HTTPS_PORT" </dev/null 2>/dev/null \
  | openssl x509 -noout -enddate 2>/dev/null)
if [ -n "$E" ]; then echo "cert_rc=0"; else E=$($S openssl x509 -noout -enddate -in "$CERT" 2>&1 </dev/null)
  echo "cert_rc=$?"; fi
echo "cert=$(printf '%s' "$E" | head -n1)"
echo "security_updates=$(apt list --upgradable 2>/dev/null | grep -c security)"
if [ -e "$SPSE_CONF/frozen" ]; then echo "frozen=yes"; else echo "frozen=no"; fi
if [ -x "$BACKUP_TOOL" ]; then echo "tool_sha256=$(sha256sum "$BACKUP_TOOL" 2>/dev/null | cut -c1-64)"
  B=$($S "$BACKUP_TOOL" $BACKUP_ARGS 2>/dev/null); echo "backup_rc=$?"
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
              "SPSE_DATA": facts.spse_data_dir, "CERT": facts.nginx_cert_path, "HTTPS_PORT": str(NGINX_HTTPS_PORT),
              "SPSE_CONF": facts.spse_conf_dir,
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
    tool_sha256: str | None = None
    """The sha256 of the site tool installed (an upgrade skips copying one the site already has)."""
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


def parse_int(value: str | None) -> int | None:
    """The integer in *value*, or None."""
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def parse_lines(text: str) -> dict[str, list[str]]:
    """Return the ``key=value`` lines of *text*, each key's values in order (``disk`` repeats)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", key):
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
    remote_now = parse_int(one("now"))
    probe.clock_skew_s = round(remote_now - now.timestamp(), 1) if remote_now is not None else None
    probe.spse_active = one("spse_active") or None
    probe.postgresql_active = one("pg_active") or None
    probe.postgresql_ready = None if one("pg_ready") is None else one("pg_ready") == "0"
    probe.nginx_active = one("nginx_active") or None
    probe.spse_version = (one("version") or "").strip() or None
    probe.release_link = (one("release_link") or "").strip() or None
    free_kb = parse_int(one("spse_free_kb"))
    probe.spse_free_bytes = free_kb * 1024 if free_kb is not None else None
    health_text = (one("health") or "").strip()
    if health_text:
        try:
            health = json.loads(health_text)
            probe.spse_health = health if isinstance(health, dict) else {"status": str(health)}
        except json.JSONDecodeError:
            probe.spse_health = {"status": "unreadable", "body": health_text[:200]}
    if probe.spse_health:
        probe.schema_version = parse_int(probe.spse_health.get("schema_version"))
    for value in lines.get("disk", []):
        parts = value.split()
        if len(parts) >= 2 and parts[-1] == "missing":
            probe.disks.append(Disk(" ".join(parts[:-1]), None, None, None, None))
        elif len(parts) >= 5:
            probe.disks.append(Disk(parts[0], parts[4], parse_int(parts[1]), parse_int(parts[2]), parse_int(parts[3])))
    probe.memory_total_kb = parse_int(one("mem_MemTotal"))
    probe.memory_available_kb = parse_int(one("mem_MemAvailable"))
    try:
        load = [float(x) for x in (one("loadavg") or "").split()[:3]]
        probe.load = (load[0], load[1], load[2]) if len(load) == 3 else None
    except ValueError:
        probe.load = None
    probe.cpus = parse_int(one("cpus"))
    cert_line = one("cert") or ""
    when = parse_cert_date(cert_line) if one("cert_rc") == "0" else None
    probe.cert_not_after = when.isoformat() if when else None
    probe.cert_error = None if when else (cert_line.strip() or "no answer from openssl")
    probe.security_updates = parse_int(one("security_updates"))
    probe.frozen = {"yes": True, "no": False}.get(one("frozen") or "")
    tool = one("tool_sha256") or ""
    probe.tool_sha256 = tool if re.fullmatch(r"[0-9a-f]{64}", tool) else None
    backup_rc = one("backup_rc")
    if backup_rc == "absent":
        probe.backup = None
    else:
        try:
            probe.backup = json.loads(one("backup") or "")
        except json.JSONDecodeError:
            probe.backup_error = f"lpse-backup status printed no JSON (exit {backup_rc})"
    return probe
