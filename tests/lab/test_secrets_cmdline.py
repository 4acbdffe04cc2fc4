"""Issue 22: no secret is ever on a command line, on the site or on the control node.

``ps`` shows every process's argv to every user of the host (``/proc/PID/cmdline`` is world-readable); the
SPSE database password once sat in the ``/bin/sh -c 'PGPASSWORD=... python3 ...'`` line of a become task.
While an install (the postgresql role's login probe and role tasks: test_install.py's second run, which goes
through this module's check) and a full backup (pgBackRest and restic, with the S3 keys and cipher passes) run
through the real CLI, on the site and on the control node, every process's command line is read as the kernel
reports its exec (tests/lab/execwatch.py); no lab secret may appear in any of them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.lab.execwatch import exec_watched
from tests.lab.labkit import SITE, backup_cli, container_of
from tests.lab.test_secrets import lab_secrets


@contextmanager
def argv_sampled(site: str = SITE) -> Iterator[dict]:
    """Every command line started on *site* and on this control node while the body runs (the kernel's exec
    events: tests/lab/execwatch.py); the yielded dict then holds ``site`` and ``control`` (sets) and how many
    exec events were seen and how many processes ended before they were read."""
    found: dict = {}
    with exec_watched() as seen:
        yield found
    found.update(site=seen.argv.get(container_of(site), set()), control=seen.argv.get("control", set()),
                 events=seen.events, gone=seen.gone, overruns=seen.overruns)


def _leaks(secrets: dict[str, str], argvs: set[str]) -> list[tuple[str, str]]:
    return [(name, argv[:300]) for argv in argvs for name, value in secrets.items() if value and value in argv]


def assert_no_secret_on_a_command_line(operation: Callable[[], tuple[int, dict | None, str]],
                                       expect_on_site: str) -> dict | None:
    """Run *operation* (a CLI call that must succeed) while every command line on SITE and on this control node is
    read; fail if a lab secret is on one; return the operation's JSON report. test_install.py runs its second
    install through this (the postgresql role's TCP login probe runs with the real password: the task that once put
    PGPASSWORD on the module's ``sh -c`` line, and every other become task)."""
    secrets = lab_secrets(Path(os.environ["LPSE_OPS_HOME"]))
    assert len(secrets) >= 3, secrets.keys()
    with argv_sampled() as sampled:
        code, report, output = operation()
    assert code == 0, output
    # the watcher saw the operation itself: an empty sample proves nothing; no event was dropped
    assert sampled["events"] > 20 and sampled["overruns"] == 0, {k: v for k, v in sampled.items()
                                                                 if k in ("events", "gone", "overruns")}
    assert any(expect_on_site in argv for argv in sampled["site"]), sorted(sampled["site"])[:50]
    assert any("ansible-playbook" in argv for argv in sampled["control"])
    assert _leaks(secrets, sampled["site"]) == []
    assert _leaks(secrets, sampled["control"]) == []
    return report


def test_backup_puts_no_secret_on_any_command_line(backed_up):
    """A full backup: pgBackRest (cipher pass, S3 keys) and restic (repository password, S3 keys)."""
    assert_no_secret_on_a_command_line(lambda: backup_cli("run", "--type", "full"), expect_on_site="pgbackrest")


def test_the_watcher_names_a_secret_put_on_a_sites_command_line_for_a_moment(installed):
    """The check's own fault, injected: a process on the site that lives 0.3 s with the database password in its
    argv (as the become task once did) is seen, on that site, and named as a leak."""
    secrets = lab_secrets(Path(os.environ["LPSE_OPS_HOME"]))
    name, value = next((n, v) for n, v in secrets.items() if v)
    with argv_sampled() as sampled:
        subprocess.run(["docker", "exec", container_of(SITE), "sh", "-c", 'sleep 0.3; : "$0"', value], check=True,
                       timeout=60)
    assert (name, f'sh -c sleep 0.3; : "$0" {value}'[:300]) in _leaks(secrets, sampled["site"]), sampled["site"]
    # and docker exec's own argv, on this machine, as the control node's
    assert any(value in argv and argv.startswith("docker exec") for argv in sampled["control"])
