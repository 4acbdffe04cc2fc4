"""The postgresql role keeps the SPSE password off every command line and takes names as data (issue 22).

Real PostgreSQL 15 (this machine's Debian packages): a throwaway cluster on a free port, the role's
``assert`` and ``spse_database`` tasks run by ansible-playbook against localhost (``ansible_connection=local``,
``become_user: postgres`` through ``su``: there is no sudo here), while a thread reads every process's
``/proc/PID/cmdline``. A second run changes nothing; a new password is applied and works; a role or
database name that is not a plain identifier is refused before any SQL.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from lpse_ops import config

PLAYBOOK = config.PROJECT_DIR / "tests" / "fixtures" / "ansible" / "postgresql_spse_database.yml"
ROLE_TASKS = config.PROJECT_DIR / "roles" / "postgresql" / "tasks"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
SOCKET_DIR = Path("/var/run/postgresql")

pytestmark = [
    pytest.mark.clock_free("the role runs in ansible-playbook and PostgreSQL, subprocesses on the real clock"),
    pytest.mark.skipif(not (PG_BIN / "postgres").exists() or not shutil.which("psql") or os.geteuid() != 0,
                       reason="needs PostgreSQL 15 (Debian) and root (to become postgres with su)"),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_postgres(argv: list[str]) -> subprocess.CompletedProcess:
    user = pwd.getpwnam("postgres")

    def drop() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120, preexec_fn=drop,  # noqa: PLW1509
                          cwd="/")


@dataclass
class Cluster:
    port: int
    data_dir: Path

    def sql(self, query: str) -> str:
        done = _as_postgres(["psql", f"--port={self.port}", "--no-psqlrc", "--tuples-only", "--no-align",
                             "--dbname=postgres", f"--command={query}"])
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A PostgreSQL 15 cluster of this module's own: peer for local sockets, scram-sha-256 over TCP (as the
    role's); each test compares what it finds with what was there before it ran."""
    base = Path(tempfile.mkdtemp(prefix="lpse-pg-test-", dir="/tmp"))
    os.chown(base, pwd.getpwnam("postgres").pw_uid, -1)
    data_dir = base / "data"
    port = _free_port()
    done = _as_postgres([str(PG_BIN / "initdb"), "-D", str(data_dir), "--auth-local=peer",
                         "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8"])
    assert done.returncode == 0, done.stderr
    done = _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data_dir), "-w", "-l", str(base / "log"), "-o",
                         f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={SOCKET_DIR}",
                         "start"])
    assert done.returncode == 0, done.stderr + (base / "log").read_text()
    try:
        yield Cluster(port, data_dir)
    finally:
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "stop"])
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class ArgvWatch:
    """Reads every process's command line, over and over, while it runs; keeps those that hold a needle."""

    needles: list[str]
    seen: list[str] = field(default_factory=list)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    argv = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if any(needle in argv for needle in self.needles):
                    self.seen.append(argv)
            self.samples += 1

    def __enter__(self) -> ArgvWatch:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def run_role(tmp_path: Path, cluster: Cluster, **hostvars: object) -> subprocess.CompletedProcess:
    """Run the fixture playbook on localhost against *cluster*; return ansible-playbook's result."""
    # /usr/bin/python3: the postgres user cannot reach this virtualenv (under /root)
    site = {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_become_method": "su", "postgresql_port": cluster.port, "__postgresql_present": True,
            **hostvars}
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"sites": {"hosts": {"localhost": site}}}}}))
    env = {**os.environ, "ANSIBLE_CONFIG": str(config.PROJECT_DIR / "ansible.cfg"),
           "ANSIBLE_ROLES_PATH": str(config.PROJECT_DIR / "roles"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
           "ANSIBLE_REMOTE_TEMP": str(tmp_path / "ansible-remote")}
    return subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory),
                           str(PLAYBOOK)], capture_output=True, text=True, check=False, timeout=300, env=env)


def _recap(done: subprocess.CompletedProcess) -> dict[str, int]:
    line = next(line for line in done.stdout.splitlines() if line.startswith("localhost") and "ok=" in line)
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}


def _login(cluster: Cluster, user: str, password: str) -> subprocess.CompletedProcess:
    return subprocess.run(["psql", "--host=127.0.0.1", f"--port={cluster.port}", f"--username={user}",
                           "--dbname=postgres", "--no-psqlrc", "--no-password", "--tuples-only", "--no-align",
                           "--command=SELECT current_user"], capture_output=True, text=True, check=False,
                          timeout=30, env={**os.environ, "PGPASSWORD": password})


def test_spse_database_password_never_on_a_command_line_and_second_run_changes_nothing(tmp_path, cluster):
    token = secrets.token_hex(12)
    # quotes, a backslash, a colon, a dollar and a psql variable reference: all must arrive as typed
    password = f"pw-{token}-'q\"\\:x$HOME:'spse_user'"
    with ArgvWatch([token]) as watch:
        first = run_role(tmp_path, cluster, postgresql_spse_password=password)
        assert first.returncode == 0, first.stdout + first.stderr
        again = run_role(tmp_path, cluster, postgresql_spse_password=password)  # the login probe runs now
        assert again.returncode == 0, again.stdout + again.stderr
    assert watch.samples > 5, "the watch did not sample while the role ran"
    assert watch.seen == [], f"the password was on a command line: {watch.seen[:3]}"
    assert _login(cluster, "spse", password).stdout.strip() == "spse"
    assert cluster.sql("SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'spse'") == "spse"
    assert _recap(again)["changed"] == 0, again.stdout

    new_password = f"new-{secrets.token_hex(12)}"
    with ArgvWatch([new_password]) as watch:
        changed = run_role(tmp_path, cluster, postgresql_spse_password=new_password)
    assert changed.returncode == 0 and _recap(changed)["changed"] == 1, changed.stdout + changed.stderr
    assert watch.seen == []
    assert _login(cluster, "spse", new_password).returncode == 0
    assert _login(cluster, "spse", password).returncode != 0


EVERY_ROLE_AND_DATABASE = ("SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles UNION ALL "
                           "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database")


@pytest.mark.parametrize("names", [
    {"postgresql_spse_user": 'spse"; DROP DATABASE postgres; --'},
    {"postgresql_spse_database": "spse'; DROP ROLE postgres; --"},
    {"postgresql_spse_user": "Spse"},
    {"postgresql_spse_database": "x" * 64},
    {"postgresql_spse_user": "spse\n"},
])
def test_spse_database_name_not_a_plain_identifier_refused_before_any_sql(tmp_path, cluster, names):
    before = cluster.sql(EVERY_ROLE_AND_DATABASE)
    done = run_role(tmp_path, cluster, postgresql_spse_password="a-good-password", **names)
    assert done.returncode != 0
    assert "must be plain PostgreSQL identifiers" in done.stdout, done.stdout
    assert cluster.sql(EVERY_ROLE_AND_DATABASE) == before


def test_spse_database_password_with_a_newline_refused(tmp_path, cluster):
    token = secrets.token_hex(8)
    done = run_role(tmp_path, cluster, postgresql_spse_password=f"{token}\nsecond line")
    assert done.returncode != 0 and "postgresql_spse_password" in done.stdout, done.stdout
    assert token not in done.stdout + done.stderr


def _tasks(path: Path) -> Iterator[dict]:
    for task in yaml.safe_load(path.read_text()) or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from (inner for inner in task.get(key, []))


SECRET = r"password|secret|cipher_pass|_key\b|passphrase|token"
SECRET_REFERENCE = re.compile(r"\{\{[^}]*(" + SECRET + r")[^}]*\}\}", re.IGNORECASE)
"""A template that reads a secret variable (postgresql_spse_password, backup_s3_secret_key, ...)."""
SECRET_NAME = re.compile(SECRET, re.IGNORECASE)


def secrets_on_command_lines(path: Path) -> list[str]:
    """The tasks of *path* whose ``environment:`` names or reads a secret (a ``*_FILE`` path is fine), or whose
    command/shell argv reads one (pure: parses the YAML)."""
    found = []
    for task in _tasks(path):
        if not isinstance(task, dict):
            continue
        environment = task.get("environment")
        if isinstance(environment, dict):
            found += [f"{task.get('name')}: environment {key}" for key, value in environment.items()
                      if (SECRET_NAME.search(str(key)) and not str(key).endswith("_FILE"))
                      or SECRET_REFERENCE.search(str(value))]
        elif environment and SECRET_REFERENCE.search(str(environment)):
            found.append(f"{task.get('name')}: environment {environment}")
        for module in ("ansible.builtin.command", "ansible.builtin.shell", "command", "shell"):
            args = task.get(module)
            line = args.get("argv", args.get("cmd")) if isinstance(args, dict) else args
            if line is not None and SECRET_REFERENCE.search(yaml.safe_dump(line)):
                found.append(f"{task.get('name')}: {module} {line}")
    return found


@pytest.mark.parametrize("path", sorted((config.PROJECT_DIR / "roles").glob("*/tasks/*.yml"))
                         + sorted((config.PROJECT_DIR / "playbooks").rglob("*.yml")),
                         ids=lambda path: str(path.relative_to(config.PROJECT_DIR)))
def test_no_task_puts_a_secret_in_environment_or_argv(path):
    """Ansible writes ``environment:`` into the remote ``/bin/sh -c`` command line (and sudo logs it); a
    module's argv is the process's argv: neither may name or read a secret variable."""
    assert secrets_on_command_lines(path) == []


def test_secret_check_finds_the_password_in_environment_as_the_role_had_it(tmp_path):
    before = tmp_path / "spse_database.yml"
    before.write_text(yaml.safe_dump([
        {"name": "Try the SPSE password over TCP", "ansible.builtin.command": {"argv": ["psql", "--command=SELECT 1"]},
         "environment": {"PGPASSWORD": "{{ postgresql_spse_password }}", "PGCONNECT_TIMEOUT": "5"}},
        {"name": "Set it", "ansible.builtin.command": {"argv": ["psql", "-c", "ALTER ROLE x PASSWORD "
                                                                            "'{{ postgresql_spse_password }}'"]}},
    ]))
    assert secrets_on_command_lines(before) == [
        "Try the SPSE password over TCP: environment PGPASSWORD",
        "Set it: ansible.builtin.command ['psql', '-c', \"ALTER ROLE x PASSWORD '{{ postgresql_spse_password }}'\"]"]
