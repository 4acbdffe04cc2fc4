"""Run one fleet operation (a playbook of this project) end to end.

Validate the inventory, resolve the target hosts, record the run in the state store and the audit
log, lock the sites when the operation changes them (one install, upgrade, restore or drill per site
at a time, across operators sharing a store), run the playbook through ansible-runner with live
progress, release the locks, and return what happened.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lpse_ops import config
from lpse_ops.actions import fleet, integrity
from lpse_ops.actions.fleet import OperationRefused
from lpse_ops.backends import ansible
from lpse_ops.runner_events import PlayTracker

if TYPE_CHECKING:
    from lpse_ops.state import StateStore

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_HOSTS_FAILED = 3
EXIT_HOSTS_UNREACHABLE = 4


ProgressFactory = Callable[[PlayTracker, str], AbstractContextManager[Callable[[dict], None]]]
"""What shows a run's progress: given the tracker and a title, a context that yields the event callback.

The command layer supplies it (``lpse_ops.progress.live``); an action never draws on the screen."""


@contextmanager
def quiet(tracker: PlayTracker, _title: str) -> Iterator[Callable[[dict], None]]:
    """No display: events only feed the tracker."""
    yield tracker.feed


@dataclass
class OperationContext:
    """What to run and where (results come from the playbook's typed records).

    ``lock_sites``: the operation changes the sites (install, restore, upgrade, drill), so it holds
    the state store's site lock on every target host from just after the run is recorded until it
    ends; a site another run holds refuses the operation before anything runs. ``parent_id``: the run
    this one is a step of (an upgrade wave of its rollout), which then holds the locks.
    """

    operation: str
    playbook: str
    inventory: Path
    limit: str | None = None
    extravars: dict = field(default_factory=dict)
    check: bool = False
    forks: int = 10
    group: str = "sites"
    state_url: str | None = None
    progress: ProgressFactory | None = None
    record_args: dict = field(default_factory=dict)
    validate_for: str | None = None
    lock_sites: bool = False
    parent_id: int | None = None
    fleet: fleet.Fleet | None = None


@dataclass
class OperationResult:
    """What a run did: per-host states, the overall result, the exit code, and where its artifacts are."""

    run_id: int | None
    hosts: list[str]
    tracker: PlayTracker
    result: str
    exit_code: int
    duration_s: float
    artifact_dir: str

    def as_dict(self) -> dict:
        return {"run_id": self.run_id, "result": self.result, "exit_code": self.exit_code,
                "duration_s": round(self.duration_s, 1), "artifact_dir": self.artifact_dir,
                "hosts": {name: state.as_dict() for name, state in sorted(self.tracker.hosts.items())}}


def run(ctx: OperationContext) -> OperationResult:
    """Validate, record, lock, run and summarise one operation.

    The inventory is read through :func:`fleet.read` unless the caller passes the Fleet it already read for
    its plan (``ctx.fleet``: then nothing is read again, and the run targets that fleet's hosts and limit).

    Raises OperationRefused on bad input, or when a target site is locked by another run (that run,
    its holder and since when are named; this run is then recorded as aborted, no host touched).
    """
    from lpse_ops.state import StateStore

    if ctx.fleet is not None:  # read once by the caller: its limit is the one its hosts were matched with
        ctx = dataclasses.replace(ctx, limit=ctx.fleet.limit)
    read = ctx.fleet or fleet.read(ctx.inventory, limit=ctx.limit, validate_for=ctx.validate_for or ctx.operation,
                                   group=ctx.group)
    hosts = read.hosts
    store = StateStore.open(ctx.state_url or config.state_url())
    try:
        actor = config.actor()
        args = {"inventory": str(ctx.inventory), "limit": ctx.limit, "check": ctx.check, **ctx.record_args}
        run_id = store.start_run(ctx.operation, args, hosts, actor=actor, parent_id=ctx.parent_id or parent_run())
        if ctx.lock_sites:
            lock_hosts(store, ctx.operation, hosts, run_id, actor)
        try:
            return _run_playbook(ctx, store, run_id, hosts)
        finally:
            if ctx.lock_sites:
                store.release_sites(hosts, run_id=run_id, holder=actor)
    finally:
        store.close()


def refuse_if_locked(operation: str, hosts: list[str], args: dict, state_url: str | None = None) -> None:
    """Refuse *operation* on *hosts* before anything else happens (a plan, a prompt, an offsite copy)
    when another run holds any of them; the refused attempt is recorded as an aborted run.

    Holding nothing: the operation takes its locks later, in :func:`run`.
    """
    from lpse_ops.state import StateStore
    from lpse_ops.state.store import SiteLockedError

    store = StateStore.open(state_url or config.state_url())
    try:
        held = [lock for lock in others_locks(store) if lock["site"] in hosts]
        if held:
            _abort_as_refused(store, store.start_run(operation, args, hosts, parent_id=parent_run()),
                              SiteLockedError(held))
    finally:
        store.close()


def parent_run() -> int | None:
    """The run this process is a step of (``LPSE_OPS_PARENT_RUN``, set by ``runbook run`` for its steps)."""
    from lpse_ops import settings

    return settings.current().parent_run


def others_locks(store: StateStore) -> list[dict]:
    """The site locks held by runs other than this process's own lineage (a drill's or a runbook's locks are
    its steps' own)."""
    mine = lineage(store, parent_run())
    return [lock for lock in store.list_locks() if lock["run_id"] not in mine]


def lineage(store: StateStore, run_id: int | None) -> set[int]:
    """Run *run_id* and its ancestors (``parent_id`` chain): the runs whose site locks a step of it works under
    (a drill holds the site; its runbook run and each step's own run lock nothing more). Empty for None."""
    found: set[int] = set()
    while run_id is not None and run_id not in found and len(found) < 32:
        found.add(run_id)
        try:
            run_id = store.get_run(run_id).get("parent_id")
        except LookupError:
            break
    return found


def _abort_as_refused(store: StateStore, run_id: int, error: Exception) -> None:
    """Finish *run_id* as aborted by a site lock and raise OperationRefused naming every lock in the way."""
    store.finish_run(run_id, "aborted", {}, None, summary={"refused": "site locked", "locks": error.locks})
    raise OperationRefused(f"{error}\nno host was touched (run {run_id} recorded as aborted)") from error


def lock_hosts(store: StateStore, operation: str, hosts: list[str], run_id: int, actor: str) -> None:
    """Take the site lock on *hosts* for run *run_id*, all or none.

    On a site locked by another run, finish *run_id* as aborted (the refusal in its summary) and
    raise OperationRefused naming every lock in the way.
    """
    from lpse_ops.state.store import SiteLockedError

    mine = lineage(store, parent_run())
    inherited = {lock["site"] for lock in store.list_locks() if lock["run_id"] in mine}
    try:
        store.acquire_sites([host for host in hosts if host not in inherited], operation, run_id=run_id, holder=actor)
    except SiteLockedError as error:
        _abort_as_refused(store, run_id, error)
    except BaseException:
        store.finish_run(run_id, "aborted", {}, None, summary={"error": "interrupted while locking the sites"})
        store.release_sites(hosts, run_id=run_id, holder=actor)
        raise


def _run_playbook(ctx: OperationContext, store: StateStore, run_id: int, hosts: list[str]) -> OperationResult:
    """Run *ctx*'s playbook with live progress and record how run *run_id* ended."""
    tracker = PlayTracker()
    started = time.monotonic()
    artifact_dir = ""
    try:
        with (ctx.progress or quiet)(tracker, f"{ctx.operation}: {len(hosts)} host(s)") as on_event:
            outcome = ansible.run_playbook(ctx.playbook, ctx.inventory, on_event, limit=ctx.limit,
                                           extravars=ctx.extravars, check=ctx.check, forks=ctx.forks)
        artifact_dir = outcome.artifact_dir
    except BaseException:
        store.finish_run(run_id, "aborted", {}, artifact_dir or None, summary={"error": "interrupted or crashed"})
        raise
    duration = time.monotonic() - started
    states = tracker.hosts
    if any(s.unreachable for s in states.values()):
        result, code = "failed", EXIT_HOSTS_UNREACHABLE
    elif any(s.failed for s in states.values()) or outcome.rc != 0:
        result, code = "failed", EXIT_HOSTS_FAILED
    else:
        result, code = "ok", EXIT_OK
    host_results = {name: s.as_dict() for name, s in states.items()}
    refreshed = integrity.refreshes(tracker.records)
    for host, refresh in refreshed.items():
        host_results.setdefault(host, {})["integrity_baseline"] = refresh
    store.finish_run(run_id, result, host_results, artifact_dir,
                     summary={"hosts": tracker.summary(), "runner_status": outcome.status, "rc": outcome.rc})
    actor = store.get_run(run_id).get("actor")
    for host, refresh in refreshed.items():
        detail = integrity.audit_detail(run_id, ctx.operation, host, refresh)
        if detail is not None:
            store.audit_append(integrity.AUDIT_OPERATION, detail, actor)
    return OperationResult(run_id, hosts, tracker, result, code, duration, artifact_dir)
