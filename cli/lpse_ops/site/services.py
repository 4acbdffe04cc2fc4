"""Starting and stopping the site's systemd units without ever waiting forever.

Debian's ``postgresql@.service`` has ``TimeoutStartSec=0``: when PostgreSQL refuses to start (for example
a recovery that cannot follow its timeline), ``systemctl start`` can stay in "activating" with no
process left, indefinitely. ``start`` therefore queues the job and watches the unit: active is done,
failed or "activating with no process" is a failure that names the unit, and a bound caps the wait.
"""

from __future__ import annotations

import time

from lpse_ops.site.errors import Failure
from lpse_ops.site.proc import run

POLL_S = 1.0


def unit_state(unit: str) -> dict[str, str]:
    """Return the unit's ActiveState, SubState, MainPID and ControlPID (``systemctl show``)."""
    done = run(["systemctl", "show", unit, "-p", "ActiveState,SubState,MainPID,ControlPID"], check=False,
               step=f"inspect {unit}", timeout=30)
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def dead_start(state: dict[str, str]) -> bool:
    """True when a unit is still "activating" although neither its main nor its control process runs."""
    return (state.get("ActiveState") == "activating" and state.get("MainPID", "0") == "0"
            and state.get("ControlPID", "0") == "0")


def start(unit: str, step: str, timeout: float = 900) -> None:
    """Start *unit* and wait (at most *timeout* seconds) until it is active.

    Raises Failure(service_failed) when it fails, or hangs with no process, or takes too long; the
    queued start job is cancelled (``systemctl stop``) so nothing is left waiting.
    """
    run(["systemctl", "start", "--no-block", unit], step=step, timeout=60)
    deadline = time.monotonic() + timeout
    while True:
        state = unit_state(unit)
        if state.get("ActiveState") == "active":
            return
        why = ("failed" if state.get("ActiveState") == "failed" else
               "stopped starting with no process left" if dead_start(state) else
               f"was not active after {timeout:.0f} s" if time.monotonic() > deadline else None)
        if why:
            run(["systemctl", "stop", unit], check=False, step=step, timeout=120)
            logged = log_tail(unit)
            reason = last_complaint(logged)
            raise Failure("service_failed", f"{unit} {why}" + (f": {reason}" if reason else "") +
                          f" (read `journalctl -u {unit}`)", step=step, detail=logged[-2000:])
        time.sleep(POLL_S)


def log_tail(unit: str, lines: int = 40) -> str:
    """The unit's last *lines* journal lines (best effort: empty when the journal cannot be read)."""
    done = run(["journalctl", "-u", unit, "-n", str(lines), "--no-pager", "-o", "cat"], check=False,
               step=f"read the journal of {unit}", timeout=30)
    return done.stdout.strip() if done.returncode == 0 else ""


COMPLAINTS = ("PANIC:", "FATAL:", "ERROR:", "error:", "failed")


def last_complaint(logged: str) -> str:
    """The last line of *logged* that states why a start failed (PostgreSQL's FATAL, say), or ''.

    Pure. Debian's pg_ctlcluster copies the server log's tail into the journal when the server will not
    start, so "recovery ended before configured recovery target was reached" lands here.
    """
    for marker in COMPLAINTS:
        found = [line.strip() for line in logged.splitlines() if marker in line]
        if found:
            return found[-1][:300]
    return ""
