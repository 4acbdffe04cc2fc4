"""``lpse-ops fleet``: the fleet at a glance (clauses 6.1.4.4, 6.2.2, 6.2.18, 13.2; docs/fleet-status.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from lpse_ops import terminal
from lpse_ops.actions import fleet_status
from lpse_ops.backends.ssh_probe import CRITICAL, SiteProbe
from lpse_ops.commands._options import inventory_option, json_option, limit_option, refusal_as_error, require_inventory


@click.group(name="fleet")
def fleet() -> None:
    """The whole fleet at a glance."""


def _state(probe: SiteProbe) -> str:
    if not probe.reachable:
        return f"[red]{probe.error or 'failed'}[/red]"
    if any(fault.severity == CRITICAL for fault in probe.faults):
        return "[red]critical[/red]"
    return "[yellow]warning[/yellow]" if probe.faults else "[green]ok[/green]"


def _up(value: str | None) -> str:
    return "up" if value == "active" else f"[red]{escape(value or '?')}[/red]"


def _hours(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 3600:.1f} h"


def _cells(probe: SiteProbe, now: datetime) -> list[str]:
    if not probe.reachable:
        return [escape(probe.address)] + [""] * 9
    health = (probe.spse_health or {}).get("status")
    spse = f"{escape(probe.spse_version or '?')} {_up(probe.spse_active)}" + (
        "" if health == "ok" else f" health {escape(str(health))}")
    postgresql = _up(probe.postgresql_active) if probe.postgresql_ready is not False else "[red]not ready[/red]"
    disks = [d.used_percent for d in probe.disks if d.used_percent is not None]
    load = f"{probe.load[1]:.1f}/{probe.cpus}" if probe.load and probe.cpus else "?"
    cert = "?" if not probe.cert_not_after else \
        f"{(datetime.fromisoformat(probe.cert_not_after) - now).total_seconds() / 86400:.0f} d"
    ages = probe.backup_ages or {}
    backups = "not set up" if probe.backup is None and probe.backup_error is None else (
        f"db {_hours(ages.get('backup_local_s'))}, verified {_hours(ages.get('verified_s'))}"
        + ("" if probe.verification is None or probe.verification.get("ok") else " [red]FAILED[/red]"))
    return [escape(probe.address), spse, postgresql, _up(probe.nginx_active),
            f"{max(disks):.0f}%" if disks else "?",
            f"{probe.memory_available_percent:.0f}% free" if probe.memory_available_percent is not None else "?",
            load, cert, str(probe.security_updates if probe.security_updates is not None else "?"),
            backups + (" [yellow]frozen[/yellow]" if probe.frozen else "")]


def render(status: fleet_status.FleetStatus) -> None:
    """Print one table for the fleet, worst first, and a one-line summary on stderr."""
    now = datetime.now(UTC)
    table = Table(title=f"fleet status: {len(status.probes)} site(s) in {status.duration_s:.1f}s (run {status.run_id})")
    for column in ("site", "state", "address", "SPSE", "PostgreSQL", "nginx", "disk", "memory", "load/CPUs",
                   "cert", "security upd.", "backups", "faults"):
        table.add_column(column, overflow="fold")
    for probe in status.probes:
        faults = "; ".join(f"{'[red]' if f.severity == CRITICAL else ''}{f.code}"
                           f"{'[/red]' if f.severity == CRITICAL else ''}: {escape(f.message)}" for f in probe.faults)
        table.add_row(escape(probe.host), _state(probe), *_cells(probe, now), faults)
    terminal.print_table(table)
    unreachable = sum(not p.reachable for p in status.probes)
    faulty = sum(bool(p.faults) for p in status.probes if p.reachable)
    terminal.info(f"{len(status.probes)} site(s): {unreachable} unreachable, {faulty} with faults, "
                  f"{len(status.probes) - unreachable - faulty} healthy")


@fleet.command(name="status")
@inventory_option
@limit_option
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds each site has to answer (connection and probe).")
@click.option("--concurrency", type=click.IntRange(min=1), default=20, show_default=True,
              help="Sites probed at once.")
@click.option("--watch", "watch_s", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Probe again every SECONDS over the kept connections (no new login), until --rounds or Ctrl-C.")
@click.option("--rounds", type=click.IntRange(min=0), default=0, show_default="0: until Ctrl-C",
              help="With --watch: how many rounds (required with --json).")
@json_option
def status_command(inventory_path: Path | None, limit: str | None, timeout: float, concurrency: int,
                   watch_s: float | None, rounds: int, as_json: bool) -> None:
    """Probe every site read-only over SSH: services, version, capacity, certificate, updates, backups.

    Exit code 0 every site healthy, 3 a site has a critical fault, 5 warnings only (no critical fault),
    4 a site did not answer (with --watch: the last round's).
    """
    if watch_s is None and rounds:
        raise click.UsageError("--rounds needs --watch SECONDS")
    if watch_s is not None and as_json and not rounds:
        raise click.UsageError("--watch with --json needs --rounds N (the JSON is printed when the rounds end)")

    def progress(probe: SiteProbe) -> None:
        terminal.info(f"{probe.host}: {probe.error or ('faults' if probe.faults else 'ok')} "
                      f"({probe.duration_s or 0:.1f}s)")

    request = fleet_status.FleetStatusRequest(inventory=require_inventory(inventory_path), limit=limit,
                                              timeout=timeout, concurrency=concurrency,
                                              on_host=progress if terminal.is_tty() and not as_json else None)
    if watch_s is not None:
        watch = fleet_status.FleetWatchRequest(request, interval_s=watch_s, rounds=rounds,
                                               on_round=None if as_json else render)
        with refusal_as_error():
            done = fleet_status.watch(watch)
        if as_json:
            terminal.emit_json({"rounds": [status.as_dict() for status in done]})
        raise SystemExit(done[-1].exit_code if done else 130)
    with refusal_as_error():
        status = fleet_status.probe(request)
    if as_json:
        terminal.emit_json(status.as_dict())
    else:
        render(status)
    raise SystemExit(status.exit_code)
