"""The maintenance notice (clause 6.2.13) and the completion notice, in Bahasa Indonesia.

``render(content)`` turns a :class:`NoticeContent` into a subject, a plain-text body and an HTML
alternative, from the Jinja2 templates in ``templates/``. Pure: no I/O but reading the templates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from lpse_ops.reports import dates, templating

KINDS = ("maintenance", "completion")

CLAUSE = "6.2.13"
AGREEMENT = "Service Level Agreement antara LKPP dan LPSE"
"""How the agreement names itself ("Service Level Agreement ini", "kesepakatan ini")."""
CLAUSE_TEXT = ("Memberitahukan kepada LPSE jika akan dilakukan pemeliharaan rutin perangkat yang dapat "
               "mengakibatkan tidak tersedianya layanan.")
"""Clause 6.2.13 in the agreement's own words (its OCR corrected)."""

HELPDESK = "Helpdesk LKPP, telepon (021) 50205577, e-mail helpdesk-lpse@lkpp.go.id"
"""The LKPP helpdesk as clause 7.2.2 lists it; override per fleet with the ``lpse_helpdesk`` inventory variable."""

SENDER = "Lembaga Kebijakan Pengadaan Barang/Jasa Pemerintah (LKPP)"

SUBJECTS = {
    "maintenance": "Pemberitahuan Pemeliharaan SPSE — {site_name}",
    "completion": "Pemeliharaan SPSE selesai — {site_name}",
}


@dataclass(frozen=True)
class Contact:
    """One recipient of a site's notices (inventory ``site_contacts``)."""

    name: str
    email: str


@dataclass
class NoticeContent:
    """Everything a notice says about one site.

    *start* is the instant the maintenance window begins (aware); *duration* its expected length
    (maintenance) or how long the service was interrupted (completion). *served_version* is the
    version the site serves after the work (completion; default *to_version*).
    """

    kind: str
    site_name: str
    timezone: str
    contacts: list[Contact]
    start: datetime
    duration: timedelta
    from_version: str
    to_version: str
    reference: str
    served_version: str | None = None
    helpdesk: str = HELPDESK
    sender: str = SENDER
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RenderedNotice:
    """A notice ready to send: subject, plain text and its HTML alternative."""

    subject: str
    text: str
    html: str


_environment = templating.environment


def context(content: NoticeContent) -> dict:
    """Return the template variables for *content* (dates in the site's own zone, in Indonesian)."""
    if content.kind not in KINDS:
        raise ValueError(f"notice kind must be one of {', '.join(KINDS)}, not {content.kind!r}")
    end = content.start + content.duration
    served = content.served_version or content.to_version
    return {
        "site_name": content.site_name,
        "contacts": content.contacts,
        "zone": dates.zone_abbreviation(content.timezone),
        "start_text": dates.format_datetime(content.start, content.timezone),
        "end_text": dates.format_until(content.start, end, content.timezone),
        "duration_text": dates.format_duration(content.duration),
        "change_text": f"Pembaruan SPSE dari versi {content.from_version} ke versi {content.to_version}",
        "from_version": content.from_version,
        "to_version": content.to_version,
        "served_version": served,
        "upgraded": served == content.to_version,
        "clause": CLAUSE,
        "agreement": AGREEMENT,
        "clause_text": CLAUSE_TEXT,
        "helpdesk": content.helpdesk,
        "reference": content.reference,
        "sender": content.sender,
        **content.extra,
    }


def render(content: NoticeContent) -> RenderedNotice:
    """Render *content* into a subject, a plain-text body and an HTML body; raise ValueError on a bad kind or zone."""
    variables = context(content)
    environment = _environment()
    return RenderedNotice(
        subject=SUBJECTS[content.kind].format(site_name=content.site_name),
        text=environment.get_template(f"{content.kind}.txt.j2").render(variables),
        html=environment.get_template(f"{content.kind}.html.j2").render(variables),
    )
