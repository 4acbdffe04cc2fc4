"""Backup actions: configure, run, list, verify, restore and report on proven backups.

The site does the work with pgBackRest and restic through its ``lpse-backup`` tool (the same code
path its systemd timers use); the control machine runs it through ``playbooks/backup_exec.yml``,
records every run and every restore verification in the state store, and turns the engines' own
JSON into the fleet view.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lpse_ops import config
from lpse_ops.actions import operation
from lpse_ops.backends import pgbackrest, restic, s3

RUN_TASK = "Run lpse-backup"
REPORT_TASK = "Report lpse-backup result"


@dataclass
class BackupContext:
    """Where and how: the inventory, host limit, and display settings."""

    inventory: Path
    limit: str | None = None
    show_progress: bool = True
    state_url: str | None = None
    extravars: dict = field(default_factory=dict)


def host_outputs(result: operation.OperationResult) -> dict[str, dict]:
    """Return each host's ``lpse-backup`` JSON (from the report task, or the failed run's stdout)."""
    outputs: dict[str, dict] = {}
    for host, state in result.tracker.hosts.items():
        report = state.captured.get(REPORT_TASK) or {}
        if isinstance(report.get("msg"), dict):
            outputs[host] = report["msg"]
            continue
        raw = (state.captured.get(RUN_TASK) or {}).get("stdout", "")
        try:
            outputs[host] = json.loads(raw) if raw.strip() else {"error": "; ".join(state.messages) or "no output"}
        except json.JSONDecodeError:
            outputs[host] = {"error": raw.strip()[-500:] or "; ".join(state.messages)}
    return outputs


def execute(ctx: BackupContext, action: str, args: list[str], operation_name: str | None = None,
            record: dict | None = None) -> tuple[operation.OperationResult, dict[str, dict]]:
    """Run ``lpse-backup ACTION ARGS`` on the sites; return the run and each host's JSON."""
    op = operation.OperationContext(
        operation=operation_name or f"backup.{action}", playbook="backup_exec.yml", inventory=ctx.inventory,
        limit=ctx.limit, extravars={"backup_action": action, "backup_args": shlex.join(args), **ctx.extravars},
        capture=(RUN_TASK, REPORT_TASK), show_progress=ctx.show_progress, state_url=ctx.state_url,
        record_args={"action": action, "args": args, **(record or {})}, validate_for="backup")
    result = operation.run(op)
    return result, host_outputs(result)


SCHEDULES = ("full", "diff", "incr", "files", "verify")


def setup(ctx: BackupContext, schedule: dict[str, str] | None = None) -> operation.OperationResult:
    """Configure pgBackRest, restic, WAL archiving and the timers on the sites (the backup role).

    *schedule* ({name: OnCalendar}, from ``backup schedule``) is saved on each targeted site
    (``/etc/lpse-backup/schedule.json``), so it lives with the site: a later setup of any site keeps
    every site's own schedule, and a schedule set with ``--limit`` reaches only those sites.
    """
    op = operation.OperationContext(
        operation="backup.schedule" if schedule else "backup.setup", playbook="backup.yml",
        inventory=ctx.inventory, limit=ctx.limit, show_progress=ctx.show_progress, state_url=ctx.state_url,
        extravars={**ctx.extravars, **({"backup_schedule_set": schedule} if schedule else {})},
        validate_for="backup", record_args={"schedule": schedule or {}})
    return operation.run(op)


def catalogue(outputs: dict[str, dict]) -> list[dict]:
    """Turn each host's ``lpse-backup list`` JSON into rows: host, engine, repo, id, type, time."""
    rows: list[dict] = []
    for host, output in sorted(outputs.items()):
        for backup in [b for s in pgbackrest.parse_info(output.get("pgbackrest") or []) for b in s.backups]:
            rows.append({"host": host, **backup.as_dict(), "id": backup.label, "time": backup.stopped.isoformat()})
        for repo, snapshots in (output.get("restic") or {}).items():
            for snap in restic.parse_snapshots(snapshots if isinstance(snapshots, list) else []):
                rows.append({"host": host, **snap.as_dict(), "repo": repo, "id": snap.short_id, "type": "snapshot"})
    return rows


@dataclass(frozen=True)
class Thresholds:
    """How old each thing may be before ``backup status`` warns."""

    backup: timedelta = timedelta(hours=26)
    wal: timedelta = timedelta(minutes=5)
    verify: timedelta = timedelta(days=8)
    queue_files: int = 64


def _age(stamp: str | None, now: datetime) -> float | None:
    if not stamp:
        return None
    try:
        when = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (now - (when if when.tzinfo else when.replace(tzinfo=UTC))).total_seconds()


# Alerts the site raises that ``assess`` recomputes with the operator's own thresholds.
_RECOMPUTED = re.compile(r"older than|no backup yet|no verify has run yet|last verify failed|WAL spool queue|"
                         r"WAL archiving is failing")


def assess(host: str, output: dict, last_verification: dict | None, limits: Thresholds,
           now: datetime | None = None) -> dict:
    """Return a host's backup ages and the warnings they raise (pure: ``lpse-backup status`` JSON in).

    *last_verification* is the newest row of the state store's restore verifications for the host.
    """
    now = now or datetime.now(UTC)
    repos = (output.get("pgbackrest") or {}).get("repos") or {}
    wal = output.get("wal_archiving") or {}
    snapshots = output.get("restic") or {}

    def last_backup(repo: str) -> str | None:
        return ((repos.get(repo) or {}).get("last_backup") or {}).get("time")

    ages = {
        "backup_local_s": _age(last_backup("1"), now),
        "backup_offsite_s": _age(last_backup("2"), now),
        "files_local_s": _age((snapshots.get("local") or {}).get("last_snapshot_time"), now),
        "files_offsite_s": _age((snapshots.get("offsite") or {}).get("last_snapshot_time"), now),
        "wal_archived_s": _age(wal.get("last_archived_time"), now),
        "verified_s": _age((last_verification or {}).get("verified_at"), now),
    }
    warnings: list[str] = []
    if output.get("error"):
        warnings.append(f"status unavailable: {output['error']}")
    labels = {"backup_local_s": "local database backup", "backup_offsite_s": "offsite database backup",
              "files_local_s": "local documents snapshot", "files_offsite_s": "offsite documents snapshot"}
    for key, label in labels.items():
        if ages[key] is None:
            warnings.append(f"no {label} yet")
        elif ages[key] > limits.backup.total_seconds():
            warnings.append(f"{label} is {ages[key] / 3600:.1f} h old (limit {limits.backup})")
    if ages["wal_archived_s"] is None:
        warnings.append("no WAL segment archived yet")
    elif ages["wal_archived_s"] > limits.wal.total_seconds():
        warnings.append(f"last WAL archived {ages['wal_archived_s'] / 60:.0f} min ago (limit {limits.wal})")
    if wal.get("last_failed_time") and (wal.get("last_archived_time") or "") < wal["last_failed_time"]:
        warnings.append(f"WAL archiving is failing ({wal.get('failed_count')} failures, "
                        f"last at {wal['last_failed_time']})")
    queue = output.get("spool_queue") or {}
    if int(queue.get("files", 0) or 0) > limits.queue_files:
        warnings.append(f"WAL queue growing: {queue['files']} segments waiting to be archived")
    if last_verification is None:
        warnings.append("no verified restore yet")
    elif not last_verification.get("ok"):
        warnings.append("the last restore verification FAILED")
    elif ages["verified_s"] is not None and ages["verified_s"] > limits.verify.total_seconds():
        warnings.append(f"last verified restore is {ages['verified_s'] / 86400:.1f} days old (limit {limits.verify})")
    warnings += [alert for alert in output.get("alerts") or [] if not _RECOMPUTED.search(alert)]
    return {"host": host, "ages": ages, "warnings": warnings, "ok": not warnings}


def admin_s3() -> tuple[object, dict]:
    """Return an admin S3 client for the offsite store and its settings.

    From ``LPSE_OPS_S3_ENDPOINT``, ``LPSE_OPS_S3_BUCKET``, ``LPSE_OPS_S3_CA``, ``LPSE_OPS_S3_ACCESS_KEY`` and
    ``LPSE_OPS_S3_SECRET_KEY``, else the lab's generated credentials.
    """
    from lpse_ops.lab import lab as lab_actions

    if os.environ.get("LPSE_OPS_S3_ENDPOINT"):
        settings = {"endpoint_control": os.environ["LPSE_OPS_S3_ENDPOINT"],
                    "endpoint_hosts": os.environ.get("LPSE_OPS_S3_HOST_ENDPOINT", os.environ["LPSE_OPS_S3_ENDPOINT"]),
                    "bucket": os.environ.get("LPSE_OPS_S3_BUCKET", lab_actions.BUCKET),
                    "ca_cert": os.environ.get("LPSE_OPS_S3_CA") or None,
                    "credentials": {"admin": {"access_key": os.environ["LPSE_OPS_S3_ACCESS_KEY"],
                                              "secret_key": os.environ["LPSE_OPS_S3_SECRET_KEY"]}}}
    else:
        path = lab_actions.lab_dir() / "s3-credentials.json"
        if not path.exists():
            raise operation.OperationRefused("no offsite S3 settings: set LPSE_OPS_S3_ENDPOINT, LPSE_OPS_S3_BUCKET, "
                                             "LPSE_OPS_S3_CA, LPSE_OPS_S3_ACCESS_KEY and LPSE_OPS_S3_SECRET_KEY")
        settings = json.loads(path.read_text())
    client = lab_actions.s3_client(settings["endpoint_control"], settings["ca_cert"], settings["credentials"]["admin"])
    return client, settings


def offsite_view(site_code: str, when: datetime) -> dict:
    """Materialise the site's offsite repositories as they stood at *when*; return restore arguments."""
    client, settings = admin_s3()
    view = f"views/{when.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"
    bucket = settings["bucket"]
    copied = {}
    for engine in ("pgbackrest", "restic"):
        copied[engine] = s3.build_view(client, bucket, f"{engine}/{site_code}/", when, view)
    if not copied["pgbackrest"]:
        raise operation.OperationRefused(f"the offsite bucket held no pgBackRest repository for {site_code} at "
                                         f"{when.isoformat()}: choose a later --offsite-as-of")
    endpoint = settings["endpoint_hosts"].rstrip("/")
    return {"view": view, "objects": copied,
            "args": ["--repo", "2", "--repo2-path", f"/{view}/pgbackrest/{site_code}",
                     "--restic-repo", f"s3:{endpoint}/{bucket}/{view}/restic/{site_code}"]}


def record_verifications(outputs: dict[str, dict], run_id: int | None, state_url: str | None) -> None:
    """Store each host's verification result, recovery point and restore duration."""
    from lpse_ops.state import StateStore

    store = StateStore.open(state_url or config.state_url())
    for host, output in outputs.items():
        checks = output.get("checks") or []
        store.record_verification(
            host, bool(output.get("ok")) and not output.get("error"), run_id=run_id,
            repo=str(output.get("repo")) if output.get("repo") is not None else None,
            backup_label=output.get("set"), recovery_point=(output.get("restore_point") or {}).get("name"),
            recovery_time=(output.get("restore_point") or {}).get("time"),
            restore_duration_s=output.get("restore_duration_s"),
            checks=checks or [{"check": "verify", "ok": False, "detail": output.get("error", "no result")}])
