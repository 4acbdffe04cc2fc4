"""``lpse-backup restore --target-time T``: point-in-time recovery of the live site.

A restore is a sequence of named steps (``STEPS``). The checks come first and touch nothing; once the
live data has been moved aside, any failure rolls the site back (``roll_back``): the failed attempt
is kept, the previous data goes back into place, PostgreSQL and SPSE start again.

The database and the documents are independent: restic restores the documents into a staging folder
in a thread while pgBackRest restores and PostgreSQL recovers. Before SPSE starts, every document the
recovered database references must be in place with its sha256 (``reconcile_documents``): one the
snapshot lacks is brought back from the live folder just set aside, or from a later snapshot, or from an
earlier one (a snapshot taken after the folder was emptied lacks what an earlier one holds); if any is still
missing, the restore fails, names them, and rolls the site back.

``--target-time latest`` recovers to the end of the archived WAL (a lost server: everything it pushed
offsite). Documents uploaded after the last snapshot are then gone for good while the database still
lists them; rather than point at missing files, the database is recovered again (``--delta``) to just
before the first of them (``recover_before_lost_documents``): the newest point where both agree.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from lpse_ops.site import documents, engine, locking, pgbackrest, postgres, restic, safefs, services
from lpse_ops.site.clock import iso, now_utc, parse_time, seconds_since
from lpse_ops.site.errors import Failure
from lpse_ops.site.proc import log, run
from lpse_ops.site.settings import Settings

HOUR_S = 3600
LATEST = "latest"
"""``--target-time latest``: the end of the archived WAL."""
FIRST_ADDED_SQL = ("SELECT to_char((min(created_at) - interval '1 millisecond') AT TIME ZONE 'UTC', "
                   "'YYYY-MM-DD HH24:MI:SS.MS') FROM documents WHERE id IN ")


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
    snapshots: list[restic.Snapshot] = field(default_factory=list)
    staging: str = ""
    staging_thread: threading.Thread | None = None
    staging_failure: list[Failure] = field(default_factory=list)
    timeline: str | None = None
    began: float = 0.0
    extra: tuple[str, ...] = field(default_factory=tuple)
    latest: bool = False
    stanza_system_id: int | None = None
    set_timeline: int | None = None
    documents_skipped: list[dict] = field(default_factory=list)
    """Documents refused while bringing them back (a link, a FIFO, an unsafe path), with the reason."""
    serve_first: bool = False
    """``--serve-first``: SPSE opens once the first documents are back; the rest is hydrated (restore_first.py)."""
    first_bytes: int = 0
    spse_base: str = "/opt/spse"
    first: dict = field(default_factory=dict)
    """What the serve-first steps found and chose (restore_first.py)."""

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
    latest = args.target_time.strip().lower() == LATEST
    try:
        target = now_utc() if latest else parse_time(args.target_time)
    except ValueError:
        return {**result, "error": f"--target-time {args.target_time!r} is not a time like \"2024-05-01 10:00:00+00\"",
                "code": "bad_argument", "step": "arguments"}
    extra = tuple(f"--repo2-{name}={value}" for name, value in (("path", args.repo2_path),
                                                                 ("s3-bucket", args.repo2_bucket)) if value)
    current = Restore(settings, str(args.repo), target, args.target_time, result,
                      started_at.strftime("%Y%m%dT%H%M%SZ"), args.repo2_path, args.restic_repo, extra=extra,
                      latest=latest, serve_first=bool(getattr(args, "serve_first", False)),
                      first_bytes=int(getattr(args, "first_mb", 1024) or 0) << 20,
                      spse_base=getattr(args, "spse_base", None) or "/opt/spse")
    if current.serve_first:
        from lpse_ops.site import restore_first  # it builds on this module

        steps = restore_first.STEPS
    else:
        steps = STEPS
    step_name = "lock"
    try:
        with locking.exclusive(settings.lock_path, settings.lock_wait_s), \
                locking.exclusive(settings.files_lock_path, settings.lock_wait_s):
            for step in steps:
                step_name = step.__name__
                step(current)
    except Exception as error:  # noqa: BLE001 (any error after the first change must roll the site back)
        failure = error if isinstance(error, Failure) else \
            Failure("unexpected", f"unexpected {type(error).__name__} in {step_name}: {error}", step=step_name)
        result.update(failure.as_fields())
        if current.staging_thread:
            current.staging_thread.join()
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
    current.set_timeline = pgbackrest.timeline_of(before[-1])
    current.stanza_system_id = pgbackrest.system_id(found, current.repo)


def select_snapshot(current: Restore) -> None:
    """The newest restic snapshot of the documents at or before the target."""
    docs = current.settings.docs_dir
    snapshots = restic.covering(engine.restic_snapshots(current.settings, current.restic_name, current.restic_url),
                                docs)
    current.snapshots = snapshots
    current.snapshot = restic.snapshot_at(restic.full(snapshots), current.target)  # never a delta
    if not current.snapshot:
        raise Failure("no_snapshot", f"no restic snapshot of {docs} at or before {iso(current.target)} in the "
                      f"{current.restic_name} repository", step="select")
    current.result["restic_snapshot"] = {"id": current.snapshot.short_id, "time": iso(current.snapshot.time)}


def note_live_timeline(current: Restore) -> None:
    """The timeline the live cluster is on: the history "as lived" that the target time belongs to.

    A restore that failed and was rolled back has already archived the history file of the timeline its
    attempt promoted to; following "latest" would take that abandoned branch and PostgreSQL would refuse
    to start. Following the live timeline never does. Unknown when PostgreSQL is down, and meaningless
    when the live cluster is another database than the backups' (a server rebuilt after a loss: a fresh
    cluster on timeline 1): then pgBackRest's default (the latest timeline) applies.

    When the chosen set was taken on the live timeline itself, that timeline is followed as ``current``
    (the set's own), not by number: the same history, but PostgreSQL then needs no history file for it,
    and a rebuilt server's first timeline has none in its repositories (promoted before archiving was
    set up again; a drill found it: "recovery target timeline 6 does not exist").
    """
    lines = postgres.psql(current.settings, "SELECT timeline_id, (SELECT system_identifier FROM pg_control_system()) "
                          "FROM pg_control_checkpoint();", database="postgres", check=False, step="timeline",
                          timeout=60)
    cols = (lines[0].split("\t") + [""])[:2] if lines else ["", ""]
    live_id = int(cols[1]) if cols[1].strip().isdigit() else None
    same = live_id is not None and current.stanza_system_id in (None, live_id)
    live = int(cols[0]) if same and cols[0].strip().isdigit() else None
    current.timeline = "current" if live is not None and live == current.set_timeline else \
        (str(live) if live is not None else None)
    current.result["timeline_followed"] = (f"current ({live})" if current.timeline == "current"
                                           else int(current.timeline) if current.timeline else "default")
    if live_id is not None and not same:
        current.result["live_cluster"] = (f"another database (system id {live_id}; the backups' is "
                                          f"{current.stanza_system_id}): a rebuilt server")


def staging_parent(settings: Settings) -> tuple[str, str | None]:
    """Return (a folder to stage restored documents in, a warning or None).

    Never a folder spse can write: spse owns the documents' parent, so a name there can be swapped for a
    link between its creation and restic's restore into it (restic, as root, follows it). The staging
    must be on the documents' filesystem (it is renamed into place), so: the state dir when it is there
    and only root can change it, else the root of that filesystem when only root can change it; else
    (both fail) a random name next to the documents, with the warning that spse could still race it.
    """
    parent = os.path.dirname(settings.docs_dir.rstrip("/"))
    if not os.path.isdir(parent):  # no documents' folder at all: any root-only folder will do
        return settings.state_dir, None
    device = os.stat(parent).st_dev
    mount = parent
    while mount != "/" and os.stat(os.path.dirname(mount)).st_dev == device:
        mount = os.path.dirname(mount)
    for candidate in (settings.state_dir, mount):
        if os.path.isdir(candidate) and os.stat(candidate).st_dev == device and safefs.root_only(candidate):
            return candidate, None
    return parent, (f"no root-only folder on the documents' filesystem: staged next to them in {parent}, which "
                    "spse can write (a random name, but spse could still swap it while restic restores)")


def stage_documents(current: Restore) -> None:
    """Start restoring the documents to a staging folder on the documents' filesystem, root's own.

    It runs in a thread, beside the database's restore; ``put_documents_in_place`` waits for it. The folder
    is made by ``mkdtemp`` (a random name, mode 0700) in a folder only root can change (``staging_parent``).
    """
    docs = current.settings.docs_dir
    parent, warning = staging_parent(current.settings)
    if warning:
        current.result["staging_warning"] = warning
    current.staging = tempfile.mkdtemp(prefix=".lpse-restore-", dir=parent)
    current.step(f"restoring documents of snapshot {current.snapshot.short_id} to {current.staging}")

    def restore_documents() -> None:
        began = time.monotonic()
        try:
            engine.restic_call(current.settings, current.restic_name,
                               restic.restore_args(current.snapshot.id, current.staging, include=docs),
                               url=current.restic_url, step="restic restore", timeout=engine.DAY_S)
        except Failure as failure:
            current.staging_failure.append(failure)
        current.result["documents_restore_duration_s"] = seconds_since(began, time.monotonic())

    current.staging_thread = threading.Thread(target=restore_documents, name="restic-restore", daemon=True)
    current.staging_thread.start()


# --- the live site ------------------------------------------------------------------------------

def stop_services(current: Restore) -> None:
    current.step("stopping spse and postgresql")
    run(["systemctl", "stop", current.settings.spse_unit], step="stop spse")
    run(["systemctl", "stop", current.settings.pg_unit], step="stop postgresql")


def move_database_aside(current: Restore) -> None:
    """Move the data dir aside (kept, never deleted) and create an empty one."""
    pgdata = current.settings.pg_data
    aside = safefs.aside_name(pgdata, "before-restore", current.stamp)  # postgres owns the parent
    safefs.rename_beside(pgdata, aside)
    current.result["moved_aside"]["pgdata"] = {"from": pgdata, "to": aside}
    current.step(f"moved {pgdata} aside to {aside}")
    make_data_dir(pgdata)


def make_data_dir(pgdata: str) -> None:
    """Make the empty data dir *pgdata*, postgres's, 0700; its parent is postgres's, so it is chowned by
    descriptor (``safefs.make_owned_dir``), never through a link swapped in after the mkdir."""
    account = pwd.getpwnam("postgres")
    safefs.make_owned_dir(pgdata, account.pw_uid, account.pw_gid, 0o700)


def restore_database(current: Restore) -> None:
    """``pgbackrest restore --type=time`` (``--type=default``: to the end of the archive) into the empty data dir."""
    current.began = time.monotonic()
    timeline = (f"--target-timeline={current.timeline}",) if current.timeline else ()
    if current.latest:
        current.step(f"pgbackrest restore to the end of the archived WAL from repo{current.repo}")
        args = pgbackrest.restore_to_end_args(current.repo, current.extra + timeline)
    else:
        current.step(f"pgbackrest restore --type=time --target={current.target_text} from repo{current.repo}")
        args = pgbackrest.restore_to_time_args(current.repo, current.target_text, current.extra + timeline)
    engine.pgbackrest_call(current.settings, args, step="pgbackrest restore", timeout=engine.DAY_S)


def recover(current: Restore) -> None:
    """Start PostgreSQL and wait until it has recovered to the target and promoted."""
    settings = current.settings
    services.start(settings.pg_unit, step="start postgresql")
    cols = wait_promoted(settings, current.result["moved_aside"]["pgdata"]["to"])
    current.result["recovery_point"] = {
        "target_time": LATEST if current.latest else iso(current.target),
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
            wake_checkpointer(settings)
            return (lines[0].split("\t") + ["", ""])[:3]
        if time.monotonic() > deadline:
            raise Failure("recovery_timeout", "PostgreSQL did not finish recovery within an hour: read "
                          f"/var/log/postgresql/; the old data dir is at {aside}", step="recovery")
        time.sleep(2)


def wake_checkpointer(settings: Settings) -> None:
    """Make PostgreSQL honour archive_timeout on the new timeline from now on, not five minutes later.

    PostgreSQL 15's checkpointer plans its next wake-up right after the end-of-recovery checkpoint, while
    recovery still counts as in progress, and then ignores archive_timeout until its next timed checkpoint
    (checkpoint_timeout, 5 minutes): the promoted database's writes stayed on the site that long (a drill
    found it: an attack 2.5 minutes after a rollback found none of them offsite). One requested checkpoint
    wakes it; best effort (a failure here is not a failed restore)."""
    postgres.psql(settings, "CHECKPOINT;", database="postgres", check=False)


def put_documents_in_place(current: Restore) -> None:
    """Wait for the staged documents, then move the live ones aside and the staged ones into place."""
    current.staging_thread.join()
    if current.staging_failure:
        raise current.staging_failure[0]
    docs = current.settings.docs_dir
    docs_aside = safefs.aside_name(docs, "before-restore", current.stamp)  # spse owns the parent
    try:
        if os.path.lexists(docs):
            os.rename(docs, docs_aside)
            current.result["moved_aside"]["documents"] = {"from": docs, "to": docs_aside}
        os.rename(current.staging + docs, docs)
    except OSError as error:
        raise Failure("documents_move_failed", f"could not put the restored documents in place ({error})",
                      step="documents") from None
    safefs.remove_tree(current.staging)
    current.step(f"documents restored (previous ones at {docs_aside})")


def reconcile_documents(current: Restore) -> None:
    """Every document the recovered database references, in place with its sha256, before SPSE starts.

    One the snapshot lacks (uploaded after it, before the target, or lost before it) comes from the live
    folder set aside by this restore, else from a later snapshot, else from an earlier one; a matching
    sha256 is the proof. Any still missing:
    Failure(documents_missing) naming them, and the site is rolled back.
    """
    report, still = find_documents(current)
    if still and current.latest:
        recover_before_lost_documents(current, still)
        report, still = find_documents(current)
        report["database_recovered_before_lost_documents"] = True
    current.result["documents"] = report
    current.step(f"documents: {report['referenced']} referenced, {report['from_set_aside']} from the set-aside "
                 f"folder, {report['from_later_snapshots']} from later and {report['from_earlier_snapshots']} from "
                 f"earlier snapshots, {len(still)} missing")
    if still:
        raise Failure("documents_missing", f"{len(still)} document(s) the recovered database references are in no "
                      f"snapshot and not in the set-aside folder: {', '.join(report['missing'][:20])}; the site "
                      "was not left with a database that points at missing files", step="documents")


def find_documents(current: Restore) -> tuple[dict, list[documents.Document]]:
    """Bring every referenced document into place from wherever it is; return the report and those still missing."""
    settings, docs = current.settings, current.settings.docs_dir
    current.documents_skipped.clear()
    referenced = documents.parse_rows(postgres.psql(settings, documents.QUERY, step="documents", timeout=HOUR_S))
    wanted = [d for d in referenced if not documents.matches(d, docs)]
    report = {"referenced": len(referenced), "from_snapshot": len(referenced) - len(wanted)}
    aside = (current.result["moved_aside"].get("documents") or {}).get("to")
    still = documents.bring_back(wanted, aside, docs, current.documents_skipped) if aside and wanted else wanted
    report["from_set_aside"] = len(wanted) - len(still)
    before = len(still)
    still = documents_from_snapshots(current, [s for s in reversed(current.snapshots)
                                               if s.time > current.snapshot.time], still)
    report["from_later_snapshots"] = before - len(still)
    before = len(still)
    still = documents_from_snapshots(current, [s for s in reversed(current.snapshots)
                                               if s.time < current.snapshot.time], still)
    report["from_earlier_snapshots"] = before - len(still)
    report["missing"] = [d.label for d in still]
    if current.documents_skipped:
        report["skipped"] = current.documents_skipped[:50]
        report["skipped_count"] = len(current.documents_skipped)
    return report, still


def recover_before_lost_documents(current: Restore, lost: list[documents.Document]) -> None:
    """Recover the database again, to just before the first of the *lost* documents was added.

    Only for ``--target-time latest``: those files were uploaded after the last snapshot and are gone with
    the server, so the newest point where database and documents agree is just before the transaction that
    added the first of them (its ``created_at``, the transaction's start, precedes its commit). A delta
    restore (only changed files are rewritten), then promotion again. The timeline is PostgreSQL's default
    (latest), never a number: a numbered timeline needs its history file in the archive, and a rebuilt
    site's can be missing there (seen in the lab); the target lies before the first recovery's end, so
    whichever branch latest finds, recovery stops on the first recovery's own WAL.
    """
    settings = current.settings
    ids = ", ".join(str(int(d.id)) for d in lost)  # integers: nothing else reaches the query
    query = FIRST_ADDED_SQL + f"({ids});"  # noqa: S608
    lines = postgres.psql(settings, query, step="documents", timeout=HOUR_S)
    target_text = f"{lines[0].strip()}+00"
    first = dict(current.result.get("recovery_point") or {})
    current.step(f"{len(lost)} document(s) added after the last snapshot are lost: recovering the database again "
                 f"to {target_text}, just before the first of them")
    run(["systemctl", "stop", settings.pg_unit], step="stop postgresql")
    current.latest, current.target, current.target_text = False, parse_time(target_text), target_text
    current.began = time.monotonic()
    engine.pgbackrest_call(settings, pgbackrest.restore_to_time_args(current.repo, target_text,
                                                                     current.extra + ("--delta",)),
                           step="pgbackrest restore", timeout=engine.DAY_S)
    recover(current)
    current.result["recovery_point"].update(before_lost_documents=len(lost),
                                            end_of_archive_replayed=first.get("last_replayed_transaction_time"))


def documents_from_snapshots(current: Restore, candidates: list[restic.Snapshot],
                             wanted: list[documents.Document]) -> list[documents.Document]:
    """Bring back *wanted* from *candidates*, in their order; return those still missing.

    Later snapshots hold files uploaded after the chosen one (the 30-second deltas among them); earlier ones
    files lost before it (a snapshot taken after the folder was emptied lacks what an earlier one holds). One
    ``restic find`` names the snapshots holding each file, so only those are read.
    """
    if not wanted or not candidates:
        return wanted
    docs = current.settings.docs_dir
    done = engine.restic_call(current.settings, current.restic_name,
                              restic.find_args([os.path.join(docs, d.stored_path) for d in wanted],
                                               [s.id for s in candidates]),
                              url=current.restic_url, check=False, step="restic find", timeout=engine.DAY_S)
    if done.returncode != 0:
        return wanted
    holding = restic.parse_find(done.stdout)
    still = list(wanted)
    for snapshot in candidates:
        inside = holding.get(snapshot.id, set())
        here = [d for d in still if os.path.join(docs, d.stored_path) in inside]
        if here:
            left = documents_from_snapshot(current, snapshot, here)
            still = [d for d in still if d not in here or d in left]
        if not still:
            break
    return still


def documents_from_snapshot(current: Restore, snapshot: restic.Snapshot,
                            wanted: list[documents.Document]) -> list[documents.Document]:
    """Restore just *wanted* from *snapshot* into a scratch folder and bring back those whose hash matches."""
    docs = current.settings.docs_dir
    scratch = tempfile.mkdtemp(prefix=".lpse-restore-later-", dir=current.settings.state_dir)
    try:
        done = engine.restic_call(current.settings, current.restic_name,
                                  restic.restore_args(snapshot.id, scratch,
                                                      include=[os.path.join(docs, d.stored_path) for d in wanted]),
                                  url=current.restic_url, check=False, step="restic restore", timeout=engine.DAY_S)
        if done.returncode != 0:
            return wanted
        return documents.bring_back(wanted, scratch + docs, docs, current.documents_skipped)
    finally:
        safefs.remove_tree(scratch)  # not TemporaryDirectory: its rmtree recursed once per folder


def start_application(current: Restore) -> None:
    """Start SPSE and wait for its health endpoint to say ok."""
    services.start(current.settings.spse_unit, step="start spse")
    current.result["health"] = wait_health(current.settings.health_url)
    current.result["ok"] = current.result["health"].get("status") == "ok"
    if not current.result["ok"]:  # reported, not rolled back: the data is restored, the application needs a look
        current.result.update(error=f"SPSE did not report healthy after the restore: {current.result['health']}",
                              code="unhealthy_after_restore", step="health")


Step = Callable[[Restore], None]
STEPS: tuple[Step, ...] = (select_backup, select_snapshot, note_live_timeline, stage_documents, stop_services,
                           move_database_aside, restore_database, recover, put_documents_in_place,
                           reconcile_documents, start_application)


# --- rolling back -------------------------------------------------------------------------------

def roll_back(current: Restore) -> None:
    """Put the site back as it was before the restore; the failed attempt is kept as ``*.failed-restore-<stamp>``."""
    settings, result = current.settings, current.result
    result["ok"] = False
    try:
        if current.serve_first:
            from lpse_ops.site import restore_first

            restore_first.forget_hydration(current)
        run(["systemctl", "stop", settings.spse_unit], step="roll back", check=False)
        run(["systemctl", "stop", settings.pg_unit], step="roll back", check=False)
        kept = [swap_back(moved["from"], moved["to"], current.stamp) for moved in result["moved_aside"].values()]
        kept = [path for path in kept if path]
        services.start(settings.pg_unit, step="roll back")
        services.start(settings.spse_unit, step="roll back")
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
    if safefs.lexists_beside(live):
        failed = safefs.aside_name(live, "failed-restore", stamp)
        safefs.rename_beside(live, failed)
    safefs.rename_beside(aside, live)
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
