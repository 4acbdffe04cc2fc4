"""lpse-backup: backups that are proven, for one SPSE site (installed by the lpse-ops role ``backup``).

One code path for the systemd timers and for the control machine (playbooks/backup_exec.yml):

    lpse-backup run --type full|diff|incr|files
    lpse-backup list
    lpse-backup status
    lpse-backup verify [--repo 1|2] [--set LABEL | --random]
    lpse-backup restore --target-time "YYYY-MM-DD HH:MM:SS+00"|latest [--repo 1|2] [--repo2-path PATH]
                        [--repo2-bucket BUCKET] [--restic-repo URL]
    lpse-backup checkpoint --name NAME | rollback-db --name NAME | compare --name NAME   (upgrades)
    lpse-backup traffic --since EPOCH [--until EPOCH] [--log PATH]   (requests to SPSE in a window)
    lpse-backup audit [--lynis] [--no-aide]   (compliance facts; lpse-ops audit decides the controls)
    lpse-backup integrity-refresh --since EPOCH [--scope PATH ...]   (AIDE accepts lpse-ops's own change)
    lpse-backup upgrade-prepare | upgrade-apply | upgrade-bake ...   (an upgrade's phases: site/upgrade.py)
    lpse-backup upgrade-change | upgrade-finish | upgrade-complete | upgrade-rollback ...   (site/upgrade_phases.py)
    lpse-backup preflight --spec JSON   (the server baseline's checks but the clock skew: site/preflight.py)
    lpse-backup release-unpack --bundle F --sha256 H --version V --base DIR [--check]   (site/release.py)

Every subcommand prints ONE JSON object on stdout and exits 0 (ok) or 1 (failed, with "error" saying
what went wrong and what to do, "code" machine-readable, and "step"). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

from lpse_ops.site import (
    audit,
    checkpoint,
    hydrate,
    integrity,
    listing,
    nginxlog,
    preflight,
    release,
    restore,
    run,
    settings,
    status,
    upgrade,
    upgrade_phases,
    verify,
)
from lpse_ops.site.errors import Failure

Action = Callable[[settings.Settings, argparse.Namespace], dict]
ACTIONS: dict[str, Action] = {"run": run.main, "list": listing.main, "status": status.main, "verify": verify.main,
                              "restore": restore.main, "hydrate": hydrate.main, "checkpoint": checkpoint.take,
                              "rollback-db": checkpoint.rollback_database, "compare": checkpoint.compare,
                              "traffic": nginxlog.main, "preflight": preflight.main, "audit": audit.main,
                              "integrity-refresh": integrity.main,
                              "upgrade-prepare": upgrade.prepare, "upgrade-apply": upgrade.apply,
                              "upgrade-bake": upgrade.bake, "release-unpack": release.main,
                              "upgrade-change": upgrade_phases.change, "upgrade-finish": upgrade_phases.finish,
                              "upgrade-complete": upgrade_phases.complete, "upgrade-rollback": upgrade_phases.rollback}
# Subcommands that need no backup settings (they run on sites that are not backed up too).
WITHOUT_SETTINGS = {"audit", "preflight", "integrity-refresh", "upgrade-prepare", "upgrade-bake", "upgrade-apply",
                    "release-unpack", "upgrade-finish", "upgrade-complete"}
CONFIG_ENV = "LPSE_BACKUP_CONFIG"


def parser() -> argparse.ArgumentParser:
    """Return the command line: one subcommand per entry of ACTIONS."""
    top = argparse.ArgumentParser(prog="lpse-backup", description=(__doc__ or "").split("\n\n")[0])
    sub = top.add_subparsers(dest="action", required=True)
    backup = sub.add_parser("run", help="back up the database (both repos), write the manifest, back up the files")
    backup.add_argument("--type", required=True, choices=["full", "diff", "incr", "files", "delta"])
    sub.add_parser("list", help="every backup set and snapshot, raw JSON from the engines")
    status_parser = sub.add_parser("status", help="facts: last backups, WAL archiving, spool queue, snapshots, "
                                                  "last verify")
    status_parser.add_argument("--verifications-only", action="store_true",
                               help="only the verifications this site ran (its own files: no engine is run)")
    check = sub.add_parser("verify", help="restore a backup set into a scratch instance and check it")
    check.add_argument("--repo", type=int, choices=[1, 2], default=1)
    choice = check.add_mutually_exclusive_group()
    choice.add_argument("--set", help="backup set label (default: the latest)")
    choice.add_argument("--random", action="store_true", help="a random backup set")
    recover = sub.add_parser("restore", help="point-in-time recovery of the live site")
    recover.add_argument("--target-time", required=True,
                         help="UTC time to recover to, or `latest`: the end of the archived WAL")
    recover.add_argument("--repo", type=int, choices=[1, 2], default=1)
    recover.add_argument("--repo2-path", help="pgBackRest repo2-path override (a read-only view of the bucket)")
    recover.add_argument("--repo2-bucket", help="pgBackRest repo2-s3-bucket override (the restore views bucket)")
    recover.add_argument("--restic-repo", help="restic repository URL override")
    recover.add_argument("--serve-first", action="store_true",
                         help="open SPSE once the database and the first documents are back; hydrate the rest after")
    recover.add_argument("--first-mb", type=int, default=hydrate.FIRST_BYTES >> 20,
                         help="with --serve-first: at most this many MB of documents before SPSE opens")
    recover.add_argument("--spse-base", default="/opt/spse", help="SPSE's base folder (its releases' manifests)")
    hydration = sub.add_parser("hydrate", help="bring back the documents a --serve-first restore left for later")
    hydration.add_argument("--batch-mb", type=int, default=hydrate.BATCH_BYTES >> 20,
                           help="documents restored per restic call, in MB")
    for name, text in (("checkpoint", "an upgrade's restore point: a fresh backup, its table checksums, every "
                                      "document's sha256"),
                       ("rollback-db", "the live database back to a checkpoint's restore point (SPSE left stopped)"),
                       ("compare", "the live tables and documents against a checkpoint")):
        sub.add_parser(name, help=text).add_argument("--name", required=True, help="the checkpoint's name")
    traffic = sub.add_parser("traffic", help="requests to SPSE in a window: count, 5xx, p50/p95/max ms (nginx log)")
    traffic.add_argument("--since", required=True, type=float, help="window start, epoch seconds")
    traffic.add_argument("--until", type=float, help="window end, epoch seconds (default: now)")
    traffic.add_argument("--log", default=nginxlog.DEFAULT_LOG, help="the lpse_timed access log")
    check_site = sub.add_parser("audit", help="compliance facts: sshd, SUID files, release, AIDE, firewall, ...")
    check_site.add_argument("--lynis", action="store_true", help="also run Lynis and report its hardening index")
    check_site.add_argument("--no-aide", action="store_true", help="skip AIDE's check")
    integrity.add_parser(sub)
    upgrade.add_parsers(sub)
    upgrade_phases.add_parsers(sub)
    release.add_parser(sub)
    preflight.add_parser(sub)
    return top


def dispatch(args: argparse.Namespace, config_path: str, euid: int) -> dict:
    """Run the chosen action; return its JSON result, a failure's fields when it raised."""
    try:
        if euid != 0:
            raise Failure("not_root", "lpse-backup must run as root (sudo)", step="start")
        if args.action in WITHOUT_SETTINGS:
            return ACTIONS[args.action](None, args)
        return ACTIONS[args.action](settings.load(config_path), args)
    except Failure as failure:
        return {"action": args.action, "ok": False, **failure.as_fields()}
    except Exception as error:  # noqa: BLE001 (one JSON object, whatever happens)
        return {"action": args.action, "ok": False, "code": "unexpected", "step": None,
                "error": f"unexpected {type(error).__name__}: {error} (report it with the journal of this run)"}


def main(argv: list[str] | None = None) -> int:
    """Parse *argv*, run, print one JSON object; return 0 when ok, else 1."""
    args = parser().parse_args(argv)
    result = dispatch(args, os.environ.get(CONFIG_ENV, settings.DEFAULT_PATH), os.geteuid())
    print(json.dumps(result))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
