"""A throwaway PostgreSQL server for the state store's integration tests.

``pg_server`` (once per session) runs ``initdb`` into a fresh temporary folder with Debian's
binaries (``/usr/lib/postgresql/<major>/bin``), starts it with ``pg_ctl`` on 127.0.0.1 and a free
port (plus a Unix socket in the same folder), and removes everything at the end. It never touches a
system cluster (Debian's ``main`` on 5432): its own port, socket folder and data folder.
``initdb`` refuses to run as root, so as root the server runs as the ``postgres`` system user (or
``nobody``). TCP logins need a password (scram-sha-256); the superuser logs in over the socket.

``pg_url`` gives each test an empty database owned by ``lpse_ops``, a role that is NOT a superuser
and may not create databases or roles: what a DBA would hand to a team of operators.

The fixtures skip only when the PostgreSQL binaries or the psycopg driver are missing;
``scripts/setup.sh`` installs both, so in CI they never skip.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROLE = "lpse_ops"
ROLE_PASSWORD = "operator-s3cret"  # a throwaway test server's password
START_TIMEOUT_S = 30


def _pg_bindir() -> Path | None:
    override = os.environ.get("LPSE_OPS_TEST_PG_BINDIR")
    candidates = [Path(override)] if override else sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda path: int(path.parent.name)
        if path.parent.name.isdigit() else 0, reverse=True)
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


def _run_as() -> str | None:
    """The system user the server runs as: none (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    pytest.skip("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL as")
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PgServer:
    """A running throwaway PostgreSQL server."""

    bindir: Path
    root: Path
    port: int
    user: str | None
    _counter: itertools.count

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def role_url(self, database: str, password: str = ROLE_PASSWORD) -> str:
        """``postgresql://`` URL of *database* as the lpse-ops role over TCP (password login)."""
        return f"postgresql://{ROLE}:{password}@127.0.0.1:{self.port}/{database}"

    def superuser_sql(self, statement: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(host=str(self.socket_dir), port=self.port, user="postgres", dbname=database,
                             autocommit=True) as connection:
            connection.execute(statement)

    def new_database(self) -> str:
        name = f"lpse_state_{next(self._counter)}"
        self.superuser_sql(f"CREATE DATABASE {name} OWNER {ROLE}")
        return name


def _command(args: list[str], user: str | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, user=user, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin "
                    "(Debian: apt-get install postgresql; scripts/setup.sh installs it)")
    pytest.importorskip("psycopg", reason="the psycopg driver is missing: pip install 'psycopg[binary]'")
    user = _run_as()
    # Not under pytest's tmp_path: its folders are 0700 root, which the postgres user cannot traverse.
    root = Path(tempfile.mkdtemp(prefix="lpse-pg-"))
    data = root / "data"
    (root / "sock").mkdir()
    pwfile = root / "pwfile"
    pwfile.write_text("superuser-pw\n")
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (root, root / "sock", pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    started = False
    try:
        init = _command([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}",
                         "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                         "--no-sync"], user, root)
        assert init.returncode == 0, f"initdb failed:\n{init.stdout}\n{init.stderr}"
        # A free port can be taken between probing and binding: try a few.
        for _attempt in range(3):
            port = _free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {root / 'sock'} -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
            # -w waits (bounded by -t) until the server accepts connections: no fixed sleeps.
            start = _command([str(bindir / "pg_ctl"), "start", "-w", "-t", str(START_TIMEOUT_S), "-D", str(data),
                              "-l", str(root / "server.log"), "-o", options], user, root)
            if start.returncode == 0:
                started = True
                break
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        assert started, f"pg_ctl start failed:\n{start.stdout}\n{start.stderr}\n{log}"
        server = PgServer(bindir=bindir, root=root, port=port, user=user, _counter=itertools.count(1))
        server.superuser_sql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE_PASSWORD}' "
                             "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION")
        yield server
    finally:
        if started:
            _command([str(bindir / "pg_ctl"), "stop", "-m", "immediate", "-w", "-D", str(data)], user, root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh, empty database owned by the non-superuser lpse-ops role; its ``postgresql://`` URL."""
    return pg_server.role_url(pg_server.new_database())


@pytest.fixture(autouse=True)
def lpse_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Like tests/unit: never read or write the operator's real LPSE_OPS_HOME."""
    home = tmp_path / "home"
    monkeypatch.setenv("LPSE_OPS_HOME", str(home))
    monkeypatch.delenv("LPSE_OPS_STATE_URL", raising=False)
    monkeypatch.setenv("LPSE_OPS_ACTOR", "tester@control")
    return home
