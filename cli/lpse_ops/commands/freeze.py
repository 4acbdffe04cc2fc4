"""``lpse-ops freeze | unfreeze | warn``: LKPP's warning and freeze of an LPSE's SPSE (clause 6.2.20;
docs/freeze.md)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from lpse_ops import progress, terminal
from lpse_ops.actions import freeze as actions
from lpse_ops.commands._options import inventory_option, json_option, render, require_inventory, yes_option
from lpse_ops.commands.runs import state_url_option

WHAT = {
    "freeze": "freeze {site}: writes get 423 and the notice page, reads still served, upgrades and installs refused, "
              "backups keep running",
    "unfreeze": "unfreeze {site}: writes are accepted again (maintenance flags are left as they are)",
    "warn": "warn {site}: the warning is recorded and written on the site; SPSE keeps serving as before",
}


def _run(action: str, site: str, reason: str, inventory_path: Path | None, yes: bool, as_json: bool,
         state_url: str | None) -> None:
    if as_json and not yes:
        raise terminal.fail(f"--json never prompts: add --yes (or LPSE_OPS_YES=1) to {action} without asking")
    request = actions.SanctionRequest(action=action, site=site, reason=reason,
                                      inventory=require_inventory(inventory_path), progress=progress.live(not as_json),
                                      state_url=state_url)
    problems = actions.check(request)
    if problems:
        raise terminal.fail("nothing was done:\n  - " + "\n  - ".join(problems))
    if not yes:
        terminal.info(WHAT[action].format(site=site) + f"\n  reason: {reason.strip()}")
        click.confirm(f"{action.capitalize()} {site}?", abort=True, err=True)
    try:
        result = actions.apply(request)
    except actions.FreezeRefused as error:
        raise terminal.fail(str(error)) from error
    if as_json:
        terminal.emit_json(result.as_dict())
        raise SystemExit(result.exit_code)
    render(result.run, f"{action} {site}")
    if result.sanction["applied"]:
        terminal.info(f"{site}: {action} applied and recorded (sanction {result.sanction['id']}, clause 6.2.20)")
    else:
        terminal.err.print(f"[bold red]{escape(site)}: {action} NOT confirmed by the site[/bold red] "
                           f"({escape(result.missing or 'its record does not show it done')}); recorded as not applied",
                           highlight=False)
    raise SystemExit(result.exit_code)


def _common(function):
    for option in (
        click.option("--site", required=True, help="The one site (inventory host)."),
        click.option("--reason", required=True, help="Why (recorded in the state store and the audit log)."),
        inventory_option, json_option, state_url_option,
    ):
        function = option(function)
    return function


@click.group(name="freeze", invoke_without_command=True)
@click.option("--site", default=None, help="The one site to freeze (inventory host).")
@click.option("--reason", default=None, help="Why LKPP freezes it (recorded, and shown on the notice page).")
@inventory_option
@yes_option("freezing")
@json_option
@state_url_option
@click.pass_context
def freeze(ctx: click.Context, site: str | None, reason: str | None, inventory_path: Path | None, yes: bool,
           as_json: bool, state_url: str | None) -> None:
    """Freeze an LPSE's SPSE (clause 6.2.20): refuse writes with a notice, keep reads and backups.

    `lpse-ops freeze --site S --reason TEXT` freezes; `lpse-ops freeze list` shows the sites' state.
    Exit 0 applied; 3/4 the site failed or was unreachable (recorded as not applied).
    """
    if ctx.invoked_subcommand is not None:
        return
    if not site or not reason:
        raise terminal.fail("give --site SITE and --reason TEXT (or `lpse-ops freeze list`)")
    _run("freeze", site, reason, inventory_path, yes, as_json, state_url)


@freeze.command(name="list")
@click.option("--history", "show_history", is_flag=True, help="Every warning, freeze and unfreeze, oldest first.")
@click.option("--site", default=None, help="Only this site.")
@json_option
@state_url_option
def list_command(show_history: bool, site: str | None, as_json: bool, state_url: str | None) -> None:
    """Show which sites are frozen (since when, by whom, why) and their warnings."""
    if show_history:
        rows = actions.history(state_url, site)
        if as_json:
            terminal.emit_json(rows)
            return
        table = Table(title="warnings and freezes (clause 6.2.20)")
        for column in ("at (UTC)", "site", "action", "applied", "by", "reason", "run"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(row["at"][:19].replace("T", " "), escape(row["site"]), row["action"],
                          "yes" if row["applied"] else "[red]no[/red]", escape(row["actor"]), escape(row["reason"]),
                          str(row["run_id"] or "-"))
        terminal.print_table(table)
        return
    sites = [s for s in actions.status(state_url) if not site or s["site"] == site]
    if as_json:
        terminal.emit_json(sites)
        return
    if not sites:
        terminal.info("no site was ever warned or frozen")
        return
    table = Table(title="frozen and warned sites (clause 6.2.20)")
    for column in ("site", "frozen", "since (UTC)", "by", "reason", "warnings", "last warning"):
        table.add_column(column, overflow="fold")
    for row in sites:
        held = row["freeze"] or {}
        warning = row["last_warning"] or {}
        table.add_row(escape(row["site"]), "[red]FROZEN[/red]" if row["frozen"] else "no",
                      (held.get("at") or "-")[:19].replace("T", " "), escape(held.get("actor") or "-"),
                      escape(held.get("reason") or "-"), str(row["warnings"]),
                      escape(f"{warning['at'][:10]} {warning['reason']}") if warning else "-")
    terminal.print_table(table)


@click.command(name="unfreeze")
@_common
@yes_option("unfreezing")
def unfreeze(site: str, reason: str, inventory_path: Path | None, as_json: bool, state_url: str | None,
             yes: bool) -> None:
    """Lift a freeze (clause 6.2.20): writes are accepted again; maintenance flags are left as they are."""
    _run("unfreeze", site, reason, inventory_path, yes, as_json, state_url)


@click.command(name="warn")
@_common
@yes_option("warning")
def warn(site: str, reason: str, inventory_path: Path | None, as_json: bool, state_url: str | None,
         yes: bool) -> None:
    """Warn an LPSE (clause 6.2.20): recorded, and written on the site as <site_spse_conf_dir>/warning."""
    _run("warn", site, reason, inventory_path, yes, as_json, state_url)
