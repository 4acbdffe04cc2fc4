"""A real SMTP server for the lab and the tests: aiosmtpd on 127.0.0.1, delivering into a Maildir.

``start(directory, port)`` runs ``python -m lpse_ops.lab.smtp serve ...`` as a background process
in its own session (it outlives the CLI call that started it), waits until it accepts connections,
and writes ``smtp.json`` (host, port, maildir, TLS CA) beside its pid file, log and ``maildir/``.
``stop(directory)`` ends that process by the id in its pid file (after checking the id is still
this server's). ``messages(maildir)`` reads what was delivered, each message exactly as received
with ``Return-Path`` and ``X-RcptTo`` (the envelope) prepended and local line ends, as a delivery agent does.

With a certificate and key the server offers STARTTLS (the client must verify it against the lab
CA); with a credentials file it accepts AUTH PLAIN/LOGIN after STARTTLS. Addresses given with
``refuse`` are rejected at RCPT TO (550), to test a refused recipient. Used by the lab and the
tests only, never by an action a real fleet runs.
"""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import json
import mailbox
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from pathlib import Path

HOST = "127.0.0.1"
MODULE = "lpse_ops.lab.smtp"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


class SmtpLabError(Exception):
    """The lab's SMTP server cannot be started or stopped as asked; the message says what to do."""


@dataclass
class SmtpServerInfo:
    """A running lab SMTP server: where it listens, where it delivers, its process and TLS CA."""

    host: str
    port: int
    maildir: str
    pid: int
    log: str
    ca_cert: str | None = None
    starttls: bool = False
    refuse: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _paths(directory: Path) -> tuple[Path, Path, Path, Path]:
    return directory / "smtp.pid", directory / "smtp.log", directory / "maildir", directory / "smtp.json"


def _alive(pid: int) -> bool:
    """Return True when *pid* runs (a zombie child is reaped and counts as gone)."""
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _is_ours(pid: int, directory: Path) -> bool:
    """Return True when *pid* is this module's server for *directory* (not a reused process id)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return MODULE.encode() in argv and str(directory.resolve()).encode() in argv


def running(directory: Path) -> SmtpServerInfo | None:
    """Return the server started for *directory* when it still runs, else None."""
    pid_file, _, _, settings_file = _paths(directory)
    try:
        pid = int(pid_file.read_text().strip())
        info = SmtpServerInfo(**json.loads(settings_file.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return info if info.pid == pid and _alive(pid) and _is_ours(pid, directory) else None


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as connection:
            return connection.recv(3) == b"220"
    except OSError:
        return False


def port_free(port: int, host: str = HOST) -> bool:
    """Return True when nothing listens on *host*:*port*."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    """Return a port on *host* that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def start(directory: Path, port: int | None = None, *, tls_cert: Path | None = None, tls_key: Path | None = None,
          ca_cert: Path | None = None, refuse: tuple[str, ...] = (), credentials: dict | None = None,
          timeout_s: float = START_TIMEOUT_S) -> SmtpServerInfo:
    """Start the SMTP server for *directory* on 127.0.0.1:*port* (a free one when None) and return it.

    Idempotent: a server of *directory* already running with the same port and TLS is returned as
    it is; one with other settings is stopped and replaced. *credentials* ({"user", "password"})
    makes it accept a login (kept in a 0600 file, never on the command line). Raises SmtpLabError
    when aiosmtpd is missing, the port is taken by another program, or the server does not come up
    within *timeout_s* (with the end of its log).
    """
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    pid_file, log_file, maildir, settings_file = _paths(directory)
    current = running(directory)
    if current and (port is None or current.port == port) and current.starttls == bool(tls_cert) \
            and sorted(current.refuse) == sorted(refuse) and not credentials:
        return current
    if current:
        stop(directory)
    try:
        import aiosmtpd  # noqa: F401  (only to fail early with a clear message)
    except ImportError as error:
        raise SmtpLabError("the lab's SMTP server needs aiosmtpd: pip install -e '.[dev]' "
                           "(or pip install aiosmtpd) in the venv") from error
    port = port or free_port()
    if not port_free(port):
        raise SmtpLabError(f"port {port} on 127.0.0.1 is already in use by another program: stop it, "
                           "or choose another port (the lab uses --port-base + 99)")
    mailbox.Maildir(str(maildir), create=True)
    argv = [sys.executable, "-m", MODULE, "serve", "--directory", str(directory), "--host", HOST,
            "--port", str(port)]
    if tls_cert and tls_key:
        argv += ["--tls-cert", str(tls_cert), "--tls-key", str(tls_key)]
    for address in refuse:
        argv += ["--refuse", address]
    credentials_file = directory / "smtp-login.json"
    credentials_file.unlink(missing_ok=True)
    if credentials:
        credentials_file.touch(mode=0o600)
        credentials_file.write_text(json.dumps({"user": credentials["user"], "password": credentials["password"]}))
        argv += ["--credentials-file", str(credentials_file)]
    pid_file.unlink(missing_ok=True)
    with open(log_file, "ab") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, close_fds=True)
    info = SmtpServerInfo(host=HOST, port=port, maildir=str(maildir), pid=process.pid, log=str(log_file),
                          ca_cert=str(ca_cert) if ca_cert else None, starttls=bool(tls_cert), refuse=list(refuse))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if pid_file.exists() and _accepts(HOST, port):
            settings_file.write_text(json.dumps(info.as_dict(), indent=2))
            return info
        time.sleep(0.05)
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT_S)
    tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-10:])
    raise SmtpLabError(f"the lab's SMTP server did not start on 127.0.0.1:{port} within {timeout_s:.0f} s; "
                       f"its log ({log_file}) ends with:\n{tail}")


def stop(directory: Path) -> bool:
    """Stop the SMTP server of *directory* by its recorded process id; return True when one was stopped."""
    directory = directory.resolve()
    pid_file, _, _, settings_file = _paths(directory)
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    stopped = False
    if _alive(pid) and _is_ours(pid, directory):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        stopped = True
    pid_file.unlink(missing_ok=True)
    settings_file.unlink(missing_ok=True)
    (directory / "smtp-login.json").unlink(missing_ok=True)
    return stopped


def messages(maildir: str | Path) -> list[EmailMessage]:
    """Return every message delivered into *maildir*, oldest first, parsed with the modern email policy."""
    box = mailbox.Maildir(str(maildir), factory=None, create=False)
    found = []
    for key in box.iterkeys():
        found.append((box.get_message(key).get_date(), key, box.get_bytes(key)))  # get_date: delivery time
    return [email.message_from_bytes(raw, policy=email.policy.default) for _, _, raw in sorted(found)]


# --- the server process ----------------------------------------------------------------------------

class MaildirHandler:
    """aiosmtpd handler: refuse the listed recipients at RCPT, deliver each message as received into a Maildir."""

    def __init__(self, maildir: Path, refuse: list[str]) -> None:
        self.maildir = mailbox.Maildir(str(maildir), create=True)
        self.refuse = {address.lower() for address in refuse}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd's hook name
        if address.lower() in self.refuse:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in virtual mailbox table"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        raw = envelope.original_content or envelope.content
        trace = (f"Return-Path: <{envelope.mail_from}>\nX-RcptTo: {', '.join(envelope.rcpt_tos)}\n"
                 f"X-Peer: {session.peer[0]}\n").encode()
        self.maildir.add(trace + raw.replace(b"\r\n", b"\n"))  # stored with local line ends, as an MDA does
        return "250 Message accepted for delivery"


def _authenticator(credentials_file: Path):
    from aiosmtpd.smtp import AuthResult, LoginPassword

    wanted = json.loads(credentials_file.read_text())

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == wanted["user"]
              and auth_data.password.decode() == wanted["password"])
        return AuthResult(success=ok, handled=False)

    return authenticate


def serve(arguments: argparse.Namespace) -> None:
    """Run the server until SIGTERM (the process ``start`` launches)."""
    from aiosmtpd.controller import Controller

    directory = Path(arguments.directory)
    pid_file, _, maildir, _ = _paths(directory)
    tls_context = None
    if arguments.tls_cert:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(arguments.tls_cert, arguments.tls_key)
    options: dict = {"tls_context": tls_context, "require_starttls": False, "ready_timeout": 10,
                     "server_hostname": "smtp.lab.lpse.test"}
    if arguments.credentials_file:
        options.update(authenticator=_authenticator(Path(arguments.credentials_file)), auth_required=False,
                       auth_require_tls=True)
    controller = Controller(MaildirHandler(maildir, arguments.refuse), hostname=arguments.host,
                            port=arguments.port, **options)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    controller.start()
    pid_file.write_text(f"{os.getpid()}\n")
    print(f"SMTP server on {arguments.host}:{arguments.port} delivering into {maildir}", flush=True)
    try:
        while not stopping.wait(1):
            pass
    finally:
        controller.stop()
        print("SMTP server stopped", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description="The lab's SMTP server (aiosmtpd).")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="Run the server in the foreground until SIGTERM.")
    run.add_argument("--directory", required=True, help="Folder of the pid file and maildir/.")
    run.add_argument("--host", default=HOST)
    run.add_argument("--port", type=int, required=True)
    run.add_argument("--tls-cert")
    run.add_argument("--tls-key")
    run.add_argument("--refuse", action="append", default=[], help="Reject this recipient at RCPT TO (repeatable).")
    run.add_argument("--credentials-file", help="JSON {user, password}: accept this login after STARTTLS.")
    arguments = parser.parse_args(argv)
    serve(arguments)


if __name__ == "__main__":
    main()
