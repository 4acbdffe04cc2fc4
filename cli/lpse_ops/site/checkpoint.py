"""Upgrade checkpoints: the restore point an upgrade can roll the database back to, and the proof that a
rolled-back site holds exactly the data it had.

    lpse-backup checkpoint --name NAME     a fresh backup (both repos) with its named restore point and
                                           table checksums, plus a fingerprint of every document file
    lpse-backup rollback-db --name NAME    the live database back to that restore point (pgBackRest
                                           restore of the checkpoint's set, recovery to the point)
    lpse-backup compare --name NAME        the live tables and documents against the checkpoint

The upgrade takes the checkpoint while nginx answers every request with the maintenance page, so no
write reaches the database between the restore point and the migration. A checkpoint is kept in
``<state_dir>/checkpoints/NAME.json`` until a later one replaces it.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import time
from types import SimpleNamespace

from lpse_ops.site import engine, manifest, pgbackrest, postgres, restore, run, safefs, services
from lpse_ops.site.clock import iso, now_utc, seconds_since
from lpse_ops.site.errors import Failure
from lpse_ops.site.proc import log
from lpse_ops.site.proc import run as run_command
from lpse_ops.site.settings import Settings

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$")


def directory(settings: Settings) -> str:
    return os.path.join(settings.state_dir, "checkpoints")


def checked_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise Failure("bad_argument", f"--name {name!r}: letters, digits, dot, dash and underscore only",
                      step="arguments")
    return name


def documents_fingerprint(root: str) -> dict:
    """Every regular file under *root*: count, bytes, and one sha256 over the sorted ``path sha256`` lines.

    *root* is spse's: it is walked by descriptor (``safefs.walk``), and only regular files are hashed
    (lstat, then O_NOFOLLOW | O_NONBLOCK and fstat), so a FIFO or a link to /dev/zero can never hang an
    upgrade in maintenance. Anything else is listed in ``skipped`` (path and reason), not fingerprinted.
    """
    lines: list[str] = []
    skipped: list[dict] = []
    size = 0
    try:
        found = list(_regular_files(root, skipped))
    except safefs.Unsafe as refused:
        raise Failure("documents_unsafe", f"{root}: {refused.reason}; the documents cannot be fingerprinted",
                      step="documents") from None
    for path, digest, length in found:
        size += length
        lines.append(f"{path} {digest}")
    lines.sort()
    skipped.sort(key=lambda item: item["path"])
    digest = hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()
    return {"files": len(lines), "bytes": size, "sha256": digest, "entries": lines, "skipped": skipped}


def _regular_files(root: str, skipped: list[dict]):
    """Yield (path, sha256, size) of every regular file under *root*; add the rest to *skipped*."""
    for entry in safefs.walk(root, skipped):
        if not stat.S_ISREG(entry.info.st_mode):
            skipped.append({"path": entry.path, "reason": safefs.not_regular(entry.info.st_mode)})
            continue
        try:
            fd = safefs.open_regular(entry.dir_fd, entry.name, entry.path)
        except safefs.Unsafe as refused:
            skipped.append({"path": entry.path, "reason": refused.reason})
            continue
        except FileNotFoundError:
            continue
        try:
            yield entry.path, safefs.sha256_fd(fd), os.fstat(fd).st_size
        finally:
            os.close(fd)


def take(settings: Settings, args) -> dict:
    """Back up (incremental, both repos) with its restore point; fingerprint the documents; save it all."""
    name = checked_name(args.name)
    started = time.monotonic()
    backup = run.main(settings, SimpleNamespace(type="incr"))
    if not backup.get("ok"):
        return {"action": "checkpoint", "ok": False, "name": name, "backup": backup,
                "code": backup.get("code", "backup_failed"), "step": "backup",
                "error": f"the checkpoint's backup failed: {backup.get('error')}"}
    taken = backup["manifest"]
    labels = {repo: entry["label"] for repo, entry in backup["pgbackrest"].items()}
    listed = pgbackrest.backups_in(engine.stanza(settings, "1"), "1")
    if taken["label"] not in {b["label"] for b in listed}:
        raise Failure("backup_not_listed", f"backup {taken['label']} is not listed in repo1 after the run",
                      step="confirm")
    record = {"format": 1, "name": name, "site_code": settings.site_code, "created_at": iso(now_utc()),
              "backup_labels": labels, "label": taken["label"], "restore_point": taken["restore_point"],
              "restore_point_time": taken["restore_point_time"], "manifest_path": taken["path"],
              "documents": documents_fingerprint(settings.docs_dir)}
    path = os.path.join(directory(settings), f"{name}.json")
    manifest.write_json(path, record)
    return {"action": "checkpoint", "ok": True, "name": name, "path": path, "label": taken["label"],
            "backup_labels": labels, "restore_point": taken["restore_point"],
            "restore_point_time": taken["restore_point_time"], "tables": taken["tables"],
            "documents": {k: v for k, v in record["documents"].items() if k != "entries"},
            "duration_s": seconds_since(started, time.monotonic())}


def load(settings: Settings, name: str) -> dict:
    record = manifest.read_json(os.path.join(directory(settings), f"{checked_name(name)}.json"))
    if not record:
        raise Failure("no_checkpoint", f"no checkpoint {name!r} on this site (lpse-backup checkpoint makes one)",
                      step="checkpoint")
    return record


def rollback_to_point_args(label: str, restore_point: str) -> list[str]:
    """Arguments restoring the live data dir from set *label* (repo1), recovering to *restore_point*."""
    return ["restore", "--repo=1", f"--set={label}", "--type=name", f"--target={restore_point}",
            "--target-timeline=current", "--target-action=promote", "--log-level-console=warn"]


def rollback_database(settings: Settings, args) -> dict:
    """Put the live database back at the checkpoint's restore point; SPSE is left stopped.

    The data dir is moved aside (kept as ``*.before-rollback-<stamp>``), never deleted; if the restore or
    the recovery fails, it goes back into place and PostgreSQL starts on it again.
    """
    record = load(settings, args.name)
    started, stamp = time.monotonic(), now_utc().strftime("%Y%m%dT%H%M%SZ")
    result = {"action": "rollback-db", "ok": False, "name": record["name"], "label": record["label"],
              "restore_point": record["restore_point"], "steps": []}
    pgdata = settings.pg_data
    aside = safefs.aside_name(pgdata, "before-rollback", stamp)  # postgres owns the parent
    log(f"rolling the database back to {record['restore_point']} (set {record['label']})")
    run_command(["systemctl", "stop", settings.spse_unit], step="stop spse")
    run_command(["systemctl", "stop", settings.pg_unit], step="stop postgresql")
    try:
        safefs.rename_beside(pgdata, aside)
    except (OSError, safefs.Unsafe) as error:  # nothing moved: the site runs on as it was
        services.start(settings.pg_unit, step="roll back")
        run_command(["systemctl", "start", settings.spse_unit], step="roll back", check=False)
        return {**result, "code": "unsafe_path" if isinstance(error, safefs.Unsafe) else "move_failed",
                "step": "move the data folder aside",
                "error": f"the data folder {pgdata} was not moved aside ({error}): nothing changed, the database "
                         "and SPSE were started again as they were"}
    result["steps"].append(f"moved {pgdata} aside to {aside}")
    try:
        restore.make_data_dir(pgdata)
        engine.pgbackrest_call(settings, rollback_to_point_args(record["label"], record["restore_point"]),
                               step="pgbackrest restore", timeout=engine.DAY_S)
        services.start(settings.pg_unit, step="start postgresql")
        cols = restore.wait_promoted(settings, aside)
    except Exception as error:  # noqa: BLE001 (the data dir is aside: whatever failed, it goes back)
        failure = error if isinstance(error, Failure) else \
            Failure("unexpected", f"unexpected {type(error).__name__}: {error}", step="rollback-db")
        run_command(["systemctl", "stop", settings.pg_unit], step="roll back", check=False)
        failed = restore.swap_back(pgdata, aside, stamp)
        services.start(settings.pg_unit, step="roll back")
        return {**result, **failure.as_fields(), "kept": failed,
                "error": f"{failure.message}. The database was put back as it was before this rollback"}
    result["steps"].append(f"restored set {record['label']} to {record['restore_point']}, promoted")
    return {**result, "ok": True, "kept": aside, "timeline": int(cols[2]) if cols[2].isdigit() else cols[2],
            "duration_s": seconds_since(started, time.monotonic())}


def compare(settings: Settings, args) -> dict:
    """The live tables (row count and checksum) and every document file, against the checkpoint."""
    record = load(settings, args.name)
    tables = (manifest.read_json(record["manifest_path"]) or {}).get("tables")
    if tables is None:
        raise Failure("no_manifest", f"the checkpoint's manifest {record['manifest_path']} is gone", step="compare")
    lines = postgres.psql(settings, postgres.checksum_session(), step="checksums", timeout=engine.DAY_S)
    live = postgres.table_checksums(lines)
    table_problems = [f"table {name}: expected {want['rows']} rows md5 {want['md5']}, got "
                      + (f"{live[name]['rows']} rows md5 {live[name]['md5']}" if name in live else "no table")
                      for name, want in sorted(tables.items()) if live.get(name) != want]
    now = documents_fingerprint(settings.docs_dir)
    before = set(record["documents"]["entries"])
    after = set(now["entries"])
    doc_problems = ([f"document missing or changed: {line.split(' ')[0]}" for line in sorted(before - after)]
                    + [f"document added: {line.split(' ')[0]}" for line in sorted(after - before)])
    identical = not table_problems and not doc_problems
    return {"action": "compare", "ok": identical, "identical": identical, "name": record["name"],
            "tables": {name: want["rows"] for name, want in sorted(tables.items())},
            "documents": {"files": now["files"], "sha256": now["sha256"], "skipped": now["skipped"][:50]},
            "problems": (table_problems + doc_problems)[:50],
            **({} if identical else {"code": "data_differs", "step": "compare",
                                     "error": f"{len(table_problems)} table(s) and {len(doc_problems)} document(s) "
                                              "differ from the checkpoint"})}
