"""``fleet status``: probe every site read-only over SSH, judge it, store it for trends: one entry function.

Clauses 6.1.4.4 (monitor every installed piece of software), 6.2.2 and 6.2.18 (national monitoring) and
13.2 (load on the hardware); the fault rules: docs/fleet-status.md.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lpse_ops import config
from lpse_ops.actions import backup, fleet, probe_rules
from lpse_ops.actions.fleet import OperationRefused
from lpse_ops.actions.operation import parent_run
from lpse_ops.backends import ssh_probe

OPERATION = "fleet.status"

EXIT_OK, EXIT_FAULT, EXIT_UNREACHABLE, EXIT_WARNING = 0, 3, 4, 5

BACKUP_CRITICAL = frozenset({"hydration_incomplete", "status_unavailable", "pgbackrest_unreadable", "repo_error",
                             "no_backup", "backup_too_old", "verification_failed", "wal_failing",
                             "postgres_unavailable"})
"""Backup status codes (``actions.backup.assess``) that are critical in the fleet view; the rest warn."""


@dataclass
class FleetStatusRequest:
    inventory: Path
    limit: str | None = None
    timeout: float = 10.0
    concurrency: int = 20
    state_url: str | None = None
    on_host: Callable[[ssh_probe.SiteProbe], None] | None = None
    """Called as each site's probe is judged (progress display); never required."""
    backup_limits: backup.Thresholds = field(default_factory=backup.Thresholds)
    limits: probe_rules.Limits = field(default_factory=probe_rules.Limits)


@dataclass
class FleetStatus:
    """Every site asked for, worst first, the run that recorded them, and the exit code."""

    run_id: int | None
    probes: list[ssh_probe.SiteProbe]
    exit_code: int
    duration_s: float
    cpu_s: float
    """This process's CPU (user + system) during the probes, start-up and inventory parsing excluded."""

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "exit_code": self.exit_code, "duration_s": round(self.duration_s, 3),
                "cpu_s": round(self.cpu_s, 3), "sites": [probe.as_dict() for probe in self.probes]}


def backup_faults(probe: ssh_probe.SiteProbe, last_verification: dict | None, limits: backup.Thresholds,
                  now: datetime) -> list[ssh_probe.Fault]:
    """Return the backup faults of a reachable *probe*: the backup status verdict, made once, by its rules."""
    if probe.backup is None and probe.backup_error is None:
        return [ssh_probe.Fault("backup_not_set_up", ssh_probe.CRITICAL, "backups not set up (no lpse-backup tool)")]
    output = probe.backup if probe.backup is not None else {"error": probe.backup_error}
    verdict = backup.assess(probe.host, output, last_verification, limits, now)
    probe.backup_ages = verdict["ages"]
    return [ssh_probe.Fault(code, ssh_probe.CRITICAL if code in BACKUP_CRITICAL else ssh_probe.WARNING, message)
            for code, message in zip(verdict["codes"], verdict["warnings"], strict=True)]


def exit_code(probes: list[ssh_probe.SiteProbe]) -> int:
    """4 when a site did not answer, else 3 when a site has a critical fault, else 5 when a site has only
    warnings (pending security updates, a certificate expiring soon), else 0."""
    if any(not probe.reachable for probe in probes):
        return EXIT_UNREACHABLE
    faults = [fault for probe in probes for fault in probe.faults]
    if any(fault.severity != ssh_probe.WARNING for fault in faults):
        return EXIT_FAULT
    return EXIT_WARNING if faults else EXIT_OK


def host_result(site: ssh_probe.SiteProbe) -> dict[str, Any]:
    """A probed site as the run records it: ``failed`` only for a critical fault (a warning, such as pending
    security updates, leaves it ``ok`` with its ``warnings`` counted), ``unreachable`` when it did not answer."""
    critical = [fault for fault in site.faults if fault.severity != ssh_probe.WARNING]
    return {"status": "unreachable" if not site.reachable else "failed" if critical else "ok",
            "unreachable": int(not site.reachable), "failed": len(critical),
            "warnings": len(site.faults) - len(critical), "faults": [fault.code for fault in site.faults]}


def worst_first(probes: list[ssh_probe.SiteProbe]) -> list[ssh_probe.SiteProbe]:
    """Unreachable sites, then critical faults, then warnings, then healthy; more faults first; then by name."""
    return sorted(probes, key=lambda p: (p.worst, -len(p.faults), p.host))


def stored(probe: ssh_probe.SiteProbe) -> dict[str, Any]:
    """Return the state-store row of *probe* (headline figures for trends, and every fact)."""
    disks = [disk.used_percent for disk in probe.disks if disk.used_percent is not None]
    return {"reachable": probe.reachable, "error": probe.error, "spse_version": probe.spse_version,
            "fault_codes": [fault.code for fault in probe.faults], "disk_used_percent": max(disks, default=None),
            "memory_available_percent": round(probe.memory_available_percent, 1)
            if probe.memory_available_percent is not None else None,
            "load_5m": probe.load[1] if probe.load else None, "cpus": probe.cpus, "duration_s": probe.duration_s,
            "facts": probe.as_dict()}


def _targets(request: FleetStatusRequest) -> list[ssh_probe.Target]:
    """The probe's targets: the inventory read once (fleet.read: one ansible-inventory, plus Ansible's own
    match of a --limit). A read-only look: an inventory another operation would refuse (a missing secret) is
    still probed; one Ansible cannot read, or a limit matching nothing, is refused before any connection."""
    return fleet.read(request.inventory, limit=request.limit, validate_for=None).targets()


class _Round:
    """One probe of the fleet as the state store records it: a run, each site judged as it answers, stored."""

    def __init__(self, request: FleetStatusRequest, targets: list[ssh_probe.Target], store: Any,
                 extra: dict[str, Any] | None = None) -> None:
        self.request, self.store = request, store
        self.run_id = store.start_run(OPERATION, {"inventory": str(request.inventory), "limit": request.limit,
                                                  "timeout": request.timeout, "concurrency": request.concurrency,
                                                  **(extra or {})}, [target.host for target in targets],
                                      parent_id=parent_run())
        self.probes: list[ssh_probe.SiteProbe] = []
        self.started, self.cpu_before = time.monotonic(), _cpu()

    def judge(self, raw: ssh_probe.RawResult) -> None:
        now = datetime.now(UTC)
        site = probe_rules.to_probe(raw, now, self.request.limits)
        if site.reachable and site.error_detail is None:
            if site.backup:  # the site's own verifications (its timer's) reach the store once, now
                backup.ingest_site_verifications(self.store, site.host, site.backup, self.run_id)
            site.verification = backup.current_verification(self.store, site.host)
            site.faults += backup_faults(site, site.verification, self.request.backup_limits, now)
        self.probes.append(site)
        if self.request.on_host:
            self.request.on_host(site)

    def finish(self) -> FleetStatus:
        duration, cpu = time.monotonic() - self.started, _cpu() - self.cpu_before
        ordered = worst_first(self.probes)
        code = exit_code(ordered)
        for site in ordered:
            self.store.record_probe(site.host, stored(site), run_id=self.run_id)
        self.store.finish_run(self.run_id, "ok" if code in (EXIT_OK, EXIT_WARNING) else "failed", host_results={
            site.host: host_result(site) for site in ordered},
            summary={"exit_code": code, "sites": len(ordered), "duration_s": round(duration, 3),
                     "cpu_s": round(cpu, 3)})
        return FleetStatus(self.run_id, ordered, code, duration, cpu)


def _checked(request: FleetStatusRequest) -> list[ssh_probe.Target]:
    if request.timeout <= 0 or request.concurrency < 1:
        raise OperationRefused("--timeout must be above 0 and --concurrency at least 1")
    return _targets(request)


def probe(request: FleetStatusRequest) -> FleetStatus:
    """Probe every site of the inventory's ``sites`` group (with *limit*), read-only; store and return them.

    Every site asked for is in the result: answered, or with how it failed. Raises OperationRefused
    when the inventory cannot be read or no site matches (no host touched).
    """
    from lpse_ops.state import StateStore

    targets = _checked(request)
    store = StateStore.open(request.state_url or config.state_url())
    try:
        round_ = _Round(request, targets, store)
        ssh_probe.run_probes(targets, timeout=request.timeout, concurrency=request.concurrency, on_done=round_.judge)
        return round_.finish()
    finally:
        store.close()


@dataclass
class FleetWatchRequest:
    status: FleetStatusRequest
    interval_s: float = 60.0
    """Seconds from the start of one round to the start of the next (a slower round starts the next at once)."""
    rounds: int = 0
    """How many rounds; 0: until interrupted (KeyboardInterrupt ends the watch, connections closed)."""
    on_round: Callable[[FleetStatus], None] | None = None


def watch(request: FleetWatchRequest) -> list[FleetStatus]:
    """Probe the fleet round after round over kept connections (``ssh_probe.KeptProbes``); return every round.

    The first round connects to every site; later rounds reuse each site's connection and shell (no
    handshake, no login), reconnecting only a site whose connection broke. Each round is judged, stored
    and recorded as its own run, exactly as :func:`probe`. Raises OperationRefused as :func:`probe`.
    """
    import asyncio

    from lpse_ops.state import StateStore

    if request.interval_s < 0 or request.rounds < 0:
        raise OperationRefused("--watch must be 0 or more seconds and --rounds 0 or more")
    status = request.status
    targets = _checked(status)
    store = StateStore.open(status.state_url or config.state_url())
    done: list[FleetStatus] = []
    current: list[_Round] = []

    async def rounds() -> None:
        async with ssh_probe.KeptProbes(timeout=status.timeout, concurrency=status.concurrency) as kept:
            number = 0
            while not request.rounds or number < request.rounds:
                number += 1
                started = time.monotonic()
                round_ = _Round(status, targets, store, {"watch_round": number, "interval_s": request.interval_s})
                current[:] = [round_]
                await kept.run(targets, on_done=round_.judge)
                done.append(round_.finish())
                current.clear()
                if request.on_round:
                    request.on_round(done[-1])
                if request.rounds and number >= request.rounds:
                    break
                await asyncio.sleep(max(0.0, request.interval_s - (time.monotonic() - started)))

    try:
        asyncio.run(rounds())
    except KeyboardInterrupt:  # the watch ends; asyncio.run cancelled the round, KeptProbes closed the connections
        for round_ in current:  # a round cut short is recorded as such, not left open
            store.finish_run(round_.run_id, "aborted", summary={"interrupted": True, "sites": len(round_.probes)})
    finally:
        store.close()
    return done


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
