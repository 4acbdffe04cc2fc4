"""Issue 22: no secret is ever on a command line, on the site or on the control node.

``ps`` shows every process's argv to every user of the host (``/proc/PID/cmdline`` is world-readable); the
SPSE database password once sat in the ``/bin/sh -c 'PGPASSWORD=... python3 ...'`` line of a become task.
While an install (the postgresql role's login probe and role tasks) and a full backup (pgBackRest and restic,
with the S3 keys and cipher passes) run through the real CLI, a sampler on the site and a thread on the
control node read every process's command line over and over; no lab secret may appear in any of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from tests.lab.labkit import SITE, backup_cli, container_of, run_cli
from tests.lab.test_secrets import lab_secrets

# Runs on the site (python3 is there for Ansible): collects every distinct command line until the stop file
# appears, then prints them as one JSON list with how many passes it made over /proc.
SITE_SAMPLER = r"""
import json, os, sys
stop, seen, passes = sys.argv[1], set(), 0
while not os.path.exists(stop):
    for pid in os.listdir('/proc'):
        if pid.isdigit():
            try:
                with open(f'/proc/{pid}/cmdline', 'rb') as handle:
                    seen.add(handle.read().replace(b'\0', b' ').decode(errors='replace').strip())
            except OSError:
                pass
    passes += 1
os.remove(stop)
print(json.dumps({'passes': passes, 'argv': sorted(seen)}))
"""


def _control_argvs(stop: threading.Event, seen: set[str], passes: list[int]) -> None:
    while not stop.is_set():
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with suppress(OSError):
                    seen.add(Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        passes[0] += 1


@contextmanager
def argv_sampled(site: str = SITE) -> Iterator[dict]:
    """Sample every command line on *site* (a sampler process there) and on this control node (a thread)
    while the body runs; the yielded dict then holds ``site`` and ``control`` (sets) and their pass counts."""
    stop_file = "/run/lpse-argv-sampler.stop"
    found: dict = {}
    site_process = subprocess.Popen(["docker", "exec", container_of(site), "python3", "-c", SITE_SAMPLER,
                                     stop_file], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop, control, control_passes = threading.Event(), set(), [0]
    thread = threading.Thread(target=_control_argvs, args=(stop, control, control_passes), daemon=True)
    thread.start()
    try:
        yield found
    finally:
        stop.set()
        thread.join()
        subprocess.run(["docker", "exec", container_of(site), "touch", stop_file], check=True, timeout=60)
        out, err = site_process.communicate(timeout=120)
        assert site_process.returncode == 0, err
        sampled = json.loads(out)
        found.update(site=set(sampled["argv"]), site_passes=sampled["passes"], control=control,
                     control_passes=control_passes[0])


def _leaks(secrets: dict[str, str], argvs: set[str]) -> list[tuple[str, str]]:
    return [(name, argv[:300]) for argv in argvs for name, value in secrets.items() if value and value in argv]


def _assert_no_secret_on_a_command_line(operation: Callable[[], tuple[int, dict | None, str]],
                                        expect_on_site: str) -> None:
    secrets = lab_secrets(Path(os.environ["LPSE_OPS_HOME"]))
    assert len(secrets) >= 3, secrets.keys()
    with argv_sampled() as sampled:
        code, _report, output = operation()
    assert code == 0, output
    # the samplers saw the operation itself, many times over: an empty sample proves nothing
    assert sampled["site_passes"] > 20 and sampled["control_passes"] > 20, sampled
    assert any(expect_on_site in argv for argv in sampled["site"]), sorted(sampled["site"])[:50]
    assert any("ansible-playbook" in argv for argv in sampled["control"])
    assert _leaks(secrets, sampled["site"]) == []
    assert _leaks(secrets, sampled["control"]) == []


def test_install_puts_no_secret_on_any_command_line(installed, release):
    """A second install of the sampled site (the sampler watches that one; the other sites run the same
    tasks): the postgresql role's TCP login probe runs with the real password (the task that once put
    PGPASSWORD on the module's ``sh -c`` line), and every other become task."""
    _assert_no_secret_on_a_command_line(
        lambda: run_cli("install", str(release["bundles"]["1.0"]), "--trusted-keys", str(release["trusted"]),
                        "--limit", SITE, "--json"),
        expect_on_site="BECOME-SUCCESS")  # the sudo /bin/sh -c line of a become task (pipelining)


def test_backup_puts_no_secret_on_any_command_line(backed_up):
    """A full backup: pgBackRest (cipher pass, S3 keys) and restic (repository password, S3 keys)."""
    _assert_no_secret_on_a_command_line(lambda: backup_cli("run", "--type", "full"), expect_on_site="pgbackrest")
