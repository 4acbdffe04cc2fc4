"""The record types of an upgrade plan: the options it is computed with, and the plan itself (its waves of
sites, each site's steps, the sites left out and the codes why); plain data, no reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from lpse_ops.actions import backup
from lpse_ops.actions.fleet import Fleet, WaveSize
from lpse_ops.actions.upgrade_catalogue import Release
from lpse_ops.actions.upgrade_site_state import SiteState

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
    tool_sha256: str | None = None
    """The sha256 of the site tool the site had when read (its probe)."""

    def as_dict(self) -> dict:
        return {"host": self.host, "current": self.current, "steps": self.steps, "wave": self.wave,
                "schema_version": self.schema_version, "downgrade": self.downgrade, "tool_sha256": self.tool_sha256}


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
    fleet: Fleet | None = None  # the inventory as the plan read it; each wave's run reuses it (no second reading)

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
