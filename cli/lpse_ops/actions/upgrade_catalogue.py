"""The release catalogue of an upgrade plan: the verified bundles of a release folder, and each site's path
through them.

Every ``spse-*.tar.gz`` of the folder is verified with :func:`lpse_ops.bundle.verify` against the trusted keys
(a bundle that fails is kept aside with its own error, and refuses the whole plan if the target or any needed
step is that bundle); :func:`upgrade_path` is the shortest chain respecting every bundle's ``min_upgrade_from``.
Pure but for reading the folder; :mod:`lpse_ops.actions.upgrade_plan` is the entry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lpse_ops import bundle
from lpse_ops.actions import fleet, operation


class PlanRefused(operation.OperationRefused):
    """No plan: a bundle is bad or missing, or an option is wrong. Nothing was touched."""


# ------------------------------------------------------------------------------------------ versions


version_key = bundle.version_key
"""The one ordering of versions (``lpse_ops.bundle.version_key``); ValueError for anything but dotted integers."""


# ------------------------------------------------------------------------------------------ catalogue


@dataclass(frozen=True)
class Release:
    """One bundle of the release folder. ``error`` is set (and ``verified`` false) when it failed verification."""

    version: str
    min_upgrade_from: str
    path: Path
    schema_version: int | None = None
    payload_bytes: int = 0
    key_id: str | None = None
    verified: bool = True
    error: str | None = None
    sha256: str | None = None  # of the bytes verified: the site refuses any other (docs/release-bundle.md)

    def as_dict(self) -> dict:
        return {"version": self.version, "min_upgrade_from": self.min_upgrade_from, "bundle": str(self.path),
                "schema_version": self.schema_version, "payload_bytes": self.payload_bytes,
                "key_id": self.key_id, "verified": self.verified, "error": self.error, "sha256": self.sha256}


@dataclass
class Catalogue:
    """The verified releases by version key, and the bundles that failed verification."""

    releases: dict[tuple[int, ...], Release] = field(default_factory=dict)
    refused: list[Release] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def get(self, version: str) -> Release | None:
        return self.releases.get(version_key(version))

    def refused_for(self, version: str) -> Release | None:
        key = version_key(version)
        return next((release for release in self.refused if safe_key(release.version) == key), None)


def safe_key(version: str) -> tuple[int, ...] | None:
    try:
        return version_key(version)
    except ValueError:
        return None


def _claimed(path: Path) -> tuple[str, str]:
    """Return the (version, min_upgrade_from) a bundle that failed verification claims, for path finding only.

    From its manifest when readable, else from its file name; an unknown ``min_upgrade_from`` is "0", so
    that a bad bundle is never silently skipped when it could be on a path (the plan is refused instead).
    """
    try:
        shown = bundle.show(path)
        return str(shown["version"]), str(shown["min_upgrade_from"])
    except (bundle.BundleError, ValueError, KeyError):
        match = re.fullmatch(r"spse-(.+)\.tar\.gz", path.name)
        return (match.group(1) if match else "?"), "0"


def load_catalogue(releases_dir: Path, trusted_keys: Path,
                   verify: Callable[[Path, Path], tuple[bundle.Manifest, str]] = bundle.verify_digest) -> Catalogue:
    """Verify every ``spse-*.tar.gz`` in *releases_dir* against *trusted_keys* and return the catalogue.

    A bundle that fails is kept in ``refused`` with the bundle's own error naming the file; raises
    PlanRefused when the folder does not exist or holds no bundle.
    """
    folder = Path(releases_dir)
    if not folder.is_dir():
        raise PlanRefused(f"release folder {folder} does not exist: pass --releases DIR holding spse-*.tar.gz")
    catalogue = Catalogue()
    paths = sorted(folder.glob("spse-*.tar.gz"), key=lambda path: fleet.natural_key(path.name))
    if not paths:
        raise PlanRefused(f"release folder {folder} holds no spse-*.tar.gz bundle")
    for path in paths:
        try:
            manifest, sha256 = verify(path, trusted_keys)
        except bundle.BundleError as error:
            version, minimum = _claimed(path)
            catalogue.refused.append(Release(version, minimum, path, verified=False,
                                             error=f"bundle {path} refused: {error}"))
            continue
        release = Release(manifest.version, manifest.min_upgrade_from, path, manifest.schema_version,
                          manifest.payload_size, manifest.key_id, sha256=sha256)
        key = version_key(manifest.version)
        if key in catalogue.releases:
            catalogue.warnings.append(f"{path.name} holds SPSE {manifest.version} like "
                                      f"{catalogue.releases[key].path.name}: the first is used")
            continue
        catalogue.releases[key] = release
    return catalogue


def refuse_bad_steps(catalogue: Catalogue, target: str) -> None:
    """Refuse, before any site is read, when a bundle that failed verification could be a step to *target*.

    Which steps a site needs is known only once its version is read, so any failing bundle not newer
    than the target (or whose version is unknown) refuses the plan here, naming the file and its error.
    A failing bundle newer than the target is on no path and only becomes a warning of the plan.
    """
    target_key = version_key(target)
    bad = [release for release in catalogue.refused
           if (key := safe_key(release.version)) is None or key <= target_key]
    if bad:
        raise PlanRefused(f"{len(bad)} bundle(s) of the release folder failed verification and could be a step "
                          f"to {target}; no host was touched. Remove or replace them:\n  - "
                          + "\n  - ".join(str(release.error) for release in bad))


# ------------------------------------------------------------------------------------------ paths


def _shortest_chain(current: tuple[int, ...], target: tuple[int, ...],
                    releases: Iterable[Release]) -> list[Release] | None:
    """Return the shortest chain of *releases* from version *current* to *target*, or None.

    Each step is newer than the one before and allows upgrading from it (``min_upgrade_from`` <= the
    previous version). Among chains of equal length the newest intermediate releases win.
    """
    candidates = sorted((release for release in releases
                         if (key := safe_key(release.version)) is not None and current < key <= target),
                        key=lambda release: version_key(release.version))
    # best[key] = chain reaching that release; a DAG in version order, so one pass suffices.
    best: dict[tuple[int, ...], list[Release]] = {}
    for release in candidates:
        key = version_key(release.version)
        minimum = safe_key(release.min_upgrade_from) or (0,)
        options: list[list[Release]] = []
        if minimum <= current:
            options.append([])
        options += [chain for previous, chain in best.items() if minimum <= previous < key]
        if options:
            # shortest first, then the newest predecessor (options are in ascending version order)
            shortest = min(len(option) for option in options)
            chosen = [option for option in options if len(option) == shortest][-1]
            best[key] = [*chosen, release]
    return best.get(target)


def upgrade_path(current: str, target: str, catalogue: Catalogue) -> list[Release] | None:
    """Return the releases to install, in order, to move a site on *current* to *target*.

    ``[]`` when the site already runs the target; None when no chain of verified bundles exists.
    Raises PlanRefused when the only chain needs a bundle that failed verification (naming it).
    """
    current_key, target_key = version_key(current), version_key(target)
    if current_key == target_key:
        return []
    chain = _shortest_chain(current_key, target_key, catalogue.releases.values())
    if chain is not None:
        return chain
    every = [*catalogue.releases.values(), *catalogue.refused]
    needing = _shortest_chain(current_key, target_key, every)
    if needing is not None:
        bad = [release for release in needing if not release.verified]
        if bad:
            raise PlanRefused("a bundle on the upgrade path from "
                              f"{current} to {target} failed verification, no host was touched:\n  - "
                              + "\n  - ".join(str(release.error) for release in bad))
    return None
