"""Run a disaster runbook step by step on one site (``lpse-ops runbook run``; clauses 10.2, 10.4).

:func:`plan` reads and lints the runbook and fills every step's placeholders, refusing (before anything
runs or is recorded) a runbook that does not lint clean, a site the inventory does not have, or a
placeholder without a value. :func:`run` then records the runbook run (``runbook.run``, a child of
``parent_id`` when a drill runs it), holds the site lock for the whole run, and runs each step in file
order: asks ``confirm`` (the command layer's prompt; ``yes`` skips it), runs the real ``lpse-ops`` command
as a subprocess of the same installation, and records the step as a child run (``runbook.step``) with its
command, exit code, output tail and duration. ``on_failure`` decides what a failed step does: ``stop``
ends the run, ``continue`` goes on, ``ask`` calls ``decide`` (without one, as in a drill, it stops).

Why a subprocess: the step is then exactly the command line an operator would type (the runbook's text
is what is tested, with its exit codes, output and prompts), each step is its own process with its own
Ansible run, and a crash in one step cannot corrupt the runner. The step's environment carries
``LPSE_OPS_PARENT_RUN`` (the step's run id) so its own runs are recorded under the step and a site lock held
by this runbook run (or the drill above it) counts as its own (``actions/operation.py``), and
``LPSE_OPS_INVENTORY`` (the inventory this run was given).

A step runs only once confirmed (or with ``yes``), so a command that would ask again (``backup restore``) gets
``--yes``: its output is captured, and a second question could not be seen or answered.

Exit codes of steps: 0 is success; 5 (``backup status``: something older than its limit; ``fleet status``:
warnings only, no fault) counts as success with a warning; anything else is a failure.

Results of a run: ``ok`` every step succeeded (some perhaps with a warning); ``completed_with_failures``
every step ran but at least one failed and its policy (``continue``, or ``ask`` answered yes) went on:
``failed_step`` names the first of them and the exit code is 5; ``failed`` a step failed and the run
stopped there (exit 3); ``aborted`` the operator declined a step (exit 1).
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lpse_ops import config, runbooks
from lpse_ops.actions import fleet, operation
from lpse_ops.actions.operation import OperationRefused

OPERATION = "runbook.run"
STEP_OPERATION = "runbook.step"
WARNING_EXIT_CODES = frozenset({5})
"""Step exit codes that are a warning, not a failure (``backup status`` 5: something is older than its limit;
``fleet status`` 5: warnings only, no critical fault)."""
EXIT_CONTINUED_FAILURES = 5
"""``runbook run``'s exit code when every step ran but a step failed and its policy went on."""
RESULT_EXIT_CODES = {"ok": operation.EXIT_OK, "completed_with_failures": EXIT_CONTINUED_FAILURES,
                     "failed": operation.EXIT_HOSTS_FAILED, "aborted": operation.EXIT_REFUSED}
STOPPED_RESULTS = ("failed", "aborted")
"""Results where the run did not reach its last step."""
OUTPUT_TAIL_LINES = 40
STEP_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class PlannedStep:
    """One step with its command filled in, ready to run."""

    number: int
    id: str
    section: str | None
    action: str
    on_failure: str
    command: str
    argv: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"number": self.number, "id": self.id, "section": self.section, "action": self.action,
                "on_failure": self.on_failure, "command": self.command}


@dataclass
class StepOutcome:
    """What one step did."""

    step: PlannedStep
    status: str
    """ok, warning (an exit code of WARNING_EXIT_CODES), failed, declined (the operator said no)."""
    exit_code: int | None = None
    duration_s: float = 0.0
    output_tail: str = ""
    run_id: int | None = None
    decision: str | None = None
    """For a failed step: stop, continue, or (on_failure=ask) what the operator decided."""
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**self.step.as_dict(), "status": self.status, "exit_code": self.exit_code,
                "duration_s": round(self.duration_s, 1), "output_tail": self.output_tail, "run_id": self.run_id,
                "decision": self.decision,
                "started_at": self.started_at.isoformat(timespec="milliseconds") if self.started_at else None,
                "finished_at": self.finished_at.isoformat(timespec="milliseconds") if self.finished_at else None}


@dataclass
class RunbookRequest:
    """Which runbook to run on which site, with which placeholder values."""

    name: str
    site: str
    inventory: Path
    values: dict[str, str] = field(default_factory=dict)
    yes: bool = False
    parent_id: int | None = None
    state_url: str | None = None
    confirm: Callable[[PlannedStep], bool] | None = None
    """Asked before each step unless ``yes``; False stops the run (recorded as aborted)."""
    decide: Callable[[PlannedStep, StepOutcome], bool] | None = None
    """Asked when an ``on_failure=ask`` step fails: True goes on; without it the run stops."""
    progress: Callable[[str], None] | None = None
    output: Callable[[str], None] | None = None
    """Each line a step prints, as it prints it."""
    step_timeout_s: float = STEP_TIMEOUT_S


@dataclass
class RunbookPlan:
    """A runbook ready to run: its file, front matter, targets and filled steps."""

    path: Path
    title: str
    front_matter: dict[str, Any]
    site: str
    steps: list[PlannedStep]

    @property
    def targets(self) -> dict[str, int | None]:
        """The runbook's targets in seconds (RTO, database RPO, documents RPO)."""
        front = self.front_matter
        rto = front.get("rto_target_minutes")
        return {"rto_s": rto * 60 if isinstance(rto, int) else None, "rpo_db_s": front.get("rpo_target_seconds"),
                "rpo_docs_s": front.get("rpo_documents_target_seconds")}

    def as_dict(self) -> dict[str, Any]:
        return {"runbook": self.path.stem, "path": str(self.path), "title": self.title, "site": self.site,
                "targets": self.targets, "steps": [step.as_dict() for step in self.steps]}


@dataclass
class RunbookResult:
    """What a runbook run did: every step's outcome, the result, the step it failed at, the exit code."""

    run_id: int
    plan: RunbookPlan
    steps: list[StepOutcome]
    result: str
    """ok (no step failed), completed_with_failures (every step ran, a step failed and its policy went on),
    failed (a step failed and the run stopped), aborted (the operator declined)."""
    failed_step: str | None
    """The step the run stopped at, or (completed_with_failures) the first step that failed and was passed."""
    exit_code: int

    @property
    def continued_failures(self) -> list[StepOutcome]:
        """The steps that failed and the run went on past (on_failure=continue, or ask answered yes)."""
        return [outcome for outcome in self.steps if outcome.status == "failed" and outcome.decision == "continue"]

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, **self.plan.as_dict(), "result": self.result,
                "failed_step": self.failed_step, "exit_code": self.exit_code,
                "steps": [outcome.as_dict() for outcome in self.steps],
                "continued_failures": [outcome.step.id for outcome in self.continued_failures]}


def cli_argv() -> list[str]:
    """The argv prefix that runs this installation's ``lpse-ops`` (the script next to this Python, else -m)."""
    script = Path(sys.executable).with_name("lpse-ops")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from lpse_ops.main import main; main()"]


def plan(request: RunbookRequest) -> RunbookPlan:
    """Read, lint and fill the runbook; raise OperationRefused naming every problem (nothing is run)."""
    import shlex

    try:
        path = runbooks.find(request.name)
    except FileNotFoundError as error:
        raise OperationRefused(str(error)) from error
    book = runbooks.read(path)
    problems = runbooks.check(book, expected_scenario=path.stem)
    if problems:
        listing = "\n  - ".join(str(problem) for problem in problems)
        raise OperationRefused(f"runbook {path} does not lint clean ({len(problems)} problem(s)); fix it first "
                               f"(lpse-ops runbook lint {path}):\n  - {listing}")
    unknown = sorted(set(request.values) - set(runbooks.PLACEHOLDERS) - {"site"})
    if unknown:
        raise OperationRefused(f"--set {', '.join(unknown)}: not a placeholder (known: "
                               f"{', '.join(name for name in runbooks.PLACEHOLDERS if name != 'site')})")
    if "site" in request.values and request.values["site"] != request.site:
        raise OperationRefused("the site is given by --site, not --set site=...")
    values = {**request.values, "site": request.site}
    missing: dict[str, list[str]] = {}
    for step in book.steps:
        for name in runbooks.placeholders_of(step):
            if not str(values.get(name) or "").strip():
                missing.setdefault(name, []).append(step.id or "?")
    if missing:
        listing = "; ".join(f"{{{name}}} ({runbooks.PLACEHOLDERS[name][0]}) used by {', '.join(ids)}"
                            for name, ids in missing.items())
        raise OperationRefused(f"no value for {listing}: add --set NAME=VALUE for each; nothing was run")
    if fleet.read_site(request.inventory, request.site, validate_for=None) is None:
        raise OperationRefused(f"--site must name one site of the inventory {request.inventory} "
                               f"({request.site!r} is not exactly one host of group sites)")
    steps = []
    for number, step in enumerate(book.steps, start=1):
        command = runbooks.fill(step.command, values)
        argv = shlex.split(command)[1:]
        if runbooks.takes_option(step.action or "", "--yes"):
            argv.append("--yes")  # the runner's confirmation of the step (or --yes) is the command's confirmation
        steps.append(PlannedStep(number, step.id or "?", step.section, step.action or "", step.on_failure or "stop",
                                 command, argv))
    return RunbookPlan(path, book.title or path.stem, dict(book.front_matter or {}), request.site, steps)


def run(request: RunbookRequest, planned: RunbookPlan | None = None) -> RunbookResult:
    """Plan (unless given), record, lock the site, and run every step; return what happened.

    Raises OperationRefused before any step runs (bad runbook or values, the site locked by another run).
    """
    from lpse_ops.state import StateStore

    planned = planned or plan(request)
    say = request.progress or (lambda _text: None)
    store = StateStore.open(request.state_url or config.state_url())
    actor = config.actor()
    try:
        args = {"runbook": planned.path.stem, "path": str(planned.path), "site": request.site,
                "values": {key: value for key, value in request.values.items()}, "yes": request.yes,
                "inventory": str(request.inventory)}
        run_id = store.start_run(OPERATION, args, [request.site], actor=actor,
                                 parent_id=request.parent_id or operation.parent_run())
        _lock(store, request.site, run_id, actor)
        outcomes: list[StepOutcome] = []
        result, failed_step = "ok", None
        try:
            for step in planned.steps:
                if not request.yes and not (request.confirm and request.confirm(step)):
                    outcomes.append(StepOutcome(step, "declined"))
                    store.audit_append("runbook.step.declined", {"run_id": run_id, "step": step.id}, actor)
                    result, failed_step = "aborted", step.id
                    break
                say(f"step {step.number}/{len(planned.steps)} {step.id}: {step.command}")
                outcome = _run_step(store, request, run_id, step)
                outcomes.append(outcome)
                if outcome.status != "failed":
                    continue
                go_on = step.on_failure == "continue" or (
                    step.on_failure == "ask" and request.decide is not None and request.decide(step, outcome))
                outcome.decision = "continue" if go_on else "stop"
                store.audit_append("runbook.step.failed", {"run_id": run_id, "step": step.id,
                                                           "exit_code": outcome.exit_code,
                                                           "on_failure": step.on_failure,
                                                           "decision": outcome.decision}, actor)
                say(f"step {step.id} failed (exit {outcome.exit_code}): on_failure={step.on_failure}, "
                    f"{'going on' if go_on else 'stopping'}")
                if not go_on:
                    result, failed_step = "failed", step.id
                    break
        except BaseException:
            store.finish_run(run_id, "aborted", {}, summary={"error": "interrupted or crashed",
                                                             "steps": [o.as_dict() for o in outcomes]})
            raise
        finally:
            store.release_sites([request.site], run_id=run_id, holder=actor)
        result, failed_step = finished_result(outcomes, result, failed_step)
        outcome_result = RunbookResult(run_id, planned, outcomes, result, failed_step, RESULT_EXIT_CODES[result])
        summary = outcome_result.as_dict()
        store.finish_run(run_id, "ok" if result == "ok" else result if result == "aborted" else "failed",
                         {request.site: {"status": "ok" if result == "ok" else "failed",
                                         "failed": int(result != "ok"), "failed_step": failed_step}},
                         summary={key: summary[key] for key in ("runbook", "result", "failed_step",
                                                                "continued_failures", "targets")})
        return outcome_result
    finally:
        store.close()


def step_status(exit_code: int | None) -> str:
    """Return a step's status from its command's exit code: ok (0), warning (WARNING_EXIT_CODES), else failed."""
    return "ok" if exit_code == 0 else "warning" if exit_code in WARNING_EXIT_CODES else "failed"


def finished_result(outcomes: list[StepOutcome], result: str, failed_step: str | None) -> tuple[str, str | None]:
    """Return the run's result and failed step once the loop is over (pure).

    *result* / *failed_step*: what the loop decided (``ok``, or where it stopped). A run that reached its
    end ``ok`` but passed a failed step is ``completed_with_failures``, naming the first such step.
    """
    if result != "ok":
        return result, failed_step
    passed = [outcome.step.id for outcome in outcomes if outcome.status == "failed" and outcome.decision == "continue"]
    return ("completed_with_failures", passed[0]) if passed else ("ok", None)


def _lock(store: Any, site: str, run_id: int, actor: str) -> None:
    """Hold *site* for run *run_id*, unless a run above it (a drill) already holds it."""
    mine = operation.lineage(store, run_id)
    if any(lock["site"] == site and lock["run_id"] in mine for lock in store.list_locks()):
        return
    operation.lock_hosts(store, OPERATION, [site], run_id, actor)


def _run_step(store: Any, request: RunbookRequest, parent_run_id: int, step: PlannedStep) -> StepOutcome:
    """Run one step as ``lpse-ops ...`` and record it as a child run; never raises for a failing command."""
    step_run = store.start_run(STEP_OPERATION, {"step": step.id, "number": step.number, "action": step.action,
                                                "on_failure": step.on_failure, "command": step.command,
                                                "section": step.section}, [request.site], parent_id=parent_run_id)
    env = dict(os.environ, LPSE_OPS_PARENT_RUN=str(step_run), LPSE_OPS_INVENTORY=str(request.inventory))
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
    started_at = datetime.now(UTC)
    started = time.monotonic()
    exit_code: int | None
    try:
        with subprocess.Popen([*cli_argv(), *step.argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env, errors="replace") as process:
            assert process.stdout is not None
            watchdog = threading.Timer(request.step_timeout_s, process.kill)
            watchdog.start()
            try:
                for line in process.stdout:
                    tail.append(line.rstrip("\n"))
                    if request.output:
                        request.output(line.rstrip("\n"))
                exit_code = process.wait()
            finally:
                watchdog.cancel()
            if time.monotonic() - started >= request.step_timeout_s:
                tail.append(f"[lpse-ops runbook run: step killed after {request.step_timeout_s:.0f} s]")
    except OSError as error:
        tail.append(f"cannot start the step: {error}")
        exit_code = None
    except BaseException:
        store.finish_run(step_run, "aborted", {}, summary={"error": "interrupted", "output_tail": "\n".join(tail)})
        raise
    duration = time.monotonic() - started
    status = step_status(exit_code)
    outcome = StepOutcome(step, status, exit_code, duration, "\n".join(tail), step_run, started_at=started_at,
                          finished_at=datetime.now(UTC))
    store.finish_run(step_run, "failed" if status == "failed" else "ok",
                     {request.site: {"status": status, "failed": int(status == "failed"), "exit_code": exit_code,
                                     "duration_s": round(duration, 1)}},
                     summary={"command": step.command, "exit_code": exit_code, "status": status,
                              "duration_s": round(duration, 1), "output_tail": outcome.output_tail})
    return outcome
