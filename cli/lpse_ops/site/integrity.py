"""``lpse-backup integrity-refresh``: accept a change lpse-ops made into the AIDE baseline (clause 6.2.19).

The last step of a change that lpse-ops makes and records on a site (install, upgrade, rollback, hardening,
access; playbooks/tasks/integrity_refresh.yml): AIDE is asked what differs from its baseline within the
operation's *scope* (path prefixes; none: AIDE's whole scope), and of those differences only the entries the
kernel stamped during the operation (inode change time at or after *since*; for a removed entry, its parent
folder's) are written into the baseline, with ``aide --update --limit`` over exactly those paths (AIDE copies
every other entry from the old database unchanged). Anything else AIDE finds stays in the baseline's
difference, so a change made outside lpse-ops keeps failing ``aide-integrity``. A site without an AIDE
configuration and database (not hardened) is left alone.

Prints one JSON object: ``ran`` (AIDE was asked), ``refreshed`` (the database was replaced), ``accepted``
``{added, removed, changed}`` (the paths written into the baseline), ``left`` (differences in scope that
this operation did not make), ``scope``, ``limit`` (the regular expression given to ``aide --update``).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterable

from lpse_ops.site.audit import AIDE_CONF, AIDE_DB, load_baseline, parse_aide_report
from lpse_ops.site.errors import Failure

KINDS = ("added", "removed", "changed")


def limit_regex(paths: Iterable[str], *, below: bool) -> str:
    """Return an AIDE ``--limit`` regular expression (PCRE) for *paths*.

    *below*: each path and everything under it (``^(?:/etc/ssh)(?:/|$)``); else exactly the paths
    (``^(?:/usr/bin/a|/etc/x)$``). Raises ValueError for no path or a path that is not absolute.
    """
    cleaned = sorted({os.path.normpath(path) for path in paths})
    if not cleaned:
        raise ValueError("no path to limit AIDE to")
    for path in cleaned:
        if not path.startswith("/") or "\n" in path or "\0" in path:
            raise ValueError(f"not an absolute path: {path!r}")
    if below and "/" in cleaned:
        return "^/"
    alternatives = "|".join(re.escape(path) for path in cleaned)
    return f"^(?:{alternatives})" + ("(?:/|$)" if below else "$")


def stamped_since(path: str, kind: str, since: float, lstat=os.lstat) -> bool:
    """Whether the kernel stamped *path* (an AIDE entry of *kind*) at or after *since* (epoch seconds).

    Added and changed entries: their own inode change time (no user can set it back). A removed entry:
    its parent folder's (removing a name changes the folder). False when the path cannot be read.
    """
    target = (os.path.dirname(path.rstrip("/")) or "/") if kind == "removed" else path
    try:
        return lstat(target).st_ctime >= since
    except OSError:
        return False


def split_by_time(found: dict[str, list[str]], since: float, lstat=os.lstat) -> tuple[dict[str, list[str]], list[str]]:
    """Split AIDE's differences into (accepted {kind: paths} stamped since *since*, left: every other path)."""
    accepted: dict[str, list[str]] = {kind: [] for kind in KINDS}
    left: list[str] = []
    for kind in KINDS:
        for path in found.get(kind) or []:
            (accepted[kind].append(path) if stamped_since(path, kind, since, lstat) else left.append(path))
    return accepted, sorted(set(left))


def _aide(mode: str, conf: str, regex: str | None, timeout: float = 900) -> tuple[int, dict[str, list[str]]]:
    """Run ``aide --check|--update`` (limited to *regex*); return (exit code, differences). Raises Failure."""
    argv = ["nice", "-n", "10", "aide", f"--{mode}", f"--config={conf}", *([f"--limit={regex}"] if regex else [])]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd="/")
    except (FileNotFoundError, subprocess.TimeoutExpired) as error:
        raise Failure("aide_failed", f"aide --{mode} did not run: {error}", step=mode) from error
    # 0 nothing differs; 1 added, 2 removed, 4 changed (or-ed); 14 and up an error.
    if done.returncode >= 8:
        raise Failure("aide_failed", f"aide --{mode} exited {done.returncode}: "
                      f"{(done.stderr or done.stdout).strip()[-300:]}", step=mode)
    try:
        found = parse_aide_report(done.stdout) if done.returncode else {kind: [] for kind in KINDS}
    except ValueError as error:
        raise Failure("aide_unreadable", f"aide --{mode}'s report could not be read: {error}", step=mode) from error
    return done.returncode, found


def refresh(scope: list[str], since: float, conf: str = AIDE_CONF, database: str = AIDE_DB) -> dict:
    """Accept into AIDE's baseline the differences within *scope* stamped since *since* (see the module)."""
    started = time.monotonic()
    record = {"action": "integrity-refresh", "ok": True, "ran": False, "refreshed": False, "scope": sorted(scope),
              "since": since, "accepted": {kind: [] for kind in KINDS}, "left": [], "limit": None}
    if not (os.path.exists(conf) and os.path.exists(database)):
        return {**record, "reason": "no AIDE configuration or database: the site is not hardened"}
    _code, found = _aide("check", conf, limit_regex(scope, below=True) if scope else None)
    accepted, left = split_by_time(found, since)
    record.update(ran=True, accepted=accepted, left=left)
    paths = [path for kind in KINDS for path in accepted[kind]]
    if paths:
        record["limit"] = limit_regex(paths, below=False)
        _aide("update", conf, record["limit"])
        new = database + ".new"
        if not os.path.exists(new):
            raise Failure("aide_no_database", f"aide --update wrote no {new}", step="update")
        os.replace(new, database)
        record["refreshed"] = True
    record["duration_s"] = round(time.monotonic() - started, 1)
    return record


def main(_settings, args) -> dict:
    """The ``integrity-refresh`` subcommand (needs no backup settings)."""
    baseline = load_baseline() or {}
    return refresh(list(args.scope or []), float(args.since), baseline.get("aide_conf", AIDE_CONF),
                   baseline.get("aide_db", AIDE_DB))


def add_parser(sub) -> None:
    """Add ``integrity-refresh`` to the site tool's subcommands."""
    parser = sub.add_parser("integrity-refresh", help="accept the paths lpse-ops's own change touched into the "
                                                      "AIDE baseline (only those stamped since --since)")
    parser.add_argument("--since", required=True, type=float, help="when the change began, epoch seconds")
    parser.add_argument("--scope", action="append", help="a path prefix the change may touch (repeat; "
                                                         "none: AIDE's whole scope)")
