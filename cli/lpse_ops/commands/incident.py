"""``lpse-ops incident``: incidents and service requests with priorities, targets in working time, escalations
(clauses 7.1, 7.3, 7.6, 7.7), and the official emergency statement (clause 10.3)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from lpse_ops import terminal
from lpse_ops.actions import incidents as actions
from lpse_ops.commands._options import inventory_option, json_option, refusal_as_error
from lpse_ops.commands.runs import state_url_option
from lpse_ops.reports import dates
from lpse_ops.state.incidents import ESCALATIONS, KINDS, PRIORITIES, STATUSES


def _moment(text: str | None, option: str) -> datetime | None:
    """Return the ISO 8601 time *text* (naive: read later in the site's zone), or None."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise click.BadParameter(f"{text!r} is not a date and time: use e.g. 2026-11-28T09:30 (site's time) or "
                                 "2026-11-28T09:30+07:00", param_hint=option) from error


def _window(text: str | None, zone_name: str, option: str) -> datetime | None:
    moment = _moment(text, option)
    if moment is None or moment.tzinfo:
        return moment
    try:
        return moment.replace(tzinfo=dates.zone(zone_name))
    except dates.UnknownZoneError as error:
        raise click.BadParameter(str(error), param_hint="--zone") from error


def _local(iso: str | None, zone_name: str) -> str:
    """Return an ISO time as "2026-12-01 14.30 WIB" in the site's zone ("-" when None)."""
    if not iso:
        return "-"
    moment = datetime.fromisoformat(iso).astimezone(dates.zone(zone_name))
    return f"{moment:%Y-%m-%d} {dates.format_time(moment, zone_name)}"


def _span(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    hours, rest = divmod(int(seconds) // 60, 60)
    return f"{hours}h{rest:02d}m" if hours else f"{rest}m"


def _flag(row: dict[str, Any], which: str) -> str:
    due = _local(row[f"{which}_due"], row["site_timezone"])
    if row[f"{which}_breached"]:
        return f"[red]{due} BREACHED[/red]"
    done = row["responded_at"] if which == "response" else row["resolved_at"]
    return f"[green]{due} met[/green]" if done else due


def _status(status: str) -> str:
    colour = {"open": "yellow", "acknowledged": "cyan", "in_progress": "cyan", "resolved": "green",
              "closed": "dim"}.get(status, "white")
    return f"[{colour}]{status}[/{colour}]"


def _print_record(row: dict[str, Any]) -> None:
    out = terminal.out
    zone = row["site_timezone"]
    out.print(f"[bold]{row['kind']} {row['id']}[/bold] ({row['priority']} {escape(row.get('priority_name') or '')}): "
              f"{escape(row['title'])}", highlight=False)
    out.print(f"  site:        {escape(row['site'])} ({escape(row['site_name'])}, {dates.zone_abbreviation(zone)})",
              highlight=False)
    out.print(f"  status:      {_status(row['status'])}", highlight=False)
    out.print(f"  opened:      {_local(row['opened_at'], zone)} by {escape(row['opened_by'])}", highlight=False)
    out.print(f"  response:    due {_flag(row, 'response')}; responded {_local(row['responded_at'], zone)} "
              f"({_span(row['response_working_s'])} of working time, target {_span(row['response_target_s'])})",
              highlight=False)
    out.print(f"  resolution:  due {_flag(row, 'resolution')}; resolved {_local(row['resolved_at'], zone)} "
              f"({_span(row['resolution_working_s'])} of working time, target {_span(row['resolution_target_s'])})",
              highlight=False)
    if row.get("description"):
        out.print(f"  description: {escape(row['description'])}", highlight=False)
    if row.get("impact"):
        out.print(f"  impact:      {escape(row['impact'])}", highlight=False)
    if row["run_ids"]:
        out.print(f"  runs:        {', '.join(map(str, row['run_ids']))} (lpse-ops runs show ID)", highlight=False)
    for escalation in row["escalations"]:
        out.print(f"  escalated:   {escalation['kind']} (clause {escalation['clause']}) to {escape(escalation['to'])} "
                  f"at {_local(escalation['at'], zone)}: {escape(escalation['reason'] or '')}", highlight=False)
    if row.get("events"):
        table = Table(title="history")
        for column in ("time (site)", "actor", "change", "note"):
            table.add_column(column, overflow="fold")
        for event in row["events"]:
            if event["kind"] == "status":
                change = f"{event['from_status']} -> {event['to_status']}"
            elif event["kind"].startswith("escalation."):
                change = f"{event['kind']} to {event['to']}"
            elif event["kind"] in ("priority", "link"):
                change = f"{event['kind']} {escape(str(event['detail']))}"
            else:
                change = event["kind"]
            table.add_row(_local(event["at"], zone), escape(event["actor"]), escape(change),
                          escape(event["note"] or ""))
        terminal.print_table(table)


def _result(row: dict[str, Any], as_json: bool, message: str) -> None:
    if as_json:
        terminal.emit_json(row)
        return
    terminal.info(message)
    _print_record(row)


def _at_option(help_text: str) -> Callable[[Callable], Callable]:
    return click.option("--at", "at_text", default=None, metavar="TIME",
                        help=f"{help_text} [default: now]; ISO 8601, without an offset read in the site's zone.")


@click.group(name="incident")
def incident() -> None:
    """Incidents and service requests: priorities, targets in working time, escalation, statements.

    Clauses 7.1 (every report recorded, followed up, with its status), 7.3 (targets in the helpdesk's
    working time), 7.6 (priority table: LPSE_OPS_PRIORITY_TABLE), 7.7 (escalation) and 10.3 (statement).
    """


@incident.command(name="open")
@click.option("--site", required=True, help="The site's inventory host name.")
@click.option("--priority", "-p", required=True, type=click.Choice(PRIORITIES), help="P1 (critical) ... P4 (low).")
@click.option("--kind", type=click.Choice(KINDS), default="incident", show_default=True,
              help="incident: a disturbance; request: a service request.")
@click.option("--title", required=True, help="What happened, in one line.")
@click.option("--description", default=None, help="What happened, in more words (used in the statement).")
@click.option("--impact", default=None, help="Who and what is affected (used in the statement).")
@click.option("--run", "run_ids", type=int, multiple=True, help="A run it relates to (drill, upgrade); repeatable.")
@_at_option("When it was reported")
@inventory_option
@json_option
@state_url_option
def open_command(site: str, priority: str, kind: str, title: str, description: str | None, impact: str | None,
                 run_ids: tuple[int, ...], at_text: str | None, inventory_path: Path | None, as_json: bool,
                 state_url: str | None) -> None:
    """Record a new incident or service request; its targets count in the site's working time."""
    request = actions.OpenRequest(kind=kind, site=site, priority=priority, title=title, description=description,
                                  impact=impact, run_ids=list(run_ids), opened_at=_moment(at_text, "--at"),
                                  inventory=inventory_path, state_url=state_url)
    with refusal_as_error():
        row = actions.open_incident(request)
    _result(row, as_json, f"recorded {kind} {row['id']}")


@incident.command(name="update")
@click.argument("incident_id", type=int)
@click.option("--status", type=click.Choice(STATUSES), default=None,
              help="open -> acknowledged -> in_progress -> resolved -> closed (resolved -> in_progress reopens).")
@click.option("--priority", "-p", type=click.Choice(PRIORITIES), default=None,
              help="A new priority: both due times are computed again from when it was opened.")
@click.option("--note", default=None, help="What was done or found (the history, and the statement's 'penanganan').")
@click.option("--run", "run_ids", type=int, multiple=True, help="Link a run (drill, upgrade, restore); repeatable.")
@_at_option("When it happened")
@json_option
@state_url_option
def update_command(incident_id: int, status: str | None, priority: str | None, note: str | None,
                   run_ids: tuple[int, ...], at_text: str | None, as_json: bool, state_url: str | None) -> None:
    """Change an incident's status or priority, link runs, or add a note; each change is recorded with who and when."""
    request = actions.UpdateRequest(incident_id=incident_id, status=status, priority=priority, note=note,
                                    run_ids=list(run_ids), at=_moment(at_text, "--at"), state_url=state_url)
    with refusal_as_error():
        row = actions.update_incident(request)
    _result(row, as_json, f"updated incident {incident_id}")


@incident.command(name="escalate")
@click.argument("incident_id", type=int)
@click.option("--kind", required=True, type=click.Choice(tuple(ESCALATIONS)),
              help="functional (7.7.1): to a technical support tier; structural (7.7.2): to officials and management.")
@click.option("--to", "target", required=True, help="Who it goes to (a tier, a team, an official).")
@click.option("--reason", required=True, help="Why it needs them.")
@_at_option("When it was escalated")
@json_option
@state_url_option
def escalate_command(incident_id: int, kind: str, target: str, reason: str, at_text: str | None, as_json: bool,
                     state_url: str | None) -> None:
    """Record a functional or structural escalation (clauses 7.7.1, 7.7.2)."""
    request = actions.EscalateRequest(incident_id=incident_id, kind=kind, to=target, reason=reason,
                                      at=_moment(at_text, "--at"), state_url=state_url)
    with refusal_as_error():
        row = actions.escalate_incident(request)
    _result(row, as_json, f"escalated incident {incident_id} ({kind}, clause {ESCALATIONS[kind]}) to {target}")


@incident.command(name="resolve")
@click.argument("incident_id", type=int)
@click.option("--note", required=True, help="How it was resolved.")
@_at_option("When it was resolved")
@json_option
@state_url_option
def resolve_command(incident_id: int, note: str, at_text: str | None, as_json: bool, state_url: str | None) -> None:
    """Mark an incident resolved (the resolution time its target is judged by)."""
    with refusal_as_error():
        row = actions.resolve_incident(incident_id, note, at=_moment(at_text, "--at"), state_url=state_url)
    _result(row, as_json, f"resolved incident {incident_id}")


@incident.command(name="list")
@click.option("--since", default=None, metavar="TIME", help="Opened at or after (e.g. 2026-11-01).")
@click.option("--until", default=None, metavar="TIME", help="Opened before (e.g. 2026-12-01).")
@click.option("--zone", default="Asia/Jakarta", show_default=True, help="Zone of --since/--until without an offset.")
@click.option("--site", default=None, help="Only this site.")
@click.option("--kind", type=click.Choice(KINDS), default=None, help="Only incidents or only requests.")
@click.option("--status", type=click.Choice((*STATUSES, "active")), default=None,
              help="Only this status (active: not yet resolved).")
@click.option("--breached", is_flag=True, help="Only those that missed their response or resolution target.")
@json_option
@state_url_option
def list_command(since: str | None, until: str | None, zone: str, site: str | None, kind: str | None,
                 status: str | None, breached: bool, as_json: bool, state_url: str | None) -> None:
    """List incidents and requests, oldest first, with their targets and breaches (in working time)."""
    request = actions.ListRequest(since=_window(since, zone, "--since"), until=_window(until, zone, "--until"),
                                  site=site, kind=kind, status=status, breached=True if breached else None,
                                  state_url=state_url)
    with refusal_as_error():
        rows = actions.list_incidents(request)
    if as_json:
        terminal.emit_json(rows)
        return
    if not rows:
        terminal.info("no incident or request matches")
        return
    table = Table(title=f"incidents and requests ({len(rows)}; "
                        f"{sum(1 for row in rows if row['breached'])} breached; times in each site's zone)")
    for column in ("id", "kind", "site", "prio", "status", "opened", "response due", "resolution due", "esc",
                   "title"):
        table.add_column(column, overflow="fold", justify="right" if column in ("id", "esc") else "left")
    for row in rows:
        table.add_row(str(row["id"]), row["kind"], escape(row["site"]), row["priority"], _status(row["status"]),
                      _local(row["opened_at"], row["site_timezone"]), _flag(row, "response"),
                      _flag(row, "resolution"), str(len(row["escalations"])), escape(row["title"]))
    terminal.print_table(table)


@incident.command(name="show")
@click.argument("incident_id", type=int)
@json_option
@state_url_option
def show_command(incident_id: int, as_json: bool, state_url: str | None) -> None:
    """Show one incident: targets, breaches, escalations, linked runs and its whole history."""
    with refusal_as_error():
        row = actions.show_incident(incident_id, state_url=state_url)
    if as_json:
        terminal.emit_json(row)
        return
    _print_record(row)


@incident.command(name="statement")
@click.argument("incident_id", type=int)
@click.option("--format", "output_format", type=click.Choice(("text", "html")), default="text", show_default=True)
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the statement to this file instead of stdout.")
@click.option("--actions", "actions_text", default=None,
              help="What is being done [default: the record's notes, oldest first].")
@click.option("--next-update", "next_update_text", default=None, metavar="TIME",
              help="When the next update comes [default: now + statement.next_update of the priority table]; "
                   "without an offset read in the site's zone.")
@click.option("--contact", default=None,
              help="Contact line [default: the site's lpse_helpdesk when recorded, else LKPP's helpdesk, 7.2.2].")
@json_option
@state_url_option
def statement_command(incident_id: int, output_format: str, out_path: Path | None, actions_text: str | None,
                      next_update_text: str | None, contact: str | None, as_json: bool, state_url: str | None) -> None:
    """Draft the official emergency statement (clause 10.3) in Bahasa Indonesia from an incident record."""
    request = actions.StatementRequest(incident_id=incident_id, actions=actions_text,
                                       next_update=_moment(next_update_text, "--next-update"), contact=contact,
                                       state_url=state_url)
    with refusal_as_error():
        rendered = actions.draft_statement(request)
    body = rendered.html if output_format == "html" else rendered.text
    if out_path is not None:
        try:
            out_path.write_text(body, encoding="utf-8")
        except OSError as error:
            raise terminal.fail(f"cannot write {out_path}: {error.strerror or error}") from error
    if as_json:
        terminal.emit_json({"reference": rendered.reference, "subject": rendered.subject, "format": output_format,
                            "out": str(out_path) if out_path else None, "text": rendered.text, "html": rendered.html})
    elif out_path is not None:
        terminal.info(f"statement {rendered.reference} written to {out_path}")
    else:
        click.echo(body, nl=False)


@incident.command(name="table")
@click.option("--days", type=click.IntRange(1, 730), default=120, show_default=True,
              help="List the days off of the next N days.")
@json_option
def table_command(days: int, as_json: bool) -> None:
    """Check and show the priority table and working time in force (LPSE_OPS_PRIORITY_TABLE), and days off ahead."""
    with refusal_as_error():
        summary = actions.policy_summary(days=days)
    if as_json:
        terminal.emit_json(summary)
        return
    work = summary["working_time"]
    terminal.info(f"priority table {summary['path']}")
    table = Table(title=f"targets in working time: {', '.join(work['days'])} {work['start']}-{work['end']} "
                        f"(site's zone), without {work['holidays']}")
    for column in ("priority", "name", "response", "resolution", "meaning"):
        table.add_column(column, overflow="fold")
    for code, row in summary["priorities"].items():
        table.add_row(code, escape(row["name"]), _span(row["response_s"]), _span(row["resolution_s"]),
                      escape(row["meaning"]))
    terminal.print_table(table)
    holidays = Table(title=f"days off in the next {days} days")
    holidays.add_column("date")
    holidays.add_column("name", overflow="fold")
    for entry in summary["holidays_ahead"]:
        holidays.add_row(entry["date"], escape(entry["name"]))
    terminal.print_table(holidays)
