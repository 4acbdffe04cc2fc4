"""``lpse-ops lab``: real Debian 12 hosts on this machine for tests and the demo."""

from __future__ import annotations

import json

import click
from rich.table import Table

from lpse_ops import terminal
from lpse_ops.backends.docker import DockerError
from lpse_ops.lab import lab as lab_actions
from lpse_ops.lab import traffic as traffic_actions
from lpse_ops.lab import wan


@click.group(name="lab")
def lab() -> None:
    """Bring up, inspect and remove the lab of real hosts (systemd containers)."""


@lab.command(name="up")
@click.option("--sites", default=3, show_default=True, help="Number of site hosts.")
@click.option("--port-base", default=2220, show_default=True,
              help="Offsite SSH on BASE, site i SSH on BASE+i, S3 on BASE+100, site i HTTPS on BASE+100+i.")
@click.option("--lock-days", default=190, show_default=True,
              help="Object Lock retention (COMPLIANCE) in days: at least the longest offsite retention.")
@click.option("--wan-mbit", type=click.FloatRange(min=0), default=None,
              help="Shape each site's link to the offsite host to this rate, each way (0: no shaping); see `lab wan`.")
@click.option("--wan-delay-ms", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="One-way delay on that link (needs the kernel's netem).")
@click.option("--tls-mode", type=click.Choice(lab_actions.TLS_MODES), default="lab", show_default=True,
              help="Every site's site_tls_mode in the inventory written: lab (self-signed) or acme (certbot from the "
                   "offsite host's pebble, docs/tls.md). A lab already up keeps its inventory.")
@click.option("--json", "as_json", is_flag=True, help="Print the lab state as JSON.")
def up_command(sites: int, port_base: int, lock_days: int, wan_mbit: float | None, wan_delay_ms: float,
               tls_mode: str, as_json: bool) -> None:
    """Build (or reuse) the base image and start the lab; write its inventory and SSH key."""
    try:
        link = _link(wan_mbit, wan_delay_ms)
        plan = lab_actions.plan(sites=sites, port_base=port_base)
        with terminal.err.status("bringing the lab up") as spinner:
            def progress(message: str) -> None:
                spinner.update(message)
                terminal.info(f"  {message}")
            state = lab_actions.up(plan, progress, lock_days=lock_days, link=link, tls_mode=tls_mode)
    except (lab_actions.LabError, DockerError) as error:
        raise terminal.fail(str(error)) from error
    if as_json:
        terminal.emit_json(state)
        return
    terminal.info(f"lab is up: {len(state['hosts']) - 1} site(s) and the offsite host (S3, the ACME CA pebble); "
                  f"WAN link {lab_actions.describe_link(lab_actions.lab_link(state))}")
    terminal.out.print(f"inventory: {state['inventory']}")


@lab.command(name="status")
@click.option("--expect-version", default=None, help="Exit 1 unless every site serves this SPSE version.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status_command(expect_version: str | None, as_json: bool) -> None:
    """Show each lab host: container, SSH, and SPSE health through nginx (HTTPS on 127.0.0.1)."""
    try:
        report = lab_actions.status()
    except DockerError as error:
        raise terminal.fail(str(error)) from error
    if as_json:
        terminal.emit_json(report)
    else:
        table = Table(title=f"lab {report.get('name', '')}".strip())
        for column in ("host", "role", "container", "ssh", "service"):
            table.add_column(column)
        for row in report["hosts"]:
            if row["role"] == "offsite":
                service = "S3 up" if row.get("s3") else "S3 down"
            elif row["spse"]:
                service = f"SPSE {row['spse'].get('version')} ({row['spse'].get('status')})"
            else:
                service = "SPSE not answering"
            if row.get("wan"):
                down, up = row["wan"]["down_mbit"], row["wan"]["up_mbit"]
                service += f"; WAN {down if down is not None else '-'}/{up if up is not None else '-'} Mbit/s down/up"
            table.add_row(row["name"], row["role"], row["container"],
                          f"127.0.0.1:{row['ssh_port']} {'ok' if row['ssh'] else 'down'}", service)
        terminal.out.print(table) if report["hosts"] else terminal.info(report.get("message", ""))
        if report["hosts"]:
            terminal.info(f"WAN link: {lab_actions.describe_link(lab_actions.lab_link(report))}")
    if not report["up"]:
        raise SystemExit(1)
    if expect_version:
        wrong = [row["name"] for row in report["hosts"]
                 if row["role"] == "site" and (row["spse"] or {}).get("version") != expect_version]
        if wrong:
            raise terminal.fail(f"not serving SPSE {expect_version}: {', '.join(wrong)}")
        if not as_json:
            for row in report["hosts"]:
                if row["role"] == "site":
                    terminal.out.print(f"{row['name']}: https://127.0.0.1:{row['https_port']}/health -> "
                                       f"{json.dumps(row['spse'], sort_keys=True)}", highlight=False)


def _link(mbit: float | None, delay_ms: float) -> wan.Link | None:
    if mbit is None:
        if delay_ms:
            raise click.BadParameter("a delay needs a rate: add --wan-mbit N", param_hint="--wan-delay-ms")
        return None
    try:
        return wan.Link(mbit, delay_ms)
    except wan.WanError as error:
        raise click.BadParameter(str(error)) from error


@lab.group(name="wan")
def wan_group() -> None:
    """The WAN link between each site and the offsite host: set, remove, measure (issue 20)."""


@wan_group.command(name="set")
@click.option("--mbit", type=click.FloatRange(min=0, min_open=True), required=True, help="Rate each way, Mbit/s.")
@click.option("--delay-ms", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="One-way delay (needs the kernel's netem).")
def wan_set(mbit: float, delay_ms: float) -> None:
    """Shape every site's link to the offsite host (HTB both ways; other traffic untouched)."""
    link = _link(mbit, delay_ms)
    try:
        lab_actions.set_wan(link, progress=lambda m: terminal.info(f"  {m}"))
    except (lab_actions.LabError, DockerError) as error:
        raise terminal.fail(str(error)) from error
    terminal.info(f"WAN link set: {lab_actions.describe_link(link)}")


@wan_group.command(name="off")
def wan_off() -> None:
    """Remove the shaping: the sites reach the offsite host at the bridge's speed again."""
    try:
        lab_actions.set_wan(None, progress=lambda m: terminal.info(f"  {m}"))
    except (lab_actions.LabError, DockerError) as error:
        raise terminal.fail(str(error)) from error
    terminal.info("WAN link removed")


@wan_group.command(name="measure")
@click.option("--site", default="site1", show_default=True, help="The lab site whose link is measured.")
@click.option("--seconds", type=click.FloatRange(min=1, max=60), default=4.0, show_default=True,
              help="About how long each transfer takes at the set rate (bounded: 2-256 MiB).")
@click.option("--json", "as_json", is_flag=True, help="Print the measurement as JSON.")
def wan_measure(site: str, seconds: float, as_json: bool) -> None:
    """Send and fetch one object between SITE and the offsite S3 server (curl, presigned URLs) and show the
    rates next to the set one."""
    try:
        with terminal.err.status(f"measuring {site}'s link"):
            result = lab_actions.measure_wan(site, seconds)
    except (lab_actions.LabError, DockerError) as error:
        raise terminal.fail(str(error)) from error
    if as_json:
        terminal.emit_json(result)
        return
    table = Table(title=f"WAN link of {site}")
    for column in ("direction", "set (Mbit/s)", "measured (Mbit/s)", "of the set rate"):
        table.add_column(column)
    for direction in ("down", "up"):
        ratio = result[f"{direction}_ratio"]
        table.add_row("offsite -> site" if direction == "down" else "site -> offsite",
                      f"{result['set_mbit']:g}" if result["set_mbit"] else "not shaped",
                      f"{result[f'{direction}_mbit']:g}", f"{ratio:.0%}" if ratio is not None else "-")
    terminal.out.print(table)


@lab.command(name="down")
@click.option("--purge", is_flag=True, help="Also delete the lab folder (SSH key, inventory, credentials).")
def down_command(purge: bool) -> None:
    """Remove the lab's containers, network and egress filter (the image cache stays)."""
    try:
        removed = lab_actions.down(purge=purge)
    except DockerError as error:
        raise terminal.fail(str(error)) from error
    terminal.info(f"removed: {', '.join(removed) if removed else 'nothing (no lab)'}")


@lab.group(name="traffic")
def traffic() -> None:
    """Steady synthetic READ-ONLY traffic to each lab site through nginx (for canary analyses)."""


def _traffic_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title)
    for column in ("site", "running", "rate/s (achieved)", "requests", "by status", "transport errors", "last error"):
        table.add_column(column)
    for row in rows:
        by_status = ", ".join(f"{key} {value}" for key, value in sorted(row["by_status"].items()))
        rate = f"{row['rate'] or '-'} ({row['achieved_rate'] or '-'})"
        table.add_row(row["site"], "yes" if row["running"] else "no", rate, str(row["requests"]), by_status or "-",
                      str(row["transport_errors"]), row["last_error"] or "-")
    return table


@traffic.command(name="start")
@click.option("--rate", default=5.0, show_default=True, type=float,
              help="Requests per second per site (at most 50).")
@click.option("--limit", default=None, help="Comma-separated lab sites (site1,site2 or lab01); default all.")
def traffic_start(rate: float, limit: str | None) -> None:
    """Install and (re)start lpse-lab-traffic.service on the sites; return once each has answered requests."""
    try:
        rows = traffic_actions.start(rate=rate, limit=limit)
    except (lab_actions.LabError, DockerError) as error:
        raise terminal.fail(str(error)) from error
    terminal.out.print(_traffic_table(rows, f"lab traffic started ({rate:g}/s per site)"))


@traffic.command(name="stop")
@click.option("--limit", default=None, help="Comma-separated lab sites; default all.")
def traffic_stop(limit: str | None) -> None:
    """Stop lpse-lab-traffic.service on the sites."""
    try:
        rows = traffic_actions.stop(limit=limit)
    except (lab_actions.LabError, DockerError) as error:
        raise terminal.fail(str(error)) from error
    terminal.out.print(_traffic_table(rows, "lab traffic stopped"))


@traffic.command(name="status")
@click.option("--limit", default=None, help="Comma-separated lab sites; default all.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def traffic_status(limit: str | None, as_json: bool) -> None:
    """Show, per site, whether the traffic runs and how many requests it sent (by status class)."""
    try:
        rows = traffic_actions.status(limit=limit)
    except (lab_actions.LabError, DockerError) as error:
        raise terminal.fail(str(error)) from error
    if as_json:
        terminal.emit_json({"sites": rows})
    else:
        terminal.out.print(_traffic_table(rows, "lab traffic"))
