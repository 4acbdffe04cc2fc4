"""Pure parsers for pgBackRest output (``pgbackrest info --output=json``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


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


def parse_info(data: list[dict]) -> list[StanzaInfo]:
    """Parse the JSON list printed by ``pgbackrest info --output=json``."""
    stanzas: list[StanzaInfo] = []
    for stanza in data or []:
        name = stanza.get("name", "?")
        backups = []
        for entry in stanza.get("backup", []) or []:
            info = entry.get("info", {}) or {}
            archive = entry.get("archive", {}) or {}
            timestamp = entry.get("timestamp", {}) or {}
            backups.append(BackupSet(
                stanza=name, repo=int((entry.get("database") or {}).get("repo-key", 1)), label=entry.get("label", ""),
                type=entry.get("type", ""), started=_time(timestamp.get("start")), stopped=_time(timestamp.get("stop")),
                size=int(info.get("size", 0) or 0), repo_size=int((info.get("repository") or {}).get("size", 0) or 0),
                error=bool(entry.get("error", False)), wal_start=archive.get("start"), wal_stop=archive.get("stop")))
        archive_max: dict[int, str] = {}
        for archive in stanza.get("archive", []) or []:
            repo = int((archive.get("database") or {}).get("repo-key", 1))
            if archive.get("max") and archive["max"] > archive_max.get(repo, ""):
                archive_max[repo] = archive["max"]
        repo_status = {int(r.get("key", 0)): (r.get("status") or {}).get("message", "?")
                       for r in stanza.get("repo", []) or []}
        status = stanza.get("status", {}) or {}
        stanzas.append(StanzaInfo(name, int(status.get("code", -1)), status.get("message", "?"),
                                  sorted(backups, key=lambda b: (b.repo, b.stopped)), archive_max, repo_status))
    return stanzas


def latest_backup(stanzas: list[StanzaInfo], repo: int | None = None) -> BackupSet | None:
    """Return the newest successful backup set (optionally in one *repo*), or None."""
    sets = [b for s in stanzas for b in s.backups if not b.error and (repo is None or b.repo == repo)]
    return max(sets, key=lambda b: b.stopped, default=None)
