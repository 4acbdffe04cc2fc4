"""``lpse-ops upgrade run``: move the planned sites to the target release, wave by wave.

A rollout is one run (``upgrade.rollout``) that holds the site lock on every planned site until it
ends. Each wave is a step of it (``upgrade.wave``: the maintenance notice, the playbook
``upgrade.yml`` once per starting version in the wave, the completion notice) and each site's outcome
a step of its wave (``upgrade.site``, the playbook's typed result record). The playbook upgrades each
site on its own and rolls it back by itself on any failure; this module counts the failures against
the rollout's budget and halts before the next wave once the budget is exceeded.

A rollout that halted (or was interrupted) is resumed by running it again: the plan reads every
site's real state, so sites already on the target are skipped and only what did not finish is tried.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lpse_ops import config
from lpse_ops.actions import fleet, notice, operation
from lpse_ops.actions.fleet import Budget
from lpse_ops.actions.upgrade_plan_types import SitePlan, UpgradePlan
from lpse_ops.site import build as site_build
from lpse_ops.site.canary import Limits as CanaryLimits

OPERATION = "upgrade.rollout"
PLAYBOOK = "upgrade.yml"
DONE = ("upgraded", "already")
"""Outcomes that count as a site that finished."""

Progress = Callable[[str], None]


class RolloutRefused(operation.OperationRefused):
    """The rollout cannot start: nothing was touched; the message says why and what to do."""


@dataclass
class RolloutOptions:
    """What ``lpse-ops upgrade run`` takes beyond the plan."""

    inventory: Path
    budget: Budget = field(default_factory=lambda: Budget(count=0))
    bake_seconds: int = 120
    baseline_seconds: int = 300
    min_requests: int = 20
    max_5xx_increase: float = CanaryLimits.max_5xx_increase
    max_p95_ratio: float = CanaryLimits.max_p95_ratio
    p95_slack_ms: float = CanaryLimits.p95_slack_ms
    health_timeout_s: int = 90
    notify: bool = True
    window: timedelta = timedelta(minutes=30)
    forks: int = 10
    state_url: str | None = None
    progress: operation.ProgressFactory | None = None
    resumes: int | None = None


@dataclass
class SiteOutcome:
    """One site's end: the playbook's record (or why there is none)."""

    host: str
    wave: int
    outcome: str
    record: dict = field(default_factory=dict)
    run_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in DONE

    def as_dict(self) -> dict:
        return {"host": self.host, "wave": self.wave, "outcome": self.outcome, "run_id": self.run_id,
                "failed_step": self.record.get("failed_step"), "reason": self.record.get("reason", ""),
                "downtime_s": self.record.get("downtime_s"), "record": self.record}


@dataclass
class WaveOutcome:
    index: int
    name: str
    hosts: list[str]
    run_id: int | None = None
    sites: list[SiteOutcome] = field(default_factory=list)
    notices: dict[str, int | None] = field(default_factory=dict)
    playbook_runs: list[int | None] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "hosts": self.hosts, "run_id": self.run_id,
                "notices": self.notices, "playbook_runs": self.playbook_runs,
                "sites": [site.as_dict() for site in self.sites]}


@dataclass
class RolloutResult:
    """The rollout: its run id, every wave that ran, whether it halted and why."""

    run_id: int
    target: str
    waves: list[WaveOutcome]
    not_started: list[list[str]]
    halted: str | None
    budget: str
    allowed_failures: int

    @property
    def failed(self) -> list[SiteOutcome]:
        return [site for wave in self.waves for site in wave.sites if not site.ok]

    @property
    def result(self) -> str:
        return "ok" if not self.failed and not self.halted else "failed"

    def as_dict(self) -> dict:
        return {"run_id": self.run_id, "target": self.target, "result": self.result, "halted": self.halted,
                "budget": self.budget, "allowed_failures": self.allowed_failures,
                "failures": len(self.failed), "waves": [wave.as_dict() for wave in self.waves],
                "not_started": self.not_started}


def refuse_unless_clean(plan: UpgradePlan) -> None:
    """Refuse a rollout whose plan leaves a targeted site out, or finds nothing to do; nothing is touched."""
    if plan.excluded:
        lines = "\n  - ".join(f"{e.host}: {e.code}: {e.message}" for e in plan.excluded)
        raise RolloutRefused(f"{len(plan.excluded)} site(s) cannot be upgraded; no site was touched:\n  - {lines}\n"
                             "Fix them, or leave them out with --limit (e.g. --limit 'sites:!HOST').")
    if not plan.waves:
        raise RolloutRefused(f"every targeted site already runs SPSE {plan.target}: nothing to do")


def extravars(plan: UpgradePlan, group: list[SitePlan], checkpoint: str, options: RolloutOptions,
              start: datetime) -> dict:
    """The playbook's extra variables for *group* (sites of one wave starting from the same version)."""
    releases = {release.version: release for release in plan.releases}
    steps = group[0].steps
    target = releases.get(steps[-1])
    end = start + options.window
    tool = site_tool_sha256()
    return {
        # every site of the group already has this lpse-ops's site tool (its probe at the plan): the play
        # copies none; each site's upgrade-prepare refuses if its tool changed since
        **({"upgrade_site_tool_sha256": tool} if all(site.tool_sha256 == tool for site in group) else {}),
        "upgrade_from_version": group[0].current,
        "upgrade_path": [{"version": version, "bundle": str(releases[version].path), "sha256": releases[version].sha256}
                         for version in steps],
        "upgrade_trusted_keys": plan.trusted_keys,
        "upgrade_checkpoint": checkpoint,
        **({"upgrade_to_schema": target.schema_version} if target and target.schema_version is not None else {}),
        "upgrade_bake_seconds": options.bake_seconds,
        "upgrade_baseline_seconds": options.baseline_seconds,
        "upgrade_canary_min_requests": options.min_requests,
        "upgrade_canary_max_5xx_increase": options.max_5xx_increase,
        "upgrade_canary_max_p95_ratio": options.max_p95_ratio,
        "upgrade_canary_p95_slack_ms": options.p95_slack_ms,
        "upgrade_health_timeout_s": options.health_timeout_s,
        "upgrade_maintenance_start": start.strftime("%d-%m-%Y %H.%M UTC"),
        "upgrade_maintenance_duration": f"sampai sekitar {end.strftime('%H.%M UTC')} "
                                        f"({int(options.window.total_seconds() // 60)} menit)",
        "upgrade_maintenance_reason": f"pemutakhiran SPSE {group[0].current} ke {steps[-1]}",
    }


def site_tool_sha256() -> str:
    """The sha256 of the site tool this lpse-ops builds (deterministic: the same sources give the same bytes)."""
    return hashlib.sha256(site_build.archive_bytes()).hexdigest()


def groups_of(wave: list[SitePlan]) -> list[list[SitePlan]]:
    """The sites of *wave* grouped by where they start and the path they take (one playbook run each)."""
    grouped: dict[tuple[str, tuple[str, ...]], list[SitePlan]] = {}
    for site in wave:
        grouped.setdefault((site.current, tuple(site.steps)), []).append(site)
    return list(grouped.values())


def outcome_of(host: str, wave: int, result: operation.OperationResult | None) -> SiteOutcome:
    """The site's outcome from its typed record; no record means it never got that far (unreachable)."""
    record = result.tracker.records.get(host) if result else None
    if record:
        return SiteOutcome(host, wave, str(record.get("outcome") or "failed_before_change"), dict(record))
    state = result.tracker.hosts.get(host) if result else None
    why = "; ".join(state.messages[-3:]) if state and state.messages else "the playbook reported nothing for it"
    outcome = "unreachable" if state and state.unreachable else "no_result"
    return SiteOutcome(host, wave, outcome, {"reason": why, "failed_step": "connect"})


def run_rollout(plan: UpgradePlan, options: RolloutOptions, progress: Progress | None = None) -> RolloutResult:
    """Upgrade the sites of *plan*, wave by wave; return what happened. The caller showed and confirmed the plan.

    Raises RolloutRefused (nothing touched) for a plan with excluded sites or nothing to do, or when a
    planned site is locked by another run.
    """
    from lpse_ops.state import StateStore

    refuse_unless_clean(plan)
    say = progress or (lambda _text: None)
    hosts = [site.host for site in plan.sites]
    if options.notify:  # contacts and SMTP settings for every planned site, before anything is touched
        notice.plan_notice(notice.NoticeRequest(
            kind="maintenance", start=datetime.now(UTC), duration=options.window, from_version="-",
            to_version=plan.target, inventory=options.inventory, limit=",".join(hosts), state_url=options.state_url))
    allowed = options.budget.allowed(len(hosts))
    args = {"target": plan.target, "plan_run_id": plan.run_id, "inventory": str(options.inventory),
            "waves": [[site.host for site in wave] for wave in plan.waves], "steps": plan.steps,
            "budget": str(options.budget), "allowed_failures": allowed, "bake_seconds": options.bake_seconds,
            "resumes": options.resumes}
    store = StateStore.open(options.state_url or config.state_url())
    actor = config.actor()
    try:
        rollout_id = store.start_run(OPERATION, args, hosts, actor=actor, parent_id=operation.parent_run())
        operation.lock_hosts(store, "upgrade", hosts, rollout_id, actor)
        result = RolloutResult(rollout_id, plan.target, [], [], None, str(options.budget), allowed)

        def one_wave(index: int, _hosts: list[str]) -> int:
            wave = plan.waves[index]
            say(f"wave {index} ({wave[0].wave}): {', '.join(site.host for site in wave)}")
            result.waves.append(_run_wave(store, plan, index, wave, rollout_id, options, say))
            return sum(not site.ok for site in result.waves[-1].sites)

        try:
            ran = fleet.run_waves([[site.host for site in wave] for wave in plan.waves], one_wave, options.budget)
            result.halted, result.not_started = ran.halted, ran.not_started
        except BaseException:
            store.finish_run(rollout_id, "aborted", _host_results(result),
                             summary={**result.as_dict(), "error": "interrupted or crashed"})
            raise
        finally:
            store.release_sites(hosts, run_id=rollout_id, holder=actor)
        store.finish_run(rollout_id, result.result, _host_results(result), summary=_summary(result))
        return result
    finally:
        store.close()


def _run_wave(store, plan: UpgradePlan, index: int, wave: list[SitePlan], rollout_id: int,
              options: RolloutOptions, say: Progress) -> WaveOutcome:
    hosts = [site.host for site in wave]
    outcome = WaveOutcome(index, wave[0].wave, hosts)
    outcome.run_id = store.start_run("upgrade.wave", {"index": index, "name": wave[0].wave}, hosts,
                                     parent_id=rollout_id)
    start = datetime.now(UTC)
    try:
        undelivered: dict[str, str] = {}
        if options.notify:
            say(f"wave {index}: sending the maintenance notice")
            outcome.notices["maintenance"], undelivered = _notify(plan, wave, "maintenance", start, options,
                                                                   outcome.run_id)
        for host, error in undelivered.items():
            # clause 6.2.13: no maintenance without telling the site first
            say(f"{host}: not upgraded: the maintenance notice was not delivered ({error})")
            outcome.sites.append(_record_site(store, SiteOutcome(host, index, "notice_failed", {
                "failed_step": "notice", "reason": f"the maintenance notice was not delivered: {error}"}),
                outcome.run_id))
        wave = [site for site in wave if site.host not in undelivered]
        for group in groups_of(wave):
            checkpoint = f"upgrade-{rollout_id}"
            ctx = operation.OperationContext(
                operation="upgrade.playbook", playbook=PLAYBOOK, inventory=options.inventory,
                limit=",".join(site.host for site in group), forks=options.forks, parent_id=outcome.run_id,
                extravars=extravars(plan, group, checkpoint, options, start), progress=options.progress,
                record_args={"from": group[0].current, "steps": group[0].steps},
                fleet=plan.fleet.subset([site.host for site in group])
                if plan.fleet is not None and plan.fleet.inventory == options.inventory else None)
            say(f"wave {index}: {group[0].current} -> {' -> '.join(group[0].steps)} on "
                f"{', '.join(site.host for site in group)}")
            try:
                ran = operation.run(ctx)
            except operation.OperationRefused as error:
                ran = None
                say(f"wave {index}: refused: {error}")
            outcome.playbook_runs.append(ran.run_id if ran else None)
            for site in group:
                site_outcome = _record_site(store, outcome_of(site.host, index, ran), outcome.run_id)
                outcome.sites.append(site_outcome)
                say(f"{site.host}: {site_outcome.outcome}"
                    + (f" ({site_outcome.record.get('failed_step')}: {site_outcome.record.get('reason')})"
                       if not site_outcome.ok else ""))
        if options.notify:
            took = datetime.now(UTC) - start
            outcome.notices["completion"], _late = _notify(plan, wave, "completion", start, options,
                                                           outcome.run_id, took=took, sites=outcome.sites)
    except BaseException:
        store.finish_run(outcome.run_id, "aborted", summary={"error": "interrupted or crashed", **outcome.as_dict()})
        raise
    failed = [site for site in outcome.sites if not site.ok]
    store.finish_run(outcome.run_id, "failed" if failed else "ok",
                     {site.host: {"status": "ok" if site.ok else "failed", "failed": 0 if site.ok else 1,
                                  "outcome": site.outcome} for site in outcome.sites},
                     summary={"failed": len(failed), "sites": {s.host: s.outcome for s in outcome.sites}})
    return outcome


def _notify(plan: UpgradePlan, wave: list[SitePlan], kind: str, start: datetime, options: RolloutOptions,
            parent: int, took: timedelta | None = None,
            sites: list[SiteOutcome] | None = None) -> tuple[int | None, dict[str, str]]:
    """Send *kind* to the wave's sites, one notice run per group; return the last notice run id and the
    sites it could not be delivered to (with the error).

    Maintenance: grouped by starting version and path. Completion: also by outcome, so that a site rolled
    back is told it still serves its old version (a site whose playbook never reached it is not told
    the work is over: it was not touched or its state is unknown).
    """
    last, undelivered = None, {}
    by_host = {site.host: site for site in sites or []}
    batches: list[tuple[list[SitePlan], str | None]] = []
    for group in groups_of(wave):
        if kind == "maintenance":
            batches.append((group, None))
            continue
        done = [site for site in group if by_host.get(site.host) and by_host[site.host].ok]
        rolled = [site for site in group if by_host.get(site.host) and by_host[site.host].outcome == "rolled_back"]
        batches += [(done, None), (rolled, group[0].current)]
    for batch, served in batches:
        if not batch:
            continue
        request = notice.NoticeRequest(
            kind=kind, start=start, duration=took if took is not None else options.window,
            from_version=batch[0].current, to_version=batch[0].steps[-1], inventory=options.inventory,
            limit=",".join(site.host for site in batch), served_version=served, parent_run_id=parent,
            state_url=options.state_url)
        sent = notice.send_notice(request)
        last = sent.run_id
        undelivered.update({r.host: r.error or "not delivered" for r in sent.results if not r.ok})
    return last, undelivered


def _record_site(store, site: SiteOutcome, wave_run_id: int) -> SiteOutcome:
    """Record *site*'s outcome as a step of its wave (run ``upgrade.site``) and return it with its run id."""
    site.run_id = store.start_run("upgrade.site", {"outcome": site.outcome}, [site.host], parent_id=wave_run_id)
    store.finish_run(site.run_id, "ok" if site.ok else "failed",
                     {site.host: {"status": "ok" if site.ok else "failed", "failed": 0 if site.ok else 1,
                                  "outcome": site.outcome}}, summary=site.as_dict())
    return site


def _host_results(result: RolloutResult) -> dict[str, dict]:
    return {site.host: {"status": "ok" if site.ok else "failed", "failed": 0 if site.ok else 1,
                        "outcome": site.outcome} for wave in result.waves for site in wave.sites}


def _summary(result: RolloutResult) -> dict:
    return {"target": result.target, "halted": result.halted, "failures": len(result.failed),
            "budget": result.budget, "allowed_failures": result.allowed_failures,
            "waves": [{"index": w.index, "name": w.name, "run_id": w.run_id,
                       "sites": {s.host: s.outcome for s in w.sites}} for w in result.waves],
            "not_started": result.not_started}


def rollout_status(rollout_id: int | None = None, state_url: str | None = None) -> dict | None:
    """The rollout *rollout_id* (default: the latest) with its waves and each site's outcome, from the store."""
    from lpse_ops.state import StateStore
    from lpse_ops.state.store import RunNotFoundError

    with StateStore.open(state_url or config.state_url()) as store:
        if rollout_id is None:
            latest = store.list_runs(limit=1, operation=OPERATION)
            if not latest:
                return None
            rollout_id = latest[0]["id"]
        try:
            found = store.get_run(rollout_id)
        except RunNotFoundError as error:
            raise RolloutRefused(f"{error}: `lpse-ops runs list` shows the rollouts (operation {OPERATION})") from None
        if found["operation"] != OPERATION:
            raise RolloutRefused(f"run {rollout_id} is a {found['operation']}, not a rollout")
        waves = sorted(store.list_runs(limit=1000, parent_id=rollout_id, operation="upgrade.wave"),
                       key=lambda run: run["id"])
        found["waves"] = []
        for wave in waves:
            steps = store.list_runs(limit=10_000, parent_id=wave["id"], operation="upgrade.site")
            found["waves"].append({**wave, "sites": {step["hosts"][0]: {"outcome": (step["summary"] or {}).get(
                "outcome", step["args"].get("outcome")), "run_id": step["id"], "result": step["result"]}
                for step in steps}})
        return found


# ------------------------------------------------------------------------------- rollback by hand

ROLLBACK_OPERATION = "upgrade.rollback"
ROLLBACK_PLAYBOOK = "upgrade_rollback.yml"


@dataclass
class RollbackTarget:
    """What ``upgrade rollback --site S`` undoes: the site's newest successful upgrade and its checkpoint."""

    host: str
    rollout_id: int | None
    site_run_id: int
    from_version: str
    to_version: str
    checkpoint: str
    checkpoint_time: str | None
    upgraded_at: str | None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def find_rollback(host: str, rollout_id: int | None = None, state_url: str | None = None) -> RollbackTarget:
    """The newest upgrade of *host* that ended ``upgraded`` (in *rollout_id* when given); refuse when none."""
    from lpse_ops.state import StateStore

    with StateStore.open(state_url or config.state_url()) as store:
        for step in store.list_runs(limit=10_000, operation="upgrade.site"):
            summary = step.get("summary") or {}
            record = summary.get("record") or {}
            if step["hosts"] != [host] or summary.get("outcome") != "upgraded" or not record.get("checkpoint"):
                continue
            wave = store.get_run(step["parent_id"]) if step.get("parent_id") else {}
            rollout = wave.get("parent_id")
            if rollout_id is not None and rollout != rollout_id:
                continue
            checkpoint = record["checkpoint"]
            return RollbackTarget(host, rollout, step["id"], record["from_version"], record["to_version"],
                                  checkpoint["name"], checkpoint.get("restore_point_time"), step["started_at"])
    within = f" in rollout {rollout_id}" if rollout_id is not None else ""
    raise RolloutRefused(f"no successful upgrade of {host}{within} is recorded (lpse-ops upgrade status): "
                         "nothing to roll back to")


def run_rollback(target: RollbackTarget, inventory: Path, *, progress: operation.ProgressFactory | None = None,
                 state_url: str | None = None) -> tuple[operation.OperationResult, dict | None]:
    """Roll *target* back (playbook upgrade_rollback.yml, the site locked); return the run and the site's record."""
    ctx = operation.OperationContext(
        operation=ROLLBACK_OPERATION, playbook=ROLLBACK_PLAYBOOK, inventory=inventory, limit=target.host,
        extravars={"rollback_to_version": target.from_version, "rollback_from_version": target.to_version,
                   "upgrade_checkpoint": target.checkpoint},
        lock_sites=True, parent_id=target.rollout_id, progress=progress, state_url=state_url,
        record_args=target.as_dict())
    ran = operation.run(ctx)
    return ran, ran.tracker.records.get(target.host)
