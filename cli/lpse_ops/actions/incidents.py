"""Incidents and service requests (clauses 7.1, 7.3, 7.6, 7.7): open, update, escalate, resolve, list, show,
and the official emergency statement (clause 10.3).

The priority table and the helpdesk's working time come from one YAML file (:func:`load_policy`: the
packaged default ``data/priorities.yml``, or ``LPSE_OPS_PRIORITY_TABLE``), checked against a JSON
Schema with every problem named. An incident's due times are computed when it is opened (and again
when its priority changes) in the working time of the site's own zone, read from the inventory
(``site_timezone``), and stored with it; the state store keeps the record, every change with actor
and time, and the audit log. Entry functions take a small request dataclass, never print, never ask.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import yaml

from lpse_ops import config, inventory, settings
from lpse_ops.actions.operation import OperationRefused
from lpse_ops.reports import dates
from lpse_ops.reports import statement as statement_report
from lpse_ops.state import StateError, StateStore
from lpse_ops.state import incidents as records
from lpse_ops.worktime import WEEKDAYS, HolidayCalendar, WorkingTime, WorkingTimeError

DURATION = re.compile(r"^(?:(?P<hours>\d+)h)?(?:(?P<minutes>\d+)m)?$")
CLOCK = re.compile(r"^(?:[01]\d|2[0-3]):[0-5]\d$")
FUTURE_GRACE = timedelta(minutes=5)
"""How far ahead of this machine's clock a given time may be (clock skew), before it is refused as future."""

_DURATION_SCHEMA = {"type": "string", "pattern": r"^(?=.)(\d+h)?(\d+m)?$",
                    "description": "working time, e.g. 30m, 4h, 1h30m"}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["working_time", "priorities"],
    "properties": {
        "working_time": {
            "type": "object",
            "additionalProperties": False,
            "required": ["days", "start", "end"],
            "properties": {
                "days": {"type": "array", "minItems": 1, "uniqueItems": True,
                         "items": {"enum": list(WEEKDAYS)}},
                "start": {"type": "string", "pattern": CLOCK.pattern},
                "end": {"type": "string", "pattern": CLOCK.pattern},
                "holidays": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "country": {"type": "string", "pattern": "^[A-Z]{2}$"},
                        "categories": {"type": "array", "minItems": 1, "uniqueItems": True,
                                       "items": {"type": "string"}},
                        "extra_dates_file": {"type": ["string", "null"]},
                        "extra_dates": {"type": ["object", "null"],
                                        "additionalProperties": {"type": "string", "minLength": 1}},
                    },
                },
            },
        },
        "priorities": {
            "type": "object",
            "additionalProperties": False,
            "required": list(records.PRIORITIES),
            "properties": {code: {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "response", "resolution"],
                "properties": {"name": {"type": "string", "minLength": 1}, "meaning": {"type": "string"},
                               "response": _DURATION_SCHEMA, "resolution": _DURATION_SCHEMA},
            } for code in records.PRIORITIES},
        },
        "statement": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"next_update": _DURATION_SCHEMA},
        },
    },
}
"""The JSON Schema of the priority-table file (``docs/incidents.md`` explains every key)."""


class PolicyError(OperationRefused):
    """The priority-table file is missing, not YAML or not valid; the message names the file and every problem."""


@dataclass(frozen=True)
class Priority:
    """One row of the priority table: code (P1-P4), name, meaning, and the targets in working time."""

    code: str
    name: str
    meaning: str
    response: timedelta
    resolution: timedelta

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "meaning": self.meaning,
                "response_s": int(self.response.total_seconds()), "resolution_s": int(self.resolution.total_seconds())}


@dataclass(frozen=True)
class IncidentPolicy:
    """The priority table, the working time its targets count in, and the statement's next-update interval."""

    path: str
    priorities: dict[str, Priority]
    working_time: WorkingTime
    next_update: timedelta
    holiday_source: str

    def due(self, priority: str, opened_at: datetime, zone_name: str) -> tuple[datetime, datetime]:
        """Return (response due, resolution due) of a *priority* record opened at *opened_at*, site zone *zone_name*."""
        row = self.priorities[priority]
        zone = dates.zone(zone_name)
        return (self.working_time.add(opened_at, row.response, zone),
                self.working_time.add(opened_at, row.resolution, zone))

    def as_dict(self) -> dict[str, Any]:
        work = self.working_time
        return {"path": self.path, "priorities": {code: row.as_dict() for code, row in self.priorities.items()},
                "working_time": {"days": [WEEKDAYS[day] for day in sorted(work.days)],
                                 "start": work.start.strftime("%H:%M"), "end": work.end.strftime("%H:%M"),
                                 "holidays": self.holiday_source},
                "statement": {"next_update_s": int(self.next_update.total_seconds())}}


def parse_duration(text: str) -> timedelta:
    """Return the timedelta of "30m", "4h" or "1h30m"; raise ValueError otherwise."""
    match = DURATION.match(str(text).strip().lower())
    if not str(text).strip() or not match:
        raise ValueError(f"{text!r} is not a duration: use e.g. 30m, 4h or 1h30m")
    return timedelta(hours=int(match["hours"] or 0), minutes=int(match["minutes"] or 0))


def default_policy_path() -> Path:
    """The packaged default table (``lpse_ops/data/priorities.yml``)."""
    return Path(str(resources.files("lpse_ops") / "data" / "priorities.yml"))


def policy_path() -> Path:
    """``LPSE_OPS_PRIORITY_TABLE``, else the packaged default."""
    return settings.current().priority_table or default_policy_path()


def _extra_dates(raw: object, where: str, problems: list[str]) -> dict[date, str]:
    found: dict[date, str] = {}
    if raw is None:
        return found
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping of YYYY-MM-DD to a name")
        return found
    for key, name in raw.items():
        try:
            day = key if isinstance(key, date) else date.fromisoformat(str(key))
        except ValueError:
            problems.append(f"{where}: {key!r} is not a date (YYYY-MM-DD)")
            continue
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where}: {day} needs a name (e.g. Cuti bersama Natal)")
            continue
        found[day] = name.strip()
    return found


def load_policy(path: Path | None = None) -> IncidentPolicy:
    """Read and check the priority table at *path* (default :func:`policy_path`); raise PolicyError naming
    the file and every problem (YAML syntax, schema, durations, an unknown holiday category, ...)."""
    path = path or policy_path()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise PolicyError(f"cannot read the priority table {path}: {error.strerror or error} "
                          "(set LPSE_OPS_PRIORITY_TABLE to a readable file, see docs/incidents.md)") from error
    except yaml.YAMLError as error:
        raise PolicyError(f"the priority table {path} is not YAML: {error}") from error
    validator = jsonschema.Draft202012Validator(SCHEMA)
    problems = [f"{'.'.join(str(part) for part in error.absolute_path) or '(top)'}: {error.message}"
                for error in sorted(validator.iter_errors(data), key=lambda error: list(error.absolute_path))]
    if problems:
        raise PolicyError(_listing(path, problems))
    priorities: dict[str, Priority] = {}
    for code in records.PRIORITIES:
        row = data["priorities"][code]
        response, resolution = parse_duration(row["response"]), parse_duration(row["resolution"])
        if response <= timedelta(0) or resolution <= timedelta(0):
            problems.append(f"priorities.{code}: targets must be longer than zero")
        elif response > resolution:
            problems.append(f"priorities.{code}: the response target ({row['response']}) is longer than the "
                            f"resolution target ({row['resolution']})")
        priorities[code] = Priority(code, row["name"], row.get("meaning", ""), response, resolution)
    for earlier, later in zip(records.PRIORITIES, records.PRIORITIES[1:], strict=False):
        if priorities[earlier].resolution > priorities[later].resolution:
            problems.append(f"priorities.{earlier}: a higher priority must not have a longer resolution target "
                            f"than {later}")
    work = data["working_time"]
    holidays_conf = work.get("holidays") or {}
    extra = _extra_dates(holidays_conf.get("extra_dates"), "working_time.holidays.extra_dates", problems)
    extra_file = holidays_conf.get("extra_dates_file")
    if extra_file:
        extra_path = (path.parent / extra_file).resolve()
        try:
            loaded = yaml.safe_load(extra_path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            problems.append(f"working_time.holidays.extra_dates_file: cannot read {extra_path}: {error}")
        else:
            extra = {**_extra_dates(loaded, str(extra_path), problems), **extra}
    country = holidays_conf.get("country", "ID")
    categories = tuple(holidays_conf.get("categories") or ("public",))
    calendar = None
    try:
        calendar = HolidayCalendar(country=country, categories=categories, language="id", extra=extra)
    except WorkingTimeError as error:
        problems.append(f"working_time.holidays: {error}")
    start, end = time.fromisoformat(work["start"]), time.fromisoformat(work["end"])
    working_time = None
    try:
        working_time = WorkingTime.from_names(work["days"], start, end, calendar)
    except WorkingTimeError as error:
        problems.append(f"working_time: {error}")
    next_update = parse_duration((data.get("statement") or {}).get("next_update", "2h"))
    if next_update <= timedelta(0):
        problems.append("statement.next_update: must be longer than zero")
    if problems or working_time is None:
        raise PolicyError(_listing(path, problems))
    source = f"holidays package {country} ({', '.join(categories)})" + (f" + {len(extra)} extra date(s)" if extra
                                                                        else "")
    return IncidentPolicy(str(path), priorities, working_time, next_update, source)


def _listing(path: Path, problems: list[str]) -> str:
    return (f"the priority table {path} has {len(problems)} problem(s) (see docs/incidents.md):\n  - "
            + "\n  - ".join(problems))


# -- sites --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteInfo:
    """What an incident needs of its site: host, display name, zone and the helpdesk line of statements."""

    host: str
    name: str
    timezone: str
    helpdesk: str | None = None


def site_info(hostvars: dict[str, dict], sites: list[str], host: str) -> SiteInfo:
    """Return *host*'s SiteInfo from inventory *hostvars* (pure); raise OperationRefused saying what is missing."""
    if host not in sites:
        known = ", ".join(sorted(sites)[:10]) + (" ..." if len(sites) > 10 else "")
        raise OperationRefused(f"{host} is not a site of the inventory (group 'sites': {known or 'none'})")
    variables = hostvars.get(host, {})
    zone_name = variables.get("site_timezone")
    if not zone_name:
        raise OperationRefused(f"{host}: missing variable site_timezone (Asia/Jakarta, Asia/Makassar or "
                               "Asia/Jayapura): targets count in the site's own working hours")
    try:
        dates.zone(str(zone_name))
    except dates.UnknownZoneError as error:
        raise OperationRefused(f"{host}: {error}") from error
    code = str(variables.get("site_code") or host)
    helpdesk = variables.get("lpse_helpdesk")
    return SiteInfo(host=host, name=str(variables.get("site_name") or f"LPSE {code}"), timezone=str(zone_name),
                    helpdesk=str(helpdesk) if helpdesk else None)


def read_site(inventory_path: Path | None, host: str) -> SiteInfo:
    """Read *host*'s SiteInfo from the inventory at *inventory_path*; raise OperationRefused."""
    if inventory_path is None:
        raise OperationRefused("no inventory: pass -i PATH, set LPSE_OPS_INVENTORY, or run `lpse-ops lab up`")
    try:
        data = inventory.load(inventory_path)
    except inventory.InventoryError as error:
        raise OperationRefused(str(error)) from error
    report = inventory.validate_data(data, str(inventory_path))
    return site_info(data.get("_meta", {}).get("hostvars", {}), sorted(report.sites), host)


# -- requests -----------------------------------------------------------------------------------


@dataclass
class OpenRequest:
    """A new incident or service request of one *site* (inventory host), with its priority and what happened.

    *opened_at*: when it was reported (default now; earlier when entered after a phone call), aware.
    *site*: give a SiteInfo to skip reading the inventory.
    """

    kind: str
    site: str
    priority: str
    title: str
    description: str | None = None
    impact: str | None = None
    run_ids: list[int] = field(default_factory=list)
    opened_at: datetime | None = None
    inventory: Path | None = None
    site_info: SiteInfo | None = None
    state_url: str | None = None
    policy_path: Path | None = None


@dataclass
class UpdateRequest:
    """A change of incident *incident_id*: a status, a new priority (due times recomputed), runs, a note."""

    incident_id: int
    status: str | None = None
    priority: str | None = None
    note: str | None = None
    run_ids: list[int] = field(default_factory=list)
    at: datetime | None = None
    state_url: str | None = None
    policy_path: Path | None = None


@dataclass
class EscalateRequest:
    """An escalation: functional (7.7.1, to a technical tier) or structural (7.7.2, to officials)."""

    incident_id: int
    kind: str
    to: str
    reason: str
    at: datetime | None = None
    state_url: str | None = None


@dataclass
class ListRequest:
    """Which records to list: opened in [since, until), of a site, kind or status, breached only."""

    since: datetime | None = None
    until: datetime | None = None
    site: str | None = None
    kind: str | None = None
    status: str | None = None
    breached: bool | None = None
    state_url: str | None = None
    policy_path: Path | None = None


@dataclass
class StatementRequest:
    """The official emergency statement (clause 10.3) of incident *incident_id*.

    *actions*: what is being done (default: the latest notes of the record); *next_update*: when the
    next update comes (default: now + the table's ``statement.next_update``); *contact*: default the
    site's ``lpse_helpdesk`` as recorded, else LKPP's helpdesk (clause 7.2.2).
    """

    incident_id: int
    actions: str | None = None
    next_update: datetime | None = None
    contact: str | None = None
    issued_at: datetime | None = None
    state_url: str | None = None
    policy_path: Path | None = None


def _open_store(state_url: str | None) -> StateStore:
    try:
        return StateStore.open(state_url or config.state_url())
    except StateError as error:
        raise OperationRefused(str(error)) from error


def _check_moment(moment: datetime | None, now: datetime, what: str, zone_name: str | None = None) -> datetime:
    """Return *moment* (default *now*), a naive one read in *zone_name* (the site's); refuse a future one."""
    if moment is None:
        return now
    if moment.tzinfo is None:
        if not zone_name:
            raise OperationRefused(f"{what} needs a time zone or an offset (e.g. 2026-11-28T09:30+07:00)")
        moment = moment.replace(tzinfo=dates.zone(zone_name))
    if moment > now + FUTURE_GRACE:
        raise OperationRefused(f"{what} {moment.isoformat()} is in the future: record what has happened")
    return moment


def _with_working_time(row: dict[str, Any], policy: IncidentPolicy, now: datetime) -> dict[str, Any]:
    """Add the working time spent waiting for the response and for the resolution (seconds) to a record."""
    zone = ZoneInfo(row["site_timezone"])
    opened = datetime.fromisoformat(row["opened_at"])
    responded = datetime.fromisoformat(row["responded_at"]) if row["responded_at"] else now
    resolved = datetime.fromisoformat(row["resolved_at"]) if row["resolved_at"] else now
    work = policy.working_time
    return {**row, "response_working_s": int(work.between(opened, responded, zone).total_seconds()),
            "resolution_working_s": int(work.between(opened, resolved, zone).total_seconds()),
            "priority_name": policy.priorities[row["priority"]].name if row["priority"] in policy.priorities else None}


def _refused(function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    except records.IncidentNotFoundError as error:
        raise OperationRefused(str(error)) from error
    except StateError as error:
        raise OperationRefused(str(error)) from error


def open_incident(request: OpenRequest) -> dict[str, Any]:
    """Record a new incident or request with its due times in the site's working time; return the record.

    Raises OperationRefused (nothing recorded) for a bad kind or priority, an unknown site, a site
    without a zone, a future time, an unknown run or a bad priority table.
    """
    if request.kind not in records.KINDS:
        raise OperationRefused(f"kind must be one of {', '.join(records.KINDS)}, not {request.kind!r}")
    if request.priority not in records.PRIORITIES:
        raise OperationRefused(f"priority must be one of {', '.join(records.PRIORITIES)}, not {request.priority!r}")
    if not request.title.strip():
        raise OperationRefused("an incident needs a title (--title): what happened, in one line")
    now = datetime.now(UTC)
    policy = load_policy(request.policy_path)
    site = request.site_info or read_site(request.inventory, request.site)
    opened_at = _check_moment(request.opened_at, now, "the time it was reported", site.timezone)
    response_due, resolution_due = policy.due(request.priority, opened_at, site.timezone)
    row = policy.priorities[request.priority]
    store = _open_store(request.state_url)
    try:
        created = _refused(records.create_incident, store, kind=request.kind, site=site.host, site_name=site.name,
                           site_timezone=site.timezone, priority=request.priority, title=request.title.strip(),
                           description=request.description, impact=request.impact, opened_at=opened_at,
                           response_due=response_due, resolution_due=resolution_due,
                           response_target_s=int(row.response.total_seconds()),
                           resolution_target_s=int(row.resolution.total_seconds()), run_ids=request.run_ids,
                           detail={"helpdesk": site.helpdesk} if site.helpdesk else {})
    finally:
        store.close()
    return _with_working_time(created, policy, now)


def update_incident(request: UpdateRequest) -> dict[str, Any]:
    """Apply *request* (status, priority, runs, note) to an incident; return the record with its history.

    A new priority recomputes both due times from the time the record was opened. Raises OperationRefused
    (nothing written) for an unknown incident, a status that cannot follow, a future time or an unknown run.
    """
    now = datetime.now(UTC)
    policy = load_policy(request.policy_path)
    store = _open_store(request.state_url)
    try:
        current = _refused(records.get_incident, store, request.incident_id, now)
        at = _check_moment(request.at, now, "--at", current["site_timezone"])
        if datetime.fromisoformat(current["opened_at"]) > at:
            raise OperationRefused(f"--at {at.isoformat()} is before the incident was opened ({current['opened_at']})")
        extra: dict[str, Any] = {}
        if request.priority and request.priority != current["priority"]:
            if request.priority not in policy.priorities:
                raise OperationRefused(f"priority must be one of {', '.join(records.PRIORITIES)}, "
                                       f"not {request.priority!r}")
            response_due, resolution_due = policy.due(request.priority, datetime.fromisoformat(current["opened_at"]),
                                                      current["site_timezone"])
            row = policy.priorities[request.priority]
            extra = {"response_due": response_due, "resolution_due": resolution_due,
                     "response_target_s": int(row.response.total_seconds()),
                     "resolution_target_s": int(row.resolution.total_seconds())}
        updated = _refused(records.update_incident, store, request.incident_id, status=request.status,
                           priority=request.priority, note=request.note, run_ids=request.run_ids, at=at, **extra)
    finally:
        store.close()
    return _with_working_time(updated, policy, now)


def resolve_incident(incident_id: int, summary: str, at: datetime | None = None, state_url: str | None = None,
                     policy_path: Path | None = None) -> dict[str, Any]:
    """Mark incident *incident_id* resolved with *summary* (how it was resolved); see :func:`update_incident`."""
    if not summary.strip():
        raise OperationRefused("say how it was resolved (--note): it is the record's resolution (clause 7.1.4)")
    return update_incident(UpdateRequest(incident_id=incident_id, status="resolved", note=summary.strip(), at=at,
                                         state_url=state_url, policy_path=policy_path))


def escalate_incident(request: EscalateRequest) -> dict[str, Any]:
    """Record an escalation of an incident (functional 7.7.1 or structural 7.7.2); return the record."""
    now = datetime.now(UTC)
    policy = load_policy()
    store = _open_store(request.state_url)
    try:
        current = _refused(records.get_incident, store, request.incident_id, now)
        at = _check_moment(request.at, now, "--at", current["site_timezone"])
        if datetime.fromisoformat(current["opened_at"]) > at:
            raise OperationRefused(f"--at {at.isoformat()} is before the incident was opened ({current['opened_at']})")
        row = _refused(records.escalate_incident, store, request.incident_id, kind=request.kind, to=request.to,
                       reason=request.reason, at=at)
    finally:
        store.close()
    return _with_working_time(row, policy, now)


def list_incidents(request: ListRequest) -> list[dict[str, Any]]:
    """Return the records *request* selects, oldest first, with breach flags and working time spent."""
    now = datetime.now(UTC)
    policy = load_policy(request.policy_path)
    store = _open_store(request.state_url)
    try:
        rows = _refused(records.list_incidents, store, request.since, request.until, now=now, site=request.site,
                        kind=request.kind, status=request.status, breached=request.breached)
    finally:
        store.close()
    return [_with_working_time(row, policy, now) for row in rows]


def show_incident(incident_id: int, state_url: str | None = None, policy_path: Path | None = None) -> dict[str, Any]:
    """Return one record with its whole history, breach flags and working time spent."""
    now = datetime.now(UTC)
    policy = load_policy(policy_path)
    store = _open_store(state_url)
    try:
        row = _refused(records.get_incident, store, incident_id, now)
    finally:
        store.close()
    return _with_working_time(row, policy, now)


def draft_statement(request: StatementRequest) -> statement_report.RenderedStatement:
    """Draft the official emergency statement (clause 10.3) of an incident, in Bahasa Indonesia, text and HTML.

    Records nothing but an audit entry ``incident.statement`` (what was drafted, for which incident).
    Raises OperationRefused for an unknown incident or a next update that is not in the future.
    """
    now = datetime.now(UTC)
    policy = load_policy(request.policy_path)
    store = _open_store(request.state_url)
    try:
        row = _refused(records.get_incident, store, request.incident_id, now)
        if row["kind"] != "incident":
            raise OperationRefused(f"{request.incident_id} is a service request: an emergency statement (clause 10.3) "
                                   "is drafted from an incident")
        zone = dates.zone(row["site_timezone"])
        issued_at = _check_moment(request.issued_at, now, "the issue time", row["site_timezone"])
        next_update = request.next_update or issued_at + policy.next_update
        if next_update.tzinfo is None:
            next_update = next_update.replace(tzinfo=zone)
        if next_update <= issued_at and row["status"] not in ("resolved", "closed"):
            raise OperationRefused(f"the next update ({next_update.isoformat()}) must come after the statement")
        content = statement_report.content_from_incident(
            row, priority_name=policy.priorities[row["priority"]].name, actions=request.actions,
            next_update=next_update, contact=request.contact or row["detail"].get("helpdesk"), issued_at=issued_at)
        rendered = statement_report.render(content)
        store.audit_append("incident.statement", {"incident_id": row["id"], "site": row["site"],
                                                  "reference": rendered.reference,
                                                  "next_update": next_update.isoformat(timespec="seconds")})
    finally:
        store.close()
    return rendered


def policy_summary(policy_path: Path | None = None, days: int = 120, today: date | None = None) -> dict[str, Any]:
    """Return the checked priority table and the days off of the next *days* days (for ``incident table``)."""
    policy = load_policy(policy_path)
    first = today or datetime.now(UTC).date()
    calendar = policy.working_time.calendar
    holidays = calendar.between(first, first + timedelta(days=days)) if calendar else {}
    return {**policy.as_dict(), "holidays_ahead": [{"date": day.isoformat(), "name": name}
                                                    for day, name in sorted(holidays.items())]}
