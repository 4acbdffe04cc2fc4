"""The scratch PostgreSQL instance a verification restores into: configure, start, wait, remove."""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import time
from dataclasses import dataclass

from lpse_ops.site import postgres, safefs
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

    @property
    def conf_dir(self) -> str:
        """The instance's configuration: root's folder (in root's scratch folder), never the data dir."""
        return os.path.join(self.root, "conf")


def settings_from_control(control: str) -> str:
    """Return postgresql.conf lines for the limits ``pg_controldata`` printed (pure)."""
    lines = ""
    for key, name in CONTROL_SETTINGS.items():
        match = re.search(rf"^{key} setting:\s+(\d+)", control, re.M)
        if match:
            lines += f"{name} = {match.group(1)}\n"
    return lines


def scratch_conf(port: int, socket_dir: str, from_control: str, conf_dir: str | None = None) -> str:
    """Return the scratch instance's postgresql.conf: socket only, no archiving, the primary's limits; with
    *conf_dir*, pg_hba.conf and pg_ident.conf are read from there, not from the data dir."""
    files = (f"hba_file = '{conf_dir}/pg_hba.conf'\nident_file = '{conf_dir}/pg_ident.conf'\n" if conf_dir else "")
    return (f"port = {port}\nlisten_addresses = ''\nunix_socket_directories = '{socket_dir}'\n"
            "archive_mode = off\nshared_buffers = 64MB\nwal_level = replica\nlogging_collector = off\n"
            + files + from_control)


def configure(settings: Settings, scratch: Scratch) -> None:
    """Write the scratch instance's configuration into root's ``conf`` folder, never into the data dir.

    The restored data dir is postgres's: any name there may be a link postgres planted (in the live data
    dir, so in the backup, or during the restore), and writing pg_hba.conf through it as root rewrote
    and chowned whatever it pointed at. So the files are root's, 0644, created fresh (O_EXCL, O_NOFOLLOW)
    in a folder only root can write, and ``start`` hands them to PostgreSQL by path (``server_options``).
    """
    control = run([postgres.pg_bin(settings, "pg_controldata"), scratch.pgdata], user="postgres", check=False).stdout
    files = {"postgresql.conf": scratch_conf(scratch.port, scratch.socket_dir, settings_from_control(control),
                                             scratch.conf_dir),
             "pg_hba.conf": "local all postgres peer\n", "pg_ident.conf": ""}
    if os.path.lexists(scratch.conf_dir):
        safefs.remove_tree(scratch.conf_dir)
    os.mkdir(scratch.conf_dir, 0o755)
    folder = os.open(scratch.conf_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if os.fstat(folder).st_uid != 0:
            raise OSError(f"{scratch.conf_dir} is not root's: refusing to write the scratch configuration there")
        os.fchmod(folder, 0o755)
        for name, text in files.items():
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=folder)
            with open(fd, "w", encoding="utf-8") as handle:
                os.fchmod(fd, 0o644)
                handle.write(text)
    finally:
        os.close(folder)


def server_options(scratch: Scratch) -> list[str]:
    """PostgreSQL's own options for the scratch instance (``pg_ctl --options``): its configuration file in
    root's folder, and, over anything the restored data dir's postgresql.auto.conf says, its isolation:
    its own port and socket only, no archiving into the site's repositories."""
    settings = {"config_file": f"{scratch.conf_dir}/postgresql.conf", "port": str(scratch.port),
                "listen_addresses": "", "unix_socket_directories": scratch.socket_dir, "archive_mode": "off"}
    return [f"-c {name}={shlex.quote(value)}" for name, value in settings.items()]


def make_dirs(scratch: Scratch) -> None:
    """Create the data dir (0700) and the socket dir, owned by postgres."""
    os.makedirs(scratch.pgdata, mode=0o700)
    os.makedirs(scratch.socket_dir, mode=0o755, exist_ok=True)
    for path in (scratch.pgdata, scratch.socket_dir):
        shutil.chown(path, "postgres", "postgres")


def start(settings: Settings, scratch: Scratch) -> tuple[bool, str | None]:
    """Start the instance; return (True, None) or (False, the last lines of its log)."""
    logfile = os.path.join(scratch.root, "postgresql.log")
    account = pwd.getpwnam("postgres")
    fd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchown(fd, account.pw_uid, account.pw_gid)
    finally:
        os.close(fd)
    options = f"--options={' '.join(server_options(scratch))}"
    out = run([postgres.pg_bin(settings, "pg_ctl"), "--pgdata", scratch.pgdata, "--log", logfile, "--wait",
               "--timeout=3600", options, "start"], user="postgres", check=False, step="scratch start", timeout=3700)
    if out.returncode == 0:
        return True, None
    return False, tail(log_tail(logfile), 8)


def log_tail(logfile: str, limit: int = 64 * 1024) -> str:
    """The last *limit* bytes of the instance's log (postgres writes it: never read whole, never followed)."""
    fd = os.open(logfile, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as handle:
        size = os.fstat(fd).st_size
        handle.seek(max(0, size - limit))
        return handle.read(limit).decode("utf-8", errors="replace")


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
    safefs.remove_tree(scratch.root)  # restored documents are spse's: any depth, any links
