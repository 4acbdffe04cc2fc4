"""``lpse-backup verify [--repo 1|2] [--set LABEL | --random]``: prove a backup set by restoring it.

The set is restored into a scratch instance and folder and checked; the steps (``STEPS``) run in
order, each adding named checks. The scratch instance and folder are always removed; the result, with
the verification's own ``id``, is kept in ``<state_dir>/verify/last.json`` and in
``<state_dir>/verify/history/`` (the newest ``HISTORY_KEPT``), for ``status``: the control machine
records every verification the site ran (its timer's too) once, by that id.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from lpse_ops.site import documents, engine, hydrate, locking, manifest, pgbackrest, postgres, restic, scratch
from lpse_ops.site.clock import iso, now_utc, seconds_since
from lpse_ops.site.errors import Failure
from lpse_ops.site.explain import explain, tail
from lpse_ops.site.proc import log
from lpse_ops.site.settings import Settings

NEW_FULL = "Take a new full backup (`lpse-backup run --type full`) and find the cause"
HISTORY_KEPT = 20
"""How many verification results ``<state_dir>/verify/history`` keeps (weekly: five months; daily: three weeks)."""


@dataclass
class Verify:
    """One verification in progress."""

    settings: Settings
    repo: str
    result: dict
    scratch: scratch.Scratch
    wanted_set: str | None = None
    pick_random: bool = False
    label: str | None = None
    snapshot: restic.Snapshot | None = None
    manifest: dict | None = None
    answered: bool = False
    began: float = 0.0

    @property
    def restic_name(self) -> str:
        return "local" if self.repo == "1" else "offsite"

    def check(self, name: str, ok: bool, detail: str) -> bool:
        """Record one check and log it; return *ok*."""
        self.result["checks"].append({"check": name, "ok": bool(ok), "detail": detail})
        log(f"verify: {name}: {'ok' if ok else 'FAILED'}: {detail}")
        return ok


def main(settings: Settings, args) -> dict:
    """Verify one backup set of repo *args.repo*; return the verification's JSON result."""
    started_at, started = now_utc(), time.monotonic()
    repo = str(args.repo)
    invocation = os.environ.get("INVOCATION_ID") or None  # set by systemd for the timer's service
    result = {"action": "verify", "ok": False, "id": uuid.uuid4().hex, "site_code": settings.site_code,
              "repo": int(repo), "restic_repo": "local" if repo == "1" else "offsite", "set": None,
              "started_at": iso(started_at), "trigger": "systemd" if invocation else "command",
              "invocation_id": invocation, "checks": []}
    current = Verify(settings, repo, result, scratch.Scratch.of(settings), args.set, args.random)
    step_name = "lock"
    try:
        if repo == "2":
            wait_for_hydration(settings, result)
        with locking.exclusive(settings.lock_path, settings.lock_wait_s):
            for step in STEPS:
                step_name = step.__name__
                step(current)
            judge(current)
    except Failure as failure:
        failed_with(current, failure)
    except Exception as error:  # noqa: BLE001 (a crash is a failed verification, kept like any other)
        failed_with(current, Failure("unexpected", f"unexpected {type(error).__name__} in {step_name}: {error}",
                                     step=step_name))
    finally:
        with contextlib.suppress(Exception):
            scratch.remove(settings, current.scratch)
    result["scratch_removed"] = not os.path.exists(current.scratch.root)
    result["finished_at"], result["duration_s"] = iso(now_utc()), seconds_since(started, time.monotonic())
    keep(settings, result)
    return result


HYDRATION_WAIT_S = 12 * 3600


def wait_for_hydration(settings: Settings, result: dict, bound_s: float = HYDRATION_WAIT_S) -> None:
    """A verification of the offsite copy restores a whole backup set over the offsite link: while a serve-first
    restore is still bringing documents back over it, it waits (bounded) until the hydration has ended, so the
    documents come back at the link's rate and the copy is then verified as a whole."""
    began = time.monotonic()
    while hydrate.in_progress(settings):
        if time.monotonic() - began > bound_s:
            raise Failure("hydrating", f"documents were still being hydrated after {bound_s / 3600:.0f} h: verify the "
                          "offsite copy once `lpse-backup status` shows the hydration done", step="hydration")
        time.sleep(5)
    if time.monotonic() - began > 1:
        result["waited_for_hydration_s"] = round(time.monotonic() - began, 1)


def history_dir(settings: Settings) -> str:
    return os.path.join(settings.state_dir, "verify", "history")


def keep(settings: Settings, result: dict) -> None:
    """Write *result* as the last verification and into the history; drop all but the newest HISTORY_KEPT."""
    manifest.write_json(os.path.join(settings.state_dir, "verify", "last.json"), result)
    manifest.write_json(os.path.join(history_dir(settings), f"{time.time_ns():020d}-{result['id']}.json"), result)
    for old in history_names(settings)[:-HISTORY_KEPT]:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(history_dir(settings), old))


def history_names(settings: Settings) -> list[str]:
    """The history's file names, oldest first (they start with when they were kept, in nanoseconds)."""
    try:
        return sorted(name for name in os.listdir(history_dir(settings)) if name.endswith(".json"))
    except OSError:
        return []


def history(settings: Settings, limit: int = HISTORY_KEPT) -> list[dict]:
    """The newest *limit* verification results the site kept, oldest first."""
    found = (manifest.read_json(os.path.join(history_dir(settings), name)) for name in history_names(settings))
    return [result for result in found if result][-limit:]


def failed_checks_text(result: dict) -> str:
    """Return the failed checks as one line, ``check: detail; ...``, at most 2000 characters."""
    return "; ".join(f"{c['check']}: {c['detail']}" for c in result["checks"] if not c["ok"])[:2000]


def judge(current: Verify) -> None:
    """Set ok from the checks; on a failed check, error and code ``verify_failed``."""
    result = current.result
    result["ok"] = all(c["ok"] for c in result["checks"])
    if not result["ok"]:
        result.update(error=f"verify failed: {failed_checks_text(result)}. {NEW_FULL}", code="verify_failed",
                      step="checks")


def failed_with(current: Verify, failure: Failure) -> None:
    """Record a step's Failure; when checks failed before it, the error names them too."""
    result = current.result
    result.update(failure.as_fields())
    if any(not c["ok"] for c in result["checks"]):
        result["error"] = f"verify failed: {failed_checks_text(result)}. {failure.message}. {NEW_FULL}"


# --- the steps ----------------------------------------------------------------------------------

def choose_set(current: Verify) -> None:
    """Pick the set: --set, or --random among those with a manifest, else the newest with a manifest."""
    backups = pgbackrest.backups_in(engine.stanza(current.settings, current.repo), current.repo)
    if not backups:
        raise Failure("no_backup", f"repo{current.repo} holds no backup yet: run `lpse-backup run --type full` "
                      "first", step="select")
    if current.wanted_set:
        chosen = next((b for b in backups if b["label"] == current.wanted_set), None)
        if not chosen:
            raise Failure("set_not_found", f"backup set {current.wanted_set} is not on repo{current.repo}: see "
                          "`lpse-backup list`", step="select")
    else:
        where = manifest.directory(current.settings)
        found = {b["label"]: manifest.find(where, b["label"]) for b in backups}
        # A set taken while a serve-first restore was still hydrating has no documents snapshot of its own (they went
        # into deltas): it is not a complete restore point for the documents, so it is not picked by itself.
        hydrating = [label for label, data in found.items() if data and data.get("documents_hydrating")]
        if hydrating:
            current.result["sets_left_out"] = {label: "taken while documents were still being hydrated"
                                               for label in hydrating}
        candidates = [b for b in backups if found[b["label"]] and b["label"] not in hydrating] or backups
        chosen = random.choice(candidates) if current.pick_random else candidates[-1]
    current.label = chosen["label"]
    current.result["set"], current.result["backup_type"] = chosen["label"], chosen.get("type")


def prepare_scratch(current: Verify) -> None:
    """Remove what an earlier verification may have left, and create the scratch folder."""
    scratch.remove(current.settings, current.scratch)
    os.makedirs(current.scratch.root, mode=0o755, exist_ok=True)


def check_repository(current: Verify) -> None:
    """``pgbackrest verify``: every file of the repository against its checksum (names the bad ones)."""
    out = engine.pgbackrest_call(current.settings, pgbackrest.verify_args(current.repo), check=False,
                                 step="pgbackrest verify", timeout=engine.DAY_S)
    bad = pgbackrest.verify_problems(out.stdout + out.stderr)
    ok = out.returncode == 0 and not bad
    current.check("pgbackrest verify", ok, f"every file of repo{current.repo} matches its checksum" if ok
                  else "; ".join(bad[:20]) or tail(out.stderr or out.stdout, 5))


# How long a verification waits out another restic process's lock before its check counts as failed: the
# documents' delta (every 30 s) and 5-minute runs hold theirs for seconds.
LOCK_RETRY_S = 600.0
LOCK_POLL_S = 2.0


def waiting_out_other_locks(call: Callable[[], subprocess.CompletedProcess], bound_s: float = LOCK_RETRY_S,
                            poll_s: float = LOCK_POLL_S, sleep: Callable[[float], None] = time.sleep,
                            clock: Callable[[], float] = time.monotonic) -> tuple[subprocess.CompletedProcess, int]:
    """Run *call*, a restic command that needs an exclusive lock; while it fails only because another restic
    process holds a lock (restic.locked_by_another), run it again, for at most *bound_s* seconds; return the last
    outcome and how many times another run's lock sent it back. Without this a scheduled verification failed
    whenever a documents delta was at work."""
    deadline, waits = clock() + bound_s, 0
    while True:
        out = call()
        if out.returncode == 0 or not restic.locked_by_another(out.stdout + out.stderr) or clock() >= deadline:
            return out, waits
        waits += 1
        log("restic: the repository is locked by another run (a documents snapshot): trying again")
        sleep(poll_s)


def check_restic_repository(current: Verify) -> None:
    """``restic check --read-data``: every pack of the matching restic repository read and verified."""
    name = current.restic_name
    out, waits = waiting_out_other_locks(lambda: engine.restic_call(
        current.settings, name, ["check", "--read-data"], check=False, step="restic check", timeout=engine.DAY_S))
    waited = f" (after another restic run's lock sent it back {waits} time(s))" if waits else ""
    current.check(f"restic check --read-data ({name})", out.returncode == 0,
                  f"all packs read and verified{waited}"
                  if out.returncode == 0 else tail(out.stdout + out.stderr, 6) + waited)


def restore_files(current: Verify) -> None:
    """Restore the restic snapshot tagged with the set; its manifest must have travelled inside it."""
    name, label, files = current.restic_name, current.label, current.scratch.files
    current.snapshot = restic.newest_tagged(engine.restic_snapshots(current.settings, name), label)
    if not current.snapshot:
        current.check("restic restore", False, f"no restic snapshot on {name} is tagged {label}")
        return
    os.makedirs(files, mode=0o700, exist_ok=True)
    out = engine.restic_call(current.settings, name, restic.restore_args(current.snapshot.id, files), check=False,
                             step="restic restore", timeout=engine.DAY_S)
    current.check("restic restore", out.returncode == 0,
                  f"snapshot {current.snapshot.short_id} ({iso(current.snapshot.time)}) restored to {files}"
                  if out.returncode == 0 else tail(out.stdout + out.stderr, 6))
    current.manifest = manifest.find(files + manifest.directory(current.settings), label)
    current.check("manifest travelled with the snapshot", current.manifest is not None,
                  f"{label}.json found in the snapshot" if current.manifest
                  else f"no manifest for {label} in the snapshot")


def load_manifest(current: Verify) -> None:
    """Fall back to the local manifest; without any, the set cannot be verified."""
    current.manifest = current.manifest or manifest.find(manifest.directory(current.settings), current.label)
    if not current.manifest:
        raise Failure("manifest_missing", f"no verification manifest for backup set {current.label}: it was not "
                      "made by `lpse-backup run`; choose another set (`lpse-backup list`)", step="manifest")
    current.result["restore_point"] = {"name": current.manifest["restore_point"],
                                       "time": current.manifest["restore_point_time"]}


def restore_database(current: Verify) -> None:
    """``pgbackrest restore`` of the set into the scratch data dir, recovering to the restore point."""
    scratch.make_dirs(current.scratch)
    current.began = time.monotonic()
    point = current.manifest["restore_point"]
    out = engine.pgbackrest_call(
        current.settings, pgbackrest.restore_to_point_args(current.repo, current.label, current.scratch.pgdata, point),
        check=False, step="pgbackrest restore", timeout=engine.DAY_S)
    detail = (f"set {current.label} restored to {current.scratch.pgdata}, target {point}" if out.returncode == 0
              else explain(out.stdout + out.stderr, ["pgbackrest", "restore"], hints=engine.hints(current.settings))
              .message)
    if not current.check("pgbackrest restore", out.returncode == 0, detail):
        raise Failure("restore_failed", "pgbackrest could not restore the backup set: see the checks", step="restore")


def start_database(current: Verify) -> None:
    """Start the scratch instance and wait until it has recovered to the restore point and promoted."""
    settings, where = current.settings, current.scratch
    scratch.configure(settings, where)
    started, detail = scratch.start(settings, where)
    current.answered = started and scratch.wait_promoted(settings, where)
    current.result["restore_duration_s"] = seconds_since(current.began, time.monotonic())
    current.check("restored database starts and answers", current.answered,
                  f"PostgreSQL on port {where.port} promoted after recovery to {current.manifest['restore_point']}"
                  if current.answered else detail or "the scratch instance did not finish recovery")


def compare_tables(current: Verify) -> None:
    """Every table's row count and checksum (pinned settings) against the manifest."""
    if not current.answered:
        return
    lines = postgres.psql(current.settings, postgres.checksum_session(), database=current.manifest["database"],
                          port=current.scratch.port, host=current.scratch.socket_dir, step="checksums",
                          timeout=engine.DAY_S)
    restored = postgres.table_checksums(lines)
    for table, expected in sorted(current.manifest["tables"].items()):
        got = restored.get(table)
        current.check(f"table {table}", got == expected, table_detail(expected, got))


def table_detail(expected: dict, got: dict | None) -> str:
    """Describe one table's comparison."""
    if got == expected:
        return f"{expected['rows']} rows, md5 {expected['md5']}"
    return (f"expected {expected['rows']} rows md5 {expected['md5']}, got "
            f"{got['rows'] if got else 'no table'} rows md5 {got['md5'] if got else '-'}")


def compare_documents(current: Verify) -> None:
    """Every ``documents`` row's file is in the restored snapshot with the same sha256."""
    if not current.answered:
        return
    rows = postgres.psql(current.settings, documents.QUERY, database=current.manifest["database"],
                         port=current.scratch.port, host=current.scratch.socket_dir, check=False, step="documents")
    missing, mismatched = documents.check(documents.parse_rows(rows), current.scratch.files + current.settings.docs_dir)
    ok = current.snapshot is not None and not missing and not mismatched
    current.check("documents match their sha256", ok,
                  f"{len(rows)} documents, every file present with its sha256" if ok else
                  f"{len(rows)} documents; missing {missing[:20]}; sha256 mismatch {mismatched[:20]}")


Step = Callable[[Verify], None]
STEPS: tuple[Step, ...] = (choose_set, prepare_scratch, check_repository, check_restic_repository, restore_files,
                           load_manifest, restore_database, start_database, compare_tables, compare_documents)
