"""One lock so backups, verifies and restores never overlap on a site."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator

from lpse_ops.site.errors import Failure

POLL_S = 5


@contextlib.contextmanager
def exclusive(path: str, wait_s: float) -> Iterator[None]:
    """Hold an exclusive flock on *path* for the block; wait up to *wait_s* seconds for it.

    Raises Failure(lock_busy) when another run still holds it after that.
    """
    handle = open(path, "a+")  # noqa: SIM115 (held for the whole block)
    try:
        _acquire(handle, path, wait_s)
        yield
    finally:
        handle.close()


def _acquire(handle, path: str, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise Failure("lock_busy", f"another lpse-backup run still holds {path} after {wait_s:.0f} s: "
                              "wait for it (systemctl list-units 'lpse-backup*')", step="lock") from None
            time.sleep(POLL_S)
