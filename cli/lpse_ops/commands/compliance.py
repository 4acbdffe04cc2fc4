"""``lpse-ops audit``: the compliance audit of the sites, scored, stored and compared (docs/audit.md).

Not ``audit-log`` (the hash-chained log of operations): this audits the sites themselves.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
from rich.table import Table

from lpse_ops import progress, terminal
from lpse_ops.actions import compliance
from lpse_ops.commands._options import inventory_option, json_option, limit_option, refusal_as_error, require_inventory


def _render(result: compliance.AuditResult) -> None:
    fleet = result.fleet()
    table = Table(title=f"compliance audit (run {result.run.run_id}): {fleet['audited']}/{fleet['sites']} site(s), "
                        f"mean score {fleet['mean_score']}")
    for column in ("site", "score", "lynis", "failed controls", "drift"):
        table.add_column(column, overflow="fold")
    for site in result.sites:
        if site.score is None:
            table.add_row(site.site, "[red]-[/red]", "-", f"[red]not audited: {site.error}[/red]", "")
            continue
        style = "green" if site.score >= 90 else "yellow" if site.score >= 70 else "red"
        drift = " ".join([f"[red]+{name}[/red]" for name in site.drift["worse"]]
                         + [f"[green]-{name}[/green]" for name in site.drift["better"]])
        table.add_row(site.site, f"[{style}]{site.score:.1f}[/{style}]",
                      "-" if site.lynis_index is None else str(site.lynis_index), ", ".join(site.failed) or "none",
                      drift)
    terminal.print_table(table)
    for site in result.sites:
        for control in site.controls:
            if control["status"] == compliance.FAIL:
                terminal.info(f"{site.site} {control['id']} ({control['severity']}, clause {control['clause']}): "
                              f"{control['evidence']}\n    what to do: {control['remediation']}")
            elif control["status"] == compliance.UNSUPPORTED:
                terminal.info(f"{site.site} {control['id']}: not scored: {control['evidence']}")


@click.group(name="audit", invoke_without_command=True)
@inventory_option
@limit_option
@click.option("--lynis", is_flag=True, help="Also run Lynis on each site and record its hardening index (minutes).")
@click.option("--no-aide", is_flag=True, help="Skip AIDE's check (its control then fails).")
@json_option
@click.pass_context
def audit(context: click.Context, inventory_path: Path | None, limit: str | None, lynis: bool, no_aide: bool,
          as_json: bool) -> None:
    """Audit the sites' security against the controls catalogue; score, store and compare with the last audit.

    Read-only on the sites (the audit tool is copied there; --lynis installs Debian's lynis). Clauses
    6.2.7, 6.2.19, 6.1.3, 6.1.4.3. Exit 0 every site audited, 3 a site could not be audited, 4 unreachable.
    `lpse-ops audit history` lists stored audits.
    """
    if context.invoked_subcommand is not None:
        return
    request = compliance.AuditRequest(inventory=require_inventory(inventory_path), limit=limit, lynis=lynis,
                                      aide=not no_aide, progress=progress.live(not as_json))
    with refusal_as_error():
        result = compliance.audit(request)
    if as_json:
        terminal.emit_json(result.as_dict())
    else:
        _render(result)
    raise SystemExit(result.exit_code)


def _when(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError as error:
        raise terminal.fail(f"cannot read time {value!r}: use ISO 8601, e.g. 2026-11-01T00:00:00+07:00") from error
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@audit.command(name="history")
@click.option("--site", default=None, help="Only this site.")
@click.option("--since", default=None, help="From this time (ISO 8601; UTC unless it has a zone).")
@click.option("--until", default=None, help="Before this time (ISO 8601).")
@json_option
def history(site: str | None, since: str | None, until: str | None, as_json: bool) -> None:
    """List stored audits: score, Lynis index, failed controls and drift, oldest first."""
    from lpse_ops import config
    from lpse_ops.state import StateStore
    from lpse_ops.state.audits import list_audits

    with StateStore.open(config.state_url()) as store:
        rows = list_audits(store, since=_when(since), until=_when(until), site=site)
    if as_json:
        terminal.emit_json({"audits": rows})
        return
    table = Table(title=f"{len(rows)} audit(s)")
    for column in ("id", "site", "audited at (UTC)", "score", "lynis", "failed", "worse", "better"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(str(row["id"]), row["site"], row["audited_at"] or "", "-" if row["score"] is None
                      else f"{row['score']:.1f}", "-" if row["lynis_index"] is None else str(row["lynis_index"]),
                      ", ".join(row["failed"]), ", ".join(row["drift"]["worse"]), ", ".join(row["drift"]["better"]))
    terminal.print_table(table)
