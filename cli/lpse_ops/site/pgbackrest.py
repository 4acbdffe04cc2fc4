"""pgBackRest: argv builders and pure parsers of ``pgbackrest info --output=json``.

The control machine uses the same parsers (``lpse_ops.backends.pgbackrest`` re-exports them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

NO_BACKUP_YET = "no valid backups"


@dataclass(frozen=True)
class BackupSet:
    """One pgBackRest backup set in one repository."""

    stanza: str
    repo: int
    label: str
    type: str
    started: datetime
    stopped: datetime
    size: int
    repo_size: int
    error: bool
    wal_start: str | None
    wal_stop: str | None

    def as_dict(self) -> dict:
        return {"engine": "pgbackrest", "stanza": self.stanza, "repo": self.repo, "label": self.label,
                "type": self.type, "started": self.started.isoformat(), "stopped": self.stopped.isoformat(),
                "size": self.size, "repo_size": self.repo_size, "error": self.error,
                "wal_start": self.wal_start, "wal_stop": self.wal_stop}


@dataclass(frozen=True)
class StanzaInfo:
    """A stanza's status, its backup sets, and the newest WAL segment archived per repository."""

    name: str
    status_code: int
    status_message: str
    backups: list[BackupSet]
    archive_max: dict[int, str]
    repo_status: dict[int, str]


def _time(epoch: int | float | None) -> datetime:
    return datetime.fromtimestamp(epoch or 0, tz=UTC)


def _backup_set(name: str, entry: dict) -> BackupSet:
    info = entry.get("info", {}) or {}
    archive = entry.get("archive", {}) or {}
    timestamp = entry.get("timestamp", {}) or {}
    return BackupSet(
        stanza=name, repo=int((entry.get("database") or {}).get("repo-key", 1)), label=entry.get("label", ""),
        type=entry.get("type", ""), started=_time(timestamp.get("start")), stopped=_time(timestamp.get("stop")),
        size=int(info.get("size", 0) or 0), repo_size=int((info.get("repository") or {}).get("size", 0) or 0),
        error=bool(entry.get("error", False)), wal_start=archive.get("start"), wal_stop=archive.get("stop"))


def _archive_max(stanza: dict) -> dict[int, str]:
    newest: dict[int, str] = {}
    for archive in stanza.get("archive", []) or []:
        repo = int((archive.get("database") or {}).get("repo-key", 1))
        if archive.get("max") and archive["max"] > newest.get(repo, ""):
            newest[repo] = archive["max"]
    return newest


def parse_info(data: list[dict] | None) -> list[StanzaInfo]:
    """Parse the JSON list printed by ``pgbackrest info --output=json``."""
    stanzas: list[StanzaInfo] = []
    for stanza in data or []:
        name = stanza.get("name", "?")
        backups = sorted((_backup_set(name, e) for e in stanza.get("backup", []) or []),
                         key=lambda b: (b.repo, b.stopped))
        repo_status = {int(r.get("key", 0)): (r.get("status") or {}).get("message", "?")
                       for r in stanza.get("repo", []) or []}
        status = stanza.get("status", {}) or {}
        stanzas.append(StanzaInfo(name, int(status.get("code", -1)), status.get("message", "?"),
                                  backups, _archive_max(stanza), repo_status))
    return stanzas


def latest_backup(stanzas: list[StanzaInfo], repo: int | None = None) -> BackupSet | None:
    """Return the newest successful backup set (optionally in one *repo*), or None."""
    sets = [b for s in stanzas for b in s.backups if not b.error and (repo is None or b.repo == repo)]
    return max(sets, key=lambda b: b.stopped, default=None)


# --- the raw JSON, as the site's results carry it ------------------------------------------------

def stanza_of(info: list[dict], name: str) -> dict:
    """Return stanza *name* from ``pgbackrest info`` JSON, or an empty one whose status says it is missing."""
    found = next((s for s in info or [] if s.get("name") == name), None)
    return found or {"name": name, "backup": [], "archive": [], "repo": [],
                     "status": {"code": 1, "message": "missing stanza path"}}


def repo_status(stanza: dict, repo: int | str) -> dict:
    """Return ``{"code", "message"}`` of *repo* in *stanza* (the stanza's own status when not listed)."""
    entry = next((r for r in stanza.get("repo", []) or [] if int(r.get("key", 0)) == int(repo)), None)
    return (entry or stanza).get("status", {}) or {}


LABEL = re.compile(r"\d{8}-\d{6}F(_\d{8}-\d{6}[DI])?")
"""The shape of every label pgBackRest gives a set: ``20261203-045951F``, ``20261203-045951F_20261203-050553I``."""


def odd_labels(stanza: dict) -> list[str]:
    """The labels in *stanza* that pgBackRest never makes, shown with repr (pure).

    postgres owns repository 1 and can read its cipher pass, so it can rewrite ``backup.info``: a label is
    then data it chose, and the site tool names files after labels (``manifests/<label>.json``) and passes
    them to pgBackRest. A label like ``../../postgresql/x`` must never get that far.
    """
    return [repr(entry.get("label")) for entry in stanza.get("backup", []) or []
            if not isinstance(entry.get("label"), str) or not LABEL.fullmatch(entry["label"])]


def backups_in(stanza: dict, repo: int | str) -> list[dict]:
    """Return the raw backup entries of *repo*, oldest first (pgBackRest's order)."""
    return [b for b in stanza.get("backup", []) or [] if int((b.get("database") or {}).get("repo-key", 1)) == int(repo)]


def describe_backup(backup: dict) -> dict:
    """Return the fields ``lpse-backup run`` reports for one raw backup entry."""
    info = backup.get("info", {}) or {}
    stamp = backup.get("timestamp", {}) or {}
    return {"label": backup.get("label"), "type": backup.get("type"),
            "started_at": _iso(stamp.get("start")), "finished_at": _iso(stamp.get("stop")),
            "size_bytes": info.get("size"), "repo_size_bytes": (info.get("repository") or {}).get("delta"),
            "error": backup.get("error", False)}


def timeline_of(backup: dict) -> int | None:
    """Return the timeline a raw backup entry was taken on (its first WAL segment's name), or None."""
    start = (backup.get("archive") or {}).get("start") or ""
    try:
        return int(start[:8], 16) if len(start) == 24 else None
    except ValueError:
        return None


def stopped_at(backup: dict) -> datetime:
    """Return when a raw backup entry finished."""
    return _time((backup.get("timestamp") or {}).get("stop"))


def system_id(stanza: dict, repo: int | str) -> int | None:
    """Return the system identifier of the database *stanza* holds in *repo* now (its newest db entry), or None."""
    entries = [d for d in stanza.get("db", []) or [] if int(d.get("repo-key", 1)) == int(repo)]
    newest = max(entries, key=lambda d: int(d.get("id", 0)), default=None)
    return int(newest["system-id"]) if newest and newest.get("system-id") is not None else None


def repo_usable(status: dict) -> bool:
    """True when a repo's status is ok, or only says it holds no backup yet."""
    return status.get("code", 0) == 0 or (status.get("code") == 2 and NO_BACKUP_YET in status.get("message", ""))


def stanza_missing(status: dict) -> bool:
    """True when a repo's status says the stanza does not exist there."""
    return status.get("code") == 1 or "missing stanza" in status.get("message", "")


def verify_problems(output: str) -> list[str]:
    """Return the lines of ``pgbackrest verify`` output that name an invalid or missing file."""
    return [line.strip() for line in output.splitlines()
            if re.search(r"invalid|missing|error|WARN", line, re.I) and "status: ok" not in line]


def _iso(epoch: int | float | None) -> str | None:
    return _time(epoch).isoformat(timespec="seconds") if epoch is not None else None


# --- argv ---------------------------------------------------------------------------------------

def argv(stanza: str, *args: str) -> list[str]:
    """Return ``pgbackrest --stanza=STANZA ARGS...``."""
    return ["pgbackrest", f"--stanza={stanza}", *args]


def info_args(repo: int | str | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    """Arguments of ``pgbackrest info`` as JSON, for one repo or all."""
    return ["info", "--output=json", *([f"--repo={repo}"] if repo else []), *extra]


def backup_args(repo: int | str, backup_type: str) -> list[str]:
    return ["backup", f"--repo={repo}", f"--type={backup_type}"]


def verify_args(repo: int | str) -> list[str]:
    return ["verify", f"--repo={repo}", "--log-level-console=info"]


def restore_to_point_args(repo: int | str, label: str, pgdata: str, restore_point: str) -> list[str]:
    """Arguments restoring set *label* into *pgdata*, recovering to the named restore point (verify).

    The restore point is made on the set's own timeline just after the backup, so recovery follows that
    timeline (``current``), never a later branch such as one a rolled-back restore left in the archive.
    """
    return ["restore", f"--repo={repo}", f"--set={label}", f"--pg1-path={pgdata}", "--type=name",
            f"--target={restore_point}", "--target-timeline=current", "--target-action=promote",
            "--archive-mode=off", "--log-level-console=warn"]


def restore_to_time_args(repo: int | str, target_time: str, extra: tuple[str, ...] = ()) -> list[str]:
    """Arguments of a point-in-time restore of the live data directory."""
    return ["restore", f"--repo={repo}", "--type=time", f"--target={target_time}", "--target-action=promote",
            *extra]


def restore_to_end_args(repo: int | str, extra: tuple[str, ...] = ()) -> list[str]:
    """Arguments of a restore of the live data directory that replays every archived WAL segment, then promotes
    (no target: the end of the archive, e.g. everything a lost server pushed offsite)."""
    return ["restore", f"--repo={repo}", "--type=default", *extra]
