"""The server baseline's facts on one host (clause 6.1.9), in one call: ``lpse-backup preflight --spec JSON``.

The preflight role used to take 28 Ansible tasks per host to gather these (a module run each for df, ss, the
user database, the clock, timedatectl, getent, the apt sources). Here one process measures them all and
judges every check but the clock's: the clock skew needs the control node's time around this call, so the
role computes it from ``clock`` (this host's time when it was read).

The file imports the standard library only, so the role runs it as it is (``ansible.builtin.script``), with
no site tool installed on a bare host and nothing left behind; the site tool carries it as a subcommand too,
and the unit tests call :func:`checks` with the host's files and command outputs given.

Spec (JSON object, from the role's typed inputs): ``os: {distribution, major_version}``, ``min_vcpus``,
``min_memory_mb``, ``disk_paths: [{path, min_free_mb}]``, ``ports: [{port, allowed}]``, ``dns_names`` and
``check_apt_sources``. Output: ``{checks: [{check, ok, detail}], clock, ntp}``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pwd
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

APT_SOURCES = ("/etc/apt/sources.list", "/etc/apt/sources.list.d/*.list", "/etc/apt/sources.list.d/*.sources")
# "State Recv-Q Send-Q Local:Port Peer:Port ..." (ss -ltnpeH): the fourth field is the local address.
_LISTENER = r"^\S+\s+\S+\s+\S+\s+\S*:{port}\s"
_PROCESS = re.compile(r'\("([^"]+)",pid=')
_UID = re.compile(r"\buid:(\d+)")
_APT_HOST = re.compile(r"[a-z+]+://(?:[^@/\s]+@)?([A-Za-z0-9.-]+)")


@dataclass
class Host:
    """What the checks read from a host; :func:`read_host` fills it from the real one."""

    os_release: dict[str, str]
    debian_version: str = ""
    vcpus: int = 0
    memory_mb: int = 0
    ss: str = ""
    users: dict[int, str] = field(default_factory=dict)
    apt_sources: str = ""
    free_mb: Callable[[str], tuple[str, int, str]] | None = None
    resolve: Callable[[str], list[str]] | None = None


def parse_os_release(text: str) -> dict[str, str]:
    """``/etc/os-release`` as a dict (quotes removed)."""
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            found[key.strip()] = value.strip().strip('"').strip("'")
    return found


def distribution(os_release: dict[str, str], debian_version: str = "") -> tuple[str, str, str]:
    """(name, version, major) as Ansible's facts name them: ``Debian``, ``12.8``, ``12``."""
    ident = os_release.get("ID", "")
    name = {"debian": "Debian", "ubuntu": "Ubuntu", "rhel": "RedHat"}.get(ident, ident.capitalize() or "unknown")
    version = debian_version.strip() if ident == "debian" and debian_version.strip() else os_release.get(
        "VERSION_ID", "?")
    major = os_release.get("VERSION_ID", version).split(".")[0]
    return name, version, major


def port_check(port: int, allowed: list[str], ss: str, users: dict[int, str]) -> dict:
    """A port must be free or held only by allowed processes (by name; by owner when ss cannot see it)."""
    listeners = [line for line in ss.splitlines() if re.search(_LISTENER.format(port=port), line)]
    joined = " ".join(listeners)
    processes = list(dict.fromkeys(_PROCESS.findall(joined)))
    uids = list(dict.fromkeys(int(uid) for uid in _UID.findall(joined)))
    owners = [users[uid] for uid in uids if uid in users] if uids else ["an unknown process"]
    holders = processes or [owner if owner.startswith("an unknown") else f"user {owner}" for owner in owners]
    if processes:
        unexpected = [name for name in processes if name not in allowed]
    elif listeners:
        unexpected = [owner for owner in owners if owner not in allowed]
    else:
        unexpected = []
    detail = "free" if not listeners else "held by " + ", ".join(holders)
    if unexpected:
        detail += f" (allowed: {', '.join(allowed) or 'none'})"
    return {"check": f"port {port}", "ok": not unexpected, "detail": detail}


def apt_hosts(sources: str) -> list[str]:
    """Every host named in the apt sources (one-line and deb822), comments left out."""
    text = "\n".join(line for line in sources.splitlines() if not line.lstrip().startswith("#"))
    return list(dict.fromkeys(_APT_HOST.findall(text)))


def checks(spec: dict, host: Host) -> list[dict]:
    """Every check but the clock's, in the role's order: os, vcpus, memory, disks, ports, dns."""
    wanted = spec.get("os", {})
    name, version, major = distribution(host.os_release, host.debian_version)
    found = [{"check": "os",
              "ok": name == wanted.get("distribution") and major == str(wanted.get("major_version")),
              "detail": f"{name} {version} (required {wanted.get('distribution')} {wanted.get('major_version')})"},
             {"check": "vcpus", "ok": host.vcpus >= int(spec.get("min_vcpus", 0)),
              "detail": f"{host.vcpus} vCPUs (minimum {spec.get('min_vcpus')})"},
             {"check": "memory", "ok": host.memory_mb >= int(spec.get("min_memory_mb", 0)),
              "detail": f"{host.memory_mb} MB (minimum {spec.get('min_memory_mb')} MB)"}]
    for item in spec.get("disk_paths", []):
        path, minimum = str(item["path"]), int(item["min_free_mb"])
        try:
            measured, free, mount = host.free_mb(path)
        except OSError as error:
            found.append({"check": f"disk {path}", "ok": False, "detail": f"df failed: {error}"})
            continue
        found.append({"check": f"disk {path}", "ok": free >= minimum,
                      "detail": f"{free} MB free on {mount} (measured at {measured}, minimum {minimum} MB)"})
    for item in spec.get("ports", []):
        found.append(port_check(int(item["port"]), [str(a) for a in item.get("allowed") or []], host.ss,
                                host.users))
    names = [str(n) for n in spec.get("dns_names", [])]
    if spec.get("check_apt_sources"):
        names += apt_hosts(host.apt_sources)
    for name in dict.fromkeys(names):
        addresses = host.resolve(name)
        found.append({"check": f"dns {name}", "ok": bool(addresses),
                      "detail": "resolves to " + ", ".join(addresses) if addresses else "does not resolve"})
    return found


def free_mb(path: str) -> tuple[str, int, str]:
    """(the nearest existing ancestor measured, MB free to unprivileged users there, its mount point)."""
    measured = path
    while not os.path.exists(measured):
        measured = os.path.dirname(measured) or "/"
    stats = os.statvfs(measured)
    mount = os.path.realpath(measured)
    while not os.path.ismount(mount):
        mount = os.path.dirname(mount)
    return measured, stats.f_bavail * stats.f_frsize // (1024 * 1024), mount


def resolve(name: str) -> list[str]:
    """The addresses the host's resolver (NSS, as ``getent hosts``) gives for *name*; [] when none."""
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return []
    return list(dict.fromkeys(info[4][0] for info in infos))


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def _memory_mb(meminfo: str) -> int:
    match = re.search(r"^MemTotal:\s+(\d+)\s+kB", meminfo, re.MULTILINE)
    return int(match.group(1)) // 1024 if match else 0


def _run(argv: list[str]) -> tuple[int, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return 127, str(error)
    return done.returncode, done.stdout


def read_host(paths: Iterable[str] = APT_SOURCES) -> Host:
    """This host, read for the checks (``ss`` is the one program run)."""
    _code, ss = _run(["ss", "-ltnpeH"])
    cpuinfo = _read("/proc/cpuinfo")
    sources = "\n".join(_read(path) for pattern in paths for path in sorted(glob.glob(pattern)))
    return Host(os_release=parse_os_release(_read("/etc/os-release")), debian_version=_read("/etc/debian_version"),
                vcpus=len(re.findall(r"^processor\s*:", cpuinfo, re.MULTILINE)),
                memory_mb=_memory_mb(_read("/proc/meminfo")), ss=ss,
                users={entry.pw_uid: entry.pw_name for entry in pwd.getpwall()}, apt_sources=sources,
                free_mb=free_mb, resolve=resolve)


def ntp_state() -> str:
    """``yes``, ``no`` or ``unknown`` (no timedatectl, e.g. in a container)."""
    code, out = _run(["timedatectl", "show", "--property=NTPSynchronized", "--value"])
    return out.strip() if code == 0 and out.strip() in ("yes", "no") else "unknown"


def collect(spec: dict) -> dict:
    """The checks, this host's clock (read first, right after the call began) and its NTP state."""
    clock = time.time()
    return {"clock": clock, "ntp": ntp_state(), "checks": checks(spec, read_host())}


def main(_settings: object, args: argparse.Namespace) -> dict:
    """``lpse-backup preflight --spec JSON``: the site tool's entry."""
    return collect(json.loads(args.spec))


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("preflight", help="the server baseline's facts and checks (clause 6.1.9), but the clock's skew"
                   ).add_argument("--spec", required=True, help="the role's inputs as one JSON object")


if __name__ == "__main__":  # run as a plain script by roles/preflight (ansible.builtin.script)
    parser = argparse.ArgumentParser(prog="lpse-preflight")
    parser.add_argument("--spec", required=True)
    print(json.dumps(collect(json.loads(parser.parse_args().spec))))
    sys.exit(0)
