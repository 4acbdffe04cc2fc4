"""The audit's wire controls (issue 19; clauses 6.2.7, 6.1.3): what a client is offered, not what a file says.

:func:`targets` takes each site's address and ports from the inventory (``site_public_address``, else
``ansible_host``; ``site_public_https_port``, ``site_public_ssh_port`` (22 with a public address, else
``ansible_port``), ``site_pg_port``), the control node looks
(:mod:`lpse_ops.backends.wire`), and the checks below judge ``facts["wire"]`` (and the site's own
``facts["postgresql"]``) as pure functions, like every other control (``compliance.CHECKS``). The TLS rules are
Mozilla's intermediate profile (``modern`` where the site's ``nginx_tls_profile`` says so); the SSH rules are
those of ssh-audit's default policy for OpenSSH 9 (no NIST curves, no SHA-1, no ECDSA host key).
"""

from __future__ import annotations

import re

from lpse_ops.actions.fleet import Fleet
from lpse_ops.backends import wire

PASS, FAIL = "pass", "fail"
Outcome = tuple[str, str]

INTERMEDIATE_TLS12 = frozenset({"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
                                "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
                                "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"})
PROFILE_PROTOCOLS = {"intermediate": {"TLSv1.2", "TLSv1.3"}, "modern": {"TLSv1.3"}}
GOOD_GROUPS = frozenset({"X25519", "prime256v1", "secp384r1"})
MAX_CERT_DAYS = 366
MIN_HSTS_S = 15768000  # six months: Mozilla's and the HSTS preload list's floor
PQ_KEX = "sntrup761x25519-sha512@openssh.com"
# Post-quantum hybrids by any of their names (OpenSSH 9.9 added the plain sntrup name, Debian 12's updates too,
# and ML-KEM).
PQ_KEXES = frozenset({PQ_KEX, "sntrup761x25519-sha512", "mlkem768x25519-sha256"})
GOOD_KEX = PQ_KEXES | {"curve25519-sha256", "curve25519-sha256@libssh.org", "diffie-hellman-group16-sha512",
                       "diffie-hellman-group18-sha512"}
# Names in a KEXINIT that are signals, not algorithms (RFC 8308 ext-info, OpenSSH's strict key exchange).
KEX_SIGNALS = re.compile(r"^(ext-info-[cs]|kex-strict-[cs]-v00@openssh\.com)$")
GOOD_HOST_KEYS = frozenset({"ssh-ed25519", "ssh-ed25519-cert-v01@openssh.com"})
RSA_HOST_KEYS = frozenset({"rsa-sha2-512", "rsa-sha2-256", "rsa-sha2-512-cert-v01@openssh.com",
                           "rsa-sha2-256-cert-v01@openssh.com"})
LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|::1|localhost)$")


def targets(fleet: Fleet) -> list[wire.WireTarget]:
    """Each targeted site's public address and ports, from its inventory variables."""
    found = []
    for host in fleet.hosts:
        variables = fleet.hostvars(host)
        found.append(wire.WireTarget(
            host=host, address=str(variables.get("site_public_address") or variables.get("ansible_host") or host),
            https_port=int(variables.get("site_public_https_port") or 443),
            # ansible_port may be a forwarded one (the lab's); a site's own address answers SSH on 22
            ssh_port=int(variables.get("site_public_ssh_port")
                         or (22 if variables.get("site_public_address") else variables.get("ansible_port") or 22)),
            pg_port=int(variables.get("site_pg_port") or 5432),
            server_name=str((variables.get("nginx_server_names") or [host])[0])))
    return found


def expectations(fleet: Fleet, host: str) -> dict:
    """What this site is asked to offer: its TLS profile and whether an RSA host key was asked for."""
    variables = fleet.hostvars(host)
    return {"tls_profile": str(variables.get("nginx_tls_profile") or "intermediate"),
            "ssh_rsa_host_key": bool(variables.get("hardening_ssh_rsa_host_key", False))}


def _looked(facts: dict, part: str, missing: str) -> dict:
    """The wire look's *part* (``tls``, ``ssh``); ValueError saying *missing* and why when there is none: every
    control that reads it then fails with that reason (``compliance.evaluate``)."""
    found = (facts.get("wire") or {}).get(part) or {}
    if not found or found.get("error"):
        raise ValueError(f"{missing}: {found.get('error', 'not looked at')}")
    return found


def _tls(facts: dict) -> dict:
    return _looked(facts, "tls", "no TLS handshake with the site")


def tls_protocols(facts: dict) -> Outcome:
    tls = _tls(facts)
    profile = (facts.get("wire") or {}).get("tls_profile", "intermediate")
    allowed = PROFILE_PROTOCOLS.get(profile, PROFILE_PROTOCOLS["intermediate"])
    accepted = sorted(name for name, ok in tls["protocols"].items() if ok)
    extra = [name for name in accepted if name not in allowed]
    if extra:
        return FAIL, f"accepts {', '.join(extra)} (the {profile} profile allows {', '.join(sorted(allowed))})"
    return PASS, f"accepts {', '.join(accepted)} only ({profile} profile)"


def tls_suites(facts: dict) -> Outcome:
    tls = _tls(facts)
    bad = [suite for suite in tls.get("tls12_suites") or [] if suite not in INTERMEDIATE_TLS12]
    if bad:
        return FAIL, f"TLS 1.2 accepts {len(bad)} suite(s) without ECDHE and AEAD: {', '.join(bad)}"
    return PASS, f"TLS 1.2: {len(tls.get('tls12_suites') or [])} ECDHE+AEAD suite(s) only; TLS 1.3 suites are AEAD"


def tls_groups(facts: dict) -> Outcome:
    groups = _tls(facts).get("groups") or {}
    bad = sorted(name for name, ok in groups.items() if ok and name not in GOOD_GROUPS)
    good = sorted(name for name, ok in groups.items() if ok and name in GOOD_GROUPS)
    unknown = sorted(name for name, ok in groups.items() if ok is None)
    if bad:
        return FAIL, f"accepts the key-exchange group(s) {', '.join(bad)} (allowed: {', '.join(sorted(GOOD_GROUPS))})"
    if not good:
        return FAIL, f"none of {', '.join(sorted(GOOD_GROUPS))} completed a handshake" + (
            f" (could not try: {', '.join(unknown)})" if unknown else "")
    return PASS, f"groups {', '.join(good)} only" + (f" (could not try: {', '.join(unknown)})" if unknown else "")


def tls_certificate_lifetime(facts: dict) -> Outcome:
    cert = _tls(facts).get("certificate") or {}
    days, left = cert.get("lifetime_days"), cert.get("days_left")
    if days is None:
        return FAIL, "the served certificate could not be read"
    if left is not None and left <= 0:
        return FAIL, f"the served certificate expired on {cert.get('not_after')}"
    if days > MAX_CERT_DAYS:
        return FAIL, f"the served certificate is valid for {days:g} days (at most {MAX_CERT_DAYS}); renew it shorter"
    return PASS, f"valid for {days:g} days, {left:g} left (serial {cert.get('serial')})"


def https_hsts(facts: dict) -> Outcome:
    header = _tls(facts).get("hsts")
    if not header:
        return FAIL, "no Strict-Transport-Security header on GET /"
    match = re.search(r"max-age\s*=\s*\"?(\d+)", header, re.IGNORECASE)
    if not match or int(match.group(1)) < MIN_HSTS_S:
        return FAIL, f"Strict-Transport-Security '{header}': max-age below {MIN_HSTS_S} s"
    return PASS, f"Strict-Transport-Security: {header}"


def _ssh(facts: dict) -> dict:
    return _looked(facts, "ssh", "no SSH key-exchange offer from the site")


def ssh_host_keys_wire(facts: dict) -> Outcome:
    offered = _ssh(facts)["host_keys"]
    allowed = GOOD_HOST_KEYS | (RSA_HOST_KEYS if (facts.get("wire") or {}).get("ssh_rsa_host_key") else set())
    bad = [name for name in offered if name not in allowed]
    if bad:
        return FAIL, f"sshd offers host key type(s) {', '.join(bad)} (allowed: ed25519" + (
            ", RSA as asked)" if allowed > GOOD_HOST_KEYS else ")")
    if not any(name in GOOD_HOST_KEYS for name in offered):
        return FAIL, "sshd offers no ed25519 host key"
    return PASS, f"host keys: {', '.join(offered)}"


def ssh_kex_wire(facts: dict) -> Outcome:
    kex = [name for name in _ssh(facts)["kex"] if not KEX_SIGNALS.match(name)]
    bad = [name for name in kex if name not in GOOD_KEX]
    problems = [f"weak key exchange(s) {', '.join(bad)}"] if bad else []
    if not kex or kex[0] not in PQ_KEXES:
        problems.append(f"no post-quantum hybrid ({PQ_KEX}) first (first: {kex[0] if kex else 'none'})")
    if "curve25519-sha256" not in kex:
        problems.append("curve25519-sha256 is missing (the fleet probe uses it)")
    return (FAIL, "; ".join(problems)) if problems else (PASS, f"key exchanges: {', '.join(kex)}")


def listen_host(address: str) -> str:
    """The host part of an ``ss`` local address (``127.0.0.1:5432``, ``[::1]:5432``, ``127.0.0.1%lo:5432``)."""
    return address.rsplit(":", 1)[0].strip("[]").split("%", 1)[0]


def postgresql_local_only(facts: dict) -> Outcome:
    own = facts.get("postgresql") or {}
    if own.get("present") is False:
        return PASS, "no PostgreSQL server on this host"
    problems = []
    listening = own.get("listening") or []
    exposed = [address for address in listening if not LOOPBACK.match(listen_host(address))]
    if own.get("error") and not listening:
        problems.append(f"its listening sockets could not be read: {own['error']}")
    if exposed:
        problems.append(f"listens on {', '.join(exposed)} (listen_addresses '{own.get('listen_addresses')}')")
    state = ((facts.get("wire") or {}).get("postgresql") or {}).get("from_control_node")
    if state == "open":
        problems.append("its port answers from the control node")
    elif state is None:
        problems.append("its port was not tried from the control node")
    return (FAIL, "; ".join(problems)) if problems else (
        PASS, f"listens on {', '.join(listening) or 'the socket only'}; from the control node: {state}")


def postgresql_auth(facts: dict) -> Outcome:
    own = facts.get("postgresql") or {}
    if own.get("present") is False:
        return PASS, "no PostgreSQL server on this host"
    rules = own.get("hba")
    if rules is None:
        return FAIL, f"pg_hba_file_rules could not be read: {own.get('error')}"
    problems = []
    for rule in rules:
        kind, method, users = rule.get("type"), rule.get("auth_method"), rule.get("user_name") or []
        where = f"line {rule.get('line_number')}: {kind} {','.join(rule.get('database') or [])} {','.join(users)}"
        if rule.get("error"):
            problems.append(f"{where}: {rule['error']}")
        elif kind != "local" and method not in ("scram-sha-256", "reject", "cert"):
            problems.append(f"{where} uses {method} over TCP (only scram-sha-256)")
        elif method == "trust" and not (kind == "local" and users == ["postgres"]):
            problems.append(f"{where} trusts without a password")
        elif method in ("password", "md5"):
            problems.append(f"{where} uses {method}")
    return (FAIL, "; ".join(problems)) if problems else (PASS, f"{len(rules)} rule(s): TCP scram-sha-256 only, "
                                                          "no trust beyond postgres's own socket")


CHECKS = {"tls_protocols": tls_protocols, "tls_suites": tls_suites, "tls_groups": tls_groups,
          "tls_certificate_lifetime": tls_certificate_lifetime, "https_hsts": https_hsts,
          "ssh_host_keys_wire": ssh_host_keys_wire, "ssh_kex_wire": ssh_kex_wire,
          "postgresql_local_only": postgresql_local_only, "postgresql_auth": postgresql_auth}
