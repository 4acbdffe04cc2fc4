"""What a site offers on the wire, seen from the control node: TLS on its HTTPS port, SSH's key exchange and host
keys, and whether PostgreSQL answers from another host (the audit's wire controls, docs/audit.md).

The configuration files say what an administrator meant; these say what a client is actually offered, as an
outside auditor (sslscan, testssl.sh, ssh-audit) would see it. Python's ``ssl`` makes the TLS handshakes (one
protocol version, or one set of TLS 1.2 suites, at a time); OpenSSL's ``s_client`` (argv lists, no shell) tries
the key-exchange groups, which Python 3.11 cannot choose; SSH is one TCP connection that reads the server's
``SSH_MSG_KEXINIT`` (RFC 4253 section 7.1, sent before any authentication) and leaves. Parsers are pure.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import struct
import subprocess
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

PROTOCOLS = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1, "TLSv1.2": ssl.TLSVersion.TLSv1_2,
             "TLSv1.3": ssl.TLSVersion.TLSv1_3}
# Every TLS 1.2 suite this control node's OpenSSL knows, at security level 0 (RSA key exchange, CBC, CCM,
# Camellia, ARIA, DHE, 3DES included): the server's accepted ones are found one at a time.
ALL_TLS12_SUITES = "ALL:COMPLEMENTOFALL:@SECLEVEL=0"
GROUPS = ("X25519", "prime256v1", "secp384r1", "X448", "secp521r1", "ffdhe2048", "ffdhe3072")
MAX_SUITES = 80
SSH_MSG_KEXINIT = 20
KEXINIT_LISTS = ("kex", "host_keys", "ciphers_c2s", "ciphers_s2c", "macs_c2s", "macs_s2c", "compression_c2s",
                 "compression_s2c", "languages_c2s", "languages_s2c")


@dataclass(frozen=True)
class WireTarget:
    """Where a site answers from another host: its address and the HTTPS, SSH and PostgreSQL ports."""

    host: str
    address: str
    https_port: int = 443
    ssh_port: int = 22
    pg_port: int = 5432
    server_name: str | None = None


# -- SSH ----------------------------------------------------------------------------------------------


def parse_kexinit(payload: bytes) -> dict[str, list[str]]:
    """The name-lists of an SSH_MSG_KEXINIT payload (message number, cookie, ten lists); pure.

    Raises ValueError on anything else (another message, a list longer than the payload)."""
    if not payload or payload[0] != SSH_MSG_KEXINIT or len(payload) < 17:
        raise ValueError("not an SSH_MSG_KEXINIT")
    offset, found = 17, {}
    for name in KEXINIT_LISTS:
        if offset + 4 > len(payload):
            raise ValueError(f"KEXINIT cut short before {name}")
        (length,) = struct.unpack_from(">I", payload, offset)
        offset += 4
        if offset + length > len(payload):
            raise ValueError(f"KEXINIT name-list {name} runs past the packet")
        text = payload[offset:offset + length].decode("ascii")
        found[name] = text.split(",") if text else []
        offset += length
    return found


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data


def ssh_offer(address: str, port: int, timeout: float = 10) -> dict:
    """Connect, exchange versions, read the server's KEXINIT and leave (no key exchange, no login).

    Returns ``{banner, kex, host_keys, ciphers, macs}`` or ``{error}``."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.sendall(b"SSH-2.0-lpse-ops-audit\r\n")
            banner = b""
            while not banner.startswith(b"SSH-"):  # a server may send other lines before its version
                banner = b""
                while not banner.endswith(b"\n"):
                    banner += _read_exactly(sock, 1)
                    if len(banner) > 255:
                        raise ValueError("no SSH version line")
            length, padding = struct.unpack(">IB", _read_exactly(sock, 5))
            if not 5 < length <= 35000 or padding >= length:
                raise ValueError(f"implausible packet length {length}")
            payload = _read_exactly(sock, length - 1)[:length - 1 - padding]
            lists = parse_kexinit(payload)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        return {"error": f"{type(error).__name__}: {error}"}
    return {"banner": banner.decode(errors="replace").strip(), "kex": lists["kex"], "host_keys": lists["host_keys"],
            "ciphers": lists["ciphers_c2s"], "macs": lists["macs_c2s"]}


# -- TLS ----------------------------------------------------------------------------------------------


def _context(version: ssl.TLSVersion | None = None, ciphers: str | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the wire's offer is judged, not the chain (docs/audit.md)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version or ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = version or ssl.TLSVersion.MAXIMUM_SUPPORTED
    context.set_ciphers(ciphers or "ALL:@SECLEVEL=0")
    return context


def _handshake(target: WireTarget, context: ssl.SSLContext, timeout: float) -> tuple[str, str] | None:
    """(protocol, cipher) of a completed handshake; None when the server refused it."""
    try:
        with socket.create_connection((target.address, target.https_port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=target.server_name or target.host) as tls:
            name, protocol, _bits = tls.cipher()
            return protocol, name
    except (ssl.SSLError, ConnectionResetError, ConnectionAbortedError):
        return None


def accepted_tls12_suites(target: WireTarget, timeout: float = 10) -> list[str]:
    """Every TLS 1.2 suite the server accepts: offer all, note the one chosen, take it out, again."""
    accepted: list[str] = []
    while len(accepted) < MAX_SUITES:
        ciphers = ALL_TLS12_SUITES + "".join(f":-{name}" for name in accepted)
        try:
            context = _context(ssl.TLSVersion.TLSv1_2, ciphers)
        except ssl.SSLError:  # nothing left to offer
            break
        chosen = _handshake(target, context, timeout)
        if chosen is None:
            break
        accepted.append(chosen[1])
    return accepted


def group_accepted(target: WireTarget, group: str, timeout: float = 10) -> bool | None:
    """Whether a handshake offering only *group* completes (OpenSSL's s_client); None when it could not say."""
    argv = ["openssl", "s_client", "-connect", f"{target.address}:{target.https_port}", "-servername",
            target.server_name or target.host, "-groups", group, "-brief"]
    try:
        done = subprocess.run(argv, input="", capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if "Protocol version:" in done.stderr + done.stdout:
        return True
    return False if done.returncode != 0 else None


def certificate_facts(pem: str, now: datetime | None = None) -> dict:
    """The served certificate's dates and lifetime in days (notAfter - notBefore); pure."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem.encode())
    before, after = cert.not_valid_before_utc, cert.not_valid_after_utc
    now = now or datetime.now(UTC)
    return {"not_before": before.isoformat(), "not_after": after.isoformat(),
            "lifetime_days": round((after - before).total_seconds() / 86400, 1),
            "days_left": round((after - now).total_seconds() / 86400, 1), "serial": format(cert.serial_number, "x")}


def hsts_header(target: WireTarget, timeout: float = 10) -> str | None:
    """The Strict-Transport-Security header of ``GET /`` (None when absent)."""
    connection = http.client.HTTPSConnection(target.address, target.https_port, timeout=timeout,
                                             context=_context())
    try:
        connection.request("GET", "/", headers={"Host": target.server_name or target.host,
                                                "User-Agent": "lpse-ops-audit"})
        return connection.getresponse().getheader("Strict-Transport-Security")
    finally:
        connection.close()


def tls_offer(target: WireTarget, timeout: float = 10) -> dict:
    """Protocols, TLS 1.2 suites and groups the server accepts, its certificate and HSTS; ``{error}`` if none."""
    try:
        protocols = {name: _handshake(target, _context(version), timeout) is not None
                     for name, version in PROTOCOLS.items()}
        if not any(protocols.values()):
            return {"error": "no TLS handshake completed", "protocols": protocols}
        pem = ssl.get_server_certificate((target.address, target.https_port), timeout=timeout)
        return {"protocols": protocols,
                "tls12_suites": accepted_tls12_suites(target, timeout) if protocols["TLSv1.2"] else [],
                "groups": {group: group_accepted(target, group, timeout) for group in GROUPS},
                "certificate": certificate_facts(pem), "hsts": hsts_header(target, timeout)}
    except (OSError, ValueError, http.client.HTTPException) as error:
        return {"error": f"{type(error).__name__}: {error}"}


# -- PostgreSQL ----------------------------------------------------------------------------------------


def tcp_state(address: str, port: int, timeout: float = 5) -> str:
    """``open`` (a connection completed), ``refused`` or ``no answer`` (dropped by a firewall, or no route)."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "no answer"


def look(target: WireTarget, timeout: float = 10) -> dict:
    """Everything the wire controls read about one site."""
    return {"address": target.address, "tls": tls_offer(target, timeout), "ssh": ssh_offer(target.address,
            target.ssh_port, timeout), "postgresql": {"port": target.pg_port,
                                                     "from_control_node": tcp_state(target.address, target.pg_port)}}


def look_all(targets: list[WireTarget], concurrency: int = 8, timeout: float = 10) -> dict[str, dict]:
    """:func:`look` at every target, *concurrency* at a time; host -> facts."""
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return dict(zip((t.host for t in targets), pool.map(lambda t: look(t, timeout), targets), strict=True))
