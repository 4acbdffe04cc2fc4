"""``lpse-backup run --type full|diff|incr|files|delta``: back up the database and the files, both repositories.

A run is a sequence of named steps (``steps_for``); preflight steps come first, so nothing is touched
when they fail.

``delta`` (every 30 s) snapshots only the documents added or changed since the last documents snapshot
(their inode change time), tagged ``delta``: a lost server then loses at most the last half minute of
uploads, not the 5 minutes between the full documents snapshots, so its database need not be recovered
to more than that before the loss (a recovered database never references a missing document). A restore
never starts from a delta snapshot; it takes the files it lacks from them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lpse_ops.site import engine, hydrate, locking, manifest, pgbackrest, postgres, restic, safefs
from lpse_ops.site.clock import iso, now_utc, seconds_since
from lpse_ops.site.errors import Failure
from lpse_ops.site.proc import log
from lpse_ops.site.settings import Settings

REPOS = ("1", "2")
RESTIC_REPOS = ("local", "offsite")
DELTA_MAX_FILES = 2000
"""More new files than this (a bulk import) and the delta run takes a full documents snapshot instead: a
snapshot names every path it was given, and restic keeps that list in the snapshot itself."""
STAMP_SLACK_S = 1.0
"""Files changed this long before the last snapshot began are taken again (clock granularity)."""


@dataclass
class Run:
    """One run in progress: its settings, type, the result being built and the new set labels."""

    settings: Settings
    backup_type: str
    result: dict
    labels: dict[str, str] = field(default_factory=dict)


Step = Callable[[Run], None]


def main(settings: Settings, args) -> dict:
    """Run a backup of *args.type*; return the run's JSON result."""
    if args.type == "delta":
        return delta(settings)
    started_at, started = now_utc(), time.monotonic()
    result = {"action": "run", "ok": False, "site_code": settings.site_code, "host": socket.gethostname(),
              "type": args.type, "started_at": iso(started_at), "pgbackrest": {}, "manifest": None, "restic": {}}
    current = Run(settings, args.type, result)
    try:
        with run_lock(settings, args.type):
            for step in steps_for(args.type):
                step(current)
        result["ok"] = True
    except Failure as failure:
        result.update(failure.as_fields())
    result["finished_at"], result["duration_s"] = iso(now_utc()), seconds_since(started, time.monotonic())
    return result


def run_lock(settings: Settings, backup_type: str) -> contextlib.AbstractContextManager:
    """The lock a run holds: a documents run only the files lock, so that a long database backup never
    holds back the 5-minute snapshots (the documents' RPO); a database run the main lock (its restic
    part takes the files lock too, in ``back_up_files``)."""
    if backup_type == "files":
        return locking.exclusive(settings.files_lock_path, settings.lock_wait_s)
    return locking.exclusive(settings.lock_path, settings.lock_wait_s)


def steps_for(backup_type: str) -> tuple[Step, ...]:
    """Return the steps of a run of *backup_type*, in order.

    Retention (``restic forget --prune``, which rewrites packs) runs with the daily full and diff
    backups only, never with the 5-minute documents runs.
    """
    if backup_type == "files":
        return (preflight_files, back_up_files)
    steps = (preflight_database, preflight_files, push_timeline_history, back_up_database, write_manifest,
             back_up_files)
    return (*steps, forget_snapshots) if backup_type in ("full", "diff") else steps


# --- preflight ----------------------------------------------------------------------------------

def preflight_database(current: Run) -> None:
    """Enough free space for the database backup; the stanza usable on both repositories."""
    settings = current.settings
    size = postgres.cluster_size(settings)
    wanted = size if current.backup_type == "full" else size // 4
    need_space(settings.pgbackrest_repo1_path, max(wanted, settings.min_free_bytes), step="preflight")
    for repo in REPOS:
        engine.check_repo_reachable(settings, repo)


def preflight_files(current: Run) -> None:
    """Enough free space for the local restic repository; both restic repositories open."""
    settings = current.settings
    files = sum(tree_size(p) for p in settings.restic_paths if os.path.exists(p))
    need_space(settings.restic_repos["local"], max(files // 10, settings.min_free_bytes), step="preflight")
    for name in RESTIC_REPOS:
        engine.check_restic_reachable(settings, name)


def need_space(path: str, wanted: int, step: str) -> int:
    """Return the free bytes on *path*'s filesystem; raise Failure(no_space) below *wanted*."""
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe).free
    if free < wanted:
        raise Failure("no_space", f"no space left on {path}: {free // 2**20} MiB free, this step needs about "
                      f"{wanted // 2**20} MiB; free space there (or grow the disk), then run again", step=step)
    return free


def tree_size(path: str) -> int:
    """Return the total size of the regular files under *path* (walked by descriptor, no link followed)."""
    with contextlib.suppress(OSError, safefs.Unsafe):
        return sum(entry.info.st_size for entry in safefs.walk(path) if stat.S_ISREG(entry.info.st_mode))
    return 0


# --- the database -------------------------------------------------------------------------------

def push_timeline_history(current: Run) -> None:
    """The live timeline's history file in both repositories; best effort, recorded in ``timeline_history``.

    PostgreSQL archives a timeline's history once, at promotion, and only if archiving is on then: a rebuilt
    server promoted before its archiving was set up again never archived it, and a later restore across that
    timeline failed ("recovery target timeline 6 does not exist", a drill found it). pgBackRest takes an
    identical copy already there as done; a different one (another branch's) is reported, never fatal.
    """
    settings = current.settings
    lines = postgres.psql(settings, "SELECT timeline_id FROM pg_control_checkpoint();", database="postgres",
                          check=False, step="timeline", timeout=60)
    timeline = int(lines[0]) if lines and lines[0].strip().isdigit() else 0
    if timeline <= 1:
        return
    path = os.path.join(settings.pg_data, "pg_wal", f"{timeline:08X}.history")
    if not os.path.exists(path):
        current.result["timeline_history"] = {"timeline": timeline, "pushed": False, "reason": f"no {path}"}
        return
    done = engine.pgbackrest_call(settings, ["archive-push", "--no-archive-async", path], check=False,
                                  step="archive-push history", timeout=600)
    current.result["timeline_history"] = {"timeline": timeline, "pushed": done.returncode == 0,
                                          **({} if done.returncode == 0 else
                                             {"reason": (done.stderr or done.stdout or "").strip()[-400:]})}

def back_up_database(current: Run) -> None:
    """``pgbackrest backup`` to repo1, then repo2; record each new set."""
    for repo in REPOS:
        entry = back_up_repo(current.settings, repo, current.backup_type)
        current.result["pgbackrest"][repo] = entry
        current.labels[repo] = entry["label"]


def back_up_repo(settings: Settings, repo: str, backup_type: str) -> dict:
    """Back up to one repository; return the new set as ``lpse-backup run`` reports it."""
    step = f"pgbackrest backup repo{repo}"
    log(f"pgbackrest {backup_type} backup to repo{repo}")
    before = {b["label"] for b in pgbackrest.backups_in(engine.stanza(settings, repo), repo)}
    began = time.monotonic()
    engine.pgbackrest_call(settings, pgbackrest.backup_args(repo, backup_type), step=step, timeout=engine.DAY_S)
    new = [b for b in pgbackrest.backups_in(engine.stanza(settings, repo), repo) if b["label"] not in before]
    if not new:
        raise Failure("backup_not_listed", f"pgbackrest reported success but no new backup is listed on repo{repo}",
                      step=step)
    return {**pgbackrest.describe_backup(new[-1]), "duration_s": seconds_since(began, time.monotonic())}


def write_manifest(current: Run) -> None:
    """Checksum the tables, name the restore point, wait until its WAL is archived; save the manifest."""
    settings = current.settings
    log("writing the verification manifest and the restore point")
    taken = manifest.take(settings, current.labels["1"], current.labels, current.backup_type)
    if hydrate.in_progress(settings):  # its documents go into a delta, not into a snapshot tagged with this set
        taken["documents_hydrating"] = True
    path = manifest.save(taken, manifest.directory(settings))
    if taken["wal_file"]:
        postgres.wait_archived(settings, taken["wal_file"])
    current.result["manifest"] = {"path": path, "label": taken["label"], "restore_point": taken["restore_point"],
                                  "restore_point_time": taken["restore_point_time"],
                                  "tables": {k: v["rows"] for k, v in taken["tables"].items()}}


# --- the files ----------------------------------------------------------------------------------

def back_up_files(current: Run) -> None:
    """``restic backup`` of the documents, configuration and manifests to both repositories."""
    settings = current.settings
    tags = [settings.site_code, *sorted(set(current.labels.values()))]
    paths = [p for p in settings.restic_paths if os.path.exists(p)]
    held = contextlib.nullcontext() if current.backup_type == "files" else \
        locking.exclusive(settings.files_lock_path, settings.lock_wait_s)
    if hydrate.in_progress(settings):
        # Documents are still coming back after a --serve-first restore: a snapshot of the folder now would record
        # those not back yet as gone. The new documents go into a delta; the folder's next full snapshot is taken
        # once the hydration has ended.
        # after a reboot the hydration service is not running: the documents runs (every 5 minutes) start it again
        try:
            hydrate.start_service()
        except Failure as failure:  # the documents' delta below still runs
            log(f"could not start the hydration service: {failure.message}")
        with held:
            current.result["hydrating"] = {"note": "documents still being hydrated: a delta of the new ones instead "
                                                   "of a full snapshot of the folder", "restic": {}}
            take_delta(settings, current.result["hydrating"])
        paths = [p for p in paths if p != settings.docs_dir]
        held = contextlib.nullcontext() if current.backup_type == "files" else \
            locking.exclusive(settings.files_lock_path, settings.lock_wait_s)
        if not paths:
            return
    with held:
        walk_started = time.time()
        for name in RESTIC_REPOS:
            log(f"restic backup to {name}")
            began = time.monotonic()
            entry = snapshot_files(settings, name, tags, paths)
            entry["duration_s"] = seconds_since(began, time.monotonic())
            current.result["restic"][name] = entry
        write_stamp(settings, walk_started)
        write_files_size(settings, current.result["restic"].get("local") or {})


FILES_SIZE_NAME = "files-size.json"
"""The last full files snapshot's size (bytes and files restic read): what ``status`` reports as the data's size."""


def write_files_size(settings: Settings, entry: dict) -> None:
    if entry.get("total_bytes") is None:
        return
    path = os.path.join(settings.state_dir, FILES_SIZE_NAME)
    with open(f"{path}.tmp", "w") as handle:
        json.dump({"bytes": entry["total_bytes"], "files": entry.get("total_files"), "at": iso(now_utc())}, handle)
    os.replace(f"{path}.tmp", path)


def snapshot_files(settings: Settings, name: str, tags: list[str], paths: list[str]) -> dict:
    """Take one restic snapshot in repository *name*; return its summary."""
    confine = settings.docs_dir if settings.docs_dir in paths else None
    done = engine.restic_call(settings, name, restic.backup_args(tags, paths), step=f"restic backup {name}",
                              timeout=engine.DAY_S, confine=confine)
    return restic.describe_summary(restic.parse_backup_summary(done.stdout))


# --- the documents added since the last snapshot (every 30 s) -------------------------------------

def stamp_path(settings: Settings) -> str:
    return os.path.join(settings.state_dir, "documents-since")


def read_stamp(settings: Settings) -> float | None:
    """When the last documents snapshot (full or delta) began reading, epoch seconds; None before the first."""
    try:
        with open(stamp_path(settings)) as handle:
            return float(handle.read().strip())
    except (OSError, ValueError):
        return None


def write_stamp(settings: Settings, moment: float) -> None:
    """Record *moment* as the start of a documents snapshot that reached both repositories."""
    path = stamp_path(settings)
    with open(f"{path}.tmp", "w") as handle:
        handle.write(f"{moment:.3f}\n")
    os.replace(f"{path}.tmp", path)


def changed_since(root: str, since: float, skipped: list[dict] | None = None) -> list[str]:
    """Every regular file under *root* whose inode changed at or after *since* (a new upload, a rename into place).

    *root* is spse's: walked by descriptor, never through a link; a changed entry that is not a regular file
    (a link, a FIFO) is added to *skipped* with its reason instead (the 5-minute snapshot records those).
    """
    found = []
    skipped = skipped if skipped is not None else []
    for entry in safefs.walk(root, skipped):
        if entry.info.st_ctime < since:
            continue
        if stat.S_ISREG(entry.info.st_mode):
            found.append(os.path.join(root, entry.path))
        else:
            skipped.append({"path": entry.path, "reason": safefs.not_regular(entry.info.st_mode)})
    return sorted(found)


def delta(settings: Settings) -> dict:
    """Snapshot the documents changed since the last documents snapshot, to both repositories.

    Skipped (ok) while another run holds the files lock (that run is snapshotting them), before the first
    full documents snapshot, and when nothing changed. The stamp moves only once both repositories hold
    the new snapshot, so a failed run's files are taken by the next one.
    """
    started_at, started = now_utc(), time.monotonic()
    result = {"action": "run", "ok": False, "site_code": settings.site_code, "host": socket.gethostname(),
              "type": "delta", "started_at": iso(started_at), "restic": {}}
    try:
        with locking.exclusive(settings.files_lock_path, 0):
            take_delta(settings, result)
    except Failure as failure:
        if failure.code == "lock_busy":
            result.update(ok=True, skipped="another run holds the documents lock (it is snapshotting them)")
        else:
            result.update(failure.as_fields())
    result["finished_at"], result["duration_s"] = iso(now_utc()), seconds_since(started, time.monotonic())
    return result


def take_delta(settings: Settings, result: dict) -> None:
    """The delta itself, under the documents' lock: fill *result*."""
    since = read_stamp(settings)
    if since is None:
        result.update(ok=True, skipped="no documents snapshot yet: the next documents run takes the first")
        return
    walk_started = time.time()
    skipped: list[dict] = []
    try:
        changed = changed_since(settings.docs_dir, since - STAMP_SLACK_S, skipped)
    except safefs.Unsafe as refused:
        raise Failure("documents_unsafe", f"{settings.docs_dir}: {refused.reason}; nothing was backed up",
                      step="delta") from None
    result["files"] = len(changed)
    if skipped:  # "skipped" (a text) says the whole run was skipped: these are files left out of it
        result["skipped_files"] = skipped[:50]
        result["skipped_files_count"] = len(skipped)
    if not changed:
        write_stamp(settings, walk_started)
        result.update(ok=True, skipped="no document changed since the last snapshot")
        return
    if len(changed) > DELTA_MAX_FILES and not hydrate.in_progress(settings):  # never a full one while hydrating
        log(f"{len(changed)} documents changed: a full documents snapshot instead of a delta")
        current = Run(settings, "files", result)
        preflight_files(current)
        back_up_files(current)
        result.update(ok=True, full_instead=True)
        return
    for name in RESTIC_REPOS:
        began = time.monotonic()
        result["restic"][name] = {**snapshot_delta(settings, name, changed),
                                  "duration_s": seconds_since(began, time.monotonic())}
    write_stamp(settings, walk_started)
    result["ok"] = True


LINK_LOOP = "too many levels of symbolic links"
"""What restic says (ELOOP) when a path it reads runs through a link under the ``nosymfollow`` documents."""


def snapshot_delta(settings: Settings, name: str, paths: list[str]) -> dict:
    """One restic snapshot of just *paths* in repository *name*, tagged ``delta``; return its summary.

    restic exits 3 when a listed file vanished before it was read (a document deleted meanwhile): the
    snapshot holds the others, which is what a delta is for.
    """
    try:
        listing_bytes = restic.delta_listing(settings.docs_dir, paths)
    except ValueError as error:
        raise Failure("documents_unsafe", str(error), step=f"restic backup {name}") from None
    with tempfile.NamedTemporaryFile("wb", prefix="delta-", suffix=".list", dir=settings.state_dir) as listing:
        listing.write(listing_bytes)
        listing.flush()
        done = engine.restic_call(settings, name, restic.delta_args(settings.site_code, listing.name), check=False,
                                  step=f"restic backup {name}", timeout=engine.DAY_S, confine=settings.docs_dir)
    if done.returncode not in (0, 3) and LINK_LOOP in (done.stderr or "").lower():
        raise Failure("documents_unsafe", f"a listed document's folder became a symbolic link before restic read it "
                      f"(the spse account swapped it in): nothing was read through it and no snapshot was stored in "
                      f"{name}; the next run lists the link as skipped. restic: {(done.stderr or '').strip()[-300:]}",
                      step=f"restic backup {name}")
    if done.returncode not in (0, 3):
        raise Failure("restic_failed", f"restic backup of {len(paths)} new document(s) to {name} failed "
                      f"(exit {done.returncode}): {(done.stderr or '').strip()[-400:]}", step=f"restic backup {name}")
    return restic.describe_summary(restic.parse_backup_summary(done.stdout))


def forget_snapshots(current: Run) -> None:
    """Apply the retention to both restic repositories (``restic forget --prune``); record what it removed."""
    settings = current.settings
    if hydrate.in_progress(settings):  # the hydration reads the snapshots retention could remove
        current.result["forget"] = {"skipped": "documents are still being hydrated from the snapshots"}
        return
    with locking.exclusive(settings.files_lock_path, settings.lock_wait_s):
        for name in RESTIC_REPOS:
            done = engine.restic_call(settings, name, restic.forget_args(settings.site_code, settings.restic_keep),
                                      step=f"restic forget {name}", timeout=engine.DAY_S)
            current.result["restic"][name]["forget"] = restic.parse_forget(done.stdout)
