"""``lpse-ops upgrade``: move sites to another SPSE release: ``plan``, ``run`` (in waves), ``status``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from lpse_ops import config, progress, terminal
from lpse_ops.actions import backup, fleet, upgrade_plan
from lpse_ops.actions import upgrade as rollout
from lpse_ops.actions import upgrade_plan_types as plan_types
from lpse_ops.commands._options import (
    inventory_option,
    json_option,
    limit_option,
    refusal_as_error,
    require_inventory,
    yes_option,
)
from lpse_ops.commands.install import trusted_keys_default

EXIT_NOTHING_POSSIBLE = 3
"""No site can be upgraded: every site that is not on the target is left out."""


def releases_default() -> str:
    return str(config.home() / "bundles")


def _table(title: str, columns: tuple[str, ...]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        # fold, never an ellipsis: a host name or version cut short in a pipe is a wrong answer
        table.add_column(column, overflow="fold")
    return table


def print_table(table: Table) -> None:
    """Print *table* on stdout; in a pipe, as wide as its content, so no host or version is ever folded."""
    if terminal.out.is_terminal:
        terminal.out.print(table)
        return
    natural = Measurement.get(terminal.out, terminal.out.options.update(width=100_000), table).maximum
    Console(soft_wrap=True, width=max(terminal.out.width, natural)).print(table)


def render_plan(plan: plan_types.UpgradePlan) -> None:
    """Print the plan: path per site, the waves, the excluded sites with their reasons."""
    releases = ", ".join(f"{release.version} (from {release.min_upgrade_from})" for release in plan.releases)
    terminal.out.print(f"Upgrade plan to SPSE {plan.target} (run {plan.run_id}); bundles used: {releases}",
                       highlight=False)
    paths = _table("Path per site", ("wave", "host", "now", "path", "verified backup"))
    for index, wave in enumerate(plan.waves):
        for site in wave:
            arrow = " -> ".join([site.current, *site.steps])
            state = plan.states.get(site.host)
            paths.add_row(f"{index} {site.wave}", site.host, site.current,
                          f"[red]{arrow} (DOWNGRADE)[/red]" if site.downgrade else arrow,
                          escape(backup.describe_verification(state.verification if state else None)))
    if plan.waves:
        print_table(paths)
    # one row per wave; its hosts wrap between names (each name kept whole), not across the screen
    waves = Table(title="Waves", title_justify="left")
    for column in ("wave", "name", "sites"):
        waves.add_column(column, no_wrap=True)
    longest = max((len(site.host) for wave in plan.waves for site in wave), default=5)
    waves.add_column("hosts", min_width=min(longest + 1, 60), overflow="fold")
    for index, wave in enumerate(plan.waves):
        waves.add_row(str(index), wave[0].wave, str(len(wave)), ", ".join(site.host for site in wave))
    if plan.waves:
        terminal.out.print(waves)
    else:
        terminal.out.print("No site can be upgraded now.", highlight=False)
    if plan.excluded:
        excluded = _table(f"Left out: {len(plan.excluded)} site(s)", ("host", "now", "code", "reason"))
        for exclusion in plan.excluded:
            excluded.add_row(exclusion.host, exclusion.version or "-", exclusion.code,
                             "\n".join(f"{reason.code}: {reason.message}" if position else reason.message
                                       for position, reason in enumerate(exclusion.reasons)))
        print_table(excluded)
    if plan.up_to_date:
        terminal.out.print(f"Already on {plan.target}: {', '.join(plan.up_to_date)}", highlight=False)
    for warning in plan.warnings:
        terminal.warn(warning)


def plan_options(function):
    """The options ``upgrade plan`` and ``upgrade run`` share (the plan is computed the same way)."""
    decorators = [
        click.option("--to", "target", required=True, metavar="VERSION", help="The SPSE version to reach, e.g. 1.2."),
        click.option("--releases", "releases_dir", type=click.Path(path_type=Path, file_okay=False),
                     default=releases_default, show_default="<LPSE_OPS_HOME>/bundles",
                     help="Folder of signed release bundles (spse-*.tar.gz); each is verified."),
        click.option("--trusted-keys", type=click.Path(path_type=Path, file_okay=False), default=trusted_keys_default,
                     show_default="$LPSE_OPS_TRUSTED_KEYS or ~/.local/share/lpse-ops/trusted-keys",
                     help="Folder of trusted release public keys (*.pub)."),
        inventory_option, limit_option,
        click.option("--canary", default=1, show_default=True, type=click.IntRange(min=1),
                     help="Sites in the canary wave when the inventory has no eligible 'canary' group member."),
        click.option("--wave-size", default=plan_types.DEFAULT_WAVE_SIZE, show_default=True, metavar="N|P%",
                     help="Sites per wave after the canary (a count, or a percentage of the eligible sites), "
                          "when the inventory has no wave_N groups."),
        click.option("--max-backup-age", "max_backup_age", default=plan_types.DEFAULT_MAX_BACKUP_AGE_HOURS,
                     show_default=True, type=click.FloatRange(min=0, min_open=True), metavar="HOURS",
                     help="A site needs a successful restore verification younger than this."),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


@click.group(name="upgrade")
def upgrade() -> None:
    """Upgrade SPSE on the sites from signed release bundles."""


@upgrade.command(name="plan")
@plan_options
@click.option("--allow-downgrade", is_flag=True,
              help="Plan sites on a newer version straight back to VERSION (migrations are NOT reversed).")
@json_option
def plan(target: str, releases_dir: Path, trusted_keys: Path, inventory_path: Path | None, limit: str | None,
         canary: int, wave_size: str, max_backup_age: float, allow_downgrade: bool, as_json: bool) -> None:
    """Show how the sites would reach SPSE VERSION: each site's path, the waves, the sites left out and why.

    Verifies every bundle in the release folder, then reads each site's state (read-only, recorded as
    run upgrade.plan). Changes nothing on any site.

    Exit codes: 0 there is something to do (or every site already runs VERSION); 1 refused before any
    host was touched (bad or missing bundle, bad option or inventory); 3 no site can be upgraded (every
    site not on VERSION is left out).
    """
    inventory_path = require_inventory(inventory_path)
    ctx = upgrade_plan.PlanContext(
        target=target, inventory=inventory_path, releases_dir=releases_dir, trusted_keys=trusted_keys, limit=limit,
        canary=canary, wave_size=wave_size, max_backup_age_hours=max_backup_age, allow_downgrade=allow_downgrade,
        progress=progress.live(not as_json))
    with refusal_as_error():
        result = upgrade_plan.plan(ctx)
    if as_json:
        terminal.emit_json(result.as_dict())
    else:
        render_plan(result)
    raise SystemExit(0 if result.waves or not result.excluded else EXIT_NOTHING_POSSIBLE)


@upgrade.command(name="run")
@plan_options
@click.option("--failure-budget", default="0", show_default=True, metavar="N|P%",
              help="Failed sites the whole rollout tolerates (a count or a share of the planned sites); once "
                   "exceeded, no further wave starts. 0: the first failure (the canary's) halts the rollout.")
@click.option("--bake", "bake_seconds", default=120, show_default=True, type=click.IntRange(min=0), metavar="SECONDS",
              help="Canary bake per site: reads flow to the new release (writes held) while its 5xx rate and "
                   "p95 latency are measured from nginx's log.")
@click.option("--baseline", "baseline_seconds", default=300, show_default=True, type=click.IntRange(min=10),
              metavar="SECONDS", help="The window of nginx's log before the upgrade the bake is compared with.")
@click.option("--min-requests", default=20, show_default=True, type=click.IntRange(min=0),
              help="Requests the bake needs to judge the canary; fewer fail it as inconclusive.")
@click.option("--max-5xx-increase", default=rollout.CanaryLimits.max_5xx_increase, show_default=True,
              type=click.FloatRange(min=0, max=1), metavar="SHARE",
              help="How far the bake's 5xx rate may exceed the baseline's (0.01: one point) before the canary fails.")
@click.option("--max-p95-ratio", default=rollout.CanaryLimits.max_p95_ratio, show_default=True,
              type=click.FloatRange(min=1), metavar="RATIO",
              help="The bake's p95 latency limit as a multiple of the baseline's (the larger of this and "
                   "--p95-slack-ms applies).")
@click.option("--p95-slack-ms", default=rollout.CanaryLimits.p95_slack_ms, show_default=True,
              type=click.FloatRange(min=0), metavar="MS",
              help="The bake's p95 latency limit as the baseline's plus this many milliseconds.")
@click.option("--health-timeout", default=90, show_default=True, type=click.IntRange(min=5), metavar="SECONDS",
              help="How long the new release has to report healthy (version and schema) before it is rolled back.")
@click.option("--window", "window_minutes", default=30, show_default=True, type=click.IntRange(min=1),
              metavar="MINUTES", help="The maintenance window announced to each site.")
@click.option("--no-notice", is_flag=True, help="Send no maintenance and completion e-mails (a lab or staging run).")
@click.option("--forks", default=10, show_default=True, type=click.IntRange(min=1, max=200))
@yes_option("upgrading")
@json_option
def run_command(target: str, releases_dir: Path, trusted_keys: Path, inventory_path: Path | None, limit: str | None,
                canary: int, wave_size: str, max_backup_age: float, failure_budget: str, bake_seconds: int,
                baseline_seconds: int, min_requests: int, max_5xx_increase: float, max_p95_ratio: float,
                p95_slack_ms: float, health_timeout: int, window_minutes: int, no_notice: bool, forks: int, yes: bool,
                as_json: bool) -> None:
    """Upgrade the sites to SPSE VERSION in waves: canary first, each site rolled back by itself on failure.

    Plan, show, confirm, then act. Per site: the maintenance notice (clause 6.2.13), the maintenance page,
    a checkpoint backup with its restore point, the release path unpacked beside the old one,
    migrations, the switch, the health gate and smoke test, the canary bake and analysis; on any
    failure the previous release and (when a migration ran) the database at the checkpoint come back
    and the data is proven identical. Sites left out by the plan refuse the whole run (nothing touched):
    fix them or --limit them out. Running it again resumes: sites already on VERSION are skipped.

    Exit codes: 0 every planned site runs VERSION; 1 refused, nothing touched; 3 a site failed (rolled
    back) or the rollout halted on its failure budget.
    """
    inventory_path = require_inventory(inventory_path)
    if as_json and not yes:
        raise terminal.fail("--json never prompts: add --yes (or LPSE_OPS_YES=1) to upgrade without asking")
    try:
        budget = fleet.Budget.parse(failure_budget)
    except ValueError as error:
        raise terminal.fail(str(error)) from error
    ctx = upgrade_plan.PlanContext(
        target=target, inventory=inventory_path, releases_dir=releases_dir, trusted_keys=trusted_keys, limit=limit,
        canary=canary, wave_size=wave_size, max_backup_age_hours=max_backup_age, progress=progress.live(not as_json))
    options = rollout.RolloutOptions(
        inventory=inventory_path, budget=budget, bake_seconds=bake_seconds, baseline_seconds=baseline_seconds,
        min_requests=min_requests, max_5xx_increase=max_5xx_increase, max_p95_ratio=max_p95_ratio,
        p95_slack_ms=p95_slack_ms, health_timeout_s=health_timeout, notify=not no_notice,
        window=timedelta(minutes=window_minutes), forks=forks,
        progress=progress.live(not as_json))
    with refusal_as_error():
        the_plan = upgrade_plan.plan(ctx)
        if not as_json:
            render_plan(the_plan)
        rollout.refuse_unless_clean(the_plan)
        if not yes:
            click.confirm(f"Upgrade {len(the_plan.sites)} site(s) in {len(the_plan.waves)} wave(s) to "
                          f"{the_plan.target} (failure budget {budget})?", abort=True, err=True)
        result = rollout.run_rollout(the_plan, options, progress=None if as_json else terminal.info)
    if as_json:
        terminal.emit_json(result.as_dict())
    else:
        render_rollout(result)
    raise SystemExit(0 if result.result == "ok" else EXIT_NOTHING_POSSIBLE)


def render_rollout(result: rollout.RolloutResult) -> None:
    """Print each site's outcome, wave by wave, and why a rollout halted."""
    table = _table(f"Rollout {result.run_id} to SPSE {result.target}: {result.result}",
                   ("wave", "host", "outcome", "downtime s", "why"))
    for wave in result.waves:
        for site in wave.sites:
            why = "" if site.ok else f"{site.record.get('failed_step') or '?'}: {site.record.get('reason') or ''}"
            table.add_row(f"{wave.index} {wave.name}", site.host, site.outcome,
                          "" if site.record.get("downtime_s") is None else str(site.record.get("downtime_s")), why)
    print_table(table)
    if result.halted:
        terminal.warn(f"rollout halted: {result.halted}")
    for hosts in result.not_started:
        terminal.info(f"not started: {', '.join(hosts)}")


@upgrade.command(name="status")
@click.option("--rollout", "rollout_id", type=int, default=None, help="This rollout (default: the latest).")
@json_option
def status(rollout_id: int | None, as_json: bool) -> None:
    """Show a rollout's progress: each wave and each site's outcome, from the state store (reads no host)."""
    with refusal_as_error():
        found = rollout.rollout_status(rollout_id)
    if as_json:
        terminal.emit_json(found)
        return
    if not found:
        terminal.info("no rollout recorded yet (lpse-ops upgrade run)")
        return
    args = found["args"]
    terminal.out.print(f"Rollout {found['id']} to SPSE {args.get('target')}: {found['result'] or 'running'} "
                       f"(started {found['started_at']}, by {found['actor']})", highlight=False)
    table = _table("Sites", ("wave", "host", "outcome", "step run"))
    for index, wave in enumerate(found["waves"]):
        for host, site in sorted(wave["sites"].items()):
            table.add_row(str(index), host, site["outcome"], str(site["run_id"]))
    for index, hosts in enumerate(args.get("waves", [])[len(found["waves"]):], start=len(found["waves"])):
        for host in hosts:
            table.add_row(str(index), host, "not started", "")
    print_table(table)


@upgrade.command(name="rollback")
@click.option("--site", "host", required=True, help="The site (inventory host name) to roll back.")
@click.option("--rollout", "rollout_id", type=int, default=None,
              help="Undo this rollout's upgrade of the site (default: the site's newest successful upgrade).")
@inventory_option
@yes_option("rolling back")
@json_option
def rollback(host: str, rollout_id: int | None, inventory_path: Path | None, yes: bool, as_json: bool) -> None:
    """Roll a site back by hand: the release it ran before its newest upgrade, the database at that upgrade's
    checkpoint.

    Writes made since the checkpoint leave the live database: a fresh backup to both repositories is taken
    first, and the data dir it replaces is kept on the site. The site is locked while it runs.

    Exit codes: 0 rolled back (or already on that release); 1 refused, nothing touched; 3 failed (the site
    is put back on the release it ran).
    """
    inventory_path = require_inventory(inventory_path)
    if as_json and not yes:
        raise terminal.fail("--json never prompts: add --yes (or LPSE_OPS_YES=1) to roll back without asking")
    with refusal_as_error():
        target = rollout.find_rollback(host, rollout_id)
        if not as_json:
            terminal.out.print(
                f"{host} runs SPSE {target.to_version} (upgraded {target.upgraded_at}, rollout {target.rollout_id}).\n"
                f"Rollback: release {target.from_version} again, and the database back at checkpoint "
                f"{target.checkpoint} (restore point of {target.checkpoint_time}).\n"
                "Writes made since then leave the live database; a fresh backup of them is taken first.",
                highlight=False)
        if not yes:
            click.confirm(f"Roll {host} back to {target.from_version}?", abort=True, err=True)
        ran, record = rollout.run_rollback(target, inventory_path, progress=progress.live(not as_json))
    outcome = (record or {}).get("outcome", "no_result")
    if as_json:
        terminal.emit_json({"run_id": ran.run_id, "target": target.as_dict(), "outcome": outcome, "record": record})
    else:
        terminal.out.print(f"{host}: {outcome}"
                           + (f" ({record.get('failed_step')}: {record.get('reason')})"
                              if record and outcome not in ("rolled_back", "already") else "")
                           + f" (run {ran.run_id})", highlight=False)
    raise SystemExit(0 if outcome in ("rolled_back", "already") else EXIT_NOTHING_POSSIBLE)
