"""Plan an upgrade of the fleet to one SPSE version; change nothing.

The plan is computed in four steps, the first three read-only:

1. the **release catalogue**: every ``spse-*.tar.gz`` of a release folder, each verified with
   :func:`lpse_ops.bundle.verify` against the trusted keys (a bundle that fails is kept aside with its
   own error, and refuses the whole plan if the target or any needed step is that bundle);
2. each site's **real state**, read over SSH with the fleet probe (one connection and one command per
   site: ``version``, database ``schema_version``, ``health``, ``free_bytes`` of the SPSE folder,
   ``frozen``, the backup facts), recorded as run ``upgrade.plan``; the verifications the site ran by
   itself are recorded once, and its current verification (the one every view shares) and any lock
   are read from the state store. ``playbooks/site_state.yml`` reads the same facts for AWX;
3. :func:`compute_plan`, pure and fast (600 sites well under a second): each site's **path** through
   the catalogue (shortest chain respecting every bundle's ``min_upgrade_from``), the sites **left out**
   with machine-readable codes (:data:`CODES`), and the **waves** (a canary first, then inventory groups
   ``wave_N`` or shares of the rest).

:func:`plan` is the entry function the command calls; everything else is pure and tested without hosts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lpse_ops import bundle
from lpse_ops.actions import backup, fleet, operation, probe_rules, records
from lpse_ops.backends import ssh_probe
from lpse_ops.state.store import lock_holder

OPERATION = "upgrade.plan"
PLAYBOOK = "site_state.yml"
RESULT_KIND = "site_state"
"""The kind of result record ``playbooks/site_state.yml`` emits per host (its fields: docs/upgrade.md)."""

DISK_FACTOR = 3
"""A site needs this many times the largest step's payload free in its SPSE folder."""

CODES: dict[str, str] = {
    "unreachable": "the site did not answer over SSH",
    "state_unreadable": "the site answered but its state could not be read",
    "not_installed": "no SPSE release found on the site",
    "frozen": "the site is frozen (spse_frozen host var or /etc/spse/frozen)",
    "locked": "another operation holds the site's lock",
    "downgrade": "the site runs a newer version than the target",
    "no_path": "no chain of bundles leads from the site's version to the target",
    "no_verified_backup": "no successful restore verification younger than the limit",
    "preflight_failed": "a pre-flight fact fails (free disk, health)",
}
"""Every exclusion code, with what it means (docs/upgrade.md)."""

DEFAULT_WAVE_SIZE = "25%"
DEFAULT_MAX_BACKUP_AGE_HOURS = backup.Thresholds().verify.total_seconds() / 3600
"""192 h: the default verification schedule (``backup_schedule_verify``, weekly) and a day's slack, the same limit
``backup status`` and ``fleet status`` warn at; the upgrade's own checkpoint is taken right before any change
(docs/backups.md, "How old a verification may be for an upgrade")."""


class PlanRefused(operation.OperationRefused):
    """No plan: a bundle is bad or missing, or an option is wrong. Nothing was touched."""


# ------------------------------------------------------------------------------------------ versions


version_key = bundle.version_key
"""The one ordering of versions (``lpse_ops.bundle.version_key``); ValueError for anything but dotted integers."""


def natural_key(name: str) -> tuple:
    """Sort key putting site2 before site10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


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
        return next((release for release in self.refused if _safe_key(release.version) == key), None)


def _safe_key(version: str) -> tuple[int, ...] | None:
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
    paths = sorted(folder.glob("spse-*.tar.gz"), key=lambda path: natural_key(path.name))
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
           if (key := _safe_key(release.version)) is None or key <= target_key]
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
                         if (key := _safe_key(release.version)) is not None and current < key <= target),
                        key=lambda release: version_key(release.version))
    # best[key] = chain reaching that release; a DAG in version order, so one pass suffices.
    best: dict[tuple[int, ...], list[Release]] = {}
    for release in candidates:
        key = version_key(release.version)
        minimum = _safe_key(release.min_upgrade_from) or (0,)
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


# ------------------------------------------------------------------------------------------ site state


@dataclass
class SiteState:
    """What a site reported (``site_state.yml``), plus inventory and state-store facts about it."""

    host: str
    reachable: bool = True
    version: str | None = None
    schema_version: int | None = None
    health: str | None = None
    health_reason: str | None = None
    free_bytes: int | None = None
    frozen: bool = False
    error: str | None = None
    verification: dict | None = None
    lock: dict | None = None

    def as_dict(self) -> dict:
        return {"host": self.host, "reachable": self.reachable, "version": self.version,
                "schema_version": self.schema_version, "health": self.health, "health_reason": self.health_reason,
                "free_bytes": self.free_bytes, "frozen": self.frozen, "error": self.error,
                "verification": {key: self.verification.get(key) for key in (
                    "id", "site_verification_id", "verified_at", "ok", "source", "backup_label")}
                if self.verification else None}


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _flag(value: Any) -> bool:
    """Read a yes/no fact that Ansible may render as a bool or as text ("True", "false", "yes")."""
    return value is True or str(value).strip().lower() in ("true", "yes", "1")


def parse_site_state(host: str, record: Mapping[str, Any] | None, *, unreachable: bool = False,
                     messages: Iterable[str] = ()) -> SiteState:
    """Turn one host's ``site_state`` result record into a SiteState.

    No record, or one whose ``complete`` is false (a reading failed), gives a SiteState with ``error``:
    the run's *messages*, else what was missing.
    """
    if unreachable:
        return SiteState(host, reachable=False, error="; ".join(messages) or "unreachable")
    if not isinstance(record, Mapping) or "version" not in record or not _flag(record.get("complete")):
        missing = "no site_state result record from the site" if not isinstance(record, Mapping) else (
            "the site_state result record is incomplete (a reading failed)")
        return SiteState(host, error="; ".join(messages) or missing)
    version = str(record.get("version") or "").strip() or None
    reason = record.get("health_reason")
    return SiteState(host, version=version, schema_version=_int_or_none(record.get("schema_version")),
                     health=str(record.get("health") or "") or None, health_reason=str(reason) if reason else None,
                     free_bytes=_int_or_none(record.get("free_bytes")), frozen=_flag(record.get("frozen")))


def states_from_run(result: operation.OperationResult) -> dict[str, SiteState]:
    """Return each target host's SiteState from the result records of a ``site_state.yml`` run.

    A host without a record is kept, with why (unreachable, failed, or nothing reported) as its error.
    """
    found = records.read(result, RESULT_KIND)
    states: dict[str, SiteState] = {}
    for host in sorted(set(result.hosts) | set(found.found) | set(found.missing)):
        tracked = result.tracker.hosts.get(host)
        if tracked is not None and tracked.unreachable:
            states[host] = parse_site_state(host, None, unreachable=True, messages=tracked.messages)
        elif host in found.missing:
            states[host] = SiteState(host, error=found.missing[host])
        else:
            states[host] = parse_site_state(host, found.found[host], messages=tracked.messages if tracked else ())
    return states


# ------------------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class Reason:
    code: str
    message: str

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


@dataclass
class Exclusion:
    """A site left out of the plan; ``reasons`` holds every reason found, the first is the main one."""

    host: str
    reasons: list[Reason]
    version: str | None = None

    @property
    def code(self) -> str:
        return self.reasons[0].code

    @property
    def message(self) -> str:
        return self.reasons[0].message

    def as_dict(self) -> dict:
        return {"host": self.host, "version": self.version, "code": self.code, "message": self.message,
                "reasons": [reason.as_dict() for reason in self.reasons]}


@dataclass
class SitePlan:
    """A site in the plan: its version now, the versions it goes through (the last is the target), its wave."""

    host: str
    current: str
    steps: list[str]
    wave: str = ""
    schema_version: int | None = None
    downgrade: bool = False

    def as_dict(self) -> dict:
        return {"host": self.host, "current": self.current, "steps": self.steps, "wave": self.wave,
                "schema_version": self.schema_version, "downgrade": self.downgrade}


def count_or_share(text: str, *, least: int, what: str, example: str) -> tuple[int | None, float | None]:
    """Parse a count of sites (at least *least*) or a share "P%" (above 0 when *least* is 1, at most 100).

    Returns (count, None) or (None, percent); raises ValueError naming *what* and how to write it.
    """
    value = str(text).strip()
    try:
        if value.endswith("%"):
            percent = float(value[:-1])
            lowest_ok = percent > 0 if least else percent >= 0
            if not lowest_ok or percent > 100:
                raise ValueError
            return None, percent
        count = int(value)
        if count < least:
            raise ValueError
        return count, None
    except ValueError:
        raise ValueError(f"{what} {text!r}: use a count of sites ({example}) or a percentage (25%)") from None


@dataclass
class WaveSize:
    """How many sites per wave after the canary: a count, or a percentage of the eligible sites."""

    count: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str) -> WaveSize:
        """Parse "10" or "25%"; raise ValueError otherwise."""
        count, percent = count_or_share(text, least=1, what="wave size", example="10")
        return cls(count=count, percent=percent)

    def sites(self, eligible: int) -> int:
        if self.count is not None:
            return self.count
        return max(1, math.ceil(eligible * (self.percent or 100) / 100))

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else str(self.count)


@dataclass
class PlanOptions:
    """The knobs of the plan (what ``lpse-ops upgrade plan`` takes)."""

    target: str
    allow_downgrade: bool = False
    canary: int = 1
    wave_size: WaveSize = field(default_factory=lambda: WaveSize.parse(DEFAULT_WAVE_SIZE))
    max_backup_age_hours: float = DEFAULT_MAX_BACKUP_AGE_HOURS
    now: datetime | None = None


@dataclass
class UpgradePlan:
    """The plan: the target, the waves of sites (each site's steps), the sites left out and why."""

    target: str
    waves: list[list[SitePlan]]
    excluded: list[Exclusion]
    up_to_date: list[str] = field(default_factory=list)
    releases: list[Release] = field(default_factory=list)
    refused_bundles: list[Release] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    states: dict[str, SiteState] = field(default_factory=dict)
    run_id: int | None = None
    options: dict = field(default_factory=dict)
    trusted_keys: list[str] = field(default_factory=list)  # their texts: the site checks the signatures itself

    @property
    def steps(self) -> dict[str, list[str]]:
        """Each planned site's versions, in order."""
        return {site.host: site.steps for wave in self.waves for site in wave}

    @property
    def sites(self) -> list[SitePlan]:
        return [site for wave in self.waves for site in wave]

    def as_dict(self) -> dict:
        return {
            "target": self.target, "run_id": self.run_id, "options": self.options,
            "waves": [{"name": wave[0].wave if wave else "", "sites": [site.as_dict() for site in wave]}
                      for wave in self.waves],
            "steps": self.steps,
            "excluded": [exclusion.as_dict() for exclusion in self.excluded],
            "up_to_date": self.up_to_date,
            "releases": [release.as_dict() for release in self.releases],
            "refused_bundles": [release.as_dict() for release in self.refused_bundles],
            "warnings": self.warnings,
            "states": {host: state.as_dict() for host, state in sorted(self.states.items())},
        }


def _backup_reason(verification: Mapping[str, Any] | None, now: datetime, max_age: timedelta) -> Reason | None:
    hours = f"{max_age.total_seconds() / 3600:g}"
    if not verification:
        return Reason("no_verified_backup", "no restore verification recorded: run `lpse-ops backup verify` "
                      f"(a verified backup younger than {hours} h is required)")
    at = verification.get("verified_at")
    when = datetime.fromisoformat(at) if isinstance(at, str) else at
    if isinstance(when, datetime) and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if not verification.get("ok"):
        error = backup.verification_error(dict(verification))
        return Reason("no_verified_backup", f"the newest restore verification ({at}) failed"
                      + (f" ({error[:300]})" if error else "") + ": fix the backup and run `lpse-ops backup verify`")
    if not isinstance(when, datetime) or now - when > max_age:
        age = f"{(now - when).total_seconds() / 3600:.1f} h old" if isinstance(when, datetime) else "of unknown age"
        return Reason("no_verified_backup", f"the newest verified backup ({at}) is {age}, older than {hours} h: "
                      "run `lpse-ops backup verify`")
    return None


def _preflight_reasons(state: SiteState, chain: list[Release]) -> list[Reason]:
    reasons = []
    needed = DISK_FACTOR * max((release.payload_bytes for release in chain), default=0)
    if state.free_bytes is None:
        reasons.append(Reason("preflight_failed", "free space of the SPSE folder unknown (df gave nothing)"))
    elif state.free_bytes < needed:
        reasons.append(Reason("preflight_failed", f"{state.free_bytes} bytes free in the SPSE folder, "
                              f"{needed} needed ({DISK_FACTOR} x the largest bundle payload)"))
    if state.health != "ok":
        detail = f": {state.health_reason}" if state.health_reason else ""
        reasons.append(Reason("preflight_failed", f"SPSE health is {state.health or 'unknown'}{detail}"))
    return reasons


def _judge(state: SiteState, options: PlanOptions, catalogue: Catalogue, now: datetime,
           max_age: timedelta, path_cache: dict) -> tuple[list[Reason], list[Release] | None, bool]:
    """Return (reasons to leave the site out, its chain, whether it is a downgrade)."""
    if not state.reachable:
        return [Reason("unreachable", f"unreachable: {state.error}")], None, False
    if state.error:
        return [Reason("state_unreadable", state.error)], None, False
    current = state.version
    if current is None or _safe_key(current) is None:
        return [Reason("not_installed", "no SPSE release on the site: use `lpse-ops install`"
                       if current is None else f"the site's VERSION {current!r} is not a version")], None, False
    reasons: list[Reason] = []
    chain: list[Release] | None = None
    downgrade = False
    if version_key(current) > version_key(options.target):
        downgrade = True
        if options.allow_downgrade:
            chain = [catalogue.get(options.target)]  # type: ignore[list-item]  # the target is in the catalogue
        else:
            reasons.append(Reason("downgrade", f"runs {current}, newer than {options.target}: a downgrade is "
                                  "refused unless --allow-downgrade (data migrations are not reversed)"))
    else:
        key = version_key(current)
        if key not in path_cache:
            path_cache[key] = upgrade_path(current, options.target, catalogue)
        chain = path_cache[key]
        if chain == []:
            return [], [], False  # already on the target: nothing to do, whatever else holds
        if chain is None:
            reasons.append(Reason("no_path", f"no chain of bundles from {current} to {options.target}: add the "
                                  "intermediate releases to the release folder"))
    if state.frozen:
        reasons.insert(0, Reason("frozen", "frozen (spse_frozen or /etc/spse/frozen): unfreeze it to upgrade"))
    if state.lock:
        reasons.insert(1 if state.frozen else 0, Reason("locked", lock_holder(state.lock)))
    backup = _backup_reason(state.verification, now, max_age)
    if backup:
        reasons.append(backup)
    reasons += _preflight_reasons(state, chain or [])
    return reasons, chain, downgrade


def assign_waves(eligible: list[SitePlan], groups: Mapping[str, Iterable[str]], canary: int,
                 wave_size: WaveSize) -> list[list[SitePlan]]:
    """Put every eligible site in exactly one wave and name it (``SitePlan.wave``).

    Wave 0 is the canary: the eligible members of group ``canary``, else the first *canary* sites in
    natural name order. Then one wave per group ``wave_N`` (in N order, a site in its first group only)
    when any exists, with the sites in none of them last; else waves of *wave_size* sites.
    """
    by_host = {site.host: site for site in sorted(eligible, key=lambda site: natural_key(site.host))}
    if not by_host:
        return []
    placed: set[str] = set()

    def take(hosts: Iterable[str], name: str) -> list[SitePlan]:
        wave = []
        for host in sorted(hosts, key=natural_key):
            if host in by_host and host not in placed:
                placed.add(host)
                by_host[host].wave = name
                wave.append(by_host[host])
        return wave

    canary_group = [host for host in groups.get("canary", ()) if host in by_host]
    waves = [take(canary_group, "canary") if canary_group else take(list(by_host)[:max(canary, 1)], "canary")]
    numbered = sorted((int(name.split("_", 1)[1]), name) for name in groups if re.fullmatch(r"wave_\d+", name))
    if numbered:
        for _, name in numbered:
            wave = take(groups[name], name)
            if wave:
                waves.append(wave)
        rest = take([host for host in by_host if host not in placed], "unassigned")
        if rest:
            waves.append(rest)
        return waves
    size = wave_size.sites(len(by_host))
    remaining = [host for host in by_host if host not in placed]
    for start in range(0, len(remaining), size):
        waves.append(take(remaining[start:start + size], f"wave {len(waves)}"))
    return waves


def compute_plan(catalogue: Catalogue, states: Mapping[str, SiteState], groups: Mapping[str, Iterable[str]],
                 options: PlanOptions) -> UpgradePlan:
    """Compute the plan from verified bundles and site states; pure (no I/O), fast.

    Raises PlanRefused when the target has no verified bundle, or when a site's only path needs a
    bundle that failed verification.
    """
    try:
        version_key(options.target)
    except ValueError as error:
        raise PlanRefused(f"--to {options.target!r}: {error}") from None
    target = catalogue.get(options.target)
    if target is None:
        refused = catalogue.refused_for(options.target)
        if refused is not None:
            raise PlanRefused(f"the target's bundle failed verification, no host was touched: {refused.error}")
        known = ", ".join(release.version for release in catalogue.releases.values()) or "none"
        raise PlanRefused(f"no bundle of SPSE {options.target} in the release folder (verified: {known}): "
                          "add spse-<version>.tar.gz to it")
    now = options.now or datetime.now(UTC)
    max_age = timedelta(hours=options.max_backup_age_hours)
    path_cache: dict = {}
    eligible: list[SitePlan] = []
    excluded: list[Exclusion] = []
    up_to_date: list[str] = []
    used: dict[str, Release] = {}
    warnings = list(catalogue.warnings)
    for host in sorted(states, key=natural_key):
        state = states[host]
        reasons, chain, downgrade = _judge(state, options, catalogue, now, max_age, path_cache)
        if reasons:
            excluded.append(Exclusion(host, reasons, state.version))
        elif chain == []:
            up_to_date.append(host)
        elif chain:
            for release in chain:
                used[release.version] = release
            eligible.append(SitePlan(host, str(state.version), [release.version for release in chain],
                                     schema_version=state.schema_version, downgrade=downgrade))
    downgrades = [site.host for site in eligible if site.downgrade]
    if downgrades:
        warnings.append(f"DOWNGRADE of {', '.join(downgrades)} to {options.target} (--allow-downgrade): the "
                        "database migrations they ran are NOT reversed; the older release must accept that schema")
    warnings += [f"{release.error} (on no path of this plan)" for release in catalogue.refused]
    waves = assign_waves(eligible, groups, options.canary, options.wave_size)
    return UpgradePlan(
        target=target.version, waves=waves, excluded=excluded, up_to_date=up_to_date,
        releases=sorted(used.values(), key=lambda release: version_key(release.version)) or [target],
        refused_bundles=list(catalogue.refused), warnings=warnings, states=dict(states),
        options={"allow_downgrade": options.allow_downgrade, "canary": options.canary,
                 "wave_size": str(options.wave_size), "max_backup_age_hours": options.max_backup_age_hours})


# ------------------------------------------------------------------------------------------ entry


@dataclass
class PlanContext:
    """What ``lpse-ops upgrade plan`` asks for."""

    target: str
    inventory: Path
    releases_dir: Path
    trusted_keys: Path
    limit: str | None = None
    canary: int = 1
    wave_size: str = DEFAULT_WAVE_SIZE
    max_backup_age_hours: float = DEFAULT_MAX_BACKUP_AGE_HOURS
    allow_downgrade: bool = False
    state_url: str | None = None
    progress: operation.ProgressFactory | None = None
    """Not drawn: the sites are read over SSH in a few seconds, not by a playbook."""
    timeout: float = 20.0
    """Seconds each site has to answer the reading (connection and command)."""


def state_from_probe(probe: ssh_probe.SiteProbe) -> SiteState:
    """Turn one site's probe (the fleet view's read-only SSH reading) into the SiteState a plan judges; pure.

    The same facts ``playbooks/site_state.yml`` gathers for AWX: the version (``current/VERSION``, else
    the release folder ``current`` points at), SPSE's own health and schema version, the free space of
    the SPSE folder and the freeze flag.
    """
    if not probe.reachable:
        return SiteState(probe.host, reachable=False, error=f"{probe.error}: {probe.error_detail or ''}".strip(": "))
    if probe.error_detail is not None:
        return SiteState(probe.host, error=probe.error_detail)
    health = probe.spse_health
    return SiteState(probe.host, version=probe.spse_version or probe.release_link,
                     schema_version=probe.schema_version,
                     health=str(health.get("status") or "") or None if health else "unanswered",
                     health_reason=str(health.get("reason")) if health and health.get("reason") else (
                         None if health else "SPSE's /health did not answer"),
                     free_bytes=probe.spse_free_bytes, frozen=bool(probe.frozen))


def read_states(ctx: PlanContext, read: fleet.Fleet, store: Any) -> tuple[dict[str, SiteState], int]:
    """Read every target site over SSH (one connection and one command each), record the reading as run
    ``upgrade.plan``, and the verifications the sites ran by themselves; return the states and the run id."""
    run_id = store.start_run(OPERATION, {"inventory": str(ctx.inventory), "limit": ctx.limit, "target": ctx.target,
                                         "releases": str(ctx.releases_dir)}, read.hosts,
                             parent_id=operation.parent_run())
    states: dict[str, SiteState] = {}
    try:
        for raw in fleet.probe_sites(read, timeout=ctx.timeout, backup_args=ssh_probe.VERIFICATIONS_ONLY):
            probe = probe_rules.to_probe(raw)
            state = state_from_probe(probe)
            if probe.backup and probe.error_detail is None:
                backup.ingest_site_verifications(store, probe.host, probe.backup, run_id)
            state.verification = backup.current_verification(store, probe.host)
            states[probe.host] = state
    except BaseException:
        store.finish_run(run_id, "aborted", summary={"error": "interrupted while reading the sites"})
        raise
    failed = [host for host, state in states.items() if not state.reachable or state.error]
    store.finish_run(run_id, "failed" if failed else "ok", host_results={
        host: {"status": "unreachable" if not state.reachable else "failed" if state.error else "ok",
               "unreachable": int(not state.reachable), "failed": int(bool(state.error)),
               "state": state.as_dict()} for host, state in states.items()},
        summary={"sites": len(states), "unreadable": failed})
    return states, run_id


def plan(ctx: PlanContext) -> UpgradePlan:
    """Verify the bundles, read every target site's state, and return the plan. Changes nothing on a site.

    Bad input (option, bundle, missing target bundle, inventory) raises PlanRefused before any host is
    touched. Each site is read over SSH with the fleet probe (one connection, one command), recorded as
    run ``upgrade.plan``; its current verification is the one every view shares
    (:func:`lpse_ops.actions.backup.current_verification`), the site's own scheduled ones included.
    """
    from lpse_ops import config
    from lpse_ops.state import StateStore

    try:
        wave_size = WaveSize.parse(ctx.wave_size)
        version_key(ctx.target)
    except ValueError as error:
        raise PlanRefused(str(error)) from None
    if ctx.canary < 1:
        raise PlanRefused("--canary must be at least 1")
    options = PlanOptions(ctx.target, ctx.allow_downgrade, ctx.canary, wave_size, ctx.max_backup_age_hours)
    catalogue = load_catalogue(ctx.releases_dir, ctx.trusted_keys)
    compute_plan(catalogue, {}, {}, options)  # refuses a missing or bad target bundle before any host is touched
    refuse_bad_steps(catalogue, ctx.target)
    read = fleet.read(ctx.inventory, limit=ctx.limit)
    with StateStore.open(ctx.state_url or config.state_url()) as store:
        states, run_id = read_states(ctx, read, store)
        locks = {lock["site"]: lock for lock in operation.others_locks(store)}  # a drill's upgrade works under its lock
        for host, state in states.items():
            state.lock = locks.get(host)
            if _flag(read.hostvars(host).get("spse_frozen")):
                state.frozen = True
    upgrade_plan = compute_plan(catalogue, states, read.groups, options)
    upgrade_plan.run_id = run_id
    upgrade_plan.trusted_keys = bundle.trusted_key_texts(ctx.trusted_keys)
    return upgrade_plan


__all__ = [
    "CODES",
    "Catalogue",
    "Exclusion",
    "PlanContext",
    "PlanOptions",
    "PlanRefused",
    "Reason",
    "Release",
    "SitePlan",
    "SiteState",
    "UpgradePlan",
    "WaveSize",
    "assign_waves",
    "compute_plan",
    "load_catalogue",
    "parse_site_state",
    "plan",
    "refuse_bad_steps",
    "states_from_run",
    "upgrade_path",
    "version_key",
]
