"""The fleet probe's transport: one SSH connection and one read-only remote command per site, no Ansible.

:func:`run_probes` (and :class:`KeptProbes`, connections kept between rounds): asyncssh, every host in
parallel under a semaphore, each bounded by a timeout, every failure classified (``unreachable``,
``auth_failed``, ``host_key_mismatch``, ``host_key_unknown``, ``timeout``, ``ssh_error``); every host asked
for is in the answer. The command and its parser are :mod:`lpse_ops.backends.probe_output`, the site facts
:mod:`lpse_ops.site_facts`, the fault rules ``lpse_ops.actions.probe_rules`` (judgement stays above the
backends).

Connection settings come from the inventory's host variables (``ansible_host``, ``ansible_port``,
``ansible_user``, ``ansible_ssh_private_key_file`` and the ``UserKnownHostsFile`` and
``StrictHostKeyChecking`` options of ``ansible_ssh_common_args``/``ansible_ssh_extra_args``). A
known_hosts file and a private key are read once per process, however many hosts use them. The key
exchange prefers curve25519-sha256: OpenSSH's default post-quantum exchange costs several times its
CPU on both ends.
"""

from __future__ import annotations

import asyncio
import functools
import shlex
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEX_ALGS = ("curve25519-sha256", "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256",
            "diffie-hellman-group14-sha256")
"""Key exchanges offered, cheapest first; the post-quantum hybrids are left out on purpose."""

ENCRYPTION_ALGS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
                   "aes128-ctr", "aes256-ctr")
"""Ciphers offered, cheapest for the client first: asyncssh's chacha20-poly1305 (its default) builds a
new cipher context for every packet; AES-GCM, in hardware, does not (bench/fleet_probe.py)."""

# Re-exported: the command, its parser and the site facts are what a caller of the transport uses with it.
from lpse_ops.backends.probe_output import (  # noqa: E402
    BACKUP_STATUS as BACKUP_STATUS,
)
from lpse_ops.backends.probe_output import (  # noqa: E402
    BACKUP_TOOL as BACKUP_TOOL,
)
from lpse_ops.backends.probe_output import (  # noqa: E402
    CONNECTION_ERRORS as CONNECTION_ERRORS,
)
from lpse_ops.backends.probe_output import CRITICAL as CRITICAL  # noqa: E402
from lpse_ops.backends.probe_output import PROBE_FORMAT as PROBE_FORMAT  # noqa: E402
from lpse_ops.backends.probe_output import (  # noqa: E402
    VERIFICATIONS_ONLY as VERIFICATIONS_ONLY,
)
from lpse_ops.backends.probe_output import WARNING as WARNING  # noqa: E402
from lpse_ops.backends.probe_output import Disk as Disk  # noqa: E402
from lpse_ops.backends.probe_output import Fault as Fault  # noqa: E402
from lpse_ops.backends.probe_output import ProbeOutputError as ProbeOutputError  # noqa: E402
from lpse_ops.backends.probe_output import SiteProbe as SiteProbe  # noqa: E402
from lpse_ops.backends.probe_output import parse_cert_date as parse_cert_date  # noqa: E402
from lpse_ops.backends.probe_output import parse_lines as parse_lines  # noqa: E402
from lpse_ops.backends.probe_output import parse_output as parse_output  # noqa: E402
from lpse_ops.backends.probe_output import probe_script as probe_script  # noqa: E402
from lpse_ops.site_facts import SiteFacts as SiteFacts  # noqa: E402
from lpse_ops.site_facts import role_defaults as role_defaults  # noqa: E402
from lpse_ops.site_facts import site_facts as site_facts  # noqa: E402

# -- connections --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """How to reach one host: from its inventory variables (:func:`target_from_hostvars`)."""

    host: str
    address: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    known_hosts_file: str | None = None
    strict_host_key_checking: str = "yes"
    """OpenSSH's values: ``yes`` (unknown keys refused), ``accept-new`` (unknown accepted, not written), ``no``."""
    facts: SiteFacts | None = None


def ssh_options(args: str) -> dict[str, str]:
    """Return the ``-o Name=Value`` options of an ssh argument string, names lower-cased (pure).

    A fleet's hosts share one argument string (group variables): it is split once (``shlex`` costs about
    0.2 ms a host otherwise; bench/fleet_probe.py)."""
    return dict(_ssh_options(args or ""))


@functools.lru_cache(maxsize=64)
def _ssh_options(args: str) -> tuple[tuple[str, str], ...]:
    options: dict[str, str] = {}
    words = shlex.split(args or "")
    for index, word in enumerate(words):
        value = None
        if word == "-o" and index + 1 < len(words):
            value = words[index + 1]
        elif word.startswith("-o") and len(word) > 2:
            value = word[2:]
        if value:
            name, sep, rest = value.partition("=")
            if not sep:
                name, _, rest = value.partition(" ")
            options[name.strip().lower()] = rest.strip()
    return tuple(options.items())


def target_from_hostvars(host: str, hostvars: Mapping[str, Any], project_dir: Path | None = None) -> Target:
    """Return the :class:`Target` of *host* from its Ansible variables (connection and site facts)."""
    options = ssh_options(f"{hostvars.get('ansible_ssh_common_args', '')} "
                          f"{hostvars.get('ansible_ssh_extra_args', '')}")
    checking = options.get("stricthostkeychecking", "yes").lower()
    checking = {"yes": "yes", "no": "no", "off": "no", "accept-new": "accept-new", "ask": "yes"}.get(checking, "yes")
    known = options.get("userknownhostsfile")
    return Target(host=host, address=str(hostvars.get("ansible_host") or host),
                  port=int(hostvars.get("ansible_port") or 22),
                  user=str(hostvars.get("ansible_user")) if hostvars.get("ansible_user") else None,
                  key_file=str(hostvars["ansible_ssh_private_key_file"])
                  if hostvars.get("ansible_ssh_private_key_file") else None,
                  known_hosts_file=str(Path(known.split()[0]).expanduser()) if known else None,
                  strict_host_key_checking=checking, facts=site_facts(hostvars, project_dir))


class _Loaded:
    """known_hosts files and private keys read once per process, shared by every connection."""

    def __init__(self) -> None:
        self.known_hosts: dict[str, Any] = {}
        self.keys: dict[str, Any] = {}

    def known(self, path: str | None) -> Any:
        import asyncssh

        path = path or str(Path("~/.ssh/known_hosts").expanduser())
        if path not in self.known_hosts:
            try:
                self.known_hosts[path] = asyncssh.read_known_hosts(path)
            except OSError:
                self.known_hosts[path] = asyncssh.import_known_hosts("")
        return self.known_hosts[path]

    def key(self, path: str) -> Any:
        import asyncssh

        if path not in self.keys:
            self.keys[path] = asyncssh.read_private_key(str(Path(path).expanduser()))
        return self.keys[path]


LOADED = _Loaded()


@functools.cache
def _client_class() -> type:
    import asyncssh

    class ProbeClient(asyncssh.SSHClient):
        """Checks a host key asyncssh did not find trusted: mismatch, unknown, or accepted new."""

        def __init__(self, target: Target, known: Any, state: dict[str, str]) -> None:
            self.target, self.known, self.state = target, known, state

        def connection_made(self, conn: Any) -> None:
            self.state["phase"] = "handshake"

        def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
            listed = self.known.match(host, addr, port)[0]
            if listed:
                self.state["host_key"] = "mismatch"
                return self.target.strict_host_key_checking == "no"
            self.state["host_key"] = "unknown"
            return self.target.strict_host_key_checking in ("accept-new", "no")

    return ProbeClient


def classify(error: BaseException, state: Mapping[str, str], timeout: float) -> tuple[str, str]:
    """Return (code, detail) for a probe that failed with *error* in connection phase ``state['phase']``.

    A timeout before the TCP connection was made is ``unreachable`` (nothing answered); after it,
    ``timeout`` (the host answered but the handshake or the command did not finish in time).
    """
    import asyncssh

    phase = state.get("phase", "connect")
    if isinstance(error, TimeoutError | asyncio.TimeoutError):
        if phase == "connect":
            return "unreachable", f"no TCP answer within {timeout:g} s"
        return "timeout", f"no answer within {timeout:g} s (during the {phase})"
    if isinstance(error, asyncssh.HostKeyNotVerifiable):
        if state.get("host_key") == "unknown":
            return "host_key_unknown", "host key not in known_hosts (StrictHostKeyChecking=yes)"
        return "host_key_mismatch", "host key differs from known_hosts: possible impostor, or a reinstalled host"
    if isinstance(error, asyncssh.PermissionDenied):
        return "auth_failed", f"authentication refused: {error.reason}"
    if isinstance(error, asyncssh.KeyImportError | asyncssh.KeyEncryptionError):
        return "auth_failed", f"cannot use the private key: {error}"
    if isinstance(error, socket.gaierror):
        return "unreachable", f"name does not resolve: {error}"
    if isinstance(error, ConnectionRefusedError):
        return "unreachable", "connection refused (no sshd on that port)"
    if isinstance(error, OSError) and phase == "connect":
        return "unreachable", str(error) or type(error).__name__
    if isinstance(error, asyncssh.DisconnectError):
        return "ssh_error", f"disconnected: {error.reason}"
    return "ssh_error", f"{type(error).__name__}: {error}"


@dataclass
class RawResult:
    """The remote command's output of one host, or how reaching it failed."""

    target: Target
    stdout: str = ""
    stderr: str = ""
    exit_status: int | None = None
    error: str | None = None
    error_detail: str | None = None
    duration_s: float = 0.0


async def _connect(target: Target, timeout: float, state: dict[str, str]) -> Any:
    """Open one SSH connection to *target* (handshake and authentication); raises what asyncssh raises."""
    import asyncssh

    known = LOADED.known(target.known_hosts_file)
    client = _client_class()
    keys = [LOADED.key(target.key_file)] if target.key_file else ()
    return await asyncssh.connect(
        target.address, port=target.port, username=target.user or (), client_keys=keys, known_hosts=known,
        kex_algs=list(KEX_ALGS), encryption_algs=list(ENCRYPTION_ALGS),
        client_factory=lambda: client(target, known, state), config=None,
        agent_path=None, x509_trusted_certs=None, connect_timeout=timeout, login_timeout=timeout,
        keepalive_interval=0)


async def _command(conn: Any, target: Target, command: str, state: dict[str, str]) -> RawResult:
    state["phase"] = "command"
    done = await conn.run(command, check=False)
    return RawResult(target, stdout=str(done.stdout or ""), stderr=str(done.stderr or ""),
                     exit_status=done.exit_status)


async def _run_one(target: Target, command: str, timeout: float) -> RawResult:
    """Connect, run *command* once and close, all within *timeout* s; never raises (failures are classified)."""
    state: dict[str, str] = {"phase": "connect"}
    started = time.monotonic()

    async def session() -> RawResult:
        async with await _connect(target, timeout, state) as conn:
            return await _command(conn, target, command, state)

    try:
        result = await asyncio.wait_for(session(), timeout)
    except Exception as error:  # noqa: BLE001 - every failure is classified, none escapes
        code, detail = classify(error, state, timeout)
        result = RawResult(target, error=code, error_detail=detail)
    result.duration_s = round(time.monotonic() - started, 3)
    return result


class _Scripts:
    """The probe command of each distinct set of site facts, built once (hosts sharing facts share it)."""

    def __init__(self, backup_args: str = BACKUP_STATUS) -> None:
        self.made: dict[SiteFacts | None, str] = {}
        self.backup_args = backup_args

    def of(self, target: Target) -> str:
        if target.facts not in self.made:
            self.made[target.facts] = probe_script(target.facts or site_facts({}), self.backup_args)
        return self.made[target.facts]


async def _run_all(targets: list[Target], timeout: float, concurrency: int,
                   on_done: Callable[[RawResult], None] | None, backup_args: str = BACKUP_STATUS) -> list[RawResult]:
    gate = asyncio.Semaphore(max(1, concurrency))
    scripts = _Scripts(backup_args)

    async def bounded(target: Target) -> RawResult:
        async with gate:
            try:
                command = scripts.of(target)
            except (OSError, ValueError) as error:
                return RawResult(target, error="ssh_error", error_detail=f"no probe command: {error}")
            result = await _run_one(target, command, timeout)
        if on_done:
            on_done(result)
        return result

    return list(await asyncio.gather(*(bounded(target) for target in targets)))


def run_probes(targets: list[Target], *, timeout: float = 10.0, concurrency: int = 20,
               on_done: Callable[[RawResult], None] | None = None,
               backup_args: str = BACKUP_STATUS) -> list[RawResult]:
    """Run the probe command on every target, at most *concurrency* at a time, each within *timeout* s.

    *backup_args*: what the site tool is asked (:data:`BACKUP_STATUS`, or :data:`VERIFICATIONS_ONLY`).
    Returns one RawResult per target, in the targets' order; a failure is classified, never raised.
    """
    return asyncio.run(_run_all(targets, timeout, concurrency, on_done, backup_args))


KEPT_FUNCTION = "lpse_probe"
"""The shell function a kept shell defines once (the probe script) and each later round calls."""
_KEPT_END = "\nend=1\n"


@dataclass
class _Shell:
    """One kept connection and the ``sh`` it runs, in which the probe script is a function."""

    conn: Any
    process: Any
    script: str

    async def probe(self, target: Target, state: dict[str, str]) -> RawResult:
        state["phase"] = "command"
        self.process.stdin.write(f"{KEPT_FUNCTION}\n")
        output = await self.process.stdout.readuntil(_KEPT_END)
        return RawResult(target, stdout=output, exit_status=0)

    def abort(self) -> None:
        self.conn.abort()


class KeptProbes:
    """Probes that keep their connections open between rounds: a watch loop, or a daemon's.

    Use inside one event loop (``async with KeptProbes() as kept: await kept.run(targets)`` as often as
    needed). The first round connects every host and starts one ``sh`` on it, which defines the probe
    script as a shell function (its stdin from /dev/null) and runs it; each later round writes the
    function's name to that shell and reads the output up to ``end=1``: no TCP or SSH handshake, no new
    session, one small packet each way. A host whose shell or connection broke, or did not answer in
    time, is dropped and connected again in the next round (within that round's bound). Leaving the
    ``async with`` closes every connection.
    """

    def __init__(self, *, timeout: float = 10.0, concurrency: int = 20) -> None:
        self.timeout, self.concurrency = timeout, concurrency
        self.shells: dict[str, _Shell] = {}
        self.scripts = _Scripts()

    @property
    def connections(self) -> dict[str, Any]:
        return {host: shell.conn for host, shell in self.shells.items()}

    async def __aenter__(self) -> KeptProbes:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _open(self, target: Target, script: str, state: dict[str, str]) -> _Shell:
        import asyncssh

        conn = await _connect(target, self.timeout, state)
        try:
            state["phase"] = "command"
            process = await conn.create_process("sh", stderr=asyncssh.DEVNULL)
            process.stdin.write(f"{KEPT_FUNCTION}() {{\n{script}\n}} </dev/null\n")
        except BaseException:
            conn.abort()
            raise
        return _Shell(conn, process, script)

    async def _probe(self, target: Target) -> RawResult:
        state: dict[str, str] = {"phase": "connect"}
        started = time.monotonic()
        try:
            script = self.scripts.of(target)
        except (OSError, ValueError) as error:
            return RawResult(target, error="ssh_error", error_detail=f"no probe command: {error}")
        shell = self.shells.pop(target.host, None)

        async def attempt() -> RawResult:
            nonlocal shell
            if shell is not None and shell.script == script:
                try:
                    return await shell.probe(target, state)
                except Exception:  # noqa: BLE001 - a broken kept shell: connect again below
                    state["phase"] = "connect"
            if shell is not None:
                shell.abort()
            shell = await self._open(target, script, state)
            return await shell.probe(target, state)

        try:
            result = await asyncio.wait_for(attempt(), self.timeout)
            if shell is not None:
                self.shells[target.host] = shell
        except Exception as error:  # noqa: BLE001 - every failure is classified, none escapes
            if shell is not None:
                shell.abort()
            code, detail = classify(error, state, self.timeout)
            result = RawResult(target, error=code, error_detail=detail)
        result.duration_s = round(time.monotonic() - started, 3)
        return result

    async def run(self, targets: list[Target], on_done: Callable[[RawResult], None] | None = None,
                  ) -> list[RawResult]:
        """One round: a RawResult per target, in their order (as :func:`run_probes`)."""
        gate = asyncio.Semaphore(max(1, self.concurrency))

        async def bounded(target: Target) -> RawResult:
            async with gate:
                result = await self._probe(target)
            if on_done:
                on_done(result)
            return result

        return list(await asyncio.gather(*(bounded(target) for target in targets)))

    async def close(self) -> None:
        shells, self.shells = list(self.shells.values()), {}
        for shell in shells:
            shell.conn.close()
        await asyncio.gather(*(shell.conn.wait_closed() for shell in shells), return_exceptions=True)
