"""Running pgBackRest and restic with this site's settings (argv from ``pgbackrest``/``restic``)."""

from __future__ import annotations

import json
import os
import subprocess

from lpse_ops.site import pgbackrest, restic
from lpse_ops.site.errors import SETUP_HINT, Failure
from lpse_ops.site.explain import Hints, explain, tail
from lpse_ops.site.proc import run
from lpse_ops.site.settings import Settings

DAY_S = 86400


def hints(settings: Settings) -> Hints:
    """Return the values failure messages name, from the settings."""
    return Hints(stanza=settings.stanza, s3_endpoint=settings.s3_endpoint, repo1_path=settings.pgbackrest_repo1_path)


# --- pgBackRest ---------------------------------------------------------------------------------

def pgbackrest_call(settings: Settings, args: list[str], *, check: bool = True, step: str | None = None,
                    timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ``pgbackrest --stanza=... ARGS`` as postgres."""
    return run(pgbackrest.argv(settings.stanza, *args), user="postgres", check=check, step=step, timeout=timeout,
               hints=hints(settings))


def pgbackrest_info(settings: Settings, repo: int | str | None = None, extra: tuple[str, ...] = (),
                    step: str = "pgbackrest info") -> list[dict]:
    """Return ``pgbackrest info --output=json`` (raw); raise an explained Failure when it is not JSON."""
    result = pgbackrest_call(settings, pgbackrest.info_args(repo, extra), check=False, step=step, timeout=600)
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        found = explain(result.stdout + result.stderr, ["pgbackrest", "info"], step, hints(settings))
        raise Failure(found.code, found.message, step=step, detail=tail(result.stderr)) from None


def stanza(settings: Settings, repo: int | str | None = None, extra: tuple[str, ...] = (),
           step: str = "pgbackrest info") -> dict:
    """Return this site's stanza from ``pgbackrest info`` (raw JSON).

    Raises Failure(backup_label_invalid) when a set's label is not one pgBackRest makes (``odd_labels``).
    """
    found = pgbackrest.stanza_of(pgbackrest_info(settings, repo, extra, step), settings.stanza)
    odd = pgbackrest.odd_labels(found)
    if odd:
        raise Failure("backup_label_invalid", f"pgBackRest lists backup set(s) labelled {', '.join(odd[:3])}, which "
                      "pgBackRest never makes: the repository's backup.info was altered (postgres can write "
                      "repository 1). Nothing was done with them; compare the repository with its offsite copy and "
                      "take a new full backup", step=step)
    return found


def check_repo_reachable(settings: Settings, repo: str) -> dict:
    """Return the stanza when pgBackRest can use *repo*; raise a Failure naming why not."""
    step = f"pgbackrest repo{repo}"
    found = stanza(settings, repo, step=step)
    status = pgbackrest.repo_status(found, repo)
    if pgbackrest.repo_usable(status):
        return found
    if pgbackrest.stanza_missing(status):
        raise Failure("stanza_missing", f"stanza {settings.stanza} missing on repo{repo}: {SETUP_HINT}", step=step)
    message = status.get("message", "")
    explained = explain(message, ["pgbackrest", "info", f"--repo={repo}"], step, hints(settings))
    raise Failure(explained.code, explained.message, step=step, detail=message)


# --- restic -------------------------------------------------------------------------------------

def restic_env(settings: Settings) -> dict[str, str]:
    """Return restic's environment: password file, cache, and the S3 keys from the role's env file."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "RESTIC_PASSWORD_FILE": settings.restic_password_file,
           "RESTIC_CACHE_DIR": os.path.join(settings.state_dir, "cache", "restic")}
    try:
        with open(settings.restic_env_file, encoding="utf-8") as handle:
            env.update(restic.parse_env_file(handle.read()))
    except FileNotFoundError:
        raise Failure("config_missing", f"{settings.restic_env_file} is missing: {SETUP_HINT}", step="restic") from None
    return env


def restic_call(settings: Settings, name: str, args: list[str], *, url: str | None = None, check: bool = True,
                step: str | None = None, timeout: float | None = None,
                confine: str | None = None) -> subprocess.CompletedProcess:
    """Run restic on repository *name* ('local' or 'offsite'), or on an explicit *url*.

    An explicit *url* is a restore view: a copy the site may read but never write, so restic takes no
    lock there (``--no-lock``; only reads are ever run on a view). With *confine* (a folder a lesser
    account owns, read by a backup), no path under it follows a link (``restic.confined_argv``).
    """
    repo = restic.repo_args(url or settings.restic_repos[name], settings.s3_ca_file, settings.restic_s3_options)
    no_lock = ["--no-lock"] if url else []
    argv = ["restic", *repo, *no_lock, *args]
    return run(restic.confined_argv(confine, argv) if confine else argv, env=restic_env(settings), check=check,
               step=step or f"restic {name}", timeout=timeout, hints=hints(settings))


def restic_raw_snapshots(settings: Settings, name: str, url: str | None = None) -> list[dict]:
    """Return ``restic snapshots --json`` of this site's snapshots (raw)."""
    result = restic_call(settings, name, restic.snapshots_args(settings.site_code), url=url,
                         step=f"restic snapshots {name}", timeout=600)
    return json.loads(result.stdout or "null") or []


def restic_snapshots(settings: Settings, name: str, url: str | None = None) -> list[restic.Snapshot]:
    """Return this site's snapshots in repository *name*, oldest first."""
    return restic.parse_snapshots(restic_raw_snapshots(settings, name, url))


def check_restic_reachable(settings: Settings, name: str) -> None:
    """Raise an explained Failure when restic cannot open repository *name*."""
    restic_call(settings, name, ["cat", "config"], step=f"restic {name}", timeout=300)
