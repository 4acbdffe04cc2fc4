"""The official emergency statement (clause 10.3), in Bahasa Indonesia, drafted from an incident record.

``content_from_incident`` turns a record (``state.incidents.get_incident``) into a
:class:`StatementContent`; ``render`` gives the text and its HTML version from the Jinja2 templates
``statement.txt.j2`` and ``statement.html.j2``. Every date is written in Indonesian in the site's own
zone (WIB, WITA, WIT). Pure: no I/O but reading the templates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lpse_ops.reports import dates, templating
from lpse_ops.reports.notice import AGREEMENT, HELPDESK, SENDER

CLAUSE = "10.3"
CLAUSE_TEXT = "Diwajibkan saat keadaan darurat LPSE dan/atau LKPP mengeluarkan pernyataan resmi."
"""Clause 10.3 in the agreement's own words (its OCR corrected: "pemyataan" is "pernyataan")."""
REFERENCE_PREFIX = "PRS"
"""Pernyataan Resmi: statement references read PRS-<incident>-<issue time>."""

STATUS_TEXT = {
    "open": "gangguan telah dilaporkan dan sedang diverifikasi",
    "acknowledged": "laporan telah diterima dan penyebab gangguan sedang dianalisis",
    "in_progress": "gangguan sedang dalam penanganan",
    "resolved": "layanan telah dipulihkan",
    "closed": "penanganan telah selesai",
}
KIND_TEXT = {"incident": "gangguan", "request": "permintaan layanan"}
ESCALATION_TEXT = {"functional": "eskalasi fungsional kepada tim teknis (butir 7.7.1)",
                   "structural": "eskalasi struktural kepada pejabat struktural dan pimpinan (butir 7.7.2)"}
DEFAULT_IMPACT = "Layanan SPSE {site_name} terganggu; pengguna mungkin tidak dapat mengakses atau menggunakan SPSE."


@dataclass
class StatementContent:
    """Everything one statement says: the site, what happened, its impact, what is being done, the next update."""

    incident_id: int
    site_name: str
    timezone: str
    title: str
    description: str | None
    impact: str | None
    status: str
    priority: str
    priority_name: str
    opened_at: datetime
    issued_at: datetime
    next_update: datetime
    actions: list[str]
    escalations: list[dict[str, Any]] = field(default_factory=list)
    resolved_at: datetime | None = None
    contact: str = HELPDESK
    sender: str = SENDER


@dataclass(frozen=True)
class RenderedStatement:
    """A statement ready to publish: its reference, subject, plain text and HTML."""

    reference: str
    subject: str
    text: str
    html: str


_environment = templating.environment


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def content_from_incident(row: dict[str, Any], *, priority_name: str, next_update: datetime, issued_at: datetime,
                          actions: str | None = None, contact: str | None = None) -> StatementContent:
    """Return the statement content of incident *row* (a ``get_incident`` record with ``events``).

    *actions* (what is being done) defaults to the notes of the record's status changes and notes, oldest
    first; when there are none, a sentence from its status.
    """
    if actions:
        done = [actions.strip()]
    else:
        done = [event["note"].strip() for event in row.get("events", [])
                if event["kind"] in ("status", "note") and event.get("note")]
    if not done:
        done = [f"Tim teknis LKPP dan LPSE menangani {KIND_TEXT.get(row['kind'], 'gangguan')} ini."]
    return StatementContent(
        incident_id=row["id"], site_name=row["site_name"], timezone=row["site_timezone"], title=row["title"],
        description=row.get("description"), impact=row.get("impact"), status=row["status"],
        priority=row["priority"], priority_name=priority_name, opened_at=_time(row["opened_at"]),
        issued_at=issued_at, next_update=next_update, actions=done, escalations=list(row.get("escalations") or []),
        resolved_at=_time(row.get("resolved_at")), contact=contact or HELPDESK)


def reference_for(content: StatementContent) -> str:
    """Return e.g. ``PRS-000012-20261128T0930Z`` (incident 12, issued 09.30 UTC): one per issued statement."""
    return f"{REFERENCE_PREFIX}-{content.incident_id:06d}-{content.issued_at.astimezone(UTC).strftime('%Y%m%dT%H%MZ')}"


def context(content: StatementContent) -> dict[str, Any]:
    """Return the template variables (dates in Indonesian, in the site's own zone)."""
    zone = content.timezone
    resolved = content.status in ("resolved", "closed")
    return {
        "reference": reference_for(content),
        "site_name": content.site_name,
        "zone": dates.zone_abbreviation(zone),
        "title": content.title,
        "description": content.description,
        "impact": content.impact or DEFAULT_IMPACT.format(site_name=content.site_name),
        "opened_text": dates.format_datetime(content.opened_at, zone),
        "issued_text": dates.format_datetime(content.issued_at, zone),
        "issued_date": dates.format_date(content.issued_at, zone),
        "next_update_text": dates.format_datetime(content.next_update, zone),
        "resolved": resolved,
        "resolved_text": dates.format_datetime(content.resolved_at, zone) if content.resolved_at else None,
        "status_text": STATUS_TEXT.get(content.status, content.status),
        "priority": content.priority,
        "priority_name": content.priority_name,
        "actions": content.actions,
        "escalations": [{"text": ESCALATION_TEXT.get(item["kind"], item["kind"]), "to": item["to"],
                         "at_text": dates.format_datetime(datetime.fromisoformat(item["at"]), zone)}
                        for item in content.escalations],
        "contact": content.contact,
        "sender": content.sender,
        "clause": CLAUSE,
        "clause_text": CLAUSE_TEXT,
        "agreement": AGREEMENT,
        "incident_id": content.incident_id,
    }


def render(content: StatementContent) -> RenderedStatement:
    """Render *content* into its reference, subject, plain text and HTML; raise ValueError on a bad zone."""
    variables = context(content)
    environment = _environment()
    return RenderedStatement(
        reference=variables["reference"],
        subject=f"Pernyataan Resmi Keadaan Darurat SPSE — {content.site_name}",
        text=environment.get_template("statement.txt.j2").render(variables),
        html=environment.get_template("statement.html.j2").render(variables),
    )
