"""``lpse-ops backup``: proven backups with pgBackRest and restic, local and offsite (clause 6.1.4.1)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from lpse_ops import progress, terminal
from lpse_ops.actions import backup as actions
from lpse_ops.actions import offsite, operation
from lpse_ops.actions import restore as restoring
from lpse_ops.commands._options import (
    inventory_option,
    json_option,
    limit_option,
    refusal_as_error,
    render,
    require_inventory,
    yes_option,
)


def _ctx(inventory_path: Path | None, limit: str | None, as_json: bool, **extravars) -> actions.BackupContext:
    return actions.BackupContext(inventory=require_inventory(inventory_path), limit=limit,
                                 progress=progress.live(not as_json), extravars=extravars)


def _finish(result: operation.OperationResult, outputs: dict[str, dict], as_json: bool, title: str,
            details: dict[str, str]) -> None:
    if as_json:
        terminal.emit_json({**result.as_dict(), "outputs": outputs})
    else:
        render(result, title, details)
    raise SystemExit(result.exit_code)


def _parse_time(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise terminal.fail(f"cannot read time {value!r}: use ISO 8601, e.g. 2026-11-24T09:30:00+00:00") from error
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@click.group(name="backup")
def backup() -> None:
    """Back up, verify by real restore, and restore SPSE sites (pgBackRest + restic, local + offsite)."""


@backup.command(name="setup")
@inventory_option
@limit_option
@json_option
def setup_command(inventory_path: Path | None, limit: str | None, as_json: bool) -> None:
    """Configure pgBackRest, restic, WAL archiving and the backup timers on the sites."""
    with refusal_as_error():
        result = actions.setup(_ctx(inventory_path, limit, as_json))
    _finish(result, {}, as_json, "backup setup", {})


@backup.command(name="schedule")
@inventory_option
@limit_option
@click.option("--verify", "verify_at", default=None, help="When to verify by real restore (systemd OnCalendar).")
@click.option("--full", default=None, help="When to take full database backups (OnCalendar).")
@click.option("--diff", default=None, help="When to take differential database backups (OnCalendar).")
@click.option("--incr", default=None, help="When to take incremental database backups (OnCalendar).")
@click.option("--files", default=None,
              help="When to snapshot documents and configuration (OnCalendar; its interval is the documents' RPO).")
@click.option("--delta", default=None,
              help="When to snapshot just the documents added since the last snapshot (OnCalendar, default every "
                   "30 s; its interval bounds what a lost server loses of its uploads).")
@json_option
def schedule_command(inventory_path: Path | None, limit: str | None, verify_at: str | None, full: str | None,
                     diff: str | None, incr: str | None, files: str | None, delta: str | None, as_json: bool) -> None:
    """Set when backups and restore verifications run (systemd timers on each site).

    Example: lpse-ops backup schedule --limit site1 --verify "Sat *-*-* 04:00:00". The schedule is
    saved on each site it reaches (/etc/lpse-backup/schedule.json), kept by later `backup setup`
    runs, and never reaches a site outside --limit. Every calendar is checked by systemd first.
    """
    chosen = {name: value for name, value in (("verify", verify_at), ("full", full), ("diff", diff),
                                               ("incr", incr), ("files", files), ("delta", delta)) if value}
    if not chosen:
        raise terminal.fail("nothing to schedule: give at least one of --verify, --full, --diff, --incr, --files, "
                            "--delta")
    with refusal_as_error():
        result = actions.setup(_ctx(inventory_path, limit, as_json), schedule=chosen)
    _finish(result, {}, as_json, "backup schedule", {h: ", ".join(f"{k}: {v}" for k, v in chosen.items())
                                                      for h in result.tracker.hosts})


@backup.command(name="run")
@inventory_option
@limit_option
@click.option("--type", "backup_type", type=click.Choice(["full", "diff", "incr", "files", "delta"]), default="incr",
              show_default=True,
              help="pgBackRest backup type, or `files` for a documents and configuration snapshot only, or `delta` "
                   "for just the documents added since the last snapshot.")
@json_option
def run_command(inventory_path: Path | None, limit: str | None, backup_type: str, as_json: bool) -> None:
    """Back up database, documents and configuration to the local and the offsite repository now."""
    with refusal_as_error():
        result, outputs = actions.execute(_ctx(inventory_path, limit, as_json), "run", ["--type", backup_type],
                                          record={"type": backup_type})
    details = {h: o.get("error") or "pgBackRest " + ", ".join(
        f"repo{repo} {entry.get('label')}" for repo, entry in sorted((o.get("pgbackrest") or {}).items()))
        for h, o in outputs.items()}
    _finish(result, outputs, as_json, f"backup run ({backup_type})", details)


@backup.command(name="list")
@inventory_option
@limit_option
@json_option
def list_command(inventory_path: Path | None, limit: str | None, as_json: bool) -> None:
    """List backup sets (pgbackrest info) and snapshots (restic snapshots) in every repository."""
    with refusal_as_error():
        result, outputs = actions.execute(_ctx(inventory_path, limit, as_json), "list", [])
    rows = actions.catalogue(outputs)
    if as_json:
        terminal.emit_json({"run_id": result.run_id, "backups": rows, "errors": {
            h: o["error"] for h, o in outputs.items() if o.get("error")}})
    else:
        table = Table(title="backups")
        for column in ("host", "engine", "repo", "id", "type", "time", "size"):
            table.add_column(column, no_wrap=column in ("id", "time"))
        for row in rows:
            table.add_row(escape(row["host"]), escape(row["engine"]), str(row["repo"]), escape(row["id"]),
                          escape(row["type"]), row["time"][:19],
                          f"{row.get('size', 0) / 1e6:.1f} MB" if row.get("size") else "")
        terminal.print_table(table)
        for host, output in sorted(outputs.items()):
            if output.get("error"):
                terminal.warn(f"{host}: no backups listed: {output['error']}")
    raise SystemExit(result.exit_code)


@backup.command(name="verify")
@inventory_option
@limit_option
@click.option("--repo", type=click.Choice(["1", "2"]), default="1", show_default=True,
              help="1 = the site's local repository, 2 = the offsite S3 repository.")
@click.option("--set", "backup_set", default=None, help="Backup set label (default: the latest).")
@click.option("--random", "pick_random", is_flag=True, help="Pick a random recovery point (like AWS restore testing).")
@json_option
def verify_command(inventory_path: Path | None, limit: str | None, repo: str, backup_set: str | None,
                   pick_random: bool, as_json: bool) -> None:
    """Restore a backup into a scratch PostgreSQL and folder on each site, and check it.

    Checks: pgBackRest verify, the restored database starts and answers, every table's row count and
    checksum match the manifest taken at backup time, restic check --read-data, and every document the
    database references is restored with a matching sha256. Results go to the state store.
    """
    args = ["--repo", repo]
    if backup_set:
        args += ["--set", backup_set]
    elif pick_random:
        args += ["--random"]
    with refusal_as_error():
        result, outputs = actions.execute(_ctx(inventory_path, limit, as_json), "verify", args)
    actions.record_verifications(outputs, result.run_id, None)
    details = {}
    for host, output in outputs.items():
        failed = [f"{c.get('check')}: {c.get('detail')}" for c in output.get("checks", []) if not c.get("ok")]
        details[host] = ("; ".join(failed) or output.get("error")) if (failed or output.get("error")) else (
            f"restored {output.get('set')} to {(output.get('restore_point') or {}).get('name')} in "
            f"{output.get('restore_duration_s')} s; {len(output.get('checks', []))} checks passed")
    code = result.exit_code or (0 if all(o.get("ok") for o in outputs.values()) else operation.EXIT_HOSTS_FAILED)
    result.exit_code = code
    _finish(result, outputs, as_json, "backup verify", details)


@backup.command(name="restore")
@inventory_option
@click.option("--limit", "-l", required=True, help="The one site to restore (restores are per site).")
@click.option("--target-time", required=True,
              help="Point in time to recover to (ISO 8601, UTC if no zone), or `latest`: the end of the archived WAL "
                   "(a lost server), and just before the first document lost with it.")
@click.option("--from", "source", type=click.Choice(["local", "offsite"]), default="local", show_default=True)
@click.option("--offsite-as-of", default=None,
              help="Use the offsite repository as it stood at this time (survives later deletes/overwrites).")
@click.option("--serve-first", is_flag=True,
              help="Open SPSE once the database and the open tenders' documents are back; bring the other documents "
                   "back in the background, each checked by sha256 (`backup status` shows the progress).")
@click.option("--first-mb", type=click.IntRange(min=0), default=None,
              help="With --serve-first: MB of documents brought back before SPSE opens [default: the site's "
                   "site_restore_first_mb, else 1024].")
@yes_option("restoring")
@json_option
def restore_command(inventory_path: Path | None, limit: str, target_time: str, source: str,
                    offsite_as_of: str | None, serve_first: bool, first_mb: int | None, yes: bool,
                    as_json: bool) -> None:
    """Point-in-time recovery of one site's database and documents (the current data is moved aside, not lost).

    Plan, show, confirm, then act: with --offsite-as-of, the offsite repositories as they stood then
    are read first (nothing written), shown, and copied into the unlocked views bucket only after yes;
    the copy is removed when the restore ends, whatever its outcome. --json needs --yes.
    """
    latest = target_time.strip().lower() == "latest"
    if as_json and not yes:
        raise terminal.fail("--json never prompts: add --yes (or LPSE_OPS_YES=1) to restore without asking")
    if first_mb is not None and not serve_first:
        raise terminal.fail("--first-mb goes with --serve-first")
    request = restoring.RestoreRequest(_ctx(inventory_path, limit, as_json), limit,
                                       None if latest else _parse_time(target_time), source,
                                       _parse_time(offsite_as_of) if offsite_as_of else None,
                                       serve_first=serve_first, first_mb=first_mb)
    with refusal_as_error():
        plan = restoring.plan(request)
        if not yes:
            for line in plan.describe():
                terminal.info(line)
            click.confirm("Go ahead?", abort=True, err=True)
        result, outputs = restoring.execute(plan)
    details = {h: o.get("error") or f"recovered to {(o.get('recovery_point') or {}).get('target_time', target_time)}"
               + restoring.hydration_note(o) for h, o in outputs.items()}
    _finish(result, outputs, as_json, "backup restore", details)


@backup.command(name="offsite-put-back")
@inventory_option
@click.option("--limit", "-l", required=True, help="The one site whose offsite repositories to put back.")
@click.option("--as-of", "as_of", required=True, help="The time (before the attack) to put them back to (ISO 8601).")
@yes_option("copying the old versions forward")
@json_option
def offsite_put_back_command(inventory_path: Path | None, limit: str, as_of: str, yes: bool, as_json: bool) -> None:
    """Make a site's offsite repositories current again as they stood at --as-of (after an attack with its keys).

    Admin identity (LPSE_OPS_S3_*): each object's version current then is copied forward and objects written
    since are hidden by a delete marker; every locked version stays. Plan, show, confirm, then act.
    """
    when = _parse_time(as_of)
    if as_json and not yes:
        raise terminal.fail("--json never prompts: add --yes (or LPSE_OPS_YES=1)")
    ctx = _ctx(inventory_path, limit, as_json)
    with refusal_as_error():
        read = restoring.one_site(ctx, limit)
        host = read.hosts[0]
        site_code = restoring.site_code(read, host)
        plan = offsite.plan_put_back(offsite.ViewRequest(site_code, when))
    if not yes:
        terminal.info(f"Put the offsite repositories of {host} ({site_code}) back as of {when.isoformat()}: "
                      f"{len(plan.copy_forward)} object(s) copied forward, {len(plan.hide)} hidden.")
        click.confirm("Go ahead?", abort=True, err=True)
    try:
        done = offsite.put_back(plan, host)
    except Exception as error:  # the S3 client's errors: one line, what failed
        raise terminal.fail(f"putting the offsite repositories back failed (recorded): {error}") from error
    if as_json:
        terminal.emit_json(done)
    else:
        terminal.info(f"{host}: {done['copied_forward']} object(s) copied forward, {done['hidden']} hidden "
                      f"(run {done['run_id']})")


@backup.command(name="status")
@inventory_option
@limit_option
@click.option("--max-backup-age", default=26.0, show_default=True, help="Hours before a backup counts as too old.")
@click.option("--max-wal-age", default=5.0, show_default=True, help="Minutes since the last archived WAL segment.")
@click.option("--max-verify-age", default=8.0, show_default=True, help="Days since the last verified restore.")
@json_option
def status_command(inventory_path: Path | None, limit: str | None, max_backup_age: float, max_wal_age: float,
                   max_verify_age: float, as_json: bool) -> None:
    """For every site: age of the last backup (local, offsite), last archived WAL and last verified restore.

    The verified restore is the newest the state store holds for the site, whoever ran it: a verification
    the site's own timer ran is recorded (once) as this command reads the site.
    """
    limits = actions.Thresholds(timedelta(hours=max_backup_age), timedelta(minutes=max_wal_age),
                                timedelta(days=max_verify_age))
    with refusal_as_error():
        result, outputs, verdicts = actions.status(_ctx(inventory_path, limit, True), limits)
    if as_json:
        terminal.emit_json({"run_id": result.run_id, "sites": verdicts, "raw": outputs})
    else:
        table = Table(title="backup status")
        for column in ("host", "local backup", "offsite backup", "WAL archived", "verified restore", "warnings",
                       "verification"):
            table.add_column(column, overflow="fold", no_wrap=column != "warnings")

        def age(seconds: float | None) -> str:
            if seconds is None:
                return "never"
            return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
        for verdict in verdicts:
            ages = verdict["ages"]
            table.add_row(verdict["host"], age(ages["backup_local_s"]), age(ages["backup_offsite_s"]),
                          age(ages["wal_archived_s"]), age(ages["verified_s"]),
                          "[green]none[/green]" if verdict["ok"]
                          else "[yellow]" + escape("; ".join(verdict["warnings"])) + "[/]",
                          escape(actions.describe_verification(verdict["verification"])))
        terminal.print_table(table)
    raise SystemExit(result.exit_code or (0 if all(v["ok"] for v in verdicts) else 5))
