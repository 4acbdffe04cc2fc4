"""Running engines: argv with shell=False, optionally as another user through runuser."""

from __future__ import annotations

import subprocess
import sys

from lpse_ops.site.errors import SETUP_HINT, Failure
from lpse_ops.site.explain import Hints, explain, tail


def log(message: str) -> None:
    """Write one progress line to stderr (stdout carries only the JSON result)."""
    print(f"lpse-backup: {message}", file=sys.stderr, flush=True)


def run(argv: list[str], *, user: str | None = None, env: dict | None = None, stdin: str | None = None,
        timeout: float | None = None, check: bool = True, step: str | None = None,
        hints: Hints | None = None) -> subprocess.CompletedProcess:
    """Run *argv* (as *user* when given) and return the finished process, text mode.

    Raises Failure(tool_missing | timeout), and with *check* a Failure explained from the output
    (``explain.explain``) when the command exits non-zero.
    """
    full = (["runuser", "-u", user, "--"] if user else []) + list(argv)
    # A child run as another account gets its own session and no terminal of root's: it could otherwise
    # push keystrokes into root's terminal (TIOCSTI) while root waits for it.
    alone = {"start_new_session": True, **({} if stdin is not None else {"stdin": subprocess.DEVNULL})} \
        if user else {}
    try:
        result = subprocess.run(full, input=stdin, capture_output=True, text=True, env=env, timeout=timeout,
                                cwd="/", check=False, **alone)
    except FileNotFoundError:
        raise Failure("tool_missing", f"{argv[0]} is not installed: {SETUP_HINT}", step=step) from None
    except subprocess.TimeoutExpired:
        raise Failure("timeout", f"`{' '.join(argv[:3])}` did not finish within {timeout} s", step=step) from None
    if check and result.returncode != 0:
        raise failure_of(result, argv, step, hints)
    return result


def failure_of(result: subprocess.CompletedProcess, argv: list[str], step: str | None,
               hints: Hints | None) -> Failure:
    """Return the Failure a failed process stands for, explained from its output."""
    found = explain(result.stdout + "\n" + result.stderr, argv, step, hints)
    return Failure(found.code, found.message, step=step, detail=tail(result.stderr or result.stdout))
