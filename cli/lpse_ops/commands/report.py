"""``lpse-ops report``: the monthly report and the compliance report, in Bahasa Indonesia (docs/reports.md).

Clauses 8.1.1-8.1.3 (monthly monitoring, trend and analysis), 6.2.16 (achievement and compliance) and
6.2.17 (data pulled from the sites). HTML with inline charts, and PDF printed by headless Chromium.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from lpse_ops import terminal
from lpse_ops.actions import report as report_action
from lpse_ops.actions import report_request
from lpse_ops.commands._options import inventory_option, json_option, refusal_as_error
from lpse_ops.commands.runs import state_url_option


@click.group(name="report")
def report() -> None:
    """Official reports (Indonesian): monthly monitoring, trend and analysis; SLA compliance."""


def _formats(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(part.strip().lower() for part in value.split(",") if part.strip()))
    wrong = [part for part in chosen if part not in report_request.FORMATS]
    if wrong or not chosen:
        raise click.BadParameter(f"use html, pdf or html,pdf (not {value!r})")
    return chosen


def _common(function):
    options = (
        click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
                     show_default=True, help="Folder the report files are written to."),
        click.option("--format", "formats", default="html,pdf", show_default=True, callback=_formats,
                     help="html, pdf, or both (comma-separated); PDF needs Debian's chromium."),
        click.option("--release", default=None, metavar="VERSION",
                     help="The release sites should be on [default: the newest installed or upgraded-to one]."),
        inventory_option,
        state_url_option,
        json_option,
    )
    for option in reversed(options):
        function = option(function)
    return function


def _sites(inventory_path: Path | None) -> tuple[dict[str, str], dict[str, str], str]:
    """Return the sites' zones and names from the inventory. One given with -i must be readable; the
    default one (the lab's) may be gone, and then every time is shown in WIB, with a warning."""
    if inventory_path is None:
        return {}, {}, ""
    try:
        zones, names = report_request.inventory_sites(inventory_path)
    except report_request.ReportRefused as error:
        source = click.get_current_context().get_parameter_source("inventory_path")
        if source == click.core.ParameterSource.COMMANDLINE:
            raise terminal.fail(f"{error}: fix -i, or leave it out to show every time in WIB") from error
        terminal.warn(f"site time zones not read ({error}): every time is shown in WIB")
        return {}, {}, ""
    return zones, names, f"site_timezone dari inventaris {inventory_path.name}"


def _run(request: report_request.ReportRequest, inventory_path: Path | None, as_json: bool) -> None:
    request.site_zones, request.site_names, request.zones_from = _sites(inventory_path)
    request.progress = None if as_json else terminal.info
    with refusal_as_error():
        try:
            outcome = report_action.generate(request)
        except report_request.ReportFailed as error:
            raise terminal.fail(f"{error}: fix Chromium (apt-get install chromium) or use --format html") from error
    if as_json:
        terminal.emit_json(outcome.as_dict())
        return
    table = Table(title=f"{outcome.data.kind} report, {outcome.data.period.label} (run {outcome.run_id})")
    for column in ("file", "sha256"):
        table.add_column(column, overflow="fold")
    for kind, path in outcome.files.items():
        table.add_row(escape(str(path)), outcome.sha256[kind])
    terminal.print_table(table)
    empty = [source.name for source in outcome.data.sources.values() if source.state != "ok"]
    if empty:
        terminal.info(f"sections without data (shown as 'tidak ada data'): {', '.join(empty)}")


@report.command(name="monthly")
@click.option("--month", default=report_request.current_month, show_default="this month in WIB", metavar="YYYY-MM",
              help="The month reported on; a month in WIB (Asia/Jakarta).")
@click.option("--work-plan", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="YAML list of next month's work (date, activity, sites, clause) [default: derived].")
@_common
def monthly_command(month: str, work_plan: Path | None, out_dir: Path, formats: tuple[str, ...],
                    release: str | None, inventory_path: Path | None, state_url: str | None, as_json: bool) -> None:
    """Monthly monitoring, trend and analysis report (clauses 8.1.1, 8.1.2, 8.1.3, 6.2.16, 6.2.17).

    Writes laporan-bulanan-YYYY-MM.html and .pdf; each site's times in its own zone (the inventory's
    site_timezone). Exit code 0 when written, 1 when refused (nothing written).
    """
    with refusal_as_error():
        period = report_request.month_period(month)
    _run(report_request.ReportRequest(kind="monthly", period=period, out_dir=out_dir, formats=formats,
                                      release=release, work_plan=work_plan, state_url=state_url),
         inventory_path, as_json)


@report.command(name="compliance")
@click.option("--month", default=None, metavar="YYYY-MM", help="A month in WIB [default: this month].")
@click.option("--from", "first", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="First day (WIB), with --to.")
@click.option("--to", "last", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Last day (WIB), included.")
@_common
def compliance_command(month: str | None, first, last, out_dir: Path, formats: tuple[str, ...], release: str | None,
                       inventory_path: Path | None, state_url: str | None, as_json: bool) -> None:
    """Achievement and compliance report (clause 6.2.16): incident handling against targets, verified
    backups, drills' RTO/RPO against targets, audit scores and drift, installs and upgrades.

    Give --month, or --from and --to (days in WIB). Exit code 0 when written, 1 when refused.
    """
    if month and (first or last):
        raise terminal.fail("give --month or --from/--to, not both")
    if (first is None) != (last is None):
        raise terminal.fail("--from and --to go together (e.g. --from 2026-10-01 --to 2026-12-31)")
    with refusal_as_error():
        if first is not None:
            period = report_request.days_period(date(first.year, first.month, first.day),
                                                date(last.year, last.month, last.day))
        else:
            period = report_request.month_period(month or report_request.current_month())
    _run(report_request.ReportRequest(kind="compliance", period=period, out_dir=out_dir, formats=formats,
                                      release=release, state_url=state_url), inventory_path, as_json)
