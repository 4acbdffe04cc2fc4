"""Compile the Disaster Recovery Plan (clause 10.2) in Bahasa Indonesia: runbooks, contacts and drill results.

``render_drp`` reads every runbook in ``runbooks/`` (``lpse_ops.runbooks``: scenarios, RTO/RPO targets,
steps), the sites' contacts from the inventory (clause 7.2: ``site_name``, ``site_timezone``,
``site_contacts``, ``lpse_helpdesk``) and the latest finished drill of each scenario on each site
(``lpse_ops.state.drills.list_drills``, imported lazily: without it every scenario reads "belum pernah
diuji"), renders Markdown or HTML, and audits what it compiled (``drp.render``). It never prints and
never asks.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lpse_ops import config, inventory, runbooks
from lpse_ops.actions import drp_rto
from lpse_ops.actions.operation import OperationRefused
from lpse_ops.reports import dates
from lpse_ops.reports import drp as report
from lpse_ops.state import StateError, StateStore


@dataclass
class DrpRequest:
    """What to compile: the output format (md or html), the inventory for contacts (None: no contacts),
    the runbooks (default: every one in ``runbooks/``), the zone the issue date is written in."""

    output_format: str = "md"
    inventory: Path | None = None
    runbook_paths: list[Path] = field(default_factory=list)
    state_url: str | None = None
    zone: str = "Asia/Jakarta"
    generated_at: datetime | None = None


@dataclass
class DrpResult:
    """The rendered plan and what went into it."""

    text: str
    output_format: str
    scenarios: list[str]
    drilled: list[str]
    sites: int | None
    notes: list[str]
    sha256: str

    def summary(self) -> dict[str, Any]:
        return {"format": self.output_format, "scenarios": self.scenarios, "drilled": self.drilled,
                "never_drilled": [name for name in self.scenarios if name not in self.drilled], "sites": self.sites,
                "notes": self.notes, "sha256": self.sha256}


def _drills(store: StateStore) -> list[dict[str, Any]] | None:
    """Every drill recorded, or None when this lpse-ops has no drill store yet (``state/drills.py``)."""
    try:
        drill_store = importlib.import_module("lpse_ops.state.drills")
    except ImportError:
        return None
    return drill_store.list_drills(store)


def latest_drills(drills: list[dict[str, Any]], zones: dict[str, str]) -> dict[str, list[report.DrillResult]]:
    """Return, per scenario, the latest finished drill on each site (with how many were finished there); pure."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    counts: dict[tuple[str, str], int] = {}
    for drill in drills:
        if drill.get("ok") is None:
            continue  # still running, or never finished: not a result
        key = (drill["scenario"], drill["site"])
        counts[key] = counts.get(key, 0) + 1
        if key not in latest or (drill["started_at"] or "") >= (latest[key]["started_at"] or ""):
            latest[key] = drill
    found: dict[str, list[report.DrillResult]] = {}
    for (scenario, site), drill in sorted(latest.items()):
        started = datetime.fromisoformat(drill["started_at"]) if drill.get("started_at") else None
        found.setdefault(scenario, []).append(report.DrillResult(
            site=site, started_at=started, timezone=zones.get(site, "Asia/Jakarta"), ok=drill["ok"],
            met=drill.get("met"), failed_step=drill.get("failed_step"), rto_s=drill.get("rto_s"),
            rpo_db_s=drill.get("rpo_db_s"), rpo_docs_s=drill.get("rpo_docs_s"), count=counts[(scenario, site)]))
    return found


def site_contacts(data: dict[str, Any]) -> list[report.SiteContacts]:
    """Return every site's contacts from parsed inventory *data* (``ansible-inventory --list``); pure."""
    checked = inventory.validate_data(data)
    contacts = []
    for host, variables in sorted(checked.sites.items()):
        raw = variables.get("site_contacts") or []
        people = [{"name": str(entry.get("name", "")), "email": str(entry.get("email", ""))}
                  for entry in raw if isinstance(entry, dict)] if isinstance(raw, list) else []
        zone_name = str(variables.get("site_timezone") or "")
        contacts.append(report.SiteContacts(
            host=host, name=str(variables.get("site_name") or f"LPSE {variables.get('site_code') or host}"),
            timezone=f"{zone_name} ({dates.ZONE_NAMES[zone_name]})" if zone_name in dates.ZONE_NAMES else zone_name,
            helpdesk=str(variables["lpse_helpdesk"]) if variables.get("lpse_helpdesk") else None, contacts=people))
    return contacts


def render_drp(request: DrpRequest) -> DrpResult:
    """Compile and render the plan of *request*; raise OperationRefused for a bad format or zone, no usable
    runbook, an unreadable inventory or state store."""
    if request.output_format not in report.FORMATS:
        raise OperationRefused(f"format must be one of {', '.join(report.FORMATS)}, not {request.output_format!r}")
    try:
        dates.zone(request.zone)
    except dates.UnknownZoneError as error:
        raise OperationRefused(str(error)) from error
    notes: list[str] = []
    scenarios: list[report.Scenario] = []
    for path in runbooks.runbook_paths(request.runbook_paths):
        try:
            parsed = runbooks.read(path)
        except OSError as error:
            raise OperationRefused(f"cannot read runbook {path}: {error.strerror or error}") from error
        try:
            shown = str(path.resolve().relative_to(config.PROJECT_DIR))
        except ValueError:
            shown = str(path)
        scenario = report.scenario_from_runbook(parsed, shown)
        if scenario is None:
            notes.append(f"runbook {shown} dilewati: front matter tidak lengkap (periksa dengan lpse-ops runbook lint)")
            continue
        scenarios.append(scenario)
    if not scenarios:
        raise OperationRefused("no usable runbook: a DRP is compiled from runbooks/*.md (lpse-ops runbook lint)")
    sites: list[report.SiteContacts] | None = None
    zones: dict[str, str] = {}
    hostvars: dict[str, Any] = {}
    if request.inventory is not None:
        try:
            data = inventory.load(request.inventory)
        except inventory.InventoryError as error:
            raise OperationRefused(str(error)) from error
        sites = site_contacts(data)
        hostvars = data.get("_meta", {}).get("hostvars", {})
        zones = {site.host: str(hostvars.get(site.host, {}).get("site_timezone") or "") for site in sites}
        zones = {host: zone for host, zone in zones.items() if zone in dates.ZONE_NAMES}
    try:
        store = StateStore.open(request.state_url or config.state_url())
    except StateError as error:
        raise OperationRefused(str(error)) from error
    try:
        drills = _drills(store)
        by_scenario = latest_drills(drills or [], zones)
        for scenario in scenarios:
            scenario.drills = by_scenario.get(scenario.scenario, [])
        rto_model = None
        if request.inventory is not None:
            rates, estimates = drp_rto.gather(store, drills or [], {site.host: hostvars.get(site.host, {})
                                                                    for site in sites or []})
            target = next((item.rto_s for item in scenarios if item.scenario == drp_rto.SCENARIO), None)
            rto_model = {"rates": rates.as_dict() if rates else None,
                         "estimates": [item.as_dict() for item in estimates], "target_s": target}
        content = report.DrpContent(generated_at=request.generated_at or datetime.now(UTC), zone=request.zone,
                                    scenarios=scenarios, sites=sites, drills_available=drills is not None,
                                    notes=notes, rto_model=rto_model)
        text = report.render(content, request.output_format)
        result = DrpResult(text=text, output_format=request.output_format,
                           scenarios=[scenario.scenario for scenario in scenarios],
                           drilled=[scenario.scenario for scenario in scenarios if scenario.drills],
                           sites=len(sites) if sites is not None else None, notes=notes,
                           sha256=hashlib.sha256(text.encode("utf-8")).hexdigest())
        store.audit_append("drp.render", result.summary())
    finally:
        store.close()
    return result
