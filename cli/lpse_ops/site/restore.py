"""``lpse-backup restore --target-time T``: point-in-time recovery of the live site.

A restore is a sequence of named steps (``STEPS``). The checks come first and touch nothing; once the
live data has been moved aside, any failure rolls the site back (``roll_back``): the failed attempt
is kept, the previous data goes back into place, PostgreSQL and SPSE start again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from lpse_ops.site import engine, locking, pgbackrest, postgres, restic
from lpse_ops.site.clock import iso, now_utc, parse_time, seconds_since
from lpse_ops.site.errors import Failure
from lpse_ops.site.proc import log, run
from lpse_ops.site.settings import Settings

HOUR_S = 3600


@dataclass
class Restore:
    """One restore in progress: what was asked, what was chosen, and what was moved where."""

    settings: Settings
    repo: str
    target: datetime
    target_text: str
    result: dict
    stamp: str
    repo2_path: str | None = None
    restic_url: str | None = None
    snapshot: restic.Snapshot | None = None
    staging: str = ""
    began: float = 0.0
    extra: tuple[str, ...] = field(default_factory=tuple)

    @property
    def restic_name(self) -> str:
        return "local" if self.repo == "1" else "offsite"

    def step(self, text: str) -> None:
        """Record a step that changed something, and log it."""
        self.result["steps"].append(text)
        log(text)


def main(settings: Settings, args) -> dict:
    """Restore the site to *args.target_time*; return the restore's JSON result."""
    started_at, started = now_utc(), time.monotonic()
    result = {"action": "restore", "ok": False, "site_code": settings.site_code, "repo": int(args.repo),
              "target_time": args.target_time, "started_at": iso(started_at), "moved_aside": {}, "steps": []}
    try:
        target = parse_time(args.target_time)
    except ValueError:
        return {**result, "error": f"--target-time {args.target_time!r} is not a time like \"2024-05-01 10:00:00+00\"",
                "code": "bad_argument", "step": "arguments"}
    current = Restore(settings, str(args.repo), target, args.target_time, result,
                      started_at.strftime("%Y%m%dT%H%M%SZ"), args.repo2_path, args.restic_repo,
                      extra=(f"--repo2-path={args.repo2_path}",) if args.repo2_path else ())
    try:
        with locking.exclusive(settings.lock_path, settings.lock_wait_s):
            for step in STEPS:
                step(current)
    except Failure as failure:
        result.update(failure.as_fields())
        if result["moved_aside"]:
            roll_back(current)
    result["finished_at"], result["duration_s"] = iso(now_utc()), seconds_since(started, time.monotonic())
    return result


# --- checks: nothing is touched yet -------------------------------------------------------------

def select_backup(current: Restore) -> None:
    """The newest backup set that finished before the target."""
    found = engine.stanza(current.settings, current.repo, current.extra)
    before = [b for b in pgbackrest.backups_in(found, current.repo) if pgbackrest.stopped_at(b) <= current.target]
    if not before:
        raise Failure("no_backup", f"repo{current.repo} holds no backup that finished before {iso(current.target)}: "
                      "choose a later --target-time (see `lpse-backup list`)", step="select")
    current.result["backup_set"] = before[-1]["label"]


def select_snapshot(current: Restore) -> None:
    """The newest restic snapshot of the documents at or before the target."""
    docs = current.settings.docs_dir
    snapshots = restic.covering(engine.restic_snapshots(current.settings, current.restic_name, current.restic_url),
                                docs)
    current.snapshot = restic.snapshot_at(snapshots, current.target)
    if not current.snapshot:
        raise Failure("no_snapshot", f"no restic snapshot of {docs} at or before {iso(current.target)} in the "
                      f"{current.restic_name} repository", step="select")
    current.result["restic_snapshot"] = {"id": current.snapshot.short_id, "time": iso(current.snapshot.time)}


def stage_documents(current: Restore) -> None:
    """Restore the documents to a staging folder next to the live one (same filesystem)."""
    docs = current.settings.docs_dir
    current.staging = os.path.join(os.path.dirname(docs), f".lpse-restore-{current.stamp}")
    current.step(f"restoring documents of snapshot {current.snapshot.short_id} to {current.staging}")
    engine.restic_call(current.settings, current.restic_name,
                       restic.restore_args(current.snapshot.id, current.staging, include=docs),
                       url=current.restic_url, step="restic restore", timeout=engine.DAY_S)


# --- the live site ------------------------------------------------------------------------------

def stop_services(current: Restore) -> None:
    current.step("stopping spse and postgresql")
    run(["systemctl", "stop", current.settings.spse_unit], step="stop spse")
    run(["systemctl", "stop", current.settings.pg_unit], step="stop postgresql")


def move_database_aside(current: Restore) -> None:
    """Move the data dir aside (kept, never deleted) and create an empty one."""
    pgdata = current.settings.pg_data
    aside = f"{pgdata}.before-restore-{current.stamp}"
    os.rename(pgdata, aside)
    current.result["moved_aside"]["pgdata"] = {"from": pgdata, "to": aside}
    current.step(f"moved {pgdata} aside to {aside}")
    os.makedirs(pgdata, mode=0o700)
    shutil.chown(pgdata, "postgres", "postgres")


def restore_database(current: Restore) -> None:
    """``pgbackrest restore --type=time`` into the empty data dir."""
    current.began = time.monotonic()
    current.step(f"pgbackrest restore --type=time --target={current.target_text} from repo{current.repo}")
    engine.pgbackrest_call(current.settings,
                           pgbackrest.restore_to_time_args(current.repo, current.target_text, current.extra),
                           step="pgbackrest restore", timeout=engine.DAY_S)


def recover(current: Restore) -> None:
    """Start PostgreSQL and wait until it has recovered to the target and promoted."""
    settings = current.settings
    run(["systemctl", "start", settings.pg_unit], step="start postgresql", timeout=HOUR_S)
    cols = wait_promoted(settings, current.result["moved_aside"]["pgdata"]["to"])
    current.result["recovery_point"] = {
        "target_time": iso(current.target),
        "last_replayed_transaction_time": iso(parse_time(cols[1])) if cols[1] else None,
        "timeline": int(cols[2]) if cols[2].isdigit() else cols[2], "backup_set": current.result["backup_set"]}
    current.result["database_restore_duration_s"] = seconds_since(current.began, time.monotonic())
    current.step("PostgreSQL recovered and promoted")


def wait_promoted(settings: Settings, aside: str) -> list[str]:
    """Wait (an hour at most) until the live PostgreSQL has promoted; return its recovery columns."""
    deadline = time.monotonic() + HOUR_S
    while True:
        lines = postgres.psql(settings, "SELECT pg_is_in_recovery(), coalesce(pg_last_xact_replay_timestamp()::text, "
                              "''), (SELECT timeline_id FROM pg_control_checkpoint());", database="postgres",
                              check=False)
        if lines and lines[0].startswith("f"):
            return (lines[0].split("\t") + ["", ""])[:3]
        if time.monotonic() > deadline:
            raise Failure("recovery_timeout", "PostgreSQL did not finish recovery within an hour: read "
                          f"/var/log/postgresql/; the old data dir is at {aside}", step="recovery")
        time.sleep(2)


def put_documents_in_place(current: Restore) -> None:
    """Move the live documents aside and the staged ones into place."""
    docs = current.settings.docs_dir
    docs_aside = f"{docs}.before-restore-{current.stamp}"
    if os.path.exists(docs):
        os.rename(docs, docs_aside)
        current.result["moved_aside"]["documents"] = {"from": docs, "to": docs_aside}
    os.rename(current.staging + docs, docs)
    shutil.rmtree(current.staging)
    current.step(f"documents restored (previous ones at {docs_aside})")


def start_application(current: Restore) -> None:
    """Start SPSE and wait for its health endpoint to say ok."""
    run(["systemctl", "start", current.settings.spse_unit], step="start spse")
    current.result["health"] = wait_health(current.settings.health_url)
    current.result["ok"] = current.result["health"].get("status") == "ok"
    if not current.result["ok"]:  # reported, not rolled back: the data is restored, the application needs a look
        current.result.update(error=f"SPSE did not report healthy after the restore: {current.result['health']}",
                              code="unhealthy_after_restore", step="health")


Step = Callable[[Restore], None]
STEPS: tuple[Step, ...] = (select_backup, select_snapshot, stage_documents, stop_services, move_database_aside,
                           restore_database, recover, put_documents_in_place, start_application)


# --- rolling back -------------------------------------------------------------------------------

def roll_back(current: Restore) -> None:
    """Put the site back as it was before the restore; the failed attempt is kept as ``*.failed-restore-<stamp>``."""
    settings, result = current.settings, current.result
    result["ok"] = False
    try:
        run(["systemctl", "stop", settings.spse_unit], step="roll back", check=False)
        run(["systemctl", "stop", settings.pg_unit], step="roll back", check=False)
        kept = [swap_back(moved["from"], moved["to"], current.stamp) for moved in result["moved_aside"].values()]
        kept = [path for path in kept if path]
        run(["systemctl", "start", settings.pg_unit], step="roll back", timeout=600)
        run(["systemctl", "start", settings.spse_unit], step="roll back")
        result["rolled_back"] = True
        result["health_after_rollback"] = wait_health(settings.health_url, timeout=120)
        result["error"] += (". The site was rolled back to its state before the restore"
                            + (f"; the failed attempt is kept at {', '.join(kept)}" if kept else ""))
    except (Failure, OSError) as error:
        result["rolled_back"] = False
        result["error"] += (f". Rolling back failed too ({error}): nothing was deleted, the previous data is at "
                            + ", ".join(m["to"] for m in result["moved_aside"].values()))


def swap_back(live: str, aside: str, stamp: str) -> str | None:
    """Rename *live* to ``*.failed-restore-<stamp>`` (if present) and *aside* back to *live*; return the kept path."""
    failed = None
    if os.path.exists(live):
        failed = f"{live}.failed-restore-{stamp}"
        os.rename(live, failed)
    os.rename(aside, live)
    return failed


def wait_health(url: str, timeout: float = 300) -> dict:
    """Poll SPSE's health endpoint until it answers JSON; return the last answer (or why it did not)."""
    deadline = time.monotonic() + timeout
    last: dict = {"status": "unreachable"}
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (the site's own local URL)
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            with contextlib.suppress(Exception):
                last = json.loads(error.read())
        except (OSError, ValueError) as error:
            last = {"status": "unreachable", "reason": str(error)}
        time.sleep(2)
    return last
