"""The pure core of an upgrade plan (600 sites well under a second): which sites are left out, with
machine-readable codes (:data:`lpse_ops.actions.upgrade_plan_types.CODES`), each remaining site's path, and the
waves (a canary first, then inventory groups ``wave_N`` or shares of the rest). No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from lpse_ops.actions import backup, fleet
from lpse_ops.actions.fleet import WaveSize, natural_key
from lpse_ops.actions.upgrade_catalogue import (
    Catalogue,
    PlanRefused,
    Release,
    safe_key,
    upgrade_path,
    version_key,
)
from lpse_ops.actions.upgrade_plan_types import (
    DISK_FACTOR,
    Exclusion,
    PlanOptions,
    Reason,
    SitePlan,
    UpgradePlan,
)
from lpse_ops.actions.upgrade_site_state import SiteState
from lpse_ops.state.store import lock_holder


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
    if current is None or safe_key(current) is None:
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
    """The eligible sites in waves (:func:`fleet.assign_waves`), each site's ``SitePlan.wave`` named."""
    by_host = {site.host: site for site in eligible}
    waves = []
    for wave in fleet.assign_waves(by_host, groups, canary, wave_size):
        for host in wave.hosts:
            by_host[host].wave = wave.name
        waves.append([by_host[host] for host in wave.hosts])
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
                                     schema_version=state.schema_version, downgrade=downgrade,
                                     tool_sha256=state.tool_sha256))
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
