"""Backup actions: configure, run, list, verify, restore and report on proven backups.

The site does the work with pgBackRest and restic through its ``lpse-backup`` tool (the same code
path its systemd timers use); the control machine runs it through ``playbooks/backup_exec.yml``,
records every run and every restore verification in the state store, and turns the engines' own
JSON into the fleet view.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lpse_ops import config
from lpse_ops.actions import fleet, operation, records
from lpse_ops.backends import pgbackrest, restic

KIND = "backup_exec"
"""The kind of result record ``playbooks/backup_exec.yml`` emits per host."""


@dataclass
class BackupContext:
    """Where and how: the inventory, host limit, and display settings."""

    inventory: Path
    limit: str | None = None
    progress: operation.ProgressFactory | None = None
    state_url: str | None = None
    extravars: dict = field(default_factory=dict)
    fleet: fleet.Fleet | None = None
    """The inventory as read for this command (a restore's plan reads it once), else each run reads it."""


def host_outputs(result: operation.OperationResult) -> dict[str, dict]:
    """Return each host's ``lpse-backup`` JSON, from its ``backup_exec`` result record.

    A host whose record holds no JSON gets ``{"error": ...}`` with what the site printed instead (or
    the run's messages); a host without a record gets ``{"error": ...}`` saying why it has none.
    """
    found = records.read(result, KIND)
    outputs: dict[str, dict] = {host: {"error": reason} for host, reason in found.missing.items()}
    for host, record in found.found.items():
        if isinstance(record.get("output"), dict):
            outputs[host] = record["output"]
            continue
        state = result.tracker.hosts.get(host)
        printed = str(record.get("unparsed") or "").strip() or str(record.get("stderr") or "").strip()
        outputs[host] = {"error": printed or "; ".join(state.messages if state else []) or "no output"}
    return outputs


def execute(ctx: BackupContext, action: str, args: list[str], operation_name: str | None = None,
            record: dict | None = None) -> tuple[operation.OperationResult, dict[str, dict]]:
    """Run ``lpse-backup ACTION ARGS`` on the sites; return the run and each host's JSON.

    A host that succeeded without emitting a result record makes the run's exit code 3 (a host failed).
    """
    op = operation.OperationContext(
        operation=operation_name or f"backup.{action}", playbook="backup_exec.yml", inventory=ctx.inventory,
        limit=ctx.limit, extravars={"backup_action": action, "backup_args": shlex.join(args), **ctx.extravars},
        progress=ctx.progress, state_url=ctx.state_url,
        record_args={"action": action, "args": args, **(record or {})}, validate_for="backup",
        lock_sites=action == "restore", fleet=ctx.fleet)
    result = operation.run(op)
    result.exit_code = records.read(result, KIND).exit_code(result.exit_code)
    return result, host_outputs(result)


SCHEDULES = ("full", "diff", "incr", "files", "delta", "verify")


def setup(ctx: BackupContext, schedule: dict[str, str] | None = None) -> operation.OperationResult:
    """Configure pgBackRest, restic, WAL archiving and the timers on the sites (the backup role).

    *schedule* ({name: OnCalendar}, from ``backup schedule``) is saved on each targeted site
    (``/etc/lpse-backup/schedule.json``), so it lives with the site: a later setup of any site keeps
    every site's own schedule, and a schedule set with ``--limit`` reaches only those sites.
    """
    op = operation.OperationContext(
        operation="backup.schedule" if schedule else "backup.setup", playbook="backup.yml",
        inventory=ctx.inventory, limit=ctx.limit, progress=ctx.progress, state_url=ctx.state_url,
        extravars={**ctx.extravars, **({"backup_schedule_set": schedule} if schedule else {})},
        validate_for="backup", record_args={"schedule": schedule or {}}, fleet=ctx.fleet)
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


def _when(stamp: str | None) -> datetime | None:
    """Parse an ISO time from a site's JSON (UTC when it has no zone); None when absent or unreadable."""
    if not stamp:
        return None
    try:
        when = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _age(stamp: str | None, now: datetime) -> float | None:
    when = _when(stamp)
    return None if when is None else (now - when).total_seconds()


Warning = tuple[str, str]  # (code, message)
DATABASE_REPOS = {"1": "local database backup", "2": "offsite database backup"}
FILE_REPOS = {"local": "local documents snapshot", "offsite": "offsite documents snapshot"}


def assess(host: str, output: dict, verification: dict | None, limits: Thresholds,
           now: datetime | None = None) -> dict:
    """Return a host's backup ages and the warnings they raise (pure: ``lpse-backup status`` JSON in).

    The site reports facts only; every verdict is made here, once. *verification* is the host's
    current verification (:func:`current_verification`: the newest the state store holds, the site's
    own scheduled ones included once :func:`ingest_site_verifications` has read them). Each warning has a
    code in ``codes``.
    """
    now = now or datetime.now(UTC)
    if output.get("error") or not output.get("ok", True):
        found = [("status_unavailable", f"status unavailable: {output.get('error') or 'no result'}"
                  + (f" ({output['code']})" if output.get("code") else ""))]
        return _verdict(host, dict.fromkeys(AGE_KEYS), found)
    ages = backup_ages(output, verification, now)
    found = (_database_warnings(output.get("pgbackrest") or {}, ages, limits)
             + _files_warnings(output.get("restic") or {}, ages, limits)
             + _wal_warnings(output.get("wal_archiving") or {}, output.get("spool_queue") or {}, ages, limits)
             + _verify_warnings(verification, ages, limits)
             + hydration_warnings(output.get("hydration")))
    return _verdict(host, ages, found)


def hydration_warnings(hydration: dict | None) -> list[Warning]:
    """The documents a serve-first restore left for later (site/hydrate.py): still coming back (a warning with
    the progress and the estimated end), or ended with some missing (``hydration_incomplete``, critical)."""
    if not hydration:
        return []
    if hydration.get("state") == "running":
        eta = hydration.get("eta_s")
        when = (f", about {_duration(eta)} left (until {hydration.get('eta_at')})" if eta is not None
                else ", estimated end after the first batch")
        done_mb, total_mb = ((hydration.get(key) or 0) / 1e6 for key in ("bytes_done", "bytes_total"))
        return [("hydrating", f"documents coming back after a serve-first restore: {hydration.get('percent', 0):.1f}% "
                              f"({hydration.get('files_done')}/{hydration.get('files_total')} files, "
                              f"{done_mb:.0f}/{total_mb:.0f} MB){when}")]
    if hydration.get("state") == "incomplete":
        return [("hydration_incomplete", f"the hydration ended with {hydration.get('missing_count')} document(s) "
                                         "missing: they answer 503; see `lpse-backup status` on the site")]
    return []


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"


AGE_KEYS = ("backup_local_s", "backup_offsite_s", "files_local_s", "files_offsite_s", "wal_archived_s", "verified_s")


def _verdict(host: str, ages: dict, found: list[Warning]) -> dict:
    return {"host": host, "ages": ages, "warnings": [text for _, text in found],
            "codes": [code for code, _ in found], "ok": not found}


def backup_ages(output: dict, verification: dict | None, now: datetime) -> dict[str, float | None]:
    """Seconds since the last backup per repository and engine, the last archived WAL and verification."""
    repos = (output.get("pgbackrest") or {}).get("repos") or {}
    snapshots = output.get("restic") or {}
    return {
        "backup_local_s": _age(((repos.get("1") or {}).get("last_backup") or {}).get("time"), now),
        "backup_offsite_s": _age(((repos.get("2") or {}).get("last_backup") or {}).get("time"), now),
        "files_local_s": _age((snapshots.get("local") or {}).get("last_snapshot_time"), now),
        "files_offsite_s": _age((snapshots.get("offsite") or {}).get("last_snapshot_time"), now),
        "wal_archived_s": _age((output.get("wal_archiving") or {}).get("last_archived_time"), now),
        "verified_s": _age((verification or {}).get("verified_at"), now),
    }


def _age_warning(code: str, label: str, age: float | None, limit: timedelta) -> list[Warning]:
    if age is None:
        return [(f"no_{code}", f"no {label} yet")]
    if age > limit.total_seconds():
        return [(f"{code}_too_old", f"{label} is {age / 3600:.1f} h old (limit {limit})")]
    return []


def _database_warnings(facts: dict, ages: dict, limits: Thresholds) -> list[Warning]:
    if facts.get("error"):
        return [("pgbackrest_unreadable", f"pgBackRest could not be read: {facts['error']} ({facts.get('code')})")]
    found: list[Warning] = []
    keys = {"1": "backup_local_s", "2": "backup_offsite_s"}
    for repo, label in DATABASE_REPOS.items():
        status = ((facts.get("repos") or {}).get(repo) or {}).get("status") or {}
        if not pgbackrest.repo_usable(status):
            found.append(("repo_error", f"pgBackRest repo{repo} ({label}): {status.get('message', 'no status')}"))
        found += _age_warning("backup", label, ages[keys[repo]], limits.backup)
    return found


def _files_warnings(facts: dict, ages: dict, limits: Thresholds) -> list[Warning]:
    found: list[Warning] = []
    for name, label in FILE_REPOS.items():
        repo = facts.get(name) or {}
        if repo.get("error"):
            found.append(("restic_unreadable",
                          f"restic {name} could not be read: {repo['error']} ({repo.get('code')})"))
        else:
            found += _age_warning("snapshot", label, ages[f"files_{name}_s"], limits.backup)
    return found


def _wal_warnings(wal: dict, queue: dict, ages: dict, limits: Thresholds) -> list[Warning]:
    if wal.get("error"):
        found: list[Warning] = [("postgres_unavailable", f"WAL archiving unknown: {wal['error']}")]
    elif ages["wal_archived_s"] is None:
        found = [("no_wal_archived", "no WAL segment archived yet")]
    elif ages["wal_archived_s"] > limits.wal.total_seconds():
        found = [("wal_too_old", f"last WAL archived {ages['wal_archived_s'] / 60:.0f} min ago (limit {limits.wal})")]
    else:
        found = []
    if wal.get("last_failed_time") and (_when(wal.get("last_archived_time")) or datetime.min.replace(tzinfo=UTC)) \
            < _when(wal["last_failed_time"]):
        found.append(("wal_failing", f"WAL archiving is failing ({wal.get('failed_count')} failures, "
                                     f"last at {wal['last_failed_time']})"))
    threshold = int(queue.get("alert_threshold_files") or limits.queue_files)
    if int(queue.get("files", 0) or 0) >= threshold:
        found.append(("wal_queue_growing", f"WAL queue growing: {queue['files']} segments waiting to be archived "
                                           f"(threshold {threshold})"))
    return found


def _verify_warnings(verification: dict | None, ages: dict, limits: Thresholds) -> list[Warning]:
    if verification is None:
        return [("no_verification", "no verified restore yet")]
    if not verification["ok"]:
        error = verification_error(verification)
        return [("verification_failed", f"the last restore verification ({verification.get('verified_at')}) FAILED"
                 + (f": {error[:300]}" if error else ""))]
    if ages["verified_s"] is not None and ages["verified_s"] > limits.verify.total_seconds():
        return [("verification_too_old",
                 f"last verified restore is {ages['verified_s'] / 86400:.1f} days old (limit {limits.verify})")]
    return []


# -- verifications: one record per verification, whoever started it -------------------------------

def verification_error(verification: dict) -> str | None:
    """The error of a stored verification: its own, else the failed checks."""
    detail = verification.get("detail") or {}
    if detail.get("error"):
        return str(detail["error"])
    failed = [c for c in verification.get("checks") or [] if isinstance(c, dict) and not c.get("ok")]
    return "; ".join(f"{c.get('check')}: {c.get('detail')}" for c in failed) or None


def describe_verification(verification: dict | None) -> str:
    """One line naming a stored verification: when it finished, who started it, the set, the outcome."""
    if not verification:
        return "never verified"
    detail = verification.get("detail") or {}
    who = ("the site's timer" if detail.get("trigger") == "systemd" else "the site") \
        if verification.get("source") == "site" else "lpse-ops backup verify"
    outcome = "ok" if verification.get("ok") else "FAILED"
    return (f"{verification.get('verified_at')} by {who}, repo{verification.get('repo') or '?'} set "
            f"{verification.get('backup_label') or '?'}: {outcome}")


def current_verification(store, host: str) -> dict | None:
    """Return *host*'s current verification: the newest (by when it finished) the state store holds, or None.

    The one answer to "are this site's backups proven?" that ``backup status``, ``fleet status``, the
    upgrade plan and the reports share. A verification the site ran by itself counts once it has been
    read into the store (:func:`ingest_site_verifications`, done by every command that reads a site).
    """
    newest = store.list_verifications(host, limit=1)
    return newest[0] if newest else None


def _legacy_id(verification: dict) -> str:
    """An id for a verification a site tool older than the ids reported (its time, repository and set)."""
    key = f"{verification.get('finished_at')}|{verification.get('repo')}|{verification.get('set')}"
    return "legacy-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def site_verifications(output: dict) -> list[dict]:
    """Return the verifications a site's ``lpse-backup status`` (or ``verify``) JSON reports, each with an id (pure).

    ``verifications`` (the site's newest, with checks) and ``last_verify`` (also from older site tools);
    a ``verify`` result is itself one verification.
    """
    if output.get("action") == "verify":
        found = [output] if output.get("finished_at") else []
    else:
        found = [v for v in output.get("verifications") or [] if isinstance(v, dict) and v.get("finished_at")]
        last = output.get("last_verify")
        if isinstance(last, dict) and last.get("finished_at") and not any(
                v.get("id") == last.get("id") or (v.get("finished_at"), v.get("set")) ==
                (last.get("finished_at"), last.get("set")) for v in found):
            found.append({**last, "checks": [{"check": name, "ok": False, "detail": "failed"}
                                             for name in last.get("failed_checks") or []]})
    return [{**v, "id": str(v.get("id") or _legacy_id(v))} for v in found]


def record_site_verification(store, host: str, verification: dict, run_id: int | None, source: str) -> int:
    """Record one verification a site reported (idempotent by its id); return the store's id for it."""
    point = verification.get("restore_point") or {}
    checks = verification.get("checks") or []
    ok = bool(verification.get("ok")) and not verification.get("error")
    if not checks and not ok:
        checks = [{"check": "verify", "ok": False, "detail": verification.get("error") or "no result"}]
    return store.record_verification(
        host, ok, run_id=run_id, repo=str(verification["repo"]) if verification.get("repo") is not None else None,
        backup_label=verification.get("set"), recovery_point=point.get("name"), recovery_time=point.get("time"),
        restore_duration_s=verification.get("restore_duration_s"), checks=checks,
        verified_at=_when(verification.get("finished_at")), site_verification_id=verification["id"], source=source,
        detail={key: verification.get(key) for key in ("trigger", "invocation_id", "started_at", "duration_s",
                                                       "error", "code", "step", "backup_type")})


def ingest_site_verifications(store, host: str, output: dict, run_id: int | None) -> list[int]:
    """Record every verification *host*'s status reports that the store does not hold yet; return the new ids.

    Called by every command that reads a site (``fleet status``, ``backup status``, ``upgrade plan``), so
    a verification the site's timer ran reaches the store the next time the site is read, once.
    """
    reported = site_verifications(output)
    known = store.known_site_verifications(host, [v["id"] for v in reported])
    return [record_site_verification(store, host, v, run_id, "site") for v in reported if v["id"] not in known]


def status(ctx: BackupContext, limits: Thresholds) -> tuple[operation.OperationResult, dict[str, dict], list[dict]]:
    """Read every site's backup facts (``lpse-backup status``), record the verifications the sites ran by
    themselves, and judge each site; return the run, each host's JSON and each host's verdict.

    Each verdict carries ``verification``: the site's current verification (:func:`current_verification`).
    """
    from lpse_ops.state import StateStore

    result, outputs = execute(ctx, "status", [])
    verdicts = []
    with StateStore.open(ctx.state_url or config.state_url()) as store:
        for host, output in sorted(outputs.items()):
            if output.get("ok") and not output.get("error"):
                ingest_site_verifications(store, host, output, result.run_id)
            verification = current_verification(store, host)
            verdicts.append({**assess(host, output, verification, limits), "verification": verification})
    return result, outputs, verdicts


def record_verifications(outputs: dict[str, dict], run_id: int | None, state_url: str | None) -> None:
    """Store each host's verification (``lpse-ops backup verify``): result, recovery point, restore duration.

    A host whose verify printed no result is recorded as a failed verification with the reason.
    """
    from lpse_ops.state import StateStore

    store = StateStore.open(state_url or config.state_url())
    try:
        for host, output in outputs.items():
            found = site_verifications(output)
            if found:
                record_site_verification(store, host, found[0], run_id, "control")
            else:
                store.record_verification(
                    host, False, run_id=run_id, source="control",
                    checks=[{"check": "verify", "ok": False, "detail": output.get("error", "no result")}],
                    detail={"error": output.get("error", "no result"), "code": output.get("code")})
    finally:
        store.close()
