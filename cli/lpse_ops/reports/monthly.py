"""Render a :class:`~lpse_ops.reports.data.ReportData` as one self-contained HTML page in Bahasa Indonesia.

``render_html(data)`` picks ``templates/monthly.html.j2`` or ``compliance.html.j2`` (both import the
shared sections of ``monthly.macros.html.j2``), draws the charts as inline SVG (``charts.py``) and
formats every value the Indonesian way: dates through ``dates.py`` ("Senin, 2 November 2026 pukul
08.00 WIB"), national times in WIB, a site's times in its own zone, decimal commas ("85,2%"),
durations in words. Pure: no I/O but reading the templates. The page has no script and loads
nothing: the PDF is this page printed by Chromium.
"""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from jinja2 import Environment
from markupsafe import Markup

from lpse_ops.reports import charts, dates, templating

if TYPE_CHECKING:
    from lpse_ops.reports.data import ReportData

NATIONAL_ZONE = "Asia/Jakarta"
TITLES = {"monthly": "Laporan Bulanan Pemantauan dan Evaluasi Layanan SPSE",
          "compliance": "Laporan Pencapaian dan Kepatuhan Service Level Agreement"}
SENDER = "Lembaga Kebijakan Pengadaan Barang/Jasa Pemerintah (LKPP)"
NO_DATA = "tidak ada data"
MAX_ROWS = 30
"""A fleet larger than this lists in its per-site tables only the sites that need attention (not on the
current release, a failed or missing backup verification) and the fullest disks, with a note saying so."""

RESULTS = {"ok": "berhasil", "failed": "gagal", "error": "galat", "aborted": "dibatalkan", None: "berjalan"}
OPERATIONS = {"install": "Instalasi SPSE", "upgrade.rollout": "Upgrade SPSE", "upgrade.rollback": "Rollback SPSE"}
STATUSES = {"open": "terbuka", "new": "baru", "acknowledged": "ditanggapi", "responded": "ditanggapi",
            "in_progress": "dalam penanganan", "escalated": "dieskalasi", "resolved": "selesai", "closed": "ditutup"}
KINDS = {"incident": "gangguan", "request": "permintaan"}
SCENARIOS = {"database-corrupted": "basis data rusak", "documents-lost": "dokumen hilang",
             "failed-upgrade": "upgrade gagal", "ransomware": "ransomware", "rows-deleted": "data terhapus",
             "server-lost": "server hilang"}
"""The runbooks' scenarios (``runbooks/*.md``) in Indonesian; an unknown one is shown as named."""


def number(value: float | int | None, digits: int = 1) -> str:
    """Return *value* with a decimal comma ("85,2"), "-" for None."""
    if value is None:
        return "-"
    if isinstance(value, int) or float(value).is_integer() and digits == 0:
        return f"{int(value):,}".replace(",", ".")
    return f"{value:,.{digits}f}".replace(",", "\x00").replace(".", ",").replace("\x00", ".")


def percent(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{number(value, digits)}%"


def duration(seconds: float | None) -> str:
    """Return *seconds* in words: "40 detik", "1 menit 35 detik", "1 jam 5 menit"."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{number(seconds, 0 if float(seconds).is_integer() else 1)} detik"
    if seconds < 3600:
        minutes, rest = divmod(int(round(seconds)), 60)
        return f"{minutes} menit" + (f" {rest} detik" if rest else "")
    return dates.format_duration(timedelta(seconds=seconds))


def yes_no(value: bool | None, yes: str = "ya", no: str = "tidak") -> str:
    return "-" if value is None else (yes if value else no)


@cache
def _environment() -> Environment:
    environment = templating.new_environment()
    environment.filters.update(number=number, percent=percent, duration=duration, yes_no=yes_no)
    return environment


def context(data: ReportData) -> dict[str, Any]:
    """Return the template variables for *data*: the data, the charts, and formatting functions."""

    def national(moment: datetime | None) -> str:
        return "-" if moment is None else dates.format_datetime(moment, NATIONAL_ZONE)

    def national_date(moment: datetime | None) -> str:
        return "-" if moment is None else dates.format_date(moment, NATIONAL_ZONE)

    def local(moment: datetime | None, host: str) -> str:
        return "-" if moment is None else dates.format_datetime(moment, data.site(host).zone)

    def label(host: str) -> str:
        """A site as named in the inventory, with its host name: "LPSE Kota Satu (site01)"."""
        name = data.site(host).name
        return host if not name or name == host else f"{name} ({host})"

    def svg(text: str | None) -> Markup | None:
        return Markup(text) if text else None  # noqa: S704 - matplotlib's own SVG, labels escaped by it

    previous_label = data.previous.label if data.previous else ""
    audits_listed = _audits_listed(data)
    last_moment = data.period.until - timedelta(seconds=1)
    return {
        "data": data,
        "title": TITLES[data.kind],
        "sender": SENDER,
        "no_data": NO_DATA,
        "period_text": (f"{dates.format_date(data.period.since, NATIONAL_ZONE)} s.d. "
                        f"{dates.format_date(last_moment, NATIONAL_ZONE)} (WIB)"),
        "generated_text": national(data.generated_at),
        "national": national,
        "national_date": national_date,
        "local": local,
        "label": label,
        "zone_of": lambda host: dates.zone_abbreviation(data.site(host).zone),
        "results": RESULTS,
        "operations": OPERATIONS,
        "statuses": STATUSES,
        "kinds": KINDS,
        "scenarios": SCENARIOS,
        "charts": {
            "utilisation": svg(charts.utilisation(
                data.daily, data.period.label, data.period.since.astimezone(dates.zone(NATIONAL_ZONE)).date(),
                last_moment.astimezone(dates.zone(NATIONAL_ZONE)).date())),
            "trend": svg(charts.trend(data.trend, previous_label, data.period.label)) if data.previous else None,
            "audits": svg(charts.audit_scores(audits_listed)),
            "drills": svg(charts.drills(data.drills, SCENARIOS)),
        },
        "by_site": _by_site(data)[:MAX_ROWS],
        "audits_listed": audits_listed,
        "audit_median": statistics.median(scores) if (scores := [row.score for row in data.audits
                                                                 if row.score is not None]) else None,
        "versions": Counter(site.version or NO_DATA for site in data.release.sites).most_common(),
        "max_rows": MAX_ROWS,
    }


def _audits_listed(data: ReportData) -> list:
    """Return the audit rows to list and chart: all of them for up to MAX_ROWS sites, else the sites whose
    controls got worse and then the lowest scores, MAX_ROWS in all (lowest score first)."""
    if len(data.audits) <= MAX_ROWS:
        return list(data.audits)
    ranked = sorted(data.audits, key=lambda row: (not row.worse, row.score if row.score is not None else -1))
    return sorted(ranked[:MAX_ROWS], key=lambda row: (row.score if row.score is not None else -1, row.site))


def _by_site(data: ReportData) -> list[tuple[str, int, int]]:
    """Return (site, disturbances, of which P1) for the general analysis (8.1.3), most first."""
    counts: dict[str, list[int]] = {}
    for incident in data.disturbances:
        row = counts.setdefault(incident.site, [0, 0])
        row[0] += 1
        row[1] += incident.priority == "P1"
    return sorted(((site, total, p1) for site, (total, p1) in counts.items()), key=lambda row: (-row[1], row[0]))


def render_html(data: ReportData) -> str:
    """Return *data*'s report as one self-contained HTML page (charts inline)."""
    return _environment().get_template(f"{data.kind}.html.j2").render(context(data))
