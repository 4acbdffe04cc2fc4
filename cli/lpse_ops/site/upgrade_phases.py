"""The changing phases of an upgrade, each one call of the site tool (playbooks/upgrade.yml, upgrade_rollback.yml).

    lpse-backup upgrade-change   --checkpoint NAME [the upgrade-apply options]     < {"trusted_keys", "sha256", "pages"}
    lpse-backup upgrade-finish   --base DIR --version V --keep-release DIR --since E [--scope P ...]
    lpse-backup upgrade-complete [the upgrade-bake options] [the upgrade-finish options]
    lpse-backup upgrade-rollback --base DIR --release-dir DIR --version V --unit U --port P --checkpoint NAME
                                 [--database] [--compare] --since E [--scope P ...]   < {"pages"}

``upgrade-change`` is the whole change of a site: the maintenance page up (``full``: only /health reaches
SPSE), the checkpoint (a fresh backup to both repositories, its restore point, every document's sha256),
every release of the path unpacked beside the old one (``release.unpack``: the sha256 the control node
verified, the signature, the signed tree), then ``upgrade.apply`` (stop, migrations in order, switch, start,
health gate, smoke test), and the page switched to ``read-only`` for the bake (reads flow, writes wait, so a
rollback loses nothing). Its record says how far it went (``maintenance``: the page went up, so the site
was changed; ``checkpoint``; ``unpacked``; ``migrated``; ``switched``), on failure too.

``upgrade-finish`` takes the page down, prunes old releases and accepts the change into the AIDE baseline.
``upgrade-complete`` is the bake (``upgrade-bake``: warm-up, bake, the canary verdict) and, when the verdict is
``pass``, ``upgrade-finish``, in one call: the upgrade's last phase costs the control node one task, not two.
Its record holds both (``bake``, ``finish``: null when the canary failed); a failure names its step
(``canary`` or ``finish``).

``upgrade-rollback`` puts a site back: page up, SPSE stopped, the database back at the checkpoint
(``--database``), ``current`` at the release it ran, SPSE started and /health waited for, the tables and
documents compared with the checkpoint (``--compare``), the page down, the AIDE baseline refreshed.

Standard input is one JSON object: the release keys' texts, each version's verified sha256 and the
maintenance pages (rendered on the control node from roles/nginx/templates/maintenance.html.j2).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from types import SimpleNamespace

from lpse_ops.site import checkpoint, integrity, maintenance, release, upgrade
from lpse_ops.site.errors import Failure, failed

APPLY_FIELDS = ("migrated", "migrations", "switched", "stopped_at", "serving_at", "health", "smoke")


def read_input(stream=None) -> dict:
    """The phase's standard input, one JSON object."""
    text = (stream or sys.stdin).read()
    try:
        given = json.loads(text or "{}")
    except ValueError as error:
        raise Failure("bad_arguments", f"standard input is not JSON ({error})", step="start") from None
    if not isinstance(given, dict):
        raise Failure("bad_arguments", "standard input must be one JSON object", step="start")
    return given


def bundle_path(base: str, version: str) -> str:
    """Where the playbook copies a release's bundle on the site (roles/spse/vars: __spse_host_bundle)."""
    return os.path.join(base, "bundles", f"spse-{version}.tar.gz")


def digests_of(given: dict, path: list[str]) -> dict[str, str]:
    """Each version of *path*'s verified sha256 from ``{"sha256": {version: hex}}``; refuse a missing or odd one."""
    found = given.get("sha256") if isinstance(given.get("sha256"), dict) else {}
    for version in path:
        value = found.get(version)
        if not isinstance(value, str) or len(value) != 64 or not set(value) <= set("0123456789abcdef"):
            raise Failure("bad_arguments", f"no verified sha256 for release {version} on standard input",
                          step="start")
    return {version: found[version] for version in path}


def change(settings, args, given: dict | None = None, *, set_mode: Callable = maintenance.set_mode,
           take: Callable = checkpoint.take, unpack: Callable = release.unpack,
           apply: Callable = upgrade.apply) -> dict:
    """``upgrade-change``: page up, checkpoint, unpack, apply, page read-only (see the module)."""
    path = [version for version in args.path.split(",") if version]
    record = {"action": "upgrade-change", "ok": False, "to_version": path[-1] if path else "", "path": path,
              "maintenance": False, "checkpoint": None, "unpacked": [], "migrated": False, "migrations": [],
              "switched": False, "stopped_at": None, "serving_at": None, "health": None, "smoke": None}
    stage = "start"
    try:
        given = read_input() if given is None else given
        if not path:
            raise Failure("bad_arguments", "--path names no release", step="start")
        pages = maintenance.pages_of(given)
        keys = release.trusted_keys(given.get("trusted_keys") or [])
        digests = digests_of(given, path)
        stage = "maintenance"
        set_mode("full", pages["full"])
        record["maintenance"] = True
        stage = "checkpoint"
        taken = take(settings, SimpleNamespace(name=args.checkpoint))
        record["checkpoint"] = taken
        if not taken.get("ok"):
            raise Failure(taken.get("code") or "checkpoint_failed", taken.get("error") or "the checkpoint failed",
                          step="checkpoint")
        stage = "unpack"
        for version in path:
            unpacked = unpack(bundle_path(args.base, version), digests[version], version, args.base, keys)
            record["unpacked"].append({"version": version, "unpacked": unpacked.get("unpacked", False)})
    except Exception as error:  # noqa: BLE001 (the record must say how far the change went: the page may be up)
        failed(record, error)
        if stage != "start":
            record["step"] = stage
        return record
    applied = apply(None, args)
    record.update({field: applied.get(field) for field in APPLY_FIELDS})
    if not applied.get("ok"):
        record.update({key: applied[key] for key in ("code", "step", "error", "detail") if key in applied})
        return record
    try:
        set_mode("read-only", pages["read-only"])
    except (Failure, OSError) as error:
        failure = error if isinstance(error, Failure) else Failure("maintenance_failed", str(error))
        record.update(failure.as_fields(), step="maintenance")
        return record
    record["ok"] = True
    return record


def integrity_after(since: float, scope: list[str], refresh: Callable = integrity.main) -> dict:
    """Accept this change into the AIDE baseline; a failure is kept in the record (the next audit names it)."""
    try:
        return refresh(None, SimpleNamespace(since=since, scope=scope))
    except Exception as error:  # noqa: BLE001 (the change is done; the baseline is left as it was)
        message = error.message if isinstance(error, Failure) else f"{type(error).__name__}: {error}"
        return {"ran": False, "refreshed": False, "reason": "refresh failed", "error": message}


def prune(base: str, keep: int, keep_dirs: list[str], target: str) -> list[str]:
    """Remove releases beyond the *keep* newest (by unpack time) and their bundles; never *target*, the one
    ``current`` points at, nor *keep_dirs*. Return the folders removed."""
    releases = os.path.join(base, "releases")
    spared = {os.path.realpath(path) for path in (os.path.join(releases, target), os.path.join(base, "current"),
                                                  *keep_dirs)}
    try:
        entries = [entry for entry in os.scandir(releases) if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
    entries.sort(key=lambda entry: entry.stat(follow_symlinks=False).st_mtime, reverse=True)
    removed = []
    for entry in entries[keep:]:
        if os.path.realpath(entry.path) in spared:
            continue
        shutil.rmtree(entry.path)
        removed.append(entry.path)
        bundle = bundle_path(base, entry.name)
        if os.path.lexists(bundle):
            os.unlink(bundle)
    return removed


def finish(_settings, args, *, set_mode: Callable = maintenance.set_mode, refresh: Callable = integrity.main) -> dict:
    """``upgrade-finish``: the page down, old releases pruned, the change accepted into the AIDE baseline."""
    record = {"action": "upgrade-finish", "ok": False, "maintenance": None, "pruned": [], "integrity_baseline": None}
    try:
        record["maintenance"] = set_mode("off")
    except Failure as failure:
        record.update(failure.as_fields(), step="finish")
        return record
    try:
        record["pruned"] = prune(args.base, args.keep, list(args.keep_release or []), args.version)
    except OSError as error:  # the site serves the new release; old folders staying is no failure
        record["prune_error"] = str(error)
    record["integrity_baseline"] = integrity_after(args.since, list(args.scope or []), refresh)
    record["ok"] = True
    return record


def complete(settings, args, *, bake: Callable = upgrade.bake, done: Callable = finish) -> dict:
    """``upgrade-complete``: the bake and its canary verdict, then, on ``pass`` only, ``upgrade-finish``."""
    record = {"action": "upgrade-complete", "ok": False, "bake": bake(settings, args), "finish": None}
    if not record["bake"].get("ok"):
        return {**record, **{key: record["bake"][key] for key in ("code", "step", "error") if key in record["bake"]}}
    record["finish"] = done(settings, args)
    if not record["finish"].get("ok"):
        return {**record, "code": record["finish"].get("code") or "finish_failed", "step": "finish",
                "error": record["finish"].get("error") or "the maintenance page could not be taken down"}
    record["ok"] = True
    return record


def release_folder(base: str, wanted: str) -> str:
    """*wanted* when it is a release folder of *base* (a real folder right under ``releases/``); else refuse."""
    releases = os.path.realpath(os.path.join(base, "releases"))
    parent = os.path.realpath(os.path.dirname(os.path.abspath(wanted)))
    if parent != releases or os.path.islink(wanted) or not os.path.isdir(wanted):
        raise Failure("release_missing", f"{wanted} is not a release folder under {releases}", step="switch")
    return wanted


def rollback(settings, args, given: dict | None = None, *, set_mode: Callable = maintenance.set_mode,
             command: Callable = upgrade.systemctl, restore_db: Callable = checkpoint.rollback_database,
             compare: Callable = checkpoint.compare, healthy: Callable = upgrade.wait_healthy,
             refresh: Callable = integrity.main) -> dict:
    """``upgrade-rollback``: put the site back on a release it ran and (``--database``) its data at the checkpoint."""
    record = {"action": "upgrade-rollback", "ok": False, "release_dir": args.release_dir, "version": args.version,
              "database": None, "health": None, "compare": None, "integrity_baseline": None}
    try:
        given = read_input() if given is None else given
        pages = maintenance.pages_of(given)
        target = release_folder(args.base, args.release_dir)
        set_mode("full", pages["full"])
        command("stop", args.unit, "stop")
        if args.database:
            record["database"] = restore_db(settings, SimpleNamespace(name=args.checkpoint))
            if not record["database"].get("ok"):
                raise Failure(record["database"].get("code") or "rollback_db_failed",
                              record["database"].get("error") or "the database was not put back", step="database")
        upgrade.point_current(args.base, target)
        command("start", args.unit, "start")
        record["health"] = healthy(args.port, args.version, args.health_timeout)
        if args.compare:
            record["compare"] = compare(settings, SimpleNamespace(name=args.checkpoint))
            if not record["compare"].get("identical"):
                raise Failure("data_differs", record["compare"].get("error") or "the data differs from the checkpoint",
                              step="compare")
        set_mode("off")
    except Exception as error:  # noqa: BLE001 (the record must still say how far the rollback went)
        return failed(record, error)
    record["integrity_baseline"] = integrity_after(args.since, list(args.scope or []), refresh)
    record["ok"] = True
    return record


def add_parsers(sub) -> None:
    """Add ``upgrade-change``, ``upgrade-finish`` and ``upgrade-rollback`` to the site tool's subparsers."""
    changing = sub.add_parser("upgrade-change", help="an upgrade's whole change: page up, checkpoint, unpack, apply, "
                                                     "page read-only (stdin: keys, sha256s, pages)")
    upgrade.add_apply_arguments(changing)
    changing.add_argument("--checkpoint", required=True, help="the name of the site's restore point for this upgrade")
    _finish_arguments(sub.add_parser("upgrade-finish", help="an upgrade's end: page down, old releases pruned, "
                                                            "AIDE refreshed"))
    last = sub.add_parser("upgrade-complete", help="an upgrade's last phase: the bake and its canary verdict, then, "
                                                   "on pass, upgrade-finish")
    upgrade.add_bake_arguments(last)
    _finish_arguments(last)
    back = sub.add_parser("upgrade-rollback", help="put a site back on a release and its data at a checkpoint "
                                                   "(stdin: the pages)")
    back.add_argument("--base", required=True, help="SPSE's base directory (releases/, current)")
    back.add_argument("--release-dir", required=True, help="the release folder current points at afterwards")
    back.add_argument("--version", required=True, help="the version /health must then report")
    back.add_argument("--unit", required=True, help="SPSE's systemd unit")
    back.add_argument("--port", type=int, required=True, help="SPSE's HTTP port on 127.0.0.1")
    back.add_argument("--checkpoint", required=True, help="the upgrade's restore point")
    back.add_argument("--database", action="store_true", help="put the database back at the checkpoint")
    back.add_argument("--compare", action="store_true", help="prove tables and documents identical to the checkpoint")
    back.add_argument("--health-timeout", type=float, default=90)
    _integrity_arguments(back)


def _finish_arguments(done) -> None:
    done.add_argument("--base", required=True, help="SPSE's base directory (releases/, current)")
    done.add_argument("--version", required=True, help="the release the site now runs")
    done.add_argument("--keep", type=int, default=3, help="how many releases to keep, newest first")
    done.add_argument("--keep-release", action="append", help="a release folder to keep (repeat)")
    _integrity_arguments(done)


def _integrity_arguments(parser) -> None:
    parser.add_argument("--since", type=float, required=True, help="when the change began, epoch seconds")
    parser.add_argument("--scope", action="append", help="a path prefix the change may touch (AIDE refresh; repeat)")

