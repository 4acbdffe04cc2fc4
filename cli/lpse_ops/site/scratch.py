"""The scratch PostgreSQL instance a verification restores into: configure, start, wait, remove."""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass

from lpse_ops.site import postgres
from lpse_ops.site.explain import tail
from lpse_ops.site.proc import run
from lpse_ops.site.settings import Settings

# Recovery refuses settings lower than the primary's: they come from the restored control file.
CONTROL_SETTINGS = {"max_connections": "max_connections", "max_worker_processes": "max_worker_processes",
                    "max_wal_senders": "max_wal_senders", "max_prepared_xacts": "max_prepared_transactions",
                    "max_locks_per_xact": "max_locks_per_transaction"}


@dataclass(frozen=True)
class Scratch:
    """Where the scratch instance and the restored files live."""

    root: str
    port: int

    @classmethod
    def of(cls, settings: Settings) -> Scratch:
        return cls(os.path.join(settings.state_dir, "scratch"), settings.scratch_port)

    @property
    def pgdata(self) -> str:
        return os.path.join(self.root, "pgdata")

    @property
    def files(self) -> str:
        return os.path.join(self.root, "files")

    @property
    def socket_dir(self) -> str:
        return os.path.join(self.root, "run")


def settings_from_control(control: str) -> str:
    """Return postgresql.conf lines for the limits ``pg_controldata`` printed (pure)."""
    lines = ""
    for key, name in CONTROL_SETTINGS.items():
        match = re.search(rf"^{key} setting:\s+(\d+)", control, re.M)
        if match:
            lines += f"{name} = {match.group(1)}\n"
    return lines


def scratch_conf(port: int, socket_dir: str, from_control: str) -> str:
    """Return the scratch instance's postgresql.conf: socket only, no archiving, the primary's limits."""
    return (f"port = {port}\nlisten_addresses = ''\nunix_socket_directories = '{socket_dir}'\n"
            "archive_mode = off\nshared_buffers = 64MB\nwal_level = replica\nlogging_collector = off\n"
            + from_control)


def configure(settings: Settings, scratch: Scratch) -> None:
    """Give the restored data dir (Debian keeps the config in /etc) a minimal, isolated configuration."""
    control = run([postgres.pg_bin(settings, "pg_controldata"), scratch.pgdata], user="postgres", check=False).stdout
    files = {"postgresql.conf": scratch_conf(scratch.port, scratch.socket_dir, settings_from_control(control)),
             "pg_hba.conf": "local all postgres peer\n", "pg_ident.conf": ""}
    for name, text in files.items():
        path = os.path.join(scratch.pgdata, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        shutil.chown(path, "postgres", "postgres")


def make_dirs(scratch: Scratch) -> None:
    """Create the data dir (0700) and the socket dir, owned by postgres."""
    os.makedirs(scratch.pgdata, mode=0o700)
    os.makedirs(scratch.socket_dir, mode=0o755, exist_ok=True)
    for path in (scratch.pgdata, scratch.socket_dir):
        shutil.chown(path, "postgres", "postgres")


def start(settings: Settings, scratch: Scratch) -> tuple[bool, str | None]:
    """Start the instance; return (True, None) or (False, the last lines of its log)."""
    logfile = os.path.join(scratch.root, "postgresql.log")
    with open(logfile, "a", encoding="utf-8"):
        pass
    shutil.chown(logfile, "postgres", "postgres")
    out = run([postgres.pg_bin(settings, "pg_ctl"), "--pgdata", scratch.pgdata, "--log", logfile, "--wait",
               "--timeout=3600", "start"], user="postgres", check=False, step="scratch start", timeout=3700)
    if out.returncode == 0:
        return True, None
    with open(logfile, encoding="utf-8", errors="replace") as handle:
        return False, tail(handle.read(), 8)


def wait_promoted(settings: Settings, scratch: Scratch, timeout: float = 3600) -> bool:
    """Wait until the instance has finished recovery and promoted; False when it does not in *timeout*."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = postgres.psql(settings, "SELECT pg_is_in_recovery();", database="postgres", port=scratch.port,
                              host=scratch.socket_dir, check=False)
        if lines and lines[0].strip() == "f":
            return True
        time.sleep(1)
    return False


def remove(settings: Settings, scratch: Scratch) -> None:
    """Stop the instance if it runs and remove the scratch folder."""
    if os.path.exists(os.path.join(scratch.pgdata, "postmaster.pid")):
        run([postgres.pg_bin(settings, "pg_ctl"), "--pgdata", scratch.pgdata, "--mode=immediate", "--wait", "stop"],
            user="postgres", check=False, timeout=120)
    if os.path.isdir(scratch.root):
        shutil.rmtree(scratch.root)
