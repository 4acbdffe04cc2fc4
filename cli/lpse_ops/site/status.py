"""``lpse-backup status``: facts only (repositories, last backups, WAL archiving, spool, snapshots, last verify).

The site does not judge: ages, limits and warnings are the control machine's
(``lpse_ops.actions.backup.assess``). A part that could not be read carries ``error`` and ``code``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re

from lpse_ops.site import engine, hydrate, manifest, pgbackrest, postgres, restic, verify
from lpse_ops.site.clock import iso, now_utc
from lpse_ops.site.errors import Failure
from lpse_ops.site.settings import Settings

_SEGMENT = re.compile(r"^[0-9A-F]{24}")


def main(settings: Settings, args) -> dict:
    """Return the site's backup facts; ``ok`` says the tool ran, each part says whether it could be read.

    With ``--verifications-only``: the last and newest verifications alone, read from the site's own
    files in milliseconds (what the upgrade plan needs), no backup engine run.
    """
    if getattr(args, "verifications_only", False):
        return {"action": "status", "ok": True, "site_code": settings.site_code, "time": iso(now_utc()),
                "verifications_only": True, **verification_facts(settings)}
    stanza, info_failure = _read_stanza(settings)
    return {"action": "status", "ok": True, "site_code": settings.site_code, "time": iso(now_utc()),
            "pgbackrest": pgbackrest_facts(settings, stanza, info_failure),
            "wal_archiving": wal_facts(settings, stanza),
            "spool_queue": spool_facts(settings),
            "restic": {name: restic_facts(settings, name) for name in ("local", "offsite")},
            "hydration": hydrate.summary(settings),
            "files_size": files_size(settings),
            **verification_facts(settings)}


def verification_facts(settings: Settings) -> dict:
    """``last_verify`` and the newest ``verifications`` (each with its id and checks), from the site's own files."""
    return {"last_verify": last_verify_facts(settings),
            "verifications": [verification_summary(result) for result in verify.history(settings, RECENT)]}


RECENT = 5
"""How many of the site's newest verifications ``status`` reports: the control machine records each once, and
reads a site far more often than a site verifies (weekly by default); the site keeps more (verify.HISTORY_KEPT)."""


def _read_stanza(settings: Settings) -> tuple[dict | None, Failure | None]:
    try:
        return engine.stanza(settings), None
    except Failure as failure:
        return None, failure


def pgbackrest_facts(settings: Settings, stanza: dict | None, failure: Failure | None) -> dict:
    """The stanza's status and, per repository, its status, number of sets and the newest set."""
    if stanza is None:
        return {"stanza": settings.stanza, "error": failure.message, "code": failure.code, "repos": {}}
    return {"stanza": settings.stanza, "status": stanza.get("status"),
            "repos": {repo: repo_facts(stanza, repo) for repo in ("1", "2")}}


def repo_facts(stanza: dict, repo: str) -> dict:
    """One repository's status, how many sets it holds, and the newest."""
    backups = pgbackrest.backups_in(stanza, repo)
    last = pgbackrest.describe_backup(backups[-1]) if backups else None
    return {"status": pgbackrest.repo_status(stanza, repo), "backups": len(backups),
            "last_backup": {"label": last["label"], "type": last["type"], "time": last["finished_at"],
                            "database_bytes": last["size_bytes"]} if last else None}


def files_size(settings: Settings) -> dict | None:
    """The last full files snapshot's bytes and files (the documents, most of it), or None before the first."""
    try:
        with open(os.path.join(settings.state_dir, "files-size.json"), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def wal_facts(settings: Settings, stanza: dict | None) -> dict:
    """PostgreSQL's archiver statistics and the newest segment pgBackRest holds per repository."""
    facts: dict = {}
    try:
        lines = postgres.psql(settings, postgres.ARCHIVER_SQL, database="postgres", step="status")
        facts = postgres.parse_archiver(lines[0])
    except (Failure, IndexError, ValueError) as error:
        facts = {"error": f"PostgreSQL did not answer: {getattr(error, 'message', error)}",
                 "code": "postgres_unavailable"}
    archives = [a for a in (stanza or {}).get("archive", []) or [] if a.get("max")]
    facts["pgbackrest_archive_max"] = {str((a.get("database") or {}).get("repo-key", "")): a.get("max")
                                       for a in archives}
    return facts


def spool_facts(settings: Settings) -> dict:
    """How many WAL segments wait in pgBackRest's async spool to be pushed, and their size."""
    queue_dir = os.path.join(settings.spool_path, "archive", settings.stanza, "out")
    files, size = 0, 0
    if os.path.isdir(queue_dir):
        for name in os.listdir(queue_dir):
            if _SEGMENT.match(name) and not name.endswith((".ok", ".error")):
                files += 1
                with contextlib.suppress(OSError):  # postgres's folder: a link is measured as a link
                    size += os.lstat(os.path.join(queue_dir, name)).st_size
    return {"path": queue_dir, "files": files, "bytes": size, "alert_threshold_files": settings.spool_alert_files}


def restic_facts(settings: Settings, name: str) -> dict:
    """How many snapshots repository *name* holds and the newest; error and code when it cannot be read."""
    try:
        snapshots = engine.restic_snapshots(settings, name)
    except Failure as failure:
        return {"error": failure.message, "code": failure.code}
    full = restic.full(snapshots)
    last = full[-1] if full else None  # the 5-minute snapshots: deltas only follow them, never replace them
    deltas = [s for s in snapshots if s not in full]
    return {"snapshots": len(snapshots), "last_snapshot_time": iso(last.time) if last else None,
            "last_snapshot_id": last.short_id if last else None,
            "last_delta_time": iso(deltas[-1].time) if deltas else None}


SUMMARY_KEYS = ("id", "ok", "repo", "set", "backup_type", "started_at", "finished_at", "duration_s",
                "restore_duration_s", "restore_point", "trigger", "invocation_id", "error", "code", "step")


def verification_summary(result: dict) -> dict:
    """One verification as ``status`` reports it: its id, outcome, set, timing, run, and every check (short)."""
    summary = {key: result.get(key) for key in SUMMARY_KEYS}
    summary["checks"] = [{"check": c.get("check"), "ok": bool(c.get("ok")), "detail": str(c.get("detail", ""))[:200]}
                         for c in result.get("checks", []) if isinstance(c, dict)]
    return summary


def last_verify_facts(settings: Settings) -> dict | None:
    """The last verification's outcome (``<state_dir>/verify/last.json``), or None when none has run."""
    last = manifest.read_json(os.path.join(settings.state_dir, "verify", "last.json"))
    if not last:
        return None
    facts = {k: last.get(k) for k in ("id", "ok", "repo", "set", "finished_at", "restore_point", "error", "code")}
    facts["failed_checks"] = [c["check"] for c in last.get("checks", []) if not c.get("ok")]
    return facts
