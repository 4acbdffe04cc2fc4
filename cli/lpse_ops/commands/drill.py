"""``lpse-ops drill``: run a DR drill on a lab or staging site and list the drills (docs/drills.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from lpse_ops import config, terminal
from lpse_ops.commands._options import inventory_option, json_option, refusal_as_error, require_inventory


@click.group(name="drill")
def drill() -> None:
    """DR drills: a real fault, the runbook that recovers it, the measured RTO and RPO (clauses 10.2, 10.4)."""


def _when(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time (2026-11-24T09:29:00Z)") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


@drill.command(name="run")
@click.argument("scenario")
@click.option("--site", required=True, help="The site to drill: a lab or staging site (site_drill_allowed).")
@inventory_option
@click.option("--target-time", default=None,
              help="Recover to this time instead of the one the drill chooses (ISO 8601, UTC if no zone): one "
                   "before the oldest backup makes the recovery fail on purpose.")
@click.option("--warmup-markers", default=10, show_default=True, type=click.IntRange(1, 600),
              help="Marker writes acknowledged before the fault is injected (one a second).")
@click.option("--to", "to_version", default=None, metavar="VERSION",
              help="failed-upgrade: the version of the release that breaks the site.")
@click.option("--releases", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="failed-upgrade: the folder of signed bundles holding it (and those on the way to it).")
@click.option("--trusted-keys", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="failed-upgrade: trusted release public keys (default: $LPSE_OPS_TRUSTED_KEYS).")
@json_option
def run_command(scenario: str, site: str, inventory_path: Path | None, target_time: str | None, warmup_markers: int,
                to_version: str | None, releases: Path | None, trusted_keys: Path | None, as_json: bool) -> None:
    """Drill SCENARIO on --site: start a marker workload through the app, inject the fault for real, run the
    scenario's runbook (runbook run --yes), verify the data and measure RTO and RPO against the runbook's
    targets. Recorded in the state store.

    Scenarios: rows-deleted, documents-lost, database-corrupted, ransomware, server-lost (lab only: the host
    is replaced by a bare one), failed-upgrade (a real upgrade to --to VERSION from --releases, a release that
    breaks: in the lab, `lpse-ops bundle reference --bad migration-fails-halfway`).

    Refused, with nothing touched, on a site that is not drillable (lpse_environment lab or staging, or
    site_drill_allowed: true) or held by another run. The drill never edits the runbook: on success it prints
    the last_drill line to paste.

    Exit codes: 0 recovered, data verified and targets met; 3 recovered but a target missed, or the recovery
    failed (the failed step is named); 1 refused.
    """
    from lpse_ops.actions import drill as drill_action
    from lpse_ops.actions import drill_types, drill_upgrade

    if (to_version or releases or trusted_keys) and scenario != drill_upgrade.SCENARIO:
        raise click.UsageError(f"--to, --releases and --trusted-keys are for the {drill_upgrade.SCENARIO} drill only")
    upgrade = (drill_upgrade.UpgradeFault(to_version or "", releases or config.home() / "bundles", trusted_keys)
               if scenario == drill_upgrade.SCENARIO else None)
    request = drill_types.DrillRequest(
        scenario=scenario, site=site, inventory=require_inventory(inventory_path), target_time=_when(target_time),
        warmup_markers=warmup_markers, upgrade=upgrade, progress=None if as_json else terminal.info)
    with refusal_as_error():
        result = drill_action.run(request)
    if as_json:
        terminal.emit_json(result.as_dict())
    else:
        _show(result)
    raise SystemExit(0 if result.ok and result.drill.get("met") else 3)


def _show(result) -> None:
    drill_row = result.drill
    targets = drill_row["targets"]
    title = (f"drill {drill_row['id']}: {drill_row['scenario']} on {drill_row['site']}: "
             f"{'recovered' if drill_row['ok'] else 'FAILED at ' + str(drill_row['failed_step'])}")
    table = Table(title=title)
    for column in ("measure", "measured", "target", "met"):
        table.add_column(column)
    for key, label in (("rto_s", "RTO (fault to serving, data verified)"), ("rpo_db_s", "RPO database rows"),
                       ("rpo_docs_s", "RPO documents")):
        value, target = drill_row.get(key), targets.get(key)
        met = "-" if target is None else ("yes" if value is not None and value <= target else "[red]no[/red]")
        table.add_row(label, _seconds(value), _seconds(target), met)
    terminal.print_table(table)
    timeline = Table(title="timeline (UTC)")
    for column in ("at", "event", "detail"):
        timeline.add_column(column, overflow="fold")
    for event in drill_row["timeline"]:
        detail = {key: value for key, value in event.items() if key not in ("at", "event")}
        timeline.add_row(event["at"][11:23], event["event"],
                         escape(", ".join(f"{key}={value}" for key, value in detail.items())))
    terminal.print_table(timeline)
    markers = result.markers
    if markers:
        consistency = markers.get("consistency") or {}
        terminal.info(f"markers: {markers.get('acknowledged')} acknowledged, last before the fault "
                      f"#{markers.get('last_acknowledged_before_fault')}; present after recovery: tenders "
                      f"{markers.get('tenders_present')} (last #{markers.get('last_tender_present')}), documents "
                      f"{markers.get('documents_present')} (last #{markers.get('last_document_present')}); "
                      f"documents referenced {consistency.get('referenced')}, not matching "
                      f"{consistency.get('not_matching_count')}")
    passed = (drill_row.get("detail") or {}).get("continued_failures") or []
    if passed:
        terminal.warn("runbook steps failed and the runbook went on (on_failure=continue): "
                      + ", ".join(f"{step['step']} (exit {step['exit_code']})" for step in passed)
                      + f"; the runbook run's result: {(drill_row.get('detail') or {}).get('runbook_result')}")
    if drill_row["ok"] and drill_row["met"]:
        terminal.info(f"targets met: paste into runbooks/{drill_row['scenario']}.md: {result.last_drill_line}")
    elif drill_row["ok"]:
        terminal.warn("recovered, but a target was missed: last_drill stays as it is")
    else:
        terminal.warn(f"the recovery failed at {drill_row['failed_step']}: lpse-ops runs show "
                      f"{drill_row['run_id']}; the site may need recovering by hand")


@drill.command(name="list")
@click.option("--since", default=None, help="Drills started at or after this time (ISO 8601).")
@click.option("--until", default=None, help="Drills started before this time (ISO 8601).")
@json_option
def list_command(since: str | None, until: str | None, as_json: bool) -> None:
    """List the recorded drills, oldest first."""
    from lpse_ops.state import StateStore
    from lpse_ops.state import drills as drill_state

    with StateStore.open(config.state_url()) as store:
        rows = drill_state.list_drills(store, since=_when(since), until=_when(until))
    if as_json:
        terminal.emit_json({"drills": rows})
        return
    table = Table(title="drills")
    for column in ("id", "started (UTC)", "scenario", "site", "ok", "failed step", "RTO", "RPO db", "RPO docs", "met"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row["id"]), (row["started_at"] or "")[:19].replace("T", " "), row["scenario"], row["site"],
                      {True: "yes", False: "[red]no[/red]", None: "running"}[row["ok"]], row["failed_step"] or "-",
                      _seconds(row["rto_s"]), _seconds(row["rpo_db_s"]), _seconds(row["rpo_docs_s"]),
                      {True: "yes", False: "no", None: "-"}[row["met"]])
    terminal.print_table(table)
