"""restic: argv builders and pure parsers (``restic snapshots --json``, ``backup --json``, ``forget``).

The control machine uses the same parsers (``lpse_ops.backends.restic`` re-exports them).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Snapshot:
    """One restic snapshot."""

    id: str
    short_id: str
    time: datetime
    hostname: str
    paths: tuple[str, ...]
    tags: tuple[str, ...]

    def as_dict(self) -> dict:
        return {"engine": "restic", "id": self.id, "short_id": self.short_id, "time": self.time.isoformat(),
                "hostname": self.hostname, "paths": list(self.paths), "tags": list(self.tags)}


def parse_time(value: str) -> datetime:
    """Parse restic's RFC 3339 time with nanoseconds (Python keeps microseconds)."""
    match = re.match(r"^(.*?T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", value.strip())
    if not match:
        raise ValueError(f"not a restic time: {value!r}")
    base, fraction, zone = match.groups()
    micro = (fraction or ".0")[1:7].ljust(6, "0")
    return datetime.fromisoformat(f"{base}.{micro}{'+00:00' if zone == 'Z' else zone}")


def parse_snapshots(data: list[dict] | None) -> list[Snapshot]:
    """Parse the JSON list printed by ``restic snapshots --json``, oldest first."""
    snapshots = [Snapshot(id=item["id"], short_id=item.get("short_id", item["id"][:8]),
                          time=parse_time(item["time"]), hostname=item.get("hostname", ""),
                          paths=tuple(item.get("paths") or ()), tags=tuple(item.get("tags") or ()))
                 for item in data or []]
    return sorted(snapshots, key=lambda s: s.time)


def snapshot_at(snapshots: list[Snapshot], when: datetime) -> Snapshot | None:
    """Return the newest snapshot taken at or before *when*, or None."""
    candidates = [s for s in snapshots if s.time <= when]
    return candidates[-1] if candidates else None


def newest_tagged(snapshots: list[Snapshot], tag: str) -> Snapshot | None:
    """Return the newest snapshot carrying *tag*, or None."""
    tagged = [s for s in snapshots if tag in s.tags]
    return tagged[-1] if tagged else None


def covering(snapshots: list[Snapshot], path: str) -> list[Snapshot]:
    """Return the snapshots whose paths hold *path* (or lie inside it)."""
    return [s for s in snapshots if any(p.startswith(path) or path.startswith(p) for p in s.paths)]


def parse_backup_summary(stdout: str) -> dict:
    """Return the ``summary`` message of ``restic backup --json`` (one JSON object a line), or {}."""
    summary: dict = {}
    for line in stdout.splitlines():
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(message, dict) and message.get("message_type") == "summary":
            summary = message
    return summary


def describe_summary(summary: dict) -> dict:
    """Return the fields ``lpse-backup run`` reports for one restic backup."""
    return {"snapshot_id": summary.get("snapshot_id"), "files_new": summary.get("files_new"),
            "files_changed": summary.get("files_changed"), "data_added_bytes": summary.get("data_added"),
            "total_files": summary.get("total_files_processed"),
            "total_bytes": summary.get("total_bytes_processed")}


def parse_forget(stdout: str) -> dict:
    """Return how many groups ``restic forget`` pruned and how many snapshots it removed."""
    counts = [int(n) for n in re.findall(r"^remove (\d+) snapshots?", stdout, re.M)]
    return {"groups_pruned": len(counts), "snapshots_removed": sum(counts)}


def parse_env_file(text: str) -> dict[str, str]:
    """Parse ``KEY=value`` lines (the role's restic.env); comments and blank lines are skipped."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip().strip('"')
    return env


# --- argv ---------------------------------------------------------------------------------------

def locked_by_another(output: str) -> bool:
    """Whether a restic command that needs an exclusive lock (``check``, ``prune``) failed only because another
    restic process holds a lock on the repository (``unable to create lock in backend: repository is already
    locked by PID ...``): the documents' delta every 30 s and their 5-minute run do, for seconds."""
    return "unable to create lock in backend" in output and "repository is already locked" in output


def repo_args(url: str, ca_file: str, s3_options: tuple[str, ...] = ()) -> list[str]:
    """Return restic's repository arguments; an S3 URL also gets the CA file and the S3 options."""
    return ["--repo", url, *(["--cacert", ca_file, *s3_options] if url.startswith("s3:") else [])]


def backup_args(tags: list[str], paths: list[str]) -> list[str]:
    tagged = [arg for tag in tags for arg in ("--tag", tag)]
    return ["backup", "--json", "--one-file-system", "--exclude-caches", *tagged, *paths]


# restic reads the documents as root, by path: every component of each path is resolved by the kernel
# when restic opens it, long after the site tool listed it. spse owns the folder and could swap a
# subfolder for a link to /etc in between, and root's restic would store /etc/shadow under a document's
# name. So restic runs in a private mount namespace where the documents folder is bind-mounted onto itself
# with ``nosymfollow`` (Linux 5.10): no lookup through that mount follows a link, whenever the swap happens
# (a link is still stored as a link; a path through one fails with ELOOP and is left out). The folder is
# passed as a positional parameter of the fixed script, never pasted into it.
CONFINE_SCRIPT = 'mount --bind -- "$1" "$1" && mount -o remount,bind,nosymfollow -- "$1" && shift && exec "$@"'


def confined_argv(folder: str, argv: list[str]) -> list[str]:
    """*argv* run where no path under *folder* follows a symbolic link (see ``CONFINE_SCRIPT``)."""
    if not folder.startswith("/"):
        raise ValueError(f"{folder!r} is not an absolute path")
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", CONFINE_SCRIPT, "lpse-confine",
            folder, *argv]


DELTA_TAG = "delta"
"""The tag of a snapshot of just the documents added since the one before (``lpse-backup run --type delta``)."""


def delta_args(site_code: str, files_from: str) -> list[str]:
    """``restic backup`` of exactly the files listed in *files_from* (``delta_listing``: NUL-terminated
    paths, ``--files-from-raw``, restic 0.12 and later), tagged delta."""
    return ["backup", "--json", "--tag", site_code, "--tag", DELTA_TAG, "--files-from-raw", files_from]


def delta_listing(docs_dir: str, paths: list[str]) -> bytes:
    """The bytes of a ``--files-from-raw`` list of *paths*: each path followed by one NUL.

    A file name may hold a newline (spse names the folders), never a NUL, so no name can end one path and
    start another. Every path must lie strictly inside *docs_dir*, already normalized; anything else raises
    ValueError (the list is root's order to back a file up into both repositories).
    """
    inside = docs_dir.rstrip("/") + "/"
    for path in paths:
        if "\0" in path or not path.startswith(inside) or os.path.normpath(path) != path or path == inside:
            raise ValueError(f"{path!r} is outside the documents folder {docs_dir}: not given to restic")
    return b"".join(os.fsencode(path) + b"\0" for path in paths)


def full(snapshots: list[Snapshot]) -> list[Snapshot]:
    """The snapshots that are not deltas: the ones a restore can start from."""
    return [s for s in snapshots if DELTA_TAG not in s.tags]


def forget_args(site_code: str, keep: Mapping[str, int]) -> list[str]:
    """Arguments of ``restic forget --prune`` keeping daily/weekly/monthly snapshots and always the last."""
    return ["forget", "--prune", "--tag", site_code, "--group-by", "host,tags",
            "--keep-daily", str(keep["daily"]), "--keep-weekly", str(keep["weekly"]),
            "--keep-monthly", str(keep["monthly"]), "--keep-last", "1"]


def snapshots_args(site_code: str) -> list[str]:
    return ["snapshots", "--tag", site_code, "--json"]


def restore_args(snapshot_id: str, target: str, include: str | list[str] | None = None) -> list[str]:
    """``restic restore`` of *snapshot_id* into *target*, limited to the *include* path(s)."""
    paths = [include] if isinstance(include, str) else list(include or [])
    return ["restore", snapshot_id, "--target", target, *[arg for path in paths for arg in ("--include", path)]]


def find_args(paths: list[str], snapshot_ids: list[str] | None = None) -> list[str]:
    """``restic find --json`` of these exact paths, in the given snapshots (default: every snapshot)."""
    return ["find", "--json", *[arg for sid in snapshot_ids or [] for arg in ("--snapshot", sid)], *paths]


def parse_find(stdout: str) -> dict[str, set[str]]:
    """Map each snapshot's full id to the paths ``restic find --json`` found in it."""
    data = json.loads(stdout or "null") or []
    return {entry["snapshot"]: {match["path"] for match in entry.get("matches") or []} for entry in data}
