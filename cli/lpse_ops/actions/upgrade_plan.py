"""Plan an upgrade of the fleet to one SPSE version; change nothing.

The plan is computed in four steps, the first three read-only:

1. the **release catalogue**: every ``spse-*.tar.gz`` of a release folder, each verified with
   :func:`lpse_ops.bundle.verify` against the trusted keys (a bundle that fails is kept aside with its
   own error, and refuses the whole plan if the target or any needed step is that bundle);
2. each site's **real state**, read over SSH with the fleet probe (one connection and one command per
   site: ``version``, database ``schema_version``, ``health``, ``free_bytes`` of the SPSE folder,
   ``frozen``, the backup facts), recorded as run ``upgrade.plan``; the verifications the site ran by
   itself are recorded once, and its current verification (the one every view shares) and any lock
   are read from the state store. ``playbooks/site_state.yml`` reads the same facts for AWX;
3. :func:`~lpse_ops.actions.upgrade_plan_rules.compute_plan`, pure and fast (600 sites well under a second):
   each site's **path** through the catalogue (shortest chain respecting every bundle's ``min_upgrade_from``),
   the sites **left out** with machine-readable codes (:data:`~lpse_ops.actions.upgrade_plan_types.CODES`), and
   the **waves** (a canary first, then inventory groups ``wave_N`` or shares of the rest).

:func:`plan` is the entry function the command calls; everything else is pure and tested without hosts:
the catalogue and paths in :mod:`lpse_ops.actions.upgrade_catalogue`, the site states in
:mod:`lpse_ops.actions.upgrade_site_state`, the plan's record types in :mod:`lpse_ops.actions.upgrade_plan_types`
and its rules in :mod:`lpse_ops.actions.upgrade_plan_rules`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpse_ops import bundle
from lpse_ops.actions import backup, fleet, operation, probe_rules
from lpse_ops.actions.upgrade_catalogue import PlanRefused, load_catalogue, refuse_bad_steps, version_key
from lpse_ops.actions.upgrade_plan_rules import compute_plan
from lpse_ops.actions.upgrade_plan_types import (
    DEFAULT_MAX_BACKUP_AGE_HOURS,
    DEFAULT_WAVE_SIZE,
    PlanOptions,
    UpgradePlan,
)
from lpse_ops.actions.upgrade_site_state import SiteState, flag, state_from_probe
from lpse_ops.backends import ssh_probe

OPERATION = "upgrade.plan"


@dataclass
class PlanContext:
    """What ``lpse-ops upgrade plan`` asks for."""

    target: str
    inventory: Path
    releases_dir: Path
    trusted_keys: Path
    limit: str | None = None
    canary: int = 1
    wave_size: str = DEFAULT_WAVE_SIZE
    max_backup_age_hours: float = DEFAULT_MAX_BACKUP_AGE_HOURS
    allow_downgrade: bool = False
    state_url: str | None = None
    progress: operation.ProgressFactory | None = None
    """Not drawn: the sites are read over SSH in a few seconds, not by a playbook."""
    timeout: float = 20.0
    """Seconds each site has to answer the reading (connection and command)."""


def read_states(ctx: PlanContext, read: fleet.Fleet, store: Any) -> tuple[dict[str, SiteState], int]:
    """Read every target site over SSH (one connection and one command each), record the reading as run
    ``upgrade.plan``, and the verifications the sites ran by themselves; return the states and the run id."""
    run_id = store.start_run(OPERATION, {"inventory": str(ctx.inventory), "limit": ctx.limit, "target": ctx.target,
                                         "releases": str(ctx.releases_dir)}, read.hosts,
                             parent_id=operation.parent_run())
    states: dict[str, SiteState] = {}
    try:
        for raw in fleet.probe_sites(read, timeout=ctx.timeout, backup_args=ssh_probe.VERIFICATIONS_ONLY):
            probe = probe_rules.to_probe(raw)
            state = state_from_probe(probe)
            if probe.backup and probe.error_detail is None:
                backup.ingest_site_verifications(store, probe.host, probe.backup, run_id)
            state.verification = backup.current_verification(store, probe.host)
            states[probe.host] = state
    except BaseException:
        store.finish_run(run_id, "aborted", summary={"error": "interrupted while reading the sites"})
        raise
    failed = [host for host, state in states.items() if not state.reachable or state.error]
    store.finish_run(run_id, "failed" if failed else "ok", host_results={
        host: {"status": "unreachable" if not state.reachable else "failed" if state.error else "ok",
               "unreachable": int(not state.reachable), "failed": int(bool(state.error)),
               "state": state.as_dict()} for host, state in states.items()},
        summary={"sites": len(states), "unreadable": failed})
    return states, run_id


def plan(ctx: PlanContext) -> UpgradePlan:
    """Verify the bundles, read every target site's state, and return the plan. Changes nothing on a site.

    Bad input (option, bundle, missing target bundle, inventory) raises PlanRefused before any host is
    touched. Each site is read over SSH with the fleet probe (one connection, one command), recorded as
    run ``upgrade.plan``; its current verification is the one every view shares
    (:func:`lpse_ops.actions.backup.current_verification`), the site's own scheduled ones included.
    """
    from lpse_ops import config
    from lpse_ops.state import StateStore

    try:
        wave_size = fleet.WaveSize.parse(ctx.wave_size)
        version_key(ctx.target)
    except ValueError as error:
        raise PlanRefused(str(error)) from None
    if ctx.canary < 1:
        raise PlanRefused("--canary must be at least 1")
    options = PlanOptions(ctx.target, ctx.allow_downgrade, ctx.canary, wave_size, ctx.max_backup_age_hours)
    catalogue = load_catalogue(ctx.releases_dir, ctx.trusted_keys)
    compute_plan(catalogue, {}, {}, options)  # refuses a missing or bad target bundle before any host is touched
    refuse_bad_steps(catalogue, ctx.target)
    read = fleet.read(ctx.inventory, limit=ctx.limit)
    with StateStore.open(ctx.state_url or config.state_url()) as store:
        states, run_id = read_states(ctx, read, store)
        locks = {lock["site"]: lock for lock in operation.others_locks(store)}  # a drill's upgrade works under its lock
        for host, state in states.items():
            state.lock = locks.get(host)
            if flag(read.hostvars(host).get("spse_frozen")):
                state.frozen = True
    upgrade_plan = compute_plan(catalogue, states, read.groups, options)
    upgrade_plan.run_id = run_id
    upgrade_plan.fleet = read
    upgrade_plan.trusted_keys = bundle.trusted_key_texts(ctx.trusted_keys)
    return upgrade_plan
