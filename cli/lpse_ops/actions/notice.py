"""Tell a site's contacts, in Bahasa Indonesia and by e-mail, that maintenance is coming (clause 6.2.13),
and that it is over.

``plan_notice`` resolves the sites (the inventory's ``sites`` group with ``--limit``), each one's
contacts (``site_contacts``), name and time zone, and the SMTP settings, refusing with every problem
before anything is sent. ``send_notice`` records a run ``notice.maintenance`` or ``notice.completion``
(a child of *parent_run_id* when an upgrade sends it), sends one message per site, audits each
delivery (``notice.sent``: reference, Message-ID, recipients) and returns a result per site. It
never prints and never asks; commands confirm first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lpse_ops import config
from lpse_ops.actions import fleet
from lpse_ops.actions.fleet import OperationRefused
from lpse_ops.actions.operation import parent_run
from lpse_ops.backends import smtp
from lpse_ops.reports import dates
from lpse_ops.reports.notice import KINDS, Contact, NoticeContent, render

Progress = Callable[[str, str], None]
REFERENCE_PREFIX = {"maintenance": "PML", "completion": "SLS"}
PAST_GRACE = timedelta(minutes=5)
"""How late a maintenance notice may still be sent (an upgrade run announcing the window it opens now)."""


@dataclass
class SiteTarget:
    """One site to notify: inventory host, code, display name, zone and contacts."""

    host: str
    site_code: str
    site_name: str
    timezone: str
    contacts: list[Contact]
    helpdesk: str | None = None

    def as_dict(self) -> dict:
        return {"host": self.host, "site_code": self.site_code, "site_name": self.site_name,
                "timezone": self.timezone,
                "contacts": [{"name": contact.name, "email": contact.email} for contact in self.contacts]}


@dataclass
class NoticeRequest:
    """What to announce, to which sites.

    *start* is an aware datetime (the instant the window opens; each site reads it in its own zone);
    *duration* the expected length (maintenance) or the interruption measured (completion).
    *served_version* (completion) is what the sites serve now, default *to_version*.
    Give *sites* and *smtp_settings* to skip reading the inventory (an upgrade run that has them).
    """

    kind: str
    start: datetime
    duration: timedelta
    from_version: str
    to_version: str
    inventory: Path | None = None
    limit: str | None = None
    served_version: str | None = None
    parent_run_id: int | None = None
    helpdesk: str | None = None
    state_url: str | None = None
    sites: list[SiteTarget] | None = None
    smtp_settings: smtp.SmtpSettings | None = None


@dataclass
class NoticePlan:
    """The sites and recipients a notice goes to, and through which server: what a command shows before asking."""

    request: NoticeRequest
    sites: list[SiteTarget]
    smtp_settings: smtp.SmtpSettings

    def as_dict(self) -> dict:
        return {"kind": self.request.kind, "start": self.request.start.isoformat(),
                "duration_s": int(self.request.duration.total_seconds()),
                "from_version": self.request.from_version, "to_version": self.request.to_version,
                "smtp": self.smtp_settings.describe(),
                "sites": [{**site.as_dict(), "start_local": dates.format_datetime(self.request.start, site.timezone)}
                          for site in self.sites]}


@dataclass
class NoticeResult:
    """What happened for one site: the recipients the server accepted, the Message-ID and when, or the error."""

    host: str
    site_name: str
    reference: str
    recipients: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    message_id: str | None = None
    sent_at: datetime | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.refused and bool(self.recipients)

    def as_dict(self) -> dict:
        return {"host": self.host, "site_name": self.site_name, "reference": self.reference, "ok": self.ok,
                "recipients": self.recipients, "refused": self.refused, "message_id": self.message_id,
                "sent_at": self.sent_at.isoformat(timespec="seconds") if self.sent_at else None, "error": self.error}


@dataclass
class NoticeOutcome:
    """A notice run: its id in the state store and one result per site."""

    run_id: int
    kind: str
    results: list[NoticeResult]

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)

    def as_dict(self) -> dict:
        return {"run_id": self.run_id, "kind": self.kind, "ok": self.ok,
                "sites": [result.as_dict() for result in self.results]}


def _contacts(host: str, raw: object, problems: list[str]) -> list[Contact]:
    if not raw or not isinstance(raw, list):
        problems.append(f"{host}: missing variable site_contacts (a list of {{name, email}}: who receives notices)")
        return []
    contacts = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict) or not entry.get("name") or "@" not in str(entry.get("email", "")):
            problems.append(f"{host}: site_contacts[{index}] must have a name and an e-mail address, not {entry!r}")
            continue
        contacts.append(Contact(name=str(entry["name"]), email=str(entry["email"]).strip()))
    return contacts


def site_targets(hostvars: dict[str, dict], hosts: list[str]) -> tuple[list[SiteTarget], list[str]]:
    """Return the notice targets for *hosts* from inventory *hostvars*, and every problem found (pure)."""
    targets, problems = [], []
    for host in hosts:
        variables = hostvars.get(host, {})
        contacts = _contacts(host, variables.get("site_contacts"), problems)
        zone_name = variables.get("site_timezone")
        if not zone_name:
            problems.append(f"{host}: missing variable site_timezone (Asia/Jakarta, Asia/Makassar or Asia/Jayapura)")
        else:
            try:
                dates.zone(str(zone_name))
            except dates.UnknownZoneError as error:
                problems.append(f"{host}: {error}")
        code = str(variables.get("site_code") or host)
        targets.append(SiteTarget(host=host, site_code=code,
                                  site_name=str(variables.get("site_name") or f"LPSE {code}"),
                                  timezone=str(zone_name or ""), contacts=contacts,
                                  helpdesk=variables.get("lpse_helpdesk")))
    return targets, problems


def plan_notice(request: NoticeRequest) -> NoticePlan:
    """Resolve sites, contacts and SMTP settings for *request*; raise OperationRefused listing every problem."""
    problems: list[str] = []
    if request.kind not in KINDS:
        problems.append(f"notice kind must be one of {', '.join(KINDS)}, not {request.kind!r}")
    if request.start.tzinfo is None:
        problems.append("the window start needs a time zone or an offset (e.g. 2026-11-28T22:00+07:00)")
    elif request.kind == "maintenance" and request.start < datetime.now(UTC) - PAST_GRACE:
        problems.append(f"the maintenance window starts in the past ({request.start.isoformat()}): the notice must "
                        "reach the site before the work (clause 6.2.13); check --start and --start-zone")
    if request.duration <= timedelta(0):
        problems.append("the duration must be longer than zero (e.g. 30m, 2h, 1h30m)")
    sites = request.sites
    first_vars: dict = {}
    if sites is None:
        if request.inventory is None:
            raise OperationRefused("no inventory: pass -i PATH, set LPSE_OPS_INVENTORY, or run `lpse-ops lab up`")
        read = fleet.read(request.inventory, limit=request.limit, validate_for=None)
        sites, site_problems = site_targets(read.report.sites, read.hosts)
        problems += site_problems
        first_vars = read.hostvars(read.hosts[0])
    settings = request.smtp_settings
    if settings is None:
        try:
            settings = smtp.settings(first_vars)
        except smtp.SmtpSettingsError as error:
            problems.append(str(error))
    if problems:
        listing = "\n  - ".join(problems)
        raise OperationRefused(f"{len(problems)} problem(s); no notice was sent:\n  - {listing}")
    assert settings is not None
    return NoticePlan(request=request, sites=sites, smtp_settings=settings)


def reference_for(kind: str, run_id: int, site_code: str) -> str:
    """Return the reference printed in a notice, e.g. ``PML-000012-lab01`` (run 12, maintenance)."""
    return f"{REFERENCE_PREFIX[kind]}-{run_id:06d}-{site_code}"


def _send_one(plan: NoticePlan, site: SiteTarget, run_id: int) -> NoticeResult:
    request = plan.request
    reference = reference_for(request.kind, run_id, site.site_code)
    result = NoticeResult(host=site.host, site_name=site.site_name, reference=reference)
    content = NoticeContent(kind=request.kind, site_name=site.site_name, timezone=site.timezone,
                            contacts=site.contacts, start=request.start, duration=request.duration,
                            from_version=request.from_version, to_version=request.to_version, reference=reference,
                            served_version=request.served_version,
                            **({"helpdesk": request.helpdesk or site.helpdesk} if request.helpdesk or site.helpdesk
                               else {}))
    rendered = render(content)
    message = smtp.build_message(plan.smtp_settings.sender, [(c.name, c.email) for c in site.contacts],
                                 rendered.subject, rendered.text, rendered.html,
                                 headers={"X-LPSE-Ops-Reference": reference, "X-LPSE-Ops-Run": str(run_id),
                                          "Content-Language": "id"})
    try:
        sent = smtp.send(plan.smtp_settings, message)
    except smtp.SmtpRefusedError as error:
        result.refused = error.refused
        result.error = str(error)
        return result
    except smtp.SmtpError as error:
        result.error = str(error)
        return result
    result.recipients, result.refused = sent.accepted, sent.refused
    result.message_id, result.sent_at = sent.message_id, sent.sent_at
    if sent.refused:
        listing = "; ".join(f"{address}: {reply}" for address, reply in sent.refused.items())
        result.error = (f"sent to {', '.join(sent.accepted)}, but the SMTP server refused {listing}: correct "
                        f"site_contacts of {site.host} in the inventory and send again")
    return result


def send_notice(request: NoticeRequest, plan: NoticePlan | None = None,
                progress: Progress | None = None) -> NoticeOutcome:
    """Send the notice of *request* to every site of *plan* (planned now when None) and record it.

    Returns one NoticeResult per site (a refused recipient, an unreachable server or a refused
    login is that site's ``error``; the others are still sent). Raises OperationRefused before
    anything is sent when the plan has problems.
    """
    from lpse_ops.state import StateStore

    plan = plan or plan_notice(request)
    operation = f"notice.{request.kind}"
    args = {"kind": request.kind, "start": request.start.isoformat(), "duration_s": request.duration.total_seconds(),
            "from_version": request.from_version, "to_version": request.to_version,
            "served_version": request.served_version, "parent_run_id": request.parent_run_id,
            "inventory": str(request.inventory) if request.inventory else None, "limit": request.limit,
            "smtp": plan.smtp_settings.describe()}
    store = StateStore.open(request.state_url or config.state_url())
    try:
        run_id = store.start_run(operation, args, [site.host for site in plan.sites],
                                 parent_id=request.parent_run_id or parent_run())
        results: list[NoticeResult] = []
        try:
            for site in plan.sites:
                if progress:
                    progress(site.host, f"sending to {', '.join(c.email for c in site.contacts)}")
                result = _send_one(plan, site, run_id)
                results.append(result)
                if result.message_id:
                    store.audit_append("notice.sent", {
                        "run_id": run_id, "kind": request.kind, "host": site.host, "reference": result.reference,
                        "message_id": result.message_id, "recipients": result.recipients, "refused": result.refused,
                        "parent_run_id": request.parent_run_id})
                if progress:
                    progress(site.host, "sent" if result.ok else f"failed: {result.error}")
        except BaseException:
            store.finish_run(run_id, "error", _host_results(results),
                             summary={"error": "interrupted", "parent_run_id": request.parent_run_id})
            raise
        outcome = NoticeOutcome(run_id=run_id, kind=request.kind, results=results)
        store.finish_run(run_id, "ok" if outcome.ok else "failed", _host_results(results), summary={
            "kind": request.kind, "sent": sum(1 for r in results if r.message_id),
            "failed": sum(1 for r in results if not r.ok), "parent_run_id": request.parent_run_id})
        return outcome
    finally:
        store.close()


def _host_results(results: list[NoticeResult]) -> dict[str, dict]:
    return {result.host: {"status": "ok" if result.ok else "failed", "failed": 0 if result.ok else 1,
                          **{key: value for key, value in result.as_dict().items() if key not in ("host", "ok")}}
            for result in results}
