"""The report's data: what ``actions.report_gather.gather`` reads from the state store and the templates render.

Plain data classes, no reading and no rendering: the gathering is in :mod:`lpse_ops.actions.report_gather`, the
rendering in :mod:`lpse_ops.reports.monthly` (and the compliance template).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

NATIONAL_ZONE = "Asia/Jakarta"
"""The national report's clock: months begin and end at midnight WIB."""


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


@dataclass(frozen=True)
class Period:
    """A half-open period [*since*, *until*) of aware datetimes, with its Indonesian name."""

    since: datetime
    until: datetime
    label: str

    def contains(self, moment: datetime | None) -> bool:
        return moment is not None and self.since <= moment < self.until

    def as_dict(self) -> dict[str, str]:
        return {"since": self.since.isoformat(), "until": self.until.isoformat(), "label": self.label}



@dataclass
class Source:
    """Where one kind of data came from, and whether there was any: ``state`` ok, empty or missing."""

    name: str
    state: str
    rows: int = 0
    note: str = ""


@dataclass
class Site:
    host: str
    name: str
    zone: str


@dataclass
class SiteVersion:
    host: str
    version: str | None
    seen_at: datetime | None
    source: str
    """"probe" (site_probes), "run N" (an install or upgrade step), or "" when nothing is known."""
    on_current: bool


@dataclass
class Release:
    current: str | None
    source: str
    sites: list[SiteVersion] = field(default_factory=list)

    @property
    def on_current(self) -> int:
        return sum(site.on_current for site in self.sites)


@dataclass
class Change:
    """One install or upgrade run of the period (8.1.1)."""

    run_id: int
    operation: str
    started_at: datetime
    result: str | None
    hosts: list[str]
    version: str | None
    failed_hosts: list[str]


@dataclass
class Utilisation:
    """One site's figures over the period from its probes (8.1.1, 13.2)."""

    host: str
    probes: int
    unreachable: int
    disk_max: float | None
    disk_last: float | None
    memory_min: float | None
    load_max: float | None
    load_mean: float | None
    cpus: int | None


@dataclass
class DailyPoint:
    day: date
    disk_max: float | None
    memory_min: float | None
    load_per_cpu_max: float | None


@dataclass
class Incident:
    id: Any
    kind: str
    site: str
    priority: str
    title: str
    status: str
    opened_at: datetime | None
    responded_at: datetime | None
    resolved_at: datetime | None
    response_breached: bool
    resolution_breached: bool
    escalations: int
    site_zone: str | None = None
    site_name: str | None = None

    @property
    def response_s(self) -> float | None:
        return _seconds(self.opened_at, self.responded_at)

    @property
    def resolution_s(self) -> float | None:
        return _seconds(self.opened_at, self.resolved_at)


@dataclass
class TrendRow:
    """Counts of one priority (or the requests) this period and the one before (8.1.2)."""

    label: str
    previous: int
    current: int

    @property
    def change(self) -> int:
        return self.current - self.previous


@dataclass
class PriorityCompliance:
    """How the period's incidents of one priority kept their response and resolution targets (7.6)."""

    priority: str
    total: int
    response_breached: int
    resolution_breached: int
    open: int
    response_median_s: float | None
    resolution_median_s: float | None


@dataclass
class WorkItem:
    when: str
    activity: str
    sites: str
    clause: str


@dataclass
class VerificationSummary:
    host: str
    ok: int
    failed: int
    last_ok_at: datetime | None
    last_failed_at: datetime | None
    median_restore_s: float | None
    by_site: int = 0
    """How many of them the site ran by itself (its timer), read into the store when the site was read."""
    newest_id: str | None = None
    """The newest verification of the period (the site's own id, else the store's): the one every view names."""
    newest_at: datetime | None = None


@dataclass
class Drill:
    id: Any
    scenario: str
    site: str
    started_at: datetime | None
    ok: bool | None
    failed_step: str | None
    rto_s: float | None
    rpo_db_s: float | None
    rpo_docs_s: float | None
    targets: dict[str, float | None]
    met: bool | None
    passed_steps: list[str] = field(default_factory=list)
    """Runbook steps that failed and that the runbook went on past (on_failure=continue)."""


@dataclass
class AuditRow:
    """A site's newest audit of the period against its newest one before it (6.2.16, 6.2.7)."""

    site: str
    audited_at: datetime | None
    score: float | None
    previous_score: float | None
    lynis_index: int | None
    failed: list[str]
    worse: list[str]
    better: list[str]

    @property
    def delta(self) -> float | None:
        if self.score is None or self.previous_score is None:
            return None
        return round(self.score - self.previous_score, 1)


@dataclass
class ReportData:
    """Everything one report says, typed; the renderer only formats it."""

    kind: str
    period: Period
    previous: Period | None
    generated_at: datetime
    sites: list[Site]
    zones_from: str
    sources: dict[str, Source]
    release: Release
    changes: list[Change]
    utilisation: list[Utilisation]
    daily: dict[str, list[DailyPoint]]
    probe_count: int
    incidents: list[Incident]
    incidents_previous: list[Incident]
    trend: list[TrendRow]
    compliance: list[PriorityCompliance]
    work_plan: list[WorkItem]
    work_plan_source: str
    verifications: list[VerificationSummary]
    drills: list[Drill]
    audits: list[AuditRow]
    audit_log: dict[str, Any]

    def site(self, host: str) -> Site:
        for site in self.sites:
            if site.host == host:
                return site
        return Site(host, host, NATIONAL_ZONE)

    @property
    def p1(self) -> list[Incident]:
        return [incident for incident in self.incidents if incident.kind == "incident" and incident.priority == "P1"]

    @property
    def requests(self) -> list[Incident]:
        return [incident for incident in self.incidents if incident.kind == "request"]

    @property
    def disturbances(self) -> list[Incident]:
        return [incident for incident in self.incidents if incident.kind == "incident"]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["period"] = self.period.as_dict()
        data["previous"] = self.previous.as_dict() if self.previous else None
        return data


