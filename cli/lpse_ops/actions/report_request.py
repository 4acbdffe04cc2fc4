"""What a report (``lpse-ops report monthly|compliance``) is asked for: its kind and formats, its period (a
month or days in WIB, Asia/Jakarta: November 2026 is [2026-11-01 00:00 WIB, 2026-12-01 00:00 WIB)), the sites'
zones and names from the inventory, and the work plan read from a YAML file; and the report's refusals.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import yaml

from lpse_ops.actions.operation import OperationRefused
from lpse_ops.reports import dates
from lpse_ops.reports.data import NATIONAL_ZONE, Period, WorkItem

KINDS = ("monthly", "compliance")
FORMATS = ("html", "pdf")

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
