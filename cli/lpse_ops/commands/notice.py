"""``lpse-ops notice``: the maintenance and completion notices to the sites' contacts (clause 6.2.13)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from lpse_ops import terminal
from lpse_ops.actions.notice import NoticeRequest, plan_notice, send_notice
from lpse_ops.actions.operation import EXIT_HOSTS_FAILED
from lpse_ops.commands._options import inventory_option, json_option, refusal_as_error, yes_option
from lpse_ops.commands.runs import state_url_option
from lpse_ops.reports import dates

DURATION = re.compile(r"^(?:(?P<hours>\d+)h)?(?:(?P<minutes>\d+)m?)?$")


def parse_duration(text: str) -> timedelta:
    """Return the timedelta of "30m", "2h", "1h30m" or "90" (minutes); raise click.BadParameter otherwise."""
    match = DURATION.match(text.strip().lower())
    if not text.strip() or not match or not any(match.groupdict().values()):
        raise click.BadParameter(f"{text!r} is not a duration: use e.g. 30m, 2h or 1h30m")
    return timedelta(hours=int(match["hours"] or 0), minutes=int(match["minutes"] or 0))


def parse_start(text: str, zone_name: str) -> datetime:
    """Return the aware start of the window: ISO 8601, read in *zone_name* when it has no offset."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise click.BadParameter(f"{text!r} is not a date and time: use e.g. 2026-11-28T22:00") from error
    try:
        return moment if moment.tzinfo else moment.replace(tzinfo=dates.zone(zone_name))
    except dates.UnknownZoneError as error:
        raise click.BadParameter(str(error)) from error


@click.group(name="notice")
def notice() -> None:
    """Tell the sites' contacts, in Bahasa Indonesia by e-mail, about maintenance (clause 6.2.13)."""


@notice.command(name="send")
@click.option("--kind", type=click.Choice(["maintenance", "completion"]), default="maintenance", show_default=True,
              help="maintenance: before the work; completion: after it (version now served, interruption).")
@inventory_option
@click.option("--limit", "-l", default=None, help="Only these sites (Ansible pattern).")
@click.option("--start", "start_text", required=True,
              help="When the window opens (completion: when the interruption began), e.g. 2026-11-28T22:00.")
@click.option("--start-zone", default="Asia/Jakarta", show_default=True,
              help="Zone of --start when it has no offset; each site reads the notice in its own zone.")
@click.option("--duration", "duration_text", required=True,
              help="Expected length (completion: the interruption measured), e.g. 30m, 2h, 1h30m.")
@click.option("--from-version", required=True, help="The SPSE version the sites run before.")
@click.option("--to-version", required=True, help="The SPSE version they are upgraded to.")
@click.option("--served-version", default=None, help="completion: the version served now [default: --to-version].")
@click.option("--parent-run", "parent_run_id", type=int, default=None,
              help="The run (e.g. an upgrade) this notice belongs to.")
@click.option("--helpdesk", default=None, help="The helpdesk line of the notice [default: lpse_helpdesk, else "
              "LKPP's helpdesk of clause 7.2.2].")
@yes_option("sending")
@json_option
@state_url_option
def send_command(kind: str, inventory_path: Path | None, limit: str | None, start_text: str, start_zone: str,
                 duration_text: str, from_version: str, to_version: str, served_version: str | None,
                 parent_run_id: int | None, helpdesk: str | None, yes: bool, as_json: bool,
                 state_url: str | None) -> None:
    """Send the maintenance (or completion) notice to every site's contacts over SMTP, and record it.

    Plan, show, confirm, then send: the sites, their recipients and the start in each site's own
    zone are shown first. --json needs --yes. Exit 1: nothing sent (bad input, no contacts, no SMTP
    settings); 3: a site's notice failed (server down, recipient refused).
    """
    if as_json and not yes:
        raise terminal.fail("--json never prompts: add --yes (or LPSE_OPS_YES=1) to send without asking")
    request = NoticeRequest(kind=kind, inventory=inventory_path, limit=limit,
                            start=parse_start(start_text, start_zone), duration=parse_duration(duration_text),
                            from_version=from_version, to_version=to_version, served_version=served_version,
                            parent_run_id=parent_run_id, helpdesk=helpdesk, state_url=state_url)
    with refusal_as_error():
        plan = plan_notice(request)
    if not as_json:
        table = Table(title=f"{kind} notice: SPSE {from_version} -> {to_version}, "
                            f"{dates.format_duration(request.duration)}, via {plan.smtp_settings.host}:"
                            f"{plan.smtp_settings.port}")
        for column in ("site", "name", "start (site's time)", "recipients"):
            table.add_column(column, overflow="fold")
        for site in plan.sites:
            table.add_row(escape(site.host), escape(site.site_name),
                          dates.format_datetime(request.start, site.timezone),
                          escape(", ".join(f"{c.name} <{c.email}>" for c in site.contacts)))
        terminal.print_table(table, terminal.err)
    if not yes:
        click.confirm(f"Send the {kind} notice to {len(plan.sites)} site(s)?", abort=True, err=True)
    with refusal_as_error():
        outcome = send_notice(request, plan, progress=None if as_json else
                              lambda host, message: terminal.info(f"  {host}: {message}"))
    if as_json:
        terminal.emit_json(outcome.as_dict())
    else:
        table = Table(title=f"{kind} notice: {'sent' if outcome.ok else 'FAILED'} (run {outcome.run_id})")
        for column in ("site", "reference", "recipients", "message id / error"):
            table.add_column(column, overflow="fold")
        for result in outcome.results:
            style = "green" if result.ok else "red"
            table.add_row(escape(result.host), result.reference, escape(", ".join(result.recipients) or "-"),
                          f"[{style}]{escape(result.error or result.message_id or '')}[/{style}]")
        terminal.print_table(table)
    if not outcome.ok:
        raise SystemExit(EXIT_HOSTS_FAILED)
