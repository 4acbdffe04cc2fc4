"""Install SPSE from a signed bundle on bare sites (or re-apply the version they run): one entry function.

The bundle is verified before any host is touched; each site is locked for the whole install; the result
comes from ``playbooks/install.yml``'s typed records (kind ``install``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lpse_ops.actions import operation, records

KIND = "install"
"""The kind of result record ``playbooks/install.yml`` emits per host."""


@dataclass
class InstallRequest:
    """What ``lpse-ops install`` asks for."""

    bundle: Path
    inventory: Path
    trusted_keys: Path
    limit: str | None = None
    check: bool = False
    forks: int = 10
    progress: operation.ProgressFactory | None = None
    state_url: str | None = None


@dataclass
class InstallOutcome:
    """The run, the bundle's manifest, and each host's record (or why it has none)."""

    result: operation.OperationResult
    manifest: object
    found: records.HostRecords

    @property
    def health(self) -> dict[str, dict]:
        """Each host's health JSON through nginx, from its record (when it was asked)."""
        return health_by_host(self.found)


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle as verified here: its manifest, the sha256 of the bytes read, the trusted keys' texts.

    The play sends the sha256 and the keys to the site, which refuses other bytes and checks the signature
    itself before it unpacks (docs/release-bundle.md, "Chain of custody").
    """

    manifest: object
    sha256: str
    trusted_keys: list[str]

    def extravars(self) -> dict:
        """The spse role's inputs that carry the custody: the bundle's sha256 and the trusted keys."""
        return {"spse_bundle_sha256": self.sha256, "spse_trusted_keys": self.trusted_keys}


def verified_bundle(bundle_path: Path, trusted_keys: Path) -> VerifiedBundle:
    """Verify the bundle's signature and every member; return it as verified, or refuse (nothing touched)."""
    from lpse_ops.bundle import BundleError, trusted_key_texts, verify_digest

    if not bundle_path.exists():
        raise operation.OperationRefused(f"bundle {bundle_path} does not exist: build one with `lpse-ops bundle build`")
    try:
        manifest, sha256 = verify_digest(bundle_path, trusted_keys)
        return VerifiedBundle(manifest, sha256, trusted_key_texts(trusted_keys))
    except BundleError as error:
        raise operation.OperationRefused(f"bundle {bundle_path} refused, no host was touched: {error}") from error


def health_by_host(found: records.HostRecords) -> dict[str, dict]:
    """Return each host's health JSON through nginx, from its ``install`` result record (when it was asked)."""
    return {host: record["health"] for host, record in found.found.items() if isinstance(record.get("health"), dict)}


def install(request: InstallRequest, verified: VerifiedBundle | None = None) -> InstallOutcome:
    """Verify the bundle (unless *verified* is given), then install it on the sites; return what happened.

    Raises OperationRefused before any host is touched (bad bundle, inventory or option, a locked site).
    """
    verified = verified or verified_bundle(request.bundle, request.trusted_keys)
    manifest = verified.manifest
    bundle = str(request.bundle.resolve())
    ctx = operation.OperationContext(
        operation="install", playbook="install.yml", inventory=request.inventory, limit=request.limit,
        extravars={"spse_bundle": bundle, "spse_version": manifest.version, **verified.extravars()},
        check=request.check,
        forks=request.forks, progress=request.progress, lock_sites=True, state_url=request.state_url,
        record_args={"bundle": bundle, "version": manifest.version, "key_id": manifest.key_id,
                     "sha256": verified.sha256})
    result = operation.run(ctx)
    found = records.read(result, KIND)
    result.exit_code = found.exit_code(result.exit_code)
    return InstallOutcome(result, manifest, found)
