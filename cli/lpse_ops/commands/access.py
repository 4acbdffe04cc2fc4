"""``lpse-ops access``: per-engineer, expiring, revocable SSH access through the LKPP SSH CA (clauses 6.1.3,
6.1.10; docs/access.md)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from lpse_ops import progress, terminal
from lpse_ops.actions import access as actions
from lpse_ops.actions import fleet, operation
from lpse_ops.backends.sshca import SSHCAError
from lpse_ops.commands._options import (
    inventory_option,
    json_option,
    limit_option,
    refusal_as_error,
    render,
    require_inventory,
    warn_missing_records,
    yes_option,
)
from lpse_ops.commands.runs import state_url_option


def _refused(error: Exception) -> click.ClickException:
    return terminal.fail(str(error))


@click.group(name="access")
def access() -> None:
    """Give LKPP engineers SSH access to chosen sites for a few hours, and take it back fleet-wide."""


@access.group(name="ca")
def ca() -> None:
    """The LKPP SSH certificate authority (its key stays on this machine, under LPSE_OPS_HOME/access)."""


@ca.command(name="init")
@json_option
@state_url_option
def ca_init_command(as_json: bool, state_url: str | None) -> None:
    """Make the CA key (encrypted with LPSE_OPS_ACCESS_CA_PASSPHRASE) and an empty revocation list.

    Refused when a CA exists: a new CA would void every certificate the old one signed.
    """
    try:
        info = actions.ca_init(actions.CAInitRequest(state_url=state_url))
    except (actions.AccessRefused, SSHCAError) as error:
        raise _refused(error) from error
    if as_json:
        terminal.emit_json(info.as_dict())
        return
    terminal.info(f"LKPP SSH CA made: {info.fingerprint}\n  key (encrypted): {info.key_path}\n  KRL: {info.krl_path}\n"
                  "next: `lpse-ops access setup` makes the sites trust it")


@ca.command(name="show")
@json_option
def ca_show_command(as_json: bool) -> None:
    """Print the CA's public key and fingerprint."""
    try:
        info = actions.ca_info()
    except (actions.AccessRefused, SSHCAError) as error:
        raise _refused(error) from error
    if as_json:
        terminal.emit_json(info.as_dict())
        return
    click.echo(info.public_key)
    terminal.info(f"fingerprint {info.fingerprint}")


@access.command(name="setup")
@inventory_option
@limit_option
@click.option("--login-user", default=None, help="Account engineers log in as (role default: lkpp).")
@click.option("--no-sudo", is_flag=True, help="Do not let that account use sudo.")
@json_option
def setup_command(inventory_path: Path | None, limit: str | None, login_user: str | None, no_sudo: bool,
                  as_json: bool) -> None:
    """Make the sites trust the CA: sshd drop-in (tested with sshd -t), principals file, revocation list, account.

    Also re-sends the current revocation list: run it for a site a revocation did not reach.
    """
    extravars: dict = {}
    if login_user:
        extravars["access_login_user"] = login_user
    if no_sudo:
        extravars["access_login_sudo"] = False
    try:
        with refusal_as_error():
            result, found = actions.setup(actions.SetupRequest(
                inventory=require_inventory(inventory_path), limit=limit, extravars=extravars,
                progress=progress.live(not as_json)))
    except (actions.AccessRefused, SSHCAError) as error:
        raise _refused(error) from error
    if as_json:
        terminal.emit_json({**result.as_dict(), "records": found.found, "missing_records": found.missing})
    else:
        render(result, "access setup")
        warn_missing_records(result, found)
    raise SystemExit(result.exit_code)


def _split_sites(value: str | None) -> list[str]:
    return [site.strip() for site in (value or "").split(",") if site.strip()]


@access.command(name="grant")
@click.option("--engineer", required=True, help="Who gets access (recorded, and in the certificate's id).")
@click.option("--key", "key_path", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The engineer's OpenSSH public key file (.pub).")
@click.option("--sites", default=None, help="Comma-separated site names (inventory hosts).")
@click.option("--limit", "-l", default=None, help="Or: every site matching this Ansible pattern.")
@click.option("--hours", type=float, required=True, help="How long from now the certificate is valid (e.g. 4, 0.5).")
@click.option("--reason", required=True, help="The install or update problem the access is for (clause 6.1.10).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where to write the certificate (default: beside the key, KEY-cert.pub, where ssh finds it).")
@inventory_option
@json_option
@state_url_option
def grant_command(engineer: str, key_path: Path, sites: str | None, limit: str | None, hours: float, reason: str,
                  out: Path | None, inventory_path: Path | None, as_json: bool, state_url: str | None) -> None:
    """Sign ENGINEER's key for the chosen sites, valid from now for HOURS; it expires by itself on the sites."""
    try:
        granted = actions.grant(actions.GrantRequest(
            engineer=engineer, public_key=key_path, hours=hours, reason=reason,
            inventory=require_inventory(inventory_path), sites=_split_sites(sites), limit=limit, state_url=state_url))
    except (actions.AccessRefused, SSHCAError) as error:
        raise _refused(error) from error
    target = out or key_path.with_name(key_path.name.removesuffix(".pub") + "-cert.pub")
    target.write_text(granted["certificate"])
    if as_json:
        terminal.emit_json({**granted, "certificate_path": str(target)})
        return
    terminal.info(f"granted serial {granted['serial']} ({granted['key_id']}) to {engineer} on "
                  f"{', '.join(granted['sites'])}\n"
                  f"  valid {granted['valid_after']} to {granted['valid_before']} (UTC)\n"
                  f"  certificate: {target}\n  log in as the sites' access account (default lkpp)")


@access.command(name="revoke")
@click.option("--engineer", default=None, help="Revoke every certificate of this engineer.")
@click.option("--id", "key_id", default=None, help="Revoke the certificate with this id (lpse-ops:NAME:SERIAL).")
@click.option("--serial", type=int, default=None, help="Revoke the certificate with this serial.")
@click.option("--reason", required=True, help="Why the access is taken back (recorded).")
@click.option("--forks", type=click.IntRange(1, 500), default=actions.REVOKE_FORKS, show_default=True,
              help="Sites the revocation list is pushed to at once.")
@inventory_option
@yes_option("revoking")
@json_option
@state_url_option
def revoke_command(engineer: str | None, key_id: str | None, serial: int | None, reason: str, forks: int,
                   inventory_path: Path | None, yes: bool, as_json: bool, state_url: str | None) -> None:
    """Revoke certificates and push the revocation list to every site of the inventory at once.

    Exit 0: in force on every site; 3/4: some site did not get it (named: there the certificate still
    works until it expires; re-run, or `access setup --limit SITE`).
    """
    if as_json and not yes:
        raise terminal.fail("--json never prompts: add --yes (or LPSE_OPS_YES=1) to revoke without asking")
    request = actions.RevokeRequest(reason=reason, inventory=require_inventory(inventory_path), engineer=engineer,
                                    key_id=key_id, serial=serial, state_url=state_url, forks=forks,
                                    progress=progress.live(not as_json))
    try:
        planned = actions.plan_revocation(request)
        hosts = fleet.target_hosts(request.inventory, "sites", None)
    except (actions.AccessRefused, operation.OperationRefused) as error:
        raise _refused(error) from error
    if not yes:
        for grant in planned:
            terminal.info(f"revoke serial {grant['serial']} {grant['key_id']} ({grant['engineer']}, sites "
                          f"{', '.join(grant['sites'])}, until {grant['valid_before']})"
                          + (" [already revoked: pushed again]" if grant["revoked"] else ""))
        click.confirm(f"Revoke {len(planned)} certificate(s) and push the revocation list to {len(hosts)} site(s)?",
                      abort=True, err=True)
    try:
        result = actions.revoke(request)
    except (actions.AccessRefused, SSHCAError) as error:
        raise _refused(error) from error
    if as_json:
        terminal.emit_json(result.as_dict())
        raise SystemExit(result.exit_code)
    if result.run:
        render(result.run, "access revoke")
    terminal.info(f"revoked serial(s) {', '.join(str(g['serial']) for g in result.revoked)}; KRL version "
                  f"{result.krl_version} in force on {len(result.revoked_on)} site(s)")
    for host, why in result.not_revoked_on.items():
        terminal.err.print(f"[bold red]NOT REVOKED on {escape(host)}[/bold red]: {escape(why)}: the certificate "
                           "still opens this site until it expires; re-run the revoke or "
                           f"`lpse-ops access setup --limit {escape(host)}`", highlight=False)
    raise SystemExit(result.exit_code)


@access.command(name="list")
@click.option("--engineer", default=None, help="Only this engineer's grants.")
@click.option("--active", is_flag=True, help="Only grants neither revoked nor expired.")
@json_option
@state_url_option
def list_command(engineer: str | None, active: bool, as_json: bool, state_url: str | None) -> None:
    """List the grants: engineer, sites, window (UTC), reason, revoked or expired."""
    grants = actions.list_grants(state_url, engineer=engineer, active_only=active)
    if as_json:
        terminal.emit_json([{k: v for k, v in g.items() if k != "certificate"} for g in grants])
        return
    if not grants:
        terminal.info("no grant" + (" in force" if active else ""))
        return
    table = Table(title="SSH access grants (LKPP CA)")
    for column in ("serial", "engineer", "sites", "from (UTC)", "until (UTC)", "state", "reason", "granted by"):
        table.add_column(column, overflow="fold")
    for grant in grants:
        state = ("[red]revoked[/red] " + (grant["revoked_at"] or "")[:19].replace("T", " ") if grant["revoked"]
                 else "expired" if grant["expired"]
                 else "[green]active[/green]" if grant["active"] else "not yet valid")
        table.add_row(str(grant["serial"]), escape(grant["engineer"]), escape(", ".join(grant["sites"])),
                      grant["valid_after"][:19].replace("T", " "), grant["valid_before"][:19].replace("T", " "), state,
                      escape(grant["reason"]), escape(grant["granted_by"]))
    terminal.print_table(table)
