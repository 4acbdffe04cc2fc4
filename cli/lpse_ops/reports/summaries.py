"""The report's records computed from the state store's rows (incidents, drills, probes, verifications,
audits), and the work plan derived from them when none is given; pure: no reading, no rendering.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Any

from lpse_ops.reports import dates
from lpse_ops.reports.data import (
    NATIONAL_ZONE,
    AuditRow,
    DailyPoint,
    Drill,
    Incident,
    PriorityCompliance,
    Release,
    TrendRow,
    Utilisation,
    VerificationSummary,
    WorkItem,
)

PRIORITIES = ("P1", "P2", "P3", "P4")


def when(value: Any) -> datetime | None:
    """Return an aware datetime from an ISO string or datetime (naive taken as UTC); None stays None."""
    if value is None or value == "":
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def incident_record(row: dict) -> Incident:
    """Return the report's Incident for one row of ``lpse_ops.state.incidents.list_incidents``."""
    return Incident(id=row.get("id"), kind=str(row.get("kind") or "incident"), site=str(row.get("site") or ""),
                    priority=str(row.get("priority") or "-"), title=str(row.get("title") or ""),
                    status=str(row.get("status") or ""), opened_at=when(row.get("opened_at")),
                    responded_at=when(row.get("responded_at")), resolved_at=when(row.get("resolved_at")),
                    response_breached=bool(row.get("response_breached")),
                    resolution_breached=bool(row.get("resolution_breached")),
                    escalations=len(row.get("escalations") or []) if isinstance(row.get("escalations"), list)
                    else int(row.get("escalations") or 0),
                    site_zone=row.get("site_timezone"), site_name=row.get("site_name"))


def drill_record(row: dict) -> Drill:
    """Return the report's Drill for one row of ``lpse_ops.state.drills.list_drills``."""
    return Drill(id=row.get("id"), scenario=str(row.get("scenario") or ""), site=str(row.get("site") or ""),
                 started_at=when(row.get("started_at")), ok=row.get("ok"), failed_step=row.get("failed_step"),
                 rto_s=row.get("rto_s"), rpo_db_s=row.get("rpo_db_s"), rpo_docs_s=row.get("rpo_docs_s"),
                 targets=dict(row.get("targets") or {}), met=row.get("met"),
                 passed_steps=[str(step.get("step")) for step in ((row.get("detail") or {}).get("continued_failures")
                                                                  or []) if isinstance(step, dict)])


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def trend_rows(current: list[Incident], previous: list[Incident]) -> list[TrendRow]:
    """Return the count of disturbances by priority, and of service requests, this period and the one before."""
    def count(rows: list[Incident], kind: str, priority: str | None = None) -> int:
        return sum(row.kind == kind and (priority is None or row.priority == priority) for row in rows)

    rows = [TrendRow(f"Gangguan {priority}", count(previous, "incident", priority),
                     count(current, "incident", priority)) for priority in PRIORITIES]
    rows.append(TrendRow("Permintaan layanan", count(previous, "request"), count(current, "request")))
    return rows


def priority_compliance(incidents: list[Incident]) -> list[PriorityCompliance]:
    """Return, for each priority, the disturbances, the SLA breaches, the unresolved and the median times."""
    rows = []
    for priority in PRIORITIES:
        chosen = [row for row in incidents if row.priority == priority]
        rows.append(PriorityCompliance(
            priority, len(chosen), sum(row.response_breached for row in chosen),
            sum(row.resolution_breached for row in chosen), sum(row.resolved_at is None for row in chosen),
            _median([row.response_s for row in chosen if row.response_s is not None]),
            _median([row.resolution_s for row in chosen if row.resolution_s is not None])))
    return rows


def utilisation_rows(probes: list[dict], hosts: list[str]) -> tuple[list[Utilisation], dict[str, list[DailyPoint]]]:
    """Return each of *hosts*' utilisation over the period's probes (the fullest disk first), and its daily
    points (WIB days)."""
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
            days[when(probe["probed_at"]).astimezone(zone).date()].append(probe)
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


def verification_summaries(rows: list[dict], hosts: list[str]) -> list[VerificationSummary]:
    """Return each of *hosts*' restore verifications of the period (*rows*, oldest first), summed up."""
    by_host: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_host[row["host"]].append(row)
    summaries = []
    for host in hosts:
        chosen = by_host.get(host, [])
        good = [row for row in chosen if row["ok"]]
        bad = [row for row in chosen if not row["ok"]]
        summaries.append(VerificationSummary(
            host, len(good), len(bad), when(good[-1]["verified_at"]) if good else None,
            when(bad[-1]["verified_at"]) if bad else None,
            _median([row["restore_duration_s"] for row in good if row["restore_duration_s"] is not None]),
            sum(row.get("source") == "site" for row in chosen),
            str(chosen[-1].get("site_verification_id") or chosen[-1]["id"]) if chosen else None,
            when(chosen[-1]["verified_at"]) if chosen else None))
    return summaries


def audit_rows(current: list[dict], before: list[dict]) -> list[AuditRow]:
    """Return each site's newest audit of the period (*current*, oldest first), its score before (*before*: the
    year before the period) and the controls that got worse or better."""
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
        rows.append(AuditRow(site, when(row.get("audited_at")), row.get("score"),
                             previous_score.get(site, firsts[site]["score"] if firsts[site] is not row else None),
                             row.get("lynis_index"), sorted(now_failing),
                             sorted(worse[site] & now_failing), sorted(better[site] - now_failing)))
    return rows


def derived_work_plan(release: Release, audits: list[AuditRow], drills: list[Drill],
                      verifications: list[VerificationSummary], next_label: str) -> list[WorkItem]:
    """Return next month's work when no work plan is given: the sites still behind the release, the backups not
    verified, the drills failed or missed, the audits that got worse (each dated *next_label*)."""
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
