"""DR drills (``lpse-ops drill run``; clauses 10.2, 10.3, 10.4): a real fault on a drillable site, the
scenario's runbook run to recover it, and the measured RTO and RPO against the runbook's targets.

A drill, in order (every event in the timeline, with its time):

1. refuse, before anything is touched, a site not marked drillable (``site_drill_allowed: true``, or a
   ``lpse_environment`` of ``lab`` or ``staging`` without ``site_drill_allowed: false``), an unknown
   scenario, a runbook that does not lint, or a site another run holds;
2. record the drill (run ``drill.run`` holding the site lock; row in ``drills``) and start the **marker
   workload**: one tender and one document every ``marker_interval_s`` through the site's HTTPS API (the
   app, not SQL), each carrying its sequence number and write time; every acknowledged write goes to a
   local log (``<home>/drills/drill-<id>-markers.jsonl``) on the control machine, which survives the site;
3. **inject the fault** for real (DELETE via psql, PostgreSQL stopped and its files overwritten, the
   documents folder removed) and stop the workload;
4. work out the runbook's values as the operator would (the moment before the mistake; the last
   documents snapshot), wait (bounded) for the WAL archive to pass that moment, and run the scenario's
   runbook through :mod:`lpse_ops.actions.runbook_run` with ``yes`` (the drill's run is its parent, so
   the steps work under the drill's lock);
5. **verify**: the site answers ``/health``, every document the recovered database references is
   present with its sha256, and which markers survived. RTO runs from the fault to that verified moment;
   the database RPO is the gap between the last tender acknowledged before the fault and the last one
   present after recovery (the documents RPO likewise, for documents whose file matches);
6. compare with the runbook's targets, record the drill and its timeline, and return it (the command
   prints it, with the ``last_drill`` line to paste into the runbook).

A drill whose recovery fails is a failed drill naming the step (a runbook step, or ``verify-...``),
never a success. ``target_time`` overrides the scenario's recovery point (one before the oldest backup
makes the restore impossible: that is how the failure path is tested).
"""

from __future__ import annotations

from typing import Any

from lpse_ops import config, runbooks
from lpse_ops.actions import drill_upgrade, operation, runbook_run
from lpse_ops.actions.drill_rules import drillable, last_drill_line, runbook_verdict, site_url, targets_met
from lpse_ops.actions.drill_steps import (
    Timeline,
    follow_hydration,
    inject,
    recovery_values,
    site_health,
    site_hostvars,
    verify,
    verify_version,
    wait_for,
)
from lpse_ops.actions.drill_types import SAME_VERSION, SCENARIOS, DrillRefused, DrillRequest, DrillResult
from lpse_ops.backends.site_shell import SiteShell
from lpse_ops.backends.spse_http import MarkerWorkload

OPERATION = "drill.run"


def check(request: DrillRequest) -> tuple[dict[str, Any], runbook_run.RunbookPlan]:
    """Every refusal that needs no change on the site: scenario, drillable site, runbook lint."""
    if request.scenario not in SCENARIOS:
        raise DrillRefused(f"no drill scenario {request.scenario!r} (known: {', '.join(SCENARIOS)})")
    hostvars = site_hostvars(request.inventory, request.site)
    allowed, reason = drillable(hostvars)
    if not allowed:
        raise DrillRefused(f"{request.site} is not drillable: {reason}. Nothing was touched.")
    if request.scenario == drill_upgrade.SCENARIO and (why := drill_upgrade.refusal(request.upgrade)):
        raise DrillRefused(f"{why}. Nothing was touched.")
    samples = {name: sample for name, (_meaning, sample) in runbooks.PLACEHOLDERS.items() if name != "site"}
    planned = runbook_run.plan(runbook_run.RunbookRequest(request.scenario, request.site, request.inventory,
                                                          values=samples, yes=True))
    return hostvars, planned


def run(request: DrillRequest) -> DrillResult:
    """Drill *request.scenario* on *request.site* end to end; return the recorded drill.

    Raises DrillRefused (nothing touched) for an unknown scenario, a site not drillable, a runbook that does not
    lint, or a site another run holds.
    """
    from lpse_ops.state import StateStore
    from lpse_ops.state import drills as drill_state

    say = request.progress or (lambda _text: None)
    hostvars, sample_plan = check(request)
    targets = sample_plan.targets
    store = StateStore.open(request.state_url or config.state_url())
    actor = config.actor()
    shell: SiteShell | None = None
    workload: MarkerWorkload | None = None
    try:
        run_id = store.start_run(OPERATION, {"scenario": request.scenario, "site": request.site,
                                             "inventory": str(request.inventory),
                                             "target_time": request.target_time.isoformat()
                                             if request.target_time else None}, [request.site], actor=actor)
        operation.lock_hosts(store, OPERATION, [request.site], run_id, actor)
        timeline = Timeline(say)
        started = timeline.add("drill_started", scenario=request.scenario, site=request.site)
        drill_id = drill_state.start_drill(store, request.scenario, request.site, targets, run_id=run_id,
                                           started_at=started)
        outcome: dict[str, Any] = {"ok": False, "failed_step": None}
        runbook_dict: dict[str, Any] | None = None
        markers: dict[str, Any] = {}
        hydration: dict[str, Any] | None = None
        measured: dict[str, float | None] = {"rto_s": None, "rpo_db_s": None, "rpo_docs_s": None}
        try:
            shell = SiteShell(request.site, hostvars)
            shell.run("true", timeout=60)  # the SSH connection is open before the fault, not during it
            prefix = f"DRILL{drill_id}"
            log_path = config.home() / "drills" / f"drill-{drill_id}-markers.jsonl"
            workload = MarkerWorkload(site_url(hostvars), prefix, log_path, request.marker_interval_s)
            workload.start()
            timeline.add("workload_started", url=site_url(hostvars), log=str(log_path))
            wait_for(lambda: workload.acked() >= request.warmup_markers,
                      request.warmup_markers * request.marker_interval_s * 4 + 30,
                      f"{request.warmup_markers} markers acknowledged by the site")
            version_before = ((site_health(hostvars) or {}).get("version")  # what the recovered site must serve
                              if request.scenario in SAME_VERSION else None)
            fault_at, values, upgraded = inject(request, shell, prefix, timeline, run_id)
            rpo_cut = upgraded.returned_at if upgraded else fault_at  # writes acknowledged until then must survive
            workload.stop()
            timeline.add("workload_stopped", acknowledged=len(workload.acks), errors=len(workload.errors))
            values = recovery_values(request, shell, values, timeline, fault_at)
            timeline.add("runbook_started", runbook=request.scenario, values=values)
            book = runbook_run.run(runbook_run.RunbookRequest(
                request.scenario, request.site, request.inventory, values=values, yes=True, parent_id=run_id,
                state_url=request.state_url, progress=say, output=request.step_output,
                decide=drill_upgrade.decide(upgraded)))
            runbook_dict = book.as_dict()
            for step in book.steps:
                timeline.add(f"step_{step.status}", at=step.finished_at, step=step.step.id,
                             exit_code=step.exit_code, duration_s=round(step.duration_s, 1))
            stopped_at, passed = runbook_verdict(book)
            timeline.add("runbook_finished", result=book.result, failed_step=book.failed_step, run_id=book.run_id,
                         **({"continued_failures": [step["step"] for step in passed]} if passed else {}))
            outcome["failed_step"] = stopped_at
            outcome["continued_failures"] = passed
            hydration = follow_hydration(shell, book, fault_at, timeline, link_mbit=hostvars.get("site_wan_mbit")) \
                if stopped_at is None else None
            verified, markers, problem = verify(shell, hostvars, prefix, workload.acks, rpo_cut, timeline)
            if problem is None and request.scenario in SAME_VERSION:
                problem = verify_version(hostvars, version_before, timeline)
            measured["rpo_db_s"] = markers.get("rpo_db_s")
            measured["rpo_docs_s"] = markers.get("rpo_docs_s")
            if outcome["failed_step"] is None and problem is not None:
                outcome["failed_step"] = problem
            if verified and outcome["failed_step"] is None:  # a failed recovery has no recovery time
                measured["rto_s"] = round((verified - fault_at).total_seconds(), 1)
                if hydration:  # served first: the RTO is to serving again; the data's full check came after
                    hydration["rto_verified_s"] = measured["rto_s"]
                    measured["rto_s"] = hydration["rto_serving_s"]
            outcome["ok"] = outcome["failed_step"] is None
        except Exception as error:  # noqa: BLE001 - a drill that breaks down is a failed drill, recorded
            timeline.add("drill_error", error=str(error)[-500:])
            outcome["failed_step"] = outcome["failed_step"] or "drill"
            outcome["error"] = str(error)[-500:]
        except BaseException:  # interrupted: recorded as such, the lock released, then re-raised
            timeline.add("drill_interrupted")
            drill_state.finish_drill(store, drill_id, ok=False, failed_step="interrupted", met=False,
                                     timeline=timeline.events)
            store.finish_run(run_id, "aborted", {}, summary={"drill_id": drill_id, "error": "interrupted"})
            store.release_sites([request.site], run_id=run_id, holder=actor)
            raise
        finally:
            if workload is not None:
                workload.stop()
            if shell is not None:
                shell.close()
        met = bool(outcome["ok"]) and targets_met(measured, targets)
        finished = timeline.add("drill_finished", ok=outcome["ok"], met=met, failed_step=outcome["failed_step"])
        timeline.events.sort(key=lambda event: event["at"])  # step events are added after the runbook, at their time
        drill_state.finish_drill(store, drill_id, ok=bool(outcome["ok"]), failed_step=outcome["failed_step"],
                                 met=met, timeline=timeline.events, finished_at=finished,
                                 detail={"markers": markers, "runbook_run_id": (runbook_dict or {}).get("run_id"),
                                         "runbook_result": (runbook_dict or {}).get("result"),
                                         "continued_failures": outcome.get("continued_failures") or [],
                                         "hydration": hydration,
                                         "error": outcome.get("error"), "workload_errors": (
                                             workload.errors[-20:] if workload else [])}, **measured)
        store.finish_run(run_id, "ok" if outcome["ok"] else "failed",
                         {request.site: {"status": "ok" if outcome["ok"] else "failed",
                                         "failed": int(not outcome["ok"]), "failed_step": outcome["failed_step"]}},
                         summary={"drill_id": drill_id, "ok": outcome["ok"], "met": met, **measured,
                                  "failed_step": outcome["failed_step"]})
        store.release_sites([request.site], run_id=run_id, holder=actor)
        return DrillResult(drill_state.get_drill(store, drill_id), runbook_dict, markers, last_drill_line(finished))
    finally:
        store.close()
