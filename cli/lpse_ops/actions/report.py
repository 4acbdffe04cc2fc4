"""``lpse-ops report monthly|compliance``: gather a period's facts from the state store, render, record.

Two entry points: :func:`gather` reads everything a report says into a typed :class:`ReportData`
(testable without rendering: no HTML, no browser), and :func:`generate` gathers, renders the HTML
(``reports/monthly.py``), prints it to PDF when asked (``backends/chromium.py``), writes the files
and records the report as a run (``report.monthly`` / ``report.compliance``) with the files' sha256,
so the audit log shows which report was issued from which data (clauses 13.3, 13.4).

Periods. The national report's month is a month in WIB (Asia/Jakarta): November 2026 is
[2026-11-01 00:00 WIB, 2026-12-01 00:00 WIB). A time about one site is shown in that site's own
zone (the inventory's ``site_timezone``; WIB when there is no inventory, which the report says).

Sources. Runs, host results, restore verifications and site probes come from the state store;
incidents, drills and audits from the modules of their areas (``lpse_ops.state.incidents``,
``.drills``, ``.audits``), imported lazily: a module that is not installed, or a period without
rows, is reported as "tidak ada data" with its reason, never filled in.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from lpse_ops import bundle, config
from lpse_ops.actions.operation import OperationRefused
from lpse_ops.reports import dates
from lpse_ops.reports.data import (  # noqa: F401 (the report's data, also read through this module)
    NATIONAL_ZONE,
    AuditRow,
    Change,
    DailyPoint,
    Drill,
    Incident,
    Period,
    PriorityCompliance,
    Release,
    ReportData,
    Site,
    SiteVersion,
    Source,
    TrendRow,
    Utilisation,
    VerificationSummary,
    WorkItem,
)

KINDS = ("monthly", "compliance")
FORMATS = ("html", "pdf")
PRIORITIES = ("P1", "P2", "P3", "P4")
CHANGE_OPERATIONS = ("install", "upgrade.rollout", "upgrade.site", "upgrade.rollback")
"""The runs that change a site's release (8.1.1 implementation progress)."""
REACHED_STATUSES = ("ok", "changed")
"""A host result that finished its run: ``changed`` is a success that changed something (an install)."""
FAILED_STATUSES = ("failed", "unreachable")
"""A host result that did not finish its run: these sites go under "Situs gagal"."""

Progress = Callable[[str], None]


class ReportRefused(OperationRefused):
    """The report cannot be made (bad period, unreadable work plan, no PDF engine): nothing was written."""


class ReportFailed(Exception):
    """The report was started but not finished (the PDF engine failed); its run is recorded as failed."""


# -- periods --------------------------------------------------------------------------------------


MONTH_PATTERN = re.compile(r"^(\d{4})-(\d{2})$")


def month_period(month: str) -> Period:
    """Return the period of *month* ("2026-11") in WIB; raise ReportRefused on a malformed month."""
    match = MONTH_PATTERN.match(month.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise ReportRefused(f"--month must be YYYY-MM (e.g. 2026-11), not {month!r}")
    year, number = int(match.group(1)), int(match.group(2))
    zone = dates.zone(NATIONAL_ZONE)
    since = datetime(year, number, 1, tzinfo=zone)
    until = datetime(year + (number == 12), number % 12 + 1, 1, tzinfo=zone)
    return Period(since, until, f"{dates.MONTHS[number - 1]} {year}")


def previous_month(period: Period) -> Period:
    """Return the month before the month *period* begins in (WIB)."""
    before = (period.since.astimezone(dates.zone(NATIONAL_ZONE)) - timedelta(days=1))
    return month_period(f"{before.year:04d}-{before.month:02d}")


def days_period(first: date, last: date) -> Period:
    """Return the period from *first* 00:00 WIB to the end of *last* (WIB); raise ReportRefused if reversed."""
    if last < first:
        raise ReportRefused(f"--to ({last}) is before --from ({first})")
    zone = dates.zone(NATIONAL_ZONE)
    since = datetime(first.year, first.month, first.day, tzinfo=zone)
    until = datetime(last.year, last.month, last.day, tzinfo=zone) + timedelta(days=1)
    return Period(since, until, f"{_day_label(first)} s.d. {_day_label(last)}")


def _day_label(day: date) -> str:
    return f"{day.day} {dates.MONTHS[day.month - 1]} {day.year}"


def current_month() -> str:
    """Return the month now in WIB, as YYYY-MM."""
    now = datetime.now(UTC).astimezone(dates.zone(NATIONAL_ZONE))
    return f"{now.year:04d}-{now.month:02d}"


# -- gathering ------------------------------------------------------------------------------------


@dataclass
class ReportRequest:
    """What to report on. *period*: from :func:`month_period` or :func:`days_period`.

    *site_zones* / *site_names*: each site's zone and name (the command reads them from the
    inventory's ``site_timezone`` / ``site_name``); a site without one is shown in WIB.
    *release*: the release sites should be on (default: the version of the newest install or upgrade
    rollout up to the period's end that at least one site reached, else the highest version a probe
    saw). *work_plan*: a YAML file of next month's work (``docs/reports.md``); without it the plan is
    derived from the month's data (sites still behind, unverified backups, missed drills, worse audits).
    """

    kind: str
    period: Period
    out_dir: Path | None = None
    formats: tuple[str, ...] = ("html", "pdf")
    site_zones: dict[str, str] = field(default_factory=dict)
    site_names: dict[str, str] = field(default_factory=dict)
    zones_from: str = ""
    release: str | None = None
    work_plan: Path | None = None
    state_url: str | None = None
    progress: Progress | None = None
    now: datetime | None = None


def _when(value: Any) -> datetime | None:
    """Return an aware datetime from an ISO string or datetime (naive taken as UTC); None stays None."""
    if value is None or value == "":
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


version_key = bundle.display_order
"""Order the versions sites report: numerically ("1.10" after "1.9"), text that is no version after them."""


def _area(module_name: str, function: str) -> Callable[..., list[dict]] | None:
    """Return ``lpse_ops.state.<module>.<function>``, or None when that area is not installed."""
    try:
        module = importlib.import_module(f"lpse_ops.state.{module_name}")
    except ModuleNotFoundError as error:
        if error.name not in (f"lpse_ops.state.{module_name}",):
            raise
        return None
    return getattr(module, function, None)


def _read_area(store, sources: dict[str, Source], key: str, module_name: str, function: str, title: str,
               since: datetime, until: datetime) -> list[dict]:
    reader = _area(module_name, function)
    if reader is None:
        sources.setdefault(key, Source(title, "missing", 0, f"modul lpse_ops.state.{module_name} belum tersedia"))
        return []
    judged_at = {"now": min(until, datetime.now(UTC))} if "now" in inspect.signature(reader).parameters else {}
    rows = list(reader(store, since=since, until=until, **judged_at))  # breaches as they stood at the period's end
    known = sources.get(key)
    total = (known.rows if known else 0) + len(rows)
    sources[key] = Source(title, "ok" if total else "empty", total,
                          "" if total else "tidak ada catatan pada periode ini")
    return rows


def _incident(row: dict) -> Incident:
    return Incident(id=row.get("id"), kind=str(row.get("kind") or "incident"), site=str(row.get("site") or ""),
                    priority=str(row.get("priority") or "-"), title=str(row.get("title") or ""),
                    status=str(row.get("status") or ""), opened_at=_when(row.get("opened_at")),
                    responded_at=_when(row.get("responded_at")), resolved_at=_when(row.get("resolved_at")),
                    response_breached=bool(row.get("response_breached")),
                    resolution_breached=bool(row.get("resolution_breached")),
                    escalations=len(row.get("escalations") or []) if isinstance(row.get("escalations"), list)
                    else int(row.get("escalations") or 0),
                    site_zone=row.get("site_timezone"), site_name=row.get("site_name"))


def _drill(row: dict) -> Drill:
    return Drill(id=row.get("id"), scenario=str(row.get("scenario") or ""), site=str(row.get("site") or ""),
                 started_at=_when(row.get("started_at")), ok=row.get("ok"), failed_step=row.get("failed_step"),
                 rto_s=row.get("rto_s"), rpo_db_s=row.get("rpo_db_s"), rpo_docs_s=row.get("rpo_docs_s"),
                 targets=dict(row.get("targets") or {}), met=row.get("met"),
                 passed_steps=[str(step.get("step")) for step in ((row.get("detail") or {}).get("continued_failures")
                                                                  or []) if isinstance(step, dict)])


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def _trend(current: list[Incident], previous: list[Incident]) -> list[TrendRow]:
    def count(rows: list[Incident], kind: str, priority: str | None = None) -> int:
        return sum(row.kind == kind and (priority is None or row.priority == priority) for row in rows)

    rows = [TrendRow(f"Gangguan {priority}", count(previous, "incident", priority),
                     count(current, "incident", priority)) for priority in PRIORITIES]
    rows.append(TrendRow("Permintaan layanan", count(previous, "request"), count(current, "request")))
    return rows


def _compliance(incidents: list[Incident]) -> list[PriorityCompliance]:
    rows = []
    for priority in PRIORITIES:
        chosen = [row for row in incidents if row.priority == priority]
        rows.append(PriorityCompliance(
            priority, len(chosen), sum(row.response_breached for row in chosen),
            sum(row.resolution_breached for row in chosen), sum(row.resolved_at is None for row in chosen),
            _median([row.response_s for row in chosen if row.response_s is not None]),
            _median([row.resolution_s for row in chosen if row.resolution_s is not None])))
    return rows


def _run_version(run: dict, rollouts: dict[int, str | None]) -> str | None:
    """Return the release *run* put on its sites (None for a rollback, or a --check run that changed nothing)."""
    args = run.get("args") or {}
    if args.get("check"):
        return None
    if run["operation"] == "install":
        return args.get("version")
    if run["operation"] == "upgrade.rollout":
        return args.get("target")
    if run["operation"] == "upgrade.site":
        return rollouts.get(run.get("parent_id") or -1)
    return None


def _release(store, request: ReportRequest, hosts: list[str],
             newest: dict[str, dict]) -> tuple[Release, list[Change]]:
    """Return the current release, each site's version (*newest*: its newest probe before the period's
    end) and the period's installs and upgrades."""
    from lpse_ops.state import reports as state_reports

    period = request.period
    history = state_reports.runs_between(store, None, period.until, CHANGE_OPERATIONS)
    waves = {run["id"]: run.get("parent_id") for run in state_reports.runs_between(
        store, None, period.until, ("upgrade.wave",))}
    targets = {run["id"]: (run.get("args") or {}).get("target") for run in history
               if run["operation"] == "upgrade.rollout"}
    rollouts = {wave: targets.get(parent) for wave, parent in waves.items() if parent is not None}
    current, source = request.release, "--release" if request.release else ""
    if current is None:
        for run in reversed(history):
            version = _run_version(run, rollouts)
            outcomes = (run.get("host_results") or {}).values()
            reached = any(outcome.get("status") in REACHED_STATUSES for outcome in outcomes)
            if run["operation"] in ("install", "upgrade.rollout") and reached and version:
                current, source = version, f"run {run['id']} ({run['operation']})"
                break
    versions: dict[str, SiteVersion] = {}
    for run in history:  # oldest first: a later successful change wins
        version = _run_version(run, rollouts)
        for host, outcome in (run.get("host_results") or {}).items():
            if version and outcome.get("status") in REACHED_STATUSES and run["operation"] != "upgrade.rollout":
                versions[host] = SiteVersion(host, version, _when(run["started_at"]), f"run {run['id']}", False)
    for host, probe in newest.items():
        seen = _when(probe["probed_at"])
        known = versions.get(host)
        if probe.get("spse_version") and (known is None or known.seen_at is None or seen >= known.seen_at):
            versions[host] = SiteVersion(host, probe["spse_version"], seen, "probe", False)
    if current is None:
        seen_versions = [site.version for site in versions.values() if site.version]
        if seen_versions:
            current, source = max(seen_versions, key=version_key), "versi tertinggi hasil pemantauan"
    sites = []
    for host in hosts:
        site = versions.get(host) or SiteVersion(host, None, None, "", False)
        site.on_current = bool(current and site.version == current)
        sites.append(site)
    changes = []
    for run in history:
        started = _when(run["started_at"])
        if (run["operation"] in ("install", "upgrade.rollout", "upgrade.rollback") and period.contains(started)
                and not (run.get("args") or {}).get("check")):
            failed = sorted(host for host, outcome in (run.get("host_results") or {}).items()
                            if outcome.get("status") in FAILED_STATUSES)
            changes.append(Change(run["id"], run["operation"], started, run.get("result"), list(run["hosts"]),
                                  _run_version(run, rollouts), failed))
    return Release(current, source or "tidak diketahui", sites), changes


def _utilisation(probes: list[dict], hosts: list[str]) -> tuple[list[Utilisation], dict[str, list[DailyPoint]]]:
    by_host: dict[str, list[dict]] = defaultdict(list)
    for probe in probes:
        by_host[probe["host"]].append(probe)
    rows, daily = [], {}
    zone = dates.zone(NATIONAL_ZONE)
    for host in hosts:
        chosen = by_host.get(host, [])
        reachable = [probe for probe in chosen if probe["reachable"]]
        disks = [probe["disk_used_percent"] for probe in reachable if probe["disk_used_percent"] is not None]
        memory = [probe["memory_available_percent"] for probe in reachable
                  if probe["memory_available_percent"] is not None]
        loads = [probe["load_5m"] for probe in reachable if probe["load_5m"] is not None]
        cpus = next((probe["cpus"] for probe in reversed(reachable) if probe["cpus"]), None)
        rows.append(Utilisation(host, len(chosen), len(chosen) - len(reachable), max(disks) if disks else None,
                                disks[-1] if disks else None, min(memory) if memory else None,
                                max(loads) if loads else None, round(statistics.fmean(loads), 2) if loads else None,
                                cpus))
        days: dict[date, list[dict]] = defaultdict(list)
        for probe in reachable:
            days[_when(probe["probed_at"]).astimezone(zone).date()].append(probe)
        points = []
        for day in sorted(days):
            values = days[day]
            disk = [v["disk_used_percent"] for v in values if v["disk_used_percent"] is not None]
            mem = [v["memory_available_percent"] for v in values if v["memory_available_percent"] is not None]
            load = [v["load_5m"] / v["cpus"] for v in values if v["load_5m"] is not None and v["cpus"]]
            points.append(DailyPoint(day, max(disk) if disk else None, min(mem) if mem else None,
                                     round(max(load), 3) if load else None))
        if points:
            daily[host] = points
    rows.sort(key=lambda row: -(row.disk_max or -1))
    return rows, daily


def _verifications(rows: list[dict], hosts: list[str]) -> list[VerificationSummary]:
    by_host: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_host[row["host"]].append(row)
    summaries = []
    for host in hosts:
        chosen = by_host.get(host, [])
        good = [row for row in chosen if row["ok"]]
        bad = [row for row in chosen if not row["ok"]]
        summaries.append(VerificationSummary(
            host, len(good), len(bad), _when(good[-1]["verified_at"]) if good else None,
            _when(bad[-1]["verified_at"]) if bad else None,
            _median([row["restore_duration_s"] for row in good if row["restore_duration_s"] is not None]),
            sum(row.get("source") == "site" for row in chosen),
            str(chosen[-1].get("site_verification_id") or chosen[-1]["id"]) if chosen else None,
            _when(chosen[-1]["verified_at"]) if chosen else None))
    return summaries


def _audits(current: list[dict], before: list[dict]) -> list[AuditRow]:
    previous_score: dict[str, float] = {}
    for row in before:
        if row.get("score") is not None:
            previous_score[row["site"]] = row["score"]
    newest: dict[str, dict] = {}
    firsts: dict[str, dict] = {}
    worse: dict[str, set[str]] = defaultdict(set)
    better: dict[str, set[str]] = defaultdict(set)
    for row in current:  # oldest first
        if row.get("score") is None:
            continue
        firsts.setdefault(row["site"], row)
        newest[row["site"]] = row
        drift = row.get("drift") or {}
        worse[row["site"]].update(drift.get("worse") or [])
        better[row["site"]].update(drift.get("better") or [])
    rows = []
    for site in sorted(newest):
        row = newest[site]
        now_failing = set(row.get("failed") or [])
        rows.append(AuditRow(site, _when(row.get("audited_at")), row.get("score"),
                             previous_score.get(site, firsts[site]["score"] if firsts[site] is not row else None),
                             row.get("lynis_index"), sorted(now_failing),
                             sorted(worse[site] & now_failing), sorted(better[site] - now_failing)))
    return rows


WORK_PLAN_KEYS = {"date", "activity", "sites", "clause"}


def read_work_plan(path: Path) -> list[WorkItem]:
    """Read a work-plan YAML file (a list of ``{date, activity, sites, clause}``); raise ReportRefused
    listing every problem."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ReportRefused(f"cannot read the work plan {path}: {error}") from error
    items = raw.get("items") if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not items:
        raise ReportRefused(f"work plan {path}: expected a list of items with date and activity (docs/reports.md)")
    problems, plan = [], []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not item.get("activity") or not item.get("date"):
            problems.append(f"item {index + 1}: needs 'date' and 'activity'")
            continue
        unknown = set(item) - WORK_PLAN_KEYS
        if unknown:
            problems.append(f"item {index + 1}: unknown key(s) {', '.join(sorted(unknown))} "
                            f"(allowed: {', '.join(sorted(WORK_PLAN_KEYS))})")
            continue
        sites = item.get("sites") or "semua situs"
        plan.append(WorkItem(str(item["date"]), str(item["activity"]),
                             ", ".join(map(str, sites)) if isinstance(sites, list) else str(sites),
                             str(item.get("clause") or "")))
    if problems:
        raise ReportRefused(f"work plan {path} has {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))
    return plan


def _derived_plan(release: Release, audits: list[AuditRow], drills: list[Drill],
                  verifications: list[VerificationSummary], next_label: str) -> list[WorkItem]:
    plan = []
    behind = [site.host for site in release.sites if not site.on_current]
    if release.current and behind:
        plan.append(WorkItem(next_label, f"Upgrade SPSE ke versi {release.current} (dengan pemberitahuan "
                             "pemeliharaan sebelumnya, klausul 6.2.13)", ", ".join(behind), "6.2.6"))
    unverified = [row.host for row in verifications if row.ok == 0]
    if unverified:
        plan.append(WorkItem(next_label, "Verifikasi pemulihan cadangan (restore) yang belum berhasil pada bulan ini",
                             ", ".join(unverified), "6.1.4.1"))
    missed = sorted({drill.site for drill in drills if drill.met is False or drill.ok is False})
    if missed:
        plan.append(WorkItem(next_label, "Mengulang uji pemulihan bencana yang gagal atau melampaui target RTO/RPO",
                             ", ".join(missed), "10.4"))
    worse = [row.site for row in audits if row.worse]
    if worse:
        plan.append(WorkItem(next_label, "Menindaklanjuti kontrol keamanan yang memburuk pada audit",
                             ", ".join(worse), "6.2.7"))
    return plan


def _sites(request: ReportRequest, seen: set[str], incidents: list[Incident]) -> tuple[list[Site], str]:
    """Return the sites (inventory, else every site in the data) with their zone and name, and where the
    zones came from: the inventory, else the zone an incident record carries, else WIB."""
    zones, names = dict(request.site_zones), dict(request.site_names)
    recorded = {row.site: row for row in incidents if row.site_zone in dates.ZONE_NAMES}
    hosts = sorted(set(zones) | set(names) | seen)
    sites = []
    for host in hosts:
        zone = zones.get(host) if zones.get(host) in dates.ZONE_NAMES else None
        if zone is None and host in recorded:
            zone = recorded[host].site_zone
        sites.append(Site(host, names.get(host) or (recorded[host].site_name if host in recorded else None) or host,
                          zone or NATIONAL_ZONE))
    if request.zones_from:
        origin = request.zones_from
    elif recorded:
        origin = "zona yang tercatat pada catatan gangguan; situs lain dalam WIB"
    else:
        origin = "tanpa inventaris: semua waktu dalam WIB"
    return sites, origin


def gather(store, request: ReportRequest) -> ReportData:
    """Read everything *request*'s report says from *store* (a StateStore) into a ReportData.

    Read-only. Raises ReportRefused on an unknown kind or an unreadable work-plan file.
    """
    from lpse_ops.state import reports as state_reports

    if request.kind not in KINDS:
        raise ReportRefused(f"report kind must be one of {', '.join(KINDS)}, not {request.kind!r}")
    period = request.period
    previous = previous_month(period) if request.kind == "monthly" else None
    sources: dict[str, Source] = {}

    probes = state_reports.probes_between(store, period.since, period.until)
    sources["probes"] = Source("Pemantauan situs (site_probes)", "ok" if probes else "empty", len(probes))
    verification_rows = state_reports.verifications_between(store, period.since, period.until)
    sources["verifications"] = Source("Verifikasi pemulihan cadangan (restore_verifications)",
                                      "ok" if verification_rows else "empty", len(verification_rows))
    incident_rows = _read_area(store, sources, "incidents", "incidents", "list_incidents",
                               "Gangguan dan permintaan layanan", period.since, period.until)
    previous_rows = (_read_area(store, {}, "incidents", "incidents", "list_incidents", "", previous.since,
                                previous.until) if previous else [])
    drill_rows = _read_area(store, sources, "drills", "drills", "list_drills", "Uji pemulihan bencana (drill)",
                            period.since, period.until)
    audit_rows = _read_area(store, sources, "audits", "audits", "list_audits", "Audit kepatuhan",
                            period.since, period.until)
    audits_before = (_read_area(store, {}, "audits", "audits", "list_audits", "", period.since - timedelta(days=366),
                                period.since) if "audits" in sources and sources["audits"].state != "missing" else [])

    incidents = [_incident(row) for row in incident_rows]
    incidents_previous = [_incident(row) for row in previous_rows]
    drills = [_drill(row) for row in drill_rows]
    seen = ({probe["host"] for probe in probes} | {row["host"] for row in verification_rows}
            | {row.site for row in incidents if row.site} | {row.site for row in drills if row.site}
            | {row["site"] for row in audit_rows})
    newest_probes = state_reports.latest_probes_before(store, period.until)
    seen |= set(newest_probes)
    sites, zones_from = _sites(request, seen, incidents + incidents_previous)
    hosts = [site.host for site in sites]

    release, changes = _release(store, request, hosts, newest_probes)
    utilisation, daily = _utilisation(probes, hosts)
    verifications = _verifications(verification_rows, hosts)
    audits = _audits(audit_rows, audits_before)
    next_month = month_period(f"{period.until.astimezone(dates.zone(NATIONAL_ZONE)):%Y-%m}")
    if request.work_plan is not None:
        work_plan, plan_source = read_work_plan(request.work_plan), f"berkas {request.work_plan.name}"
    else:
        work_plan = _derived_plan(release, audits, drills, verifications, next_month.label)
        plan_source = ("disusun dari data bulan ini (situs yang belum pada rilis terkini, temuan cadangan, "
                       "uji dan audit)")
    verify = store.audit_verify()
    audit_log = {"ok": verify.ok, "entries": store.audit_count(), "problems": list(verify.problems)}
    return ReportData(
        kind=request.kind, period=period, previous=previous, generated_at=request.now or datetime.now(UTC),
        sites=sites, zones_from=zones_from,
        sources=sources, release=release, changes=changes, utilisation=utilisation, daily=daily,
        probe_count=len(probes), incidents=incidents, incidents_previous=incidents_previous,
        trend=_trend(incidents, incidents_previous), compliance=_compliance([row for row in incidents
                                                                             if row.kind == "incident"]),
        work_plan=work_plan, work_plan_source=plan_source, verifications=verifications, drills=drills,
        audits=audits, audit_log=audit_log)


# -- generating -----------------------------------------------------------------------------------


@dataclass
class ReportOutcome:
    """What :func:`generate` wrote: the run id, each file and its sha256, and the data behind them."""

    run_id: int | None
    files: dict[str, Path]
    sha256: dict[str, str]
    data: ReportData

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "files": {kind: str(path) for kind, path in self.files.items()},
                "sha256": self.sha256, "period": self.data.period.as_dict(), "kind": self.data.kind,
                "sources": {key: asdict(source) for key, source in self.data.sources.items()},
                "data": self.data.as_dict()}


def file_stem(data: ReportData) -> str:
    """Return the files' name without extension: ``laporan-bulanan-2026-11`` or ``laporan-kepatuhan-...``."""
    start = data.period.since.astimezone(dates.zone(NATIONAL_ZONE))
    if data.kind == "monthly":
        return f"laporan-bulanan-{start:%Y-%m}"
    last = (data.period.until - timedelta(seconds=1)).astimezone(dates.zone(NATIONAL_ZONE))
    return f"laporan-kepatuhan-{start:%Y-%m-%d}_{last:%Y-%m-%d}"


def generate(request: ReportRequest) -> ReportOutcome:
    """Gather, render HTML (and PDF), write them to *out_dir*, and record the report as a run.

    Raises ReportRefused (nothing written) on a bad request, or when PDF is asked for and no Chromium
    is installed; a PDF engine that fails after the HTML was written finishes the run as failed.
    """
    from lpse_ops.backends import chromium
    from lpse_ops.reports import monthly
    from lpse_ops.state import StateStore

    say = request.progress or (lambda _text: None)
    unknown = [name for name in request.formats if name not in FORMATS]
    if unknown or not request.formats:
        raise ReportRefused(f"--format takes {', '.join(FORMATS)} (comma-separated), not {','.join(unknown) or '-'}")
    if "pdf" in request.formats:
        try:
            chromium.binary()
        except chromium.ChromiumError as error:
            raise ReportRefused(str(error)) from error
    out_dir = request.out_dir or Path.cwd()
    store = StateStore.open(request.state_url or config.state_url())
    try:
        say("reading the state store")
        data = gather(store, request)
        run_id = store.start_run(f"report.{request.kind}", {
            "period": data.period.as_dict(), "formats": list(request.formats), "out_dir": str(out_dir),
            "release": request.release, "work_plan": str(request.work_plan) if request.work_plan else None}, [])
        files: dict[str, Path] = {}
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            say("rendering the charts and the HTML")
            html_path = out_dir / f"{file_stem(data)}.html"
            html_path.write_text(monthly.render_html(data), encoding="utf-8")
            files["html"] = html_path
            if "pdf" in request.formats:
                say("printing the PDF with headless Chromium")
                files["pdf"] = chromium.print_to_pdf(html_path, out_dir / f"{file_stem(data)}.pdf")
            if "html" not in request.formats:
                html_path.unlink()
                files.pop("html")
        except BaseException as error:
            store.finish_run(run_id, "failed" if isinstance(error, Exception) else "aborted",
                             summary={"error": str(error)[:500],
                                      "files": {kind: str(path) for kind, path in files.items()}})
            if isinstance(error, chromium.ChromiumError):
                written = f"; {files['html']} was written" if "html" in files else ""
                raise ReportFailed(f"{error}{written} (run {run_id} recorded as failed)") from error
            raise
        digests = {kind: hashlib.sha256(path.read_bytes()).hexdigest() for kind, path in files.items()}
        store.finish_run(run_id, "ok", artifact_dir=out_dir, summary={
            "files": {kind: str(path) for kind, path in files.items()}, "sha256": digests,
            "sources": {key: source.state for key, source in data.sources.items()}})
    finally:
        store.close()
    return ReportOutcome(run_id, files, digests, data)


def count_by_site(incidents: list[Incident]) -> list[tuple[str, int]]:
    """Return (site, number of disturbances) pairs, most first (the general analysis, 8.1.3)."""
    return Counter(row.site for row in incidents if row.kind == "incident").most_common()


def inventory_sites(inventory: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Return each inventory site's zone (``site_timezone``) and name (``site_name``) from *inventory*.

    A site is a host with ``site_timezone`` or ``site_code``. Raises ReportRefused with Ansible's reason
    when the inventory cannot be read.
    """
    from lpse_ops.backends import ansible

    try:
        listing = ansible.inventory_list(inventory)
    except ansible.AnsibleError as error:
        raise ReportRefused(str(error)) from error
    hostvars = (listing.get("_meta") or {}).get("hostvars") or {}
    zones, names = {}, {}
    for host, variables in hostvars.items():
        if not isinstance(variables, dict) or not (variables.get("site_timezone") or variables.get("site_code")):
            continue
        zones[host] = str(variables.get("site_timezone") or NATIONAL_ZONE)
        names[host] = str(variables.get("site_name") or host)
    return zones, names

