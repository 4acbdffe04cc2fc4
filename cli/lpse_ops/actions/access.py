"""Per-engineer, expiring, revocable SSH access through the LKPP SSH certificate authority
(clauses 6.1.3, 6.1.10, 6.2.19; docs/access.md).

- :func:`ca_init` makes the CA (an ed25519 key encrypted with ``LPSE_OPS_ACCESS_CA_PASSPHRASE``) and an
  empty key revocation list (KRL) under ``<LPSE_OPS_HOME>/access/``;
- :func:`setup` runs ``playbooks/access.yml`` (role ``access``): sshd on the sites trusts the CA, reads
  the KRL and the principals file of the login account;
- :func:`grant` signs one engineer's public key into a certificate naming ``site:<host>`` for each chosen
  site, valid from now for a number of hours (absolute UTC times), serial from the state store;
- :func:`revoke` adds the grants' serials to the KRL and pushes it to the whole fleet at once, and says
  which hosts did not get it (there the certificate is **not** revoked);
- :func:`list_grants` reads the grants back.

Nothing here prints or asks; every change is recorded in the state store and the audit log.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lpse_ops import config, settings
from lpse_ops.actions import fleet, operation, records
from lpse_ops.backends import sshca
from lpse_ops.state import StateStore
from lpse_ops.state import access as access_state

KIND = "access"
"""The kind of result record ``playbooks/access.yml`` emits per host."""
PLAYBOOK = "access.yml"
CLOCK_SKEW_S = 30
"""A certificate is valid from this many seconds before it is signed: a site whose clock is a little behind
accepts it at once. Its end is exact."""
REVOKE_FORKS = 50
"""Parallel SSH connections of a revocation push (every site at once on a lab; 12 rounds for 600 sites)."""


class AccessRefused(Exception):
    """Nothing was signed, revoked or changed: the input is wrong; the message says what to do."""


@dataclass
class CAPaths:
    """Where the CA and the KRL live on the control machine."""

    root: Path

    @classmethod
    def default(cls) -> CAPaths:
        return cls(config.home() / "access")

    @property
    def key(self) -> Path:
        return self.root / "ca" / "lkpp-ca"

    @property
    def public_key(self) -> Path:
        return self.root / "ca" / "lkpp-ca.pub"

    @property
    def krl(self) -> Path:
        return self.root / "revoked.krl"

    @property
    def askpass(self) -> Path:
        return self.root / "ca" / "askpass.sh"


def _passphrase(given: str | None) -> str:
    passphrase = given if given is not None else settings.current().access_ca_passphrase
    if not passphrase or len(passphrase) < 12:
        raise AccessRefused("set LPSE_OPS_ACCESS_CA_PASSPHRASE (12 characters or more) to the LKPP CA's passphrase: "
                            "it is read from the environment only, never from a file or the command line")
    return passphrase


# --- the CA ------------------------------------------------------------------------------------------------

@dataclass
class CAInitRequest:
    """Make the CA under *paths* (default ``<home>/access``) with *passphrase* (default from the settings)."""

    paths: CAPaths | None = None
    passphrase: str | None = None
    state_url: str | None = None


@dataclass
class CAInfo:
    """The CA's public key, its fingerprint and where its files are."""

    public_key: str
    fingerprint: str
    key_path: str
    krl_path: str

    def as_dict(self) -> dict:
        return {"public_key": self.public_key, "fingerprint": self.fingerprint, "key_path": self.key_path,
                "krl_path": self.krl_path}


def ca_init(request: CAInitRequest) -> CAInfo:
    """Make the LKPP CA key pair (refused when one exists: re-keying means re-granting every engineer) and an
    empty KRL; audit ``access.ca_init`` with the fingerprint. The private key is written encrypted (OpenSSH
    format, bcrypt KDF) by the ``cryptography`` library, so the passphrase never appears on a command line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    paths = request.paths or CAPaths.default()
    passphrase = _passphrase(request.passphrase)
    if paths.key.exists() or paths.public_key.exists():
        raise AccessRefused(f"an LKPP CA already exists at {paths.key}: every certificate it signed would stop "
                            "working with a new one; keep it (or move it away by hand to re-key)")
    paths.key.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.key.parent, 0o700)
    private = ed25519.Ed25519PrivateKey.generate()
    encrypted = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                      serialization.BestAvailableEncryption(passphrase.encode()))
    descriptor = os.open(paths.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(encrypted)
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    paths.public_key.write_text(public.decode() + " lkpp-ssh-ca\n")
    _write_askpass(paths)
    _write_krl(paths, [], version=0)
    info = ca_info(paths)
    with StateStore.open(request.state_url or config.state_url()) as store:
        store.audit_append("access.ca_init", {"fingerprint": info.fingerprint, "public_key": info.public_key})
    return info


def ca_info(paths: CAPaths | None = None) -> CAInfo:
    """Return the CA's public key and fingerprint; AccessRefused when there is no CA yet."""
    paths = paths or CAPaths.default()
    if not paths.public_key.exists() or not paths.key.exists():
        raise AccessRefused(f"no LKPP CA at {paths.key}: run `lpse-ops access ca init` first")
    done = sshca.run(sshca.fingerprint_argv(paths.public_key))
    return CAInfo(public_key=paths.public_key.read_text().strip(),
                  fingerprint=sshca.parse_fingerprint(done.stdout).fingerprint, key_path=str(paths.key),
                  krl_path=str(paths.krl))


def _write_askpass(paths: CAPaths) -> None:
    paths.askpass.write_text(sshca.ASKPASS_SCRIPT)
    paths.askpass.chmod(0o700)


def _write_krl(paths: CAPaths, serials: list[int], version: int) -> None:
    """Write the KRL revoking *serials* atomically (a new file renamed over the old one)."""
    with tempfile.TemporaryDirectory(dir=paths.root) as work:
        spec = Path(work) / "spec"
        spec.write_text(sshca.krl_spec(serials))
        new = Path(work) / "revoked.krl"
        sshca.run(sshca.krl_argv(new, paths.public_key, spec, version))
        new.chmod(0o644)
        os.replace(new, paths.krl)


def krl_sha256(paths: CAPaths | None = None) -> str:
    """Return the sha256 of the KRL on the control machine (what every site must hold)."""
    return hashlib.sha256((paths or CAPaths.default()).krl.read_bytes()).hexdigest()


# --- the sites -------------------------------------------------------------------------------------------

@dataclass
class SetupRequest:
    """Trust the CA on the sites of *inventory* (*limit*), with the role's options in *extravars*."""

    inventory: Path
    limit: str | None = None
    extravars: dict = field(default_factory=dict)
    paths: CAPaths | None = None
    progress: operation.ProgressFactory | None = None
    state_url: str | None = None
    forks: int = 10


def setup(request: SetupRequest) -> tuple[operation.OperationResult, records.HostRecords]:
    """Run the access role on the sites; return the run and each host's ``access`` record."""
    paths = request.paths or CAPaths.default()
    ca_info(paths)
    op = operation.OperationContext(
        operation="access.setup", playbook=PLAYBOOK, inventory=request.inventory, limit=request.limit,
        extravars={"access_ca_public_key_file": str(paths.public_key), "access_krl_src": str(paths.krl),
                   **request.extravars},
        progress=request.progress, state_url=request.state_url, forks=request.forks, validate_for="validate",
        record_args={"krl_sha256": krl_sha256(paths)})
    result = operation.run(op)
    found = records.read(result, KIND)
    result.exit_code = found.exit_code(result.exit_code)
    return result, found


# --- grants ----------------------------------------------------------------------------------------------

@dataclass
class GrantRequest:
    """Sign *public_key* for *engineer* on *sites* (names) or the hosts of *limit*, for *hours*, because *reason*."""

    engineer: str
    public_key: Path
    hours: float
    reason: str
    inventory: Path
    sites: list[str] = field(default_factory=list)
    limit: str | None = None
    paths: CAPaths | None = None
    passphrase: str | None = None
    state_url: str | None = None
    now: Callable[[], datetime] = lambda: datetime.now(UTC)


def _check_grant(request: GrantRequest, max_hours: int) -> list[str]:
    problems = []
    if not request.engineer or not all(c.isalnum() or c in "._-" for c in request.engineer):
        problems.append("--engineer must be a name of letters, digits, '.', '_' or '-'")
    if bool(request.sites) == bool(request.limit):
        problems.append("give the sites with exactly one of --sites S1,S2 or --limit PATTERN")
    if not request.hours > 0:
        problems.append("--hours must be more than 0")
    elif request.hours > max_hours:
        problems.append(f"--hours {request.hours:g} is longer than the longest grant, {max_hours} hours "
                        "(LPSE_OPS_ACCESS_MAX_HOURS)")
    if len(request.reason.strip()) < 5:
        problems.append("--reason must say why the engineer needs access (the install or update problem, 6.1.10)")
    if not request.public_key.is_file():
        problems.append(f"--key {request.public_key}: no such file")
    elif not sshca.is_public_key_line(request.public_key.read_text(errors="replace")):
        problems.append(f"--key {request.public_key} is not one OpenSSH public key line (give the engineer's .pub, "
                        "never a private key or a certificate)")
    return problems


def resolve_sites(inventory: Path, sites: list[str], limit: str | None) -> list[str]:
    """Return the inventory's site hosts named by *sites* (each must exist) or matched by *limit*."""
    if sites:
        known = set(fleet.target_hosts(inventory, "sites", None))
        unknown = [site for site in sites if site not in known]
        if unknown:
            raise AccessRefused(f"not a site of inventory {inventory}: {', '.join(unknown)}")
        return list(dict.fromkeys(sites))
    hosts = fleet.target_hosts(inventory, "sites", limit)
    if not hosts:
        raise AccessRefused(f"--limit {limit} matches no site of inventory {inventory}")
    return hosts


def grant(request: GrantRequest) -> dict:
    """Sign a certificate for the engineer's key and record the grant; return it (``certificate`` holds the
    text the engineer saves beside the key as ``<key>-cert.pub``). AccessRefused on bad input."""
    paths = request.paths or CAPaths.default()
    app = settings.current()
    problems = _check_grant(request, app.access_max_hours)
    if problems:
        raise AccessRefused("nothing was signed:\n  - " + "\n  - ".join(problems))
    ca_info(paths)
    passphrase = _passphrase(request.passphrase)
    try:
        sites = resolve_sites(request.inventory, request.sites, request.limit)
    except operation.OperationRefused as error:
        raise AccessRefused(str(error)) from error
    principals = [sshca.principal(site) for site in sites]
    fingerprint = sshca.parse_fingerprint(sshca.run(sshca.fingerprint_argv(request.public_key)).stdout).fingerprint
    now = request.now().astimezone(UTC).replace(microsecond=0)
    valid_after = now - timedelta(seconds=CLOCK_SKEW_S)
    valid_before = now + timedelta(seconds=round(request.hours * 3600))

    def sign(serial: int) -> access_state.SignedCertificate:
        identity = sshca.key_id(request.engineer, serial)
        with tempfile.TemporaryDirectory(prefix="lpse-access-") as work:
            public = Path(work) / "engineer.pub"
            shutil.copyfile(request.public_key, public)
            sshca.run(sshca.sign_argv(paths.key, public, identity=identity, principals=principals, serial=serial,
                                      valid_after=valid_after, valid_before=valid_before),
                      env=sshca.environment(paths.askpass, passphrase))
            certificate = (Path(work) / "engineer-cert.pub").read_text()
            listed = sshca.parse_certificate(sshca.run(sshca.show_certificate_argv(Path(work) / "engineer-cert.pub"))
                                             .stdout)
        if (listed.serial, listed.key_id, listed.valid_before) != (serial, identity, valid_before):
            raise sshca.SSHCAError(f"the signed certificate does not say what was asked: {listed}")
        return access_state.SignedCertificate(key_id=identity, certificate=certificate, key_fingerprint=fingerprint,
                                              principals=principals, valid_after=valid_after,
                                              valid_before=valid_before)

    if not paths.askpass.exists():
        _write_askpass(paths)
    try:
        with StateStore.open(request.state_url or config.state_url()) as store:
            return access_state.record_grant(store, engineer=request.engineer, sites=sites,
                                             reason=request.reason.strip(), sign=sign)
    except sshca.SSHCAError as error:
        raise AccessRefused(f"nothing was signed: {error} (a wrong LPSE_OPS_ACCESS_CA_PASSPHRASE reads "
                            "'incorrect passphrase')") from error


def list_grants(state_url: str | None = None, engineer: str | None = None, active_only: bool = False) -> list[dict]:
    """Return the grants, newest first (only those neither revoked nor expired with *active_only*)."""
    with StateStore.open(state_url or config.state_url()) as store:
        return access_state.list_grants(store, engineer=engineer, include_ended=not active_only)


# --- revocation ----------------------------------------------------------------------------------------

@dataclass
class RevokeRequest:
    """Revoke the grants of *engineer*, the certificate *key_id* or *serial*, and push the KRL to the fleet."""

    reason: str
    inventory: Path
    engineer: str | None = None
    key_id: str | None = None
    serial: int | None = None
    paths: CAPaths | None = None
    progress: operation.ProgressFactory | None = None
    state_url: str | None = None
    forks: int = REVOKE_FORKS


@dataclass
class RevokeResult:
    """What a revocation did: the grants it revoked, the KRL, and where it is in force or not."""

    revoked: list[dict]
    krl_version: int
    krl_sha256: str
    revoked_on: list[str]
    not_revoked_on: dict[str, str]
    run: operation.OperationResult | None

    @property
    def exit_code(self) -> int:
        if not self.not_revoked_on:
            return operation.EXIT_OK
        return self.run.exit_code if self.run and self.run.exit_code else operation.EXIT_HOSTS_FAILED

    def as_dict(self) -> dict:
        return {"revoked": [{k: v for k, v in g.items() if k != "certificate"} for g in self.revoked],
                "krl_version": self.krl_version, "krl_sha256": self.krl_sha256, "revoked_on": self.revoked_on,
                "not_revoked_on": self.not_revoked_on, "run_id": self.run.run_id if self.run else None,
                "exit_code": self.exit_code}


def plan_revocation(request: RevokeRequest) -> list[dict]:
    """Return the grants *request* names (AccessRefused when it names none or gives no reason)."""
    if not any((request.engineer, request.key_id, request.serial is not None)):
        raise AccessRefused("name what to revoke: --engineer NAME, --id KEY_ID or --serial N")
    if len(request.reason.strip()) < 5:
        raise AccessRefused("--reason must say why the access is revoked")
    with StateStore.open(request.state_url or config.state_url()) as store:
        grants = access_state.find_grants(store, engineer=request.engineer, key_id=request.key_id,
                                          serial=request.serial)
    if not grants:
        raise AccessRefused("no grant matches: see `lpse-ops access list`")
    return grants


def revoke(request: RevokeRequest) -> RevokeResult:
    """Revoke the named grants: write the KRL with every revoked serial, record it, then push it to every site of
    the inventory at once (``forks``). A site whose result record does not show this KRL's sha256 is listed in
    ``not_revoked_on`` with the reason: there the certificate still works until it expires.

    Grants already revoked are revoked again on the sites (the push repeats), which is how a site missed
    last time is caught up.
    """
    paths = request.paths or CAPaths.default()
    ca_info(paths)
    grants = plan_revocation(request)
    with StateStore.open(request.state_url or config.state_url()) as store:
        serials = sorted(set(access_state.revoked_serials(store)) | {g["serial"] for g in grants})
        version = len(serials)
        _write_krl(paths, serials, version)
        marked = access_state.mark_revoked(store, [g["serial"] for g in grants], request.reason.strip(),
                                           krl_version=version)
    digest = krl_sha256(paths)
    revoked = marked or grants
    op = operation.OperationContext(
        operation="access.revoke", playbook=PLAYBOOK, inventory=request.inventory,
        extravars={"access_krl_only": True, "access_krl_src": str(paths.krl)}, progress=request.progress,
        state_url=request.state_url, forks=request.forks, validate_for="validate",
        record_args={"serials": [g["serial"] for g in revoked], "krl_version": version, "krl_sha256": digest,
                     "reason": request.reason.strip()})
    try:
        result = operation.run(op)
    except operation.OperationRefused as error:
        raise AccessRefused(f"revoked in the state store and the KRL ({paths.krl}), but NOT pushed to any site: "
                            f"{error}; every certificate stays valid on the sites until pushed "
                            "(`lpse-ops access setup`)") from error
    found = records.read(result, KIND)
    revoked_on = sorted(host for host, record in found.found.items() if record.get("krl_sha256") == digest)
    not_revoked = dict(found.missing)
    for host, record in found.found.items():
        if host not in revoked_on:
            not_revoked[host] = (f"the site holds a KRL with sha256 {record.get('krl_sha256')}, not {digest}"
                                 if record.get("krl_sha256") else "the site did not report its KRL")
    return RevokeResult(revoked=revoked, krl_version=version, krl_sha256=digest, revoked_on=revoked_on,
                        not_revoked_on=dict(sorted(not_revoked.items())), run=result)
