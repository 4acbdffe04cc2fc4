"""Gather a report's facts from the state store into a typed :class:`~lpse_ops.reports.data.ReportData`
(testable without rendering: no HTML, no browser).

Periods. The national report's month is a month in WIB (Asia/Jakarta). A time about one site is shown in that
site's own zone (the inventory's ``site_timezone``; WIB when there is no inventory, which the report says).

Sources. Runs, host results, restore verifications and site probes come from the state store;
incidents, drills and audits from the modules of their areas (``lpse_ops.state.incidents``,
``.drills``, ``.audits``), imported lazily: a module that is not installed, or a period without
rows, is reported as "tidak ada data" with its reason, never filled in.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from lpse_ops import bundle
from lpse_ops.actions.report_request import (
    KINDS,
    ReportRefused,
    ReportRequest,
    month_period,
    previous_month,
    read_work_plan,
)
from lpse_ops.reports import dates, summaries
from lpse_ops.reports.data import (
    NATIONAL_ZONE,
    Change,
    Incident,
    Release,
    ReportData,
    Site,
    SiteVersion,
    Source,
)
from lpse_ops.reports.summaries import when

CHANGE_OPERATIONS = ("install", "upgrade.rollout", "upgrade.site", "upgrade.rollback")
"""The runs that change a site's release (8.1.1 implementation progress)."""
REACHED_STATUSES = ("ok", "changed")
"""A host result that finished its run: ``changed`` is a success that changed something (an install)."""
FAILED_STATUSES = ("failed", "unreachable")
"""A host result that did not finish its run: these sites go under "Situs gagal"."""


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
                versions[host] = SiteVersion(host, version, when(run["started_at"]), f"run {run['id']}", False)
    for host, probe in newest.items():
        seen = when(probe["probed_at"])
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
        started = when(run["started_at"])
        if (run["operation"] in ("install", "upgrade.rollout", "upgrade.rollback") and period.contains(started)
                and not (run.get("args") or {}).get("check")):
            failed = sorted(host for host, outcome in (run.get("host_results") or {}).items()
                            if outcome.get("status") in FAILED_STATUSES)
            changes.append(Change(run["id"], run["operation"], started, run.get("result"), list(run["hosts"]),
                                  _run_version(run, rollouts), failed))
    return Release(current, source or "tidak diketahui", sites), changes


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

    incidents = [summaries.incident_record(row) for row in incident_rows]
    incidents_previous = [summaries.incident_record(row) for row in previous_rows]
    drills = [summaries.drill_record(row) for row in drill_rows]
    seen = ({probe["host"] for probe in probes} | {row["host"] for row in verification_rows}
            | {row.site for row in incidents if row.site} | {row.site for row in drills if row.site}
            | {row["site"] for row in audit_rows})
    newest_probes = state_reports.latest_probes_before(store, period.until)
    seen |= set(newest_probes)
    sites, zones_from = _sites(request, seen, incidents + incidents_previous)
    hosts = [site.host for site in sites]

    release, changes = _release(store, request, hosts, newest_probes)
    utilisation, daily = summaries.utilisation_rows(probes, hosts)
    verifications = summaries.verification_summaries(verification_rows, hosts)
    audits = summaries.audit_rows(audit_rows, audits_before)
    next_month = month_period(f"{period.until.astimezone(dates.zone(NATIONAL_ZONE)):%Y-%m}")
    if request.work_plan is not None:
        work_plan, plan_source = read_work_plan(request.work_plan), f"berkas {request.work_plan.name}"
    else:
        work_plan = summaries.derived_work_plan(release, audits, drills, verifications, next_month.label)
        plan_source = ("disusun dari data bulan ini (situs yang belum pada rilis terkini, temuan cadangan, "
                       "uji dan audit)")
    verify = store.audit_verify()
    audit_log = {"ok": verify.ok, "entries": store.audit_count(), "problems": list(verify.problems)}
    return ReportData(
        kind=request.kind, period=period, previous=previous, generated_at=request.now or datetime.now(UTC),
        sites=sites, zones_from=zones_from,
        sources=sources, release=release, changes=changes, utilisation=utilisation, daily=daily,
        probe_count=len(probes), incidents=incidents, incidents_previous=incidents_previous,
        trend=summaries.trend_rows(incidents, incidents_previous),
        compliance=summaries.priority_compliance([row for row in incidents if row.kind == "incident"]),
        work_plan=work_plan, work_plan_source=plan_source, verifications=verifications, drills=drills,
        audits=audits, audit_log=audit_log)
