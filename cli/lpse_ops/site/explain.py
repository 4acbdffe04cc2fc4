"""Known failure signatures of pgBackRest, restic and the OS -> a stable code and what to do.

``explain`` is pure: engine output in, an ``Explanation`` out. The codes are the site's contract with
the control machine (``docs/backups.md`` lists them); the messages are for people.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from lpse_ops.site.errors import SETUP_HINT

CODES = {
    "s3_credentials_refused": "the offsite S3 refused the site's keys",
    "s3_tls_untrusted": "the offsite S3 certificate is not trusted",
    "s3_unreachable": "the offsite S3 cannot be reached",
    "no_space": "a filesystem is full",
    "stanza_missing": "the pgBackRest stanza is missing on a repository",
    "restic_password_wrong": "a restic repository rejected the password",
    "restic_repo_missing": "a restic repository is missing or unreadable",
    "lock_busy": "another lpse-backup run holds the lock",
    "config_missing": "/etc/lpse-backup/lpse-backup.json is missing",
    "config_invalid": "the settings file cannot be used",
    "not_root": "lpse-backup was not run as root",
    "tool_missing": "an engine binary is not installed",
    "timeout": "an engine did not finish in time",
    "engine_failed": "an engine failed in a way not recognised above",
    "postgres_unavailable": "PostgreSQL did not answer",
    "no_backup": "the repository holds no (suitable) backup set",
    "set_not_found": "the chosen backup set is not in the repository",
    "no_snapshot": "no restic snapshot fits",
    "manifest_missing": "the backup set has no verification manifest",
    "backup_not_listed": "pgBackRest said it succeeded but lists no new set",
    "restore_point_failed": "the restore point could not be created",
    "wal_not_archived": "the WAL holding the restore point was not archived in time",
    "verify_failed": "a verification check failed",
    "restore_failed": "pgBackRest could not restore the set",
    "recovery_timeout": "PostgreSQL did not finish recovery in time",
    "unhealthy_after_restore": "SPSE did not report healthy after a restore",
    "bad_argument": "an argument could not be read",
    "backup_failed": "the upgrade checkpoint's backup failed",
    "no_checkpoint": "no upgrade checkpoint of that name on the site",
    "no_manifest": "the checkpoint's verification manifest is gone",
    "data_differs": "the live tables or documents differ from the checkpoint",
    "log_missing": "nginx's lpse_timed access log is missing",
    "bad_window": "the traffic window's bounds cannot be used",
    "unexpected": "a bug: an exception the tool did not expect",
}

ROOTS = ("/var/lib/pgbackrest", "/var/spool/pgbackrest", "/var/lib/lpse-backup", "/var/lib/postgresql")
_S3_REFUSED = re.compile(r"\b403\b|invalidaccesskeyid|signaturedoesnotmatch|accessdenied|access denied|forbidden")
_STANZA = re.compile(r"missing stanza|stanza '[^']+' does not exist|does this stanza exist|unable to load info file|"
                     r"\[055\]")
_UNREACHABLE = re.compile(r"connection refused|no route to host|timed out|could not resolve|unable to get address|"
                          r"name or service not known|no such host")


@dataclass(frozen=True)
class Explanation:
    """A recognised failure: its code and a message saying what to do."""

    code: str
    message: str


@dataclass(frozen=True)
class Hints:
    """Site values the messages name (all optional, so tests and early failures need no settings)."""

    stanza: str = "spse"
    s3_endpoint: str | None = None
    repo1_path: str = "/var/lib/pgbackrest"


def explain(output: str, argv: list[str] | tuple[str, ...], step: str | None = None,
            hints: Hints | None = None) -> Explanation:
    """Return the code and message for a failed command, given its output (stdout + stderr) and argv."""
    hints = hints or Hints()
    lowered = output.lower()
    tool = os.path.basename(argv[0]) if argv else "?"
    where = f" ({step})" if step else ""
    for match in (_no_space, _s3_refused, _stanza_missing, _restic_password, _tls, _unreachable, _restic_missing):
        found = match(output, lowered, tool, argv, where, hints)
        if found:
            return found
    first = next((line.strip() for line in output.splitlines() if "ERROR" in line), None) or tail(output, 3)
    shown = " ".join(a for a in list(argv)[1:3] if not a.startswith("--repo2-s3"))
    return Explanation("engine_failed", f"`{tool} {shown}` failed{where}: {first}")


def _no_space(output, lowered, tool, argv, where, hints):
    if "no space left on device" in lowered:
        path = path_in_error(output) or hints.repo1_path
        return Explanation("no_space", f"no space left on {path}{where}: free space there (or grow the disk), "
                                       "then run again")
    return None


def _s3_refused(output, lowered, tool, argv, where, hints):
    about_s3 = ("s3" in lowered or "http" in lowered or tool == "restic" or "repo2" in " ".join(argv)
                or "--repo=2" in argv)
    if _S3_REFUSED.search(lowered) and about_s3:
        return Explanation("s3_credentials_refused", "offsite S3 refused the credentials: check "
                           f"backup_s3_access_key and backup_s3_secret_key for this site{where}")
    return None


def _stanza_missing(output, lowered, tool, argv, where, hints):
    if tool == "pgbackrest" and _STANZA.search(lowered):
        return Explanation("stanza_missing", f"stanza {hints.stanza} missing: {SETUP_HINT}")
    return None


def _restic_password(output, lowered, tool, argv, where, hints):
    if "wrong password" in lowered or "no key found" in lowered:
        return Explanation("restic_password_wrong",
                           "the restic repository rejected the password: check backup_restic_password")
    return None


def _tls(output, lowered, tool, argv, where, hints):
    if "certificate" in lowered and ("verify" in lowered or "unknown authority" in lowered):
        return Explanation("s3_tls_untrusted", "the offsite S3 TLS certificate was not trusted: check "
                                               f"backup_s3_ca_cert{where}")
    return None


def _unreachable(output, lowered, tool, argv, where, hints):
    if _UNREACHABLE.search(lowered):
        return Explanation("s3_unreachable", f"offsite S3 unreachable at {hints.s3_endpoint}: check the network "
                                             f"and the endpoint{where}")
    return None


def _restic_missing(output, lowered, tool, argv, where, hints):
    if tool == "restic" and ("repository does not exist" in lowered or "unable to open config" in lowered
                             or "is there a repository at the following location" in lowered):
        return Explanation("restic_repo_missing", f"the restic repository is missing or unreadable{where}: "
                                                  f"{SETUP_HINT}")
    return None


def path_in_error(text: str) -> str | None:
    """Return the filesystem root a "no space" error names (one of the backup roots), else the path, else None."""
    match = re.search(r"'(/[^']+)'", text) or re.search(r"(/var/[^\s:']+)", text)
    if not match:
        return None
    path = match.group(1)
    return next((root for root in ROOTS if path.startswith(root)), path)


def tail(text: str, lines: int = 12) -> str:
    """Return the last *lines* lines of *text*, stripped."""
    return "\n".join(text.strip().splitlines()[-lines:])
