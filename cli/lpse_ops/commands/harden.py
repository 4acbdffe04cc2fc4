"""``lpse-ops harden``: the hardening role on the sites, then SPSE's health (docs/hardening.md)."""

from __future__ import annotations

from pathlib import Path

import click

from lpse_ops import progress, terminal
from lpse_ops.actions import harden as actions
from lpse_ops.commands._options import (
    inventory_option,
    json_option,
    limit_option,
    refusal_as_error,
    render,
    require_inventory,
    yes_option,
)


def _inputs(pairs: tuple[str, ...]) -> dict:
    """Parse ``-e name=value`` role inputs (values read as YAML: true, 12, [a, b])."""
    import yaml

    found = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise terminal.fail(f"-e {pair!r}: write NAME=VALUE, e.g. -e hardening_aide_reinit=true")
        found[name.strip()] = yaml.safe_load(value)
    return found


@click.command(name="harden")
@inventory_option
@limit_option
@click.option("--check", is_flag=True, help="Dry run: show what would change, change nothing.")
@click.option("-e", "--input", "inputs", multiple=True, metavar="NAME=VALUE",
              help="A hardening_* role input (roles/hardening/meta/argument_specs.yml); repeatable.")
@yes_option("hardening")
@json_option
def harden(inventory_path: Path | None, limit: str | None, check: bool, inputs: tuple[str, ...], yes: bool,
           as_json: bool) -> None:
    """Harden the sites: SSH keys only, firewall, security updates, ClamAV, auditd, AIDE, kernel, passwords.

    Shows the sites, asks, then runs playbooks/harden.yml (site-locked) and checks SPSE still serves.
    Clauses 6.1.4.3, 6.2.7, 6.1.3, 6.2.19. Exit 0 all hardened and serving, 1 refused, 3 a site failed
    or stopped serving, 4 unreachable.
    """
    request = actions.HardenRequest(inventory=require_inventory(inventory_path), limit=limit, check=check,
                                    extravars=_inputs(inputs), progress=progress.live(not as_json))
    with refusal_as_error():
        read = actions.targets(request)
        sites = read.hosts
        if not check and not yes:
            if as_json:
                raise terminal.fail("--json never prompts: add --yes (or LPSE_OPS_YES=1) to harden without asking")
            terminal.info(f"harden {len(sites)} site(s): {', '.join(sites)} (sshd is reloaded; SPSE keeps serving)")
            click.confirm("Harden these sites?", abort=True, err=True)
        result = actions.harden(request, read)
    if as_json:
        terminal.emit_json(result.as_dict())
    else:
        details = {}
        for host, record in result.hosts.items():
            enforced = record.get("enforced") or {}
            cannot = [name for name, able in enforced.items() if able is False]
            details[host] = ("serving" if record.get("serving") else "NOT serving" if record.get("serving") is False
                             else "check mode") + (f"; cannot load here: {', '.join(cannot)}" if cannot else "")
        details.update(result.missing)
        render(result.run, "harden" + (" --check" if check else ""), details)
    raise SystemExit(result.exit_code)
