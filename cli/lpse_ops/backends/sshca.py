"""The LKPP SSH certificate authority's engine: ``ssh-keygen`` argv builders, one runner and pure parsers.

The CA signs user certificates (``ssh-keygen -s``) and builds the key revocation list (``ssh-keygen -k``);
both are plain files the sites check by themselves on every login (``TrustedUserCAKeys``,
``RevokedKeys``), so a certificate expires on the host even with the control machine gone.

Times given to ``-V`` are absolute and in UTC with ``Z`` (``20261128093000Z``): a bare time would be read
in the control machine's local zone. ``ssh-keygen -L`` prints its validity in the local zone of the process,
so it is run with ``TZ=UTC``. The CA's passphrase reaches ``ssh-keygen`` through ``SSH_ASKPASS`` (a script
that prints the ``LPSE_OPS_ACCESS_CA_PASSPHRASE`` variable it inherits), never through argv or a file.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

PASSPHRASE_ENV = "LPSE_OPS_ACCESS_CA_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret
PRINCIPAL_PREFIX = "site:"
ASKPASS_SCRIPT = ("#!/bin/sh\n# Prints the LKPP CA passphrase from the environment (never stored).\n"
                  f'printf "%s\\n" "${PASSPHRASE_ENV}"\n')
TIMEOUT_S = 30
# A certificate grants a shell (pty) and nothing else: no agent, port or X11 forwarding, no user rc.
CERT_OPTIONS = ("clear", "permit-pty")


class SSHCAError(Exception):
    """ssh-keygen refused or failed; the message carries its own reason."""


def principal(site: str) -> str:
    """Return the certificate principal that opens *site* (its inventory name): ``site:<host>``."""
    return f"{PRINCIPAL_PREFIX}{site}"


def utc_stamp(moment: datetime) -> str:
    """Return *moment* as ssh-keygen's absolute UTC time, ``YYYYMMDDHHMMSSZ`` (naive times are refused)."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no zone: give an aware one")
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%SZ")


def key_id(engineer: str, serial: int) -> str:
    """Return the certificate identity sshd logs on every login: ``lpse-ops:<engineer>:<serial>``."""
    return f"lpse-ops:{engineer}:{serial}"


def sign_argv(ca_key: Path, public_key: Path, *, identity: str, principals: list[str], serial: int,
              valid_after: datetime, valid_before: datetime) -> list[str]:
    """Return the argv that signs *public_key* into ``<stem>-cert.pub`` beside it."""
    argv = ["ssh-keygen", "-q", "-s", str(ca_key), "-I", identity, "-n", ",".join(principals), "-z", str(serial),
            "-V", f"{utc_stamp(valid_after)}:{utc_stamp(valid_before)}"]
    for option in CERT_OPTIONS:
        argv += ["-O", option]
    return [*argv, str(public_key)]


def krl_spec(serials: list[int]) -> str:
    """Return a KRL specification revoking every certificate of *serials* (``serial: N`` lines)."""
    return "".join(f"serial: {serial}\n" for serial in sorted(set(serials)))


def krl_argv(krl: Path, ca_public_key: Path, spec: Path, version: int) -> list[str]:
    """Return the argv that writes the KRL *krl* (version *version*) from *spec*, for certificates of the CA."""
    return ["ssh-keygen", "-q", "-k", "-f", str(krl), "-s", str(ca_public_key), "-z", str(version), str(spec)]


def krl_list_argv(krl: Path) -> list[str]:
    """Return the argv that prints the KRL *krl* (``ssh-keygen -Q -l``)."""
    return ["ssh-keygen", "-Q", "-l", "-f", str(krl)]


def krl_check_argv(krl: Path, key: Path) -> list[str]:
    """Return the argv that tests *key* (a key or certificate file) against *krl*: rc 0 not revoked, 1 revoked."""
    return ["ssh-keygen", "-Q", "-f", str(krl), str(key)]


def fingerprint_argv(key: Path) -> list[str]:
    """Return the argv that prints *key*'s SHA256 fingerprint."""
    return ["ssh-keygen", "-l", "-E", "sha256", "-f", str(key)]


def show_certificate_argv(certificate: Path) -> list[str]:
    """Return the argv that describes *certificate* (run it with :func:`environment` so times are UTC)."""
    return ["ssh-keygen", "-L", "-f", str(certificate)]


def environment(askpass: Path | None = None, passphrase: str | None = None) -> dict[str, str]:
    """Return the environment of an ssh-keygen run: UTC times; with *askpass*, the passphrase comes from it."""
    env = {name: value for name, value in os.environ.items() if name != PASSPHRASE_ENV}
    env["TZ"] = "UTC"
    if askpass is not None:
        env.update({"SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": "none",
                    PASSPHRASE_ENV: passphrase or ""})
    return env


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run *argv* (stdin closed, so ssh-keygen never waits on a terminal); raise SSHCAError with its stderr."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=TIMEOUT_S,
                              stdin=subprocess.DEVNULL, env=env if env is not None else environment())
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SSHCAError(f"cannot run {argv[0]}: {error}") from error
    if done.returncode != 0:
        reason = (done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}").splitlines()[-1]
        raise SSHCAError(f"{' '.join(argv[:2])}: {reason}")
    return done


@dataclass
class Fingerprint:
    """A key's fingerprint line: bits, ``SHA256:...``, comment and type."""

    bits: int
    fingerprint: str
    comment: str
    key_type: str


def parse_fingerprint(output: str) -> Fingerprint:
    """Parse ``ssh-keygen -l`` output (``256 SHA256:abc comment (ED25519)``); ValueError when it is not one."""
    match = re.fullmatch(r"(\d+)\s+(SHA256:\S+)\s*(.*?)\s*\(([A-Z0-9-]+)\)", output.strip())
    if not match:
        raise ValueError(f"not a key fingerprint: {output.strip()[:120]!r}")
    return Fingerprint(int(match.group(1)), match.group(2), match.group(3), match.group(4))


@dataclass
class CertificateInfo:
    """What ``ssh-keygen -L`` says about a certificate (times in UTC when run with TZ=UTC)."""

    kind: str
    key_id: str
    serial: int
    principals: list[str]
    valid_after: datetime | None
    valid_before: datetime | None
    signing_ca: str
    options: list[str]
    extensions: list[str]


def _local_time(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def parse_certificate(output: str) -> CertificateInfo:
    """Parse ``TZ=UTC ssh-keygen -L -f CERT`` output; ValueError when it is not a certificate listing."""
    kind = re.search(r"Type: \S+ (user|host) certificate", output)
    identity = re.search(r'Key ID: "(.*)"', output)
    serial = re.search(r"Serial: (\d+)", output)
    if not (kind and identity and serial):
        raise ValueError("not an ssh-keygen -L certificate listing")
    valid_after = valid_before = None
    window = re.search(r"Valid: from (\S+) to (\S+)", output)
    if window:
        valid_after, valid_before = _local_time(window.group(1)), _local_time(window.group(2))
    elif "Valid: forever" not in output:
        raise ValueError("certificate listing without a validity line")
    ca = re.search(r"Signing CA: \S+ (SHA256:\S+)", output)
    sections: dict[str, list[str]] = {"Principals": [], "Critical Options": [], "Extensions": []}
    current = None
    for line in output.expandtabs(8).splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent >= 16 and current:  # a value under the section heading above
            sections[current].append(line.strip())
            continue
        heading = re.match(r"\s*(Principals|Critical Options|Extensions):\s*(.*)$", line)
        current = heading.group(1) if heading else None
        if heading and heading.group(2).strip() not in ("", "(none)"):
            sections[current].append(heading.group(2).strip())
    return CertificateInfo(kind=kind.group(1), key_id=identity.group(1), serial=int(serial.group(1)),
                           principals=sections["Principals"], valid_after=valid_after, valid_before=valid_before,
                           signing_ca=ca.group(1) if ca else "", options=sections["Critical Options"],
                           extensions=sections["Extensions"])


def parse_krl_serials(output: str) -> list[int]:
    """Return the serials a KRL listing (``ssh-keygen -Q -l``) revokes, ascending (ranges expanded)."""
    serials: set[int] = set()
    for match in re.finditer(r"^serial: (\d+)(?:-(\d+))?\s*$", output, re.MULTILINE):
        low = int(match.group(1))
        high = int(match.group(2) or low)
        serials.update(range(low, high + 1))
    return sorted(serials)


def parse_krl_version(output: str) -> int | None:
    """Return the version of a KRL listing (``# KRL version N``), None when absent."""
    match = re.search(r"^# KRL version (\d+)", output, re.MULTILINE)
    return int(match.group(1)) if match else None


def is_public_key_line(text: str) -> bool:
    """Return True when *text* is one OpenSSH public key line (not a certificate, not a private key)."""
    fields = text.strip().split()
    return (len(text.strip().splitlines()) == 1 and len(fields) >= 2 and "-cert-v01@" not in fields[0]
            and re.fullmatch(r"(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-\S+@openssh\.com)", fields[0]) is not None)
