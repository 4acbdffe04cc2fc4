"""The fault rules of the fleet probe (clause numbers: docs/fleet-status.md): what a site's probe means.

Pure judgement over :class:`lpse_ops.backends.probe_output.SiteProbe`: services, capacity and security
faults with their thresholds (:class:`Limits`), and :func:`to_probe`, a raw SSH result turned into a
judged probe. Backups are judged once, by the backup status rules (``actions.backup.assess``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from lpse_ops.backends.probe_output import (
    CRITICAL,
    WARNING,
    Fault,
    ProbeOutputError,
    SiteProbe,
    parse_int,
    parse_output,
)
from lpse_ops.backends.ssh_probe import RawResult


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
        expected = parse_int((probe.spse_health or {}).get("expected_schema_version"))
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
