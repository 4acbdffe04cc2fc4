"""Every command line started on this machine while a block runs, from the kernel's exec events.

The kernel's process events connector (``NETLINK_CONNECTOR``, ``CN_IDX_PROC``; root, the initial namespaces)
reports each ``execve`` of every process on the machine, the lab's containers included. A thread reads each
new process's ``/proc/PID/cmdline`` as its event arrives and sorts it by the container it runs in (from
``/proc/PID/cgroup``). This replaced two samplers that read all of ``/proc`` in a busy loop (one on the site,
one here): they took about 1.5 cores for minutes and still saw only the processes that outlived a pass; here
a process is read within moments of its exec, at almost no cost. A process that exits before its command
line is read is counted as ``gone`` (a shell's ``true`` takes microseconds): the callers assert that the
commands they exist for were seen.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

NETLINK_CONNECTOR = 11
CN_IDX_PROC = CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN, PROC_CN_MCAST_IGNORE = 1, 2
PROC_EVENT_EXEC = 0x00000002
SO_RCVBUFFORCE = 33
_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
_EVENT = struct.Struct("=IIQ")  # what, cpu, timestamp_ns; then the event's data
NLMSG_DONE = 3


@dataclass
class Seen:
    """Command lines per place: ``control`` (this machine), or a container's name; and the counts."""

    argv: dict[str, set[str]] = field(default_factory=dict)
    events: int = 0
    gone: int = 0
    overruns: int = 0


def _control_message(op: int) -> bytes:
    payload = struct.pack("=I", op)
    message = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
    return _NLMSG.pack(_NLMSG.size + len(message), NLMSG_DONE, 0, 0, os.getpid()) + message


def exec_pids(datagram: bytes) -> list[int]:
    """The PIDs of the exec events in one netlink datagram (other events are left out); pure."""
    pids, offset = [], 0
    while offset + _NLMSG.size <= len(datagram):
        length = _NLMSG.unpack_from(datagram, offset)[0]
        if length < _NLMSG.size or offset + length > len(datagram):
            break
        body = offset + _NLMSG.size + _CN_MSG.size
        if body + _EVENT.size + 8 <= offset + length:
            what = _EVENT.unpack_from(datagram, body)[0]
            if what == PROC_EVENT_EXEC:
                pids.append(struct.unpack_from("=I", datagram, body + _EVENT.size)[0])
        offset += (length + 3) & ~3
    return pids


def place_of(cgroup: str, containers: dict[str, str]) -> str:
    """The container (by name) whose id is in a ``/proc/PID/cgroup`` text, else ``control``; pure."""
    for container_id, name in containers.items():
        if container_id in cgroup:
            return name
    return "control"


def _containers() -> dict[str, str]:
    done = subprocess.run(["docker", "ps", "--no-trunc", "--format", "{{.ID}} {{.Names}}"], capture_output=True,
                          text=True, check=True, timeout=60)
    return dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)


def _read(pid: int) -> tuple[str, str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as handle:
            return argv, handle.read()
    except OSError:
        return None


def _listen(sock: socket.socket, stop: threading.Event, seen: Seen, containers: dict[str, str]) -> None:
    while not stop.is_set():
        ready, _w, _x = select.select([sock], [], [], 0.2)
        if not ready:
            continue
        try:
            datagram = sock.recv(65536)
        except OSError:  # ENOBUFS: the kernel dropped events while this thread was not scheduled
            seen.overruns += 1
            continue
        for pid in exec_pids(datagram):
            seen.events += 1
            found = _read(pid)
            if found is None:
                seen.gone += 1
                continue
            argv, cgroup = found
            if argv:
                seen.argv.setdefault(place_of(cgroup, containers), set()).add(argv)


@contextmanager
def exec_watched() -> Iterator[Seen]:
    """Watch every exec on the machine while the body runs; the yielded :class:`Seen` fills as it goes."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 * 1024 * 1024)
    sock.bind((0, CN_IDX_PROC))
    sock.send(_control_message(PROC_CN_MCAST_LISTEN))
    seen, stop = Seen(), threading.Event()
    thread = threading.Thread(target=_listen, args=(sock, stop, seen, _containers()), daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=10)
        try:
            sock.send(_control_message(PROC_CN_MCAST_IGNORE))
        finally:
            sock.close()
