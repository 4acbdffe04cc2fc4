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

import hashlib
import http.client
import json
import os
import shlex
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lpse_ops import config, runbooks
from lpse_ops.actions import drill_rebuild, drill_upgrade, operation, runbook_run
from lpse_ops.actions.operation import OperationRefused
from lpse_ops.backends import ansible

OPERATION = "drill.run"
DRILLABLE_ENVIRONMENTS = ("lab", "staging")
MARKER_AGENCY = "lpse-ops drill"
ARCHIVE_WAIT_S = 180.0
"""How long the drill waits for the WAL archive to pass the recovery point (archive_timeout is 30 s)."""
HEALTH_WAIT_S = 180.0


@dataclass(frozen=True)
class Scenario:
    """What a scenario breaks and how the drill fills its runbook."""

    name: str
    description: str


SCENARIOS: dict[str, Scenario] = {
    "rows-deleted": Scenario("rows-deleted", "DELETE of the marker tenders and their documents' rows via psql; "
                                             "point-in-time recovery to the second before the DELETE"),
    "documents-lost": Scenario("documents-lost", "rm -rf of the documents folder; database and documents back to "
                                                 "the last documents snapshot"),
    "database-corrupted": Scenario("database-corrupted", "PostgreSQL stopped and its data files overwritten; "
                                                         "point-in-time recovery to the last archived WAL"),
}


SCENARIOS.update({name: Scenario(name, text) for name, text in drill_rebuild.DESCRIPTIONS.items()})
SCENARIOS[drill_upgrade.SCENARIO] = Scenario(drill_upgrade.SCENARIO, drill_upgrade.DESCRIPTION)
SAME_VERSION = (drill_upgrade.SCENARIO, "server-lost")
"""Scenarios whose recovered site must serve the release it ran before the fault (check ``verify-version``):
a failed upgrade's rollback, and a rebuilt server (a reinstall of another release is no recovery)."""


class DrillRefused(OperationRefused):
    """The drill was refused before anything was touched; the message says why and what to do."""


@dataclass
class DrillRequest:
    """Which scenario to drill on which site."""

    scenario: str
    site: str
    inventory: Path
    target_time: datetime | None = None
    """Override the recovery point the drill would choose (e.g. before the oldest backup: a made-to-fail drill)."""
    upgrade: drill_upgrade.UpgradeFault | None = None
    """failed-upgrade only: the release that breaks the site (``--to``, ``--releases``, ``--trusted-keys``)."""
    marker_interval_s: float = 1.0
    warmup_markers: int = 10
    """Markers acknowledged before the fault is injected."""
    state_url: str | None = None
    progress: Callable[[str], None] | None = None
    step_output: Callable[[str], None] | None = None


@dataclass
class DrillResult:
    """A finished drill, as recorded (``state.drills`` keys) plus the runbook run and the markers."""

    drill: dict[str, Any]
    runbook: dict[str, Any] | None
    markers: dict[str, Any]
    last_drill_line: str

    @property
    def ok(self) -> bool:
        return bool(self.drill.get("ok"))

    def as_dict(self) -> dict[str, Any]:
        return {**self.drill, "runbook": self.runbook, "markers": self.markers,
                "last_drill_line": self.last_drill_line}


# -- where and whether -----------------------------------------------------------------------------


def drillable(hostvars: dict[str, Any]) -> tuple[bool, str]:
    """Whether a site may be drilled (a fault is injected for real), and why (pure)."""
    allowed = hostvars.get("site_drill_allowed")
    environment = str(hostvars.get("lpse_environment") or "")
    if isinstance(allowed, str):
        allowed = allowed.strip().lower() in ("1", "true", "yes", "on")
    if allowed is True:
        return True, "site_drill_allowed is true"
    if allowed is False:
        return False, "site_drill_allowed is false"
    if environment in DRILLABLE_ENVIRONMENTS:
        return True, f"lpse_environment is {environment}"
    return False, (f"lpse_environment is {environment or 'unset'} and site_drill_allowed is not set: a drill "
                   "injects a real fault, so only lab and staging sites, or sites with site_drill_allowed: true, "
                   "may be drilled")


def site_url(hostvars: dict[str, Any]) -> str:
    """The site's HTTPS base URL as the control machine reaches it (``site_drill_url``; the lab's port)."""
    if hostvars.get("site_drill_url"):
        return str(hostvars["site_drill_url"]).rstrip("/")
    host = hostvars.get("ansible_host") or "127.0.0.1"
    port = hostvars.get("lab_https_port")
    return f"https://{host}:{port}" if port else f"https://{host}"


# -- measurements (pure) ---------------------------------------------------------------------------


def _at(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def rpo_seconds(acks: list[dict[str, Any]], present: set[int], fault_at: datetime, ack_key: str) -> float | None:
    """The recovery point gap for one kind of write (pure).

    *acks*: the marker log (``seq``, and the ack time under *ack_key*); *present*: the sequence numbers
    found after recovery. The gap runs from the last write acknowledged before *fault_at* to the last
    acknowledged write that is present (0 when that one survived); with none present, back to the first
    write's acknowledgement (a lower bound). None when nothing was acknowledged before the fault.
    """
    before = [ack for ack in acks if ack.get(ack_key) and _at(ack[ack_key]) <= fault_at]
    if not before:
        return None
    last = max(before, key=lambda ack: ack["seq"])
    survivors = [ack for ack in before if ack["seq"] in present]
    if not survivors:
        return round((_at(last[ack_key]) - _at(before[0][ack_key])).total_seconds(), 3)
    newest = max(survivors, key=lambda ack: ack["seq"])
    return round(max(0.0, (_at(last[ack_key]) - _at(newest[ack_key])).total_seconds()), 3)


def targets_met(measured: dict[str, float | None], targets: dict[str, Any]) -> bool:
    """Every measured figure is at or under its target (a missing measurement is not met) (pure)."""
    for key in ("rto_s", "rpo_db_s", "rpo_docs_s"):
        target = targets.get(key)
        if target is None:
            continue
        if measured.get(key) is None or measured[key] > target:
            return False
    return True


def last_drill_line(finished_at: datetime) -> str:
    """The runbook front-matter line to paste after a drill whose targets were met (pure)."""
    return f"last_drill: {finished_at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


def floor_second(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)


# -- the site, over SSH ----------------------------------------------------------------------------


class SiteShell:
    """Root shell commands on one site through OpenSSH with the inventory's connection settings, over one
    multiplexed connection (ControlMaster) kept for the drill: one handshake, not one per command."""

    def __init__(self, host: str, hostvars: dict[str, Any]) -> None:
        import tempfile

        from lpse_ops.site_facts import site_facts

        self.host = host
        self.facts = site_facts(hostvars)  # where the database and documents live on this site (not the lab's)
        self.control_dir = tempfile.mkdtemp(prefix="lpse-drill-ssh-")
        self.argv = ssh_argv(hostvars, f"{self.control_dir}/c")

    def run(self, script: str, timeout: float = 300.0, check: bool = True) -> str:
        """Run *script* with bash as root (sudo -n) and return its stdout; raise RuntimeError if it fails."""
        try:
            done = subprocess.run([*self.argv, f"sudo -n bash -c {shlex.quote(script)}"], capture_output=True,
                                  text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as error:
            raise RuntimeError(f"on {self.host}: no answer within {timeout:.0f} s") from error
        if check and done.returncode != 0:
            raise RuntimeError(f"on {self.host}: exit {done.returncode}: {(done.stderr or done.stdout).strip()[-400:]}")
        return done.stdout

    def sql(self, query: str, timeout: float = 120.0) -> str:
        return self.run(f"runuser -u postgres -- psql -d {shlex.quote(self.facts.db_name)} -AtX -v ON_ERROR_STOP=1 "
                        f"-c {shlex.quote(query)}", timeout).strip()

    def close(self) -> None:
        import shutil

        subprocess.run([*self.argv[:-1], "-O", "exit", self.argv[-1]], capture_output=True, timeout=30,
                       check=False)
        shutil.rmtree(self.control_dir, ignore_errors=True)


def ssh_argv(hostvars: dict[str, Any], control_path: str) -> list[str]:
    """The ``ssh`` argv (without the remote command) that reaches a host as Ansible would (pure)."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "ServerAliveInterval=15",
            "-o", "ControlMaster=auto", "-o", f"ControlPath={control_path}", "-o", "ControlPersist=300"]
    if hostvars.get("ansible_port"):
        argv += ["-p", str(hostvars["ansible_port"])]
    if hostvars.get("ansible_ssh_private_key_file"):
        argv += ["-i", str(hostvars["ansible_ssh_private_key_file"])]
    argv += shlex.split(f"{hostvars.get('ansible_ssh_common_args', '')} {hostvars.get('ansible_ssh_extra_args', '')}")
    address = str(hostvars.get("ansible_host") or "localhost")
    user = hostvars.get("ansible_user")
    return [*argv, f"{user}@{address}" if user else address]


def consistency_script(docs_dir: str, db_name: str) -> str:
    """Print every stored_path the database references whose file is missing or differs, then the count."""
    docs, db = shlex.quote(docs_dir), shlex.quote(db_name)
    return (f"cd {docs} && runuser -u postgres -- psql -d {db} -AtX -F ' ' "  # noqa: S608 - site facts, quoted
            "-c \"SELECT sha256, stored_path FROM documents\" | awk '{print $1 \"  \" $2}' "
            "| sha256sum --check --quiet 2>/dev/null | sed -n 's/: FAILED.*$//p'; "
            f"echo \"referenced $(runuser -u postgres -- psql -d {db} -AtX -c 'SELECT count(*) FROM documents')\"")


def consistency(shell: SiteShell) -> dict[str, Any]:
    """Every document the site's database references, checked against its sha256 (the restore's own rule)."""
    out = shell.run(consistency_script(shell.facts.spse_docs_dir, shell.facts.db_name), timeout=1800)
    lines = [line for line in out.splitlines() if line.strip()]
    referenced = next((int(line.split()[1]) for line in lines if line.startswith("referenced ")), None)
    bad = [line.strip() for line in lines if not line.startswith("referenced ")]
    return {"referenced": referenced, "not_matching": bad, "not_matching_count": len(bad)}


# -- the marker workload ---------------------------------------------------------------------------


class MarkerWorkload:
    """One tender and one document every *interval* s through the site's HTTPS API, in a thread.

    Every acknowledged write is appended to *log_path* (JSON lines: seq, tender code and ack time,
    document name, sha256 and ack time). The site's certificate is not verified (a fresh site's nginx
    certificate is self-signed); nothing secret is sent.
    """

    def __init__(self, base_url: str, prefix: str, log_path: Path, interval: float = 1.0) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 443
        self.prefix = prefix
        self.log_path = log_path
        self.interval = interval
        self.acks: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="drill-markers", daemon=True)
        self.lock = threading.Lock()
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE
        self.conn: http.client.HTTPSConnection | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)

    def acked(self) -> int:
        with self.lock:
            return sum(1 for ack in self.acks if ack.get("doc_ack"))

    def _request(self, method: str, path: str, body: bytes, content_type: str) -> tuple[int, dict]:
        if self.conn is None:
            self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=10)
        try:
            self.conn.request(method, path, body=body, headers={"Content-Type": content_type})
            answer = self.conn.getresponse()
            data = answer.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise
        try:
            return answer.status, json.loads(data or b"{}")
        except ValueError:
            return answer.status, {}

    def _write(self, seq: int) -> dict[str, Any] | None:
        code = f"{self.prefix}-{seq:06d}"
        written = datetime.now(UTC).isoformat(timespec="microseconds")
        status, tender = self._request("POST", "/tenders", json.dumps(
            {"code": code, "title": f"Drill marker {seq} written {written}", "agency": MARKER_AGENCY}).encode(),
            "application/json")
        if status != 201:
            raise RuntimeError(f"tender {code}: HTTP {status} {tender.get('error', '')}")
        record: dict[str, Any] = {"seq": seq, "tender_code": code, "tender_id": tender.get("id"), "written": written,
                                  "tender_ack": datetime.now(UTC).isoformat(timespec="microseconds")}
        content = f"drill marker {seq} {code} written {written}\n".encode() + os.urandom(1024)
        name = f"{code}.txt"
        status, document = self._request("POST", f"/tenders/{tender.get('id')}/documents?name={name}", content,
                                         "application/octet-stream")
        if status == 201:
            record.update(doc_name=name, doc_sha256=hashlib.sha256(content).hexdigest(),
                          doc_ack=datetime.now(UTC).isoformat(timespec="microseconds"))
        return record

    def _loop(self) -> None:
        seq = 0
        with self.log_path.open("a", encoding="utf-8") as log:
            while not self.stop_event.is_set():
                began = time.monotonic()
                seq += 1
                try:
                    record = self._write(seq)
                except (OSError, RuntimeError, http.client.HTTPException, ValueError) as error:
                    with self.lock:
                        self.errors.append(f"{datetime.now(UTC).isoformat(timespec='seconds')} seq {seq}: {error}")
                    record = None
                if record:
                    log.write(json.dumps(record, sort_keys=True) + "\n")
                    log.flush()
                    with self.lock:
                        self.acks.append(record)
                self.stop_event.wait(max(0.0, self.interval - (time.monotonic() - began)))
        if self.conn is not None:
            self.conn.close()


# -- the drill -------------------------------------------------------------------------------------


class _Timeline:
    def __init__(self, say: Callable[[str], None]) -> None:
        self.events: list[dict[str, Any]] = []
        self.say = say

    def add(self, event: str, at: datetime | None = None, **detail: Any) -> datetime:
        moment = at or datetime.now(UTC)
        self.events.append({"at": moment.isoformat(timespec="milliseconds"), "event": event, **detail})
        self.say(f"{moment.astimezone(UTC).strftime('%H:%M:%S')} {event}"
                 + (f" {json.dumps(detail, default=str)}" if detail else ""))
        return moment


def _hostvars(inventory: Path, site: str) -> dict[str, Any]:
    try:
        listing = ansible.inventory_list(inventory)
    except ansible.AnsibleError as error:
        raise DrillRefused(str(error)) from error
    hostvars = (listing.get("_meta") or {}).get("hostvars") or {}
    if site not in hostvars or site not in operation.target_hosts(inventory, "sites", site):
        raise DrillRefused(f"{site} is not a site of the inventory {inventory}")
    return dict(hostvars[site])


def check(request: DrillRequest) -> tuple[dict[str, Any], runbook_run.RunbookPlan]:
    """Every refusal that needs no change on the site: scenario, drillable site, runbook lint."""
    if request.scenario not in SCENARIOS:
        raise DrillRefused(f"no drill scenario {request.scenario!r} (known: {', '.join(SCENARIOS)})")
    hostvars = _hostvars(request.inventory, request.site)
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
        timeline = _Timeline(say)
        started = timeline.add("drill_started", scenario=request.scenario, site=request.site)
        drill_id = drill_state.start_drill(store, request.scenario, request.site, targets, run_id=run_id,
                                           started_at=started)
        outcome: dict[str, Any] = {"ok": False, "failed_step": None}
        runbook_dict: dict[str, Any] | None = None
        markers: dict[str, Any] = {}
        measured: dict[str, float | None] = {"rto_s": None, "rpo_db_s": None, "rpo_docs_s": None}
        try:
            shell = SiteShell(request.site, hostvars)
            shell.run("true", timeout=60)  # the SSH connection is open before the fault, not during it
            prefix = f"DRILL{drill_id}"
            log_path = config.home() / "drills" / f"drill-{drill_id}-markers.jsonl"
            workload = MarkerWorkload(site_url(hostvars), prefix, log_path, request.marker_interval_s)
            workload.start()
            timeline.add("workload_started", url=site_url(hostvars), log=str(log_path))
            _wait_for(lambda: workload.acked() >= request.warmup_markers,
                      request.warmup_markers * request.marker_interval_s * 4 + 30,
                      f"{request.warmup_markers} markers acknowledged by the site")
            version_before = ((_health(hostvars) or {}).get("version")  # what the recovered site must serve
                              if request.scenario in SAME_VERSION else None)
            fault_at, values, upgraded = _inject(request, shell, prefix, timeline, run_id)
            rpo_cut = upgraded.returned_at if upgraded else fault_at  # writes acknowledged until then must survive
            workload.stop()
            timeline.add("workload_stopped", acknowledged=len(workload.acks), errors=len(workload.errors))
            values = _recovery_values(request, shell, values, timeline, fault_at)
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
            verified, markers, problem = _verify(shell, hostvars, prefix, workload.acks, rpo_cut, timeline)
            if problem is None and request.scenario in SAME_VERSION:
                problem = _verify_version(hostvars, version_before, timeline)
            measured["rpo_db_s"] = markers.get("rpo_db_s")
            measured["rpo_docs_s"] = markers.get("rpo_docs_s")
            if outcome["failed_step"] is None and problem is not None:
                outcome["failed_step"] = problem
            if verified and outcome["failed_step"] is None:  # a failed recovery has no recovery time
                measured["rto_s"] = round((verified - fault_at).total_seconds(), 1)
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


def runbook_verdict(book: runbook_run.RunbookResult) -> tuple[str | None, list[dict[str, Any]]]:
    """Return the step a drill's runbook stopped at (None when it ran to its end) and the steps that failed
    and were passed by their policy, each ``{step, section, exit_code}`` (pure).

    A passed failure does not fail the drill (a diagnosis probe of a broken site is expected to fail; the
    drill's own checks judge the recovery) but the drill records and shows it.
    """
    stopped_at = book.failed_step if book.result in runbook_run.STOPPED_RESULTS else None
    passed = [{"step": outcome.step.id, "section": outcome.step.section, "exit_code": outcome.exit_code}
              for outcome in book.continued_failures]
    return stopped_at, passed


def _wait_for(condition: Callable[[], bool], bound_s: float, what: str, every_s: float = 0.5) -> None:
    """Poll *condition* until true, at most *bound_s* seconds; raise RuntimeError naming *what* otherwise."""
    deadline = time.monotonic() + bound_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up after {bound_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def _inject(request: DrillRequest, shell: SiteShell, prefix: str, timeline: _Timeline, run_id: int
            ) -> tuple[datetime, dict[str, str], drill_upgrade.Injected | None]:
    """Inject the scenario's fault for real; return the fault moment (control clock), the values it knows and,
    for failed-upgrade, the upgrade as it ran."""
    if request.scenario == drill_upgrade.SCENARIO and request.upgrade is not None:
        timeline.add("fault_injecting", fault=f"upgrade to {request.upgrade.to_version}")
        upgraded = drill_upgrade.inject(request.site, request.inventory, request.upgrade, run_id,
                                        runbook_run.cli_argv())
        timeline.add("fault_injected", at=upgraded.started_at, fault=upgraded.describe())
        timeline.add("upgrade_returned", at=upgraded.returned_at, outcome=upgraded.outcome, rollout=upgraded.rollout,
                     exit_code=upgraded.exit_code)
        return upgraded.started_at, {"rollout": str(upgraded.rollout)}, upgraded
    if request.scenario in drill_rebuild.INJECT:  # server-lost, ransomware: actions/drill_rebuild.py
        fault_at, values, what = drill_rebuild.INJECT[request.scenario](
            request.site, shell, _hostvars(request.inventory, request.site))
        timeline.add("fault_injected", at=fault_at, fault=what)
        return fault_at, values, None
    fault_at = datetime.now(UTC)
    if request.scenario == "rows-deleted":
        out = shell.sql(
            "BEGIN; SELECT to_char(transaction_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'); "  # noqa: S608
            f"DELETE FROM documents WHERE tender_id IN (SELECT id FROM tenders WHERE code LIKE '{prefix}-%'); "
            f"DELETE FROM tenders WHERE code LIKE '{prefix}-%'; COMMIT;")  # the prefix is DRILL<int>
        lines = [line for line in out.splitlines() if line.strip()]
        stamp = next(line for line in lines if line[:1].isdigit() and "T" in line)
        deleted_at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        timeline.add("fault_injected", at=fault_at, fault="DELETE of the marker tenders and documents",
                     database_time=deadline_text(deleted_at), result=" ".join(line for line in lines if line != stamp))
        return fault_at, {"target_time": floor_second(deleted_at).strftime("%Y-%m-%dT%H:%M:%SZ")}, None
    if request.scenario == "documents-lost":
        # SPSE recreates the folder for an upload arriving meanwhile (the workload's): remove until it is gone
        docs = shell.facts.spse_docs_dir
        shell.run(f"for attempt in 1 2 3 4 5 6 7 8 9 10; do rm -rf {shlex.quote(docs)} 2>/dev/null && exit 0; "
                  "sleep 0.1; done; exit 1")
        timeline.add("fault_injected", at=fault_at, fault=f"rm -rf {docs}")
        return fault_at, {}, None
    if request.scenario == "database-corrupted":
        data = shlex.quote(shell.facts.pg_data_dir)
        shell.run(f"systemctl stop {shlex.quote(shell.facts.pg_unit)} && "
                  f"for f in $(find {data}/base {data}/global -type f "
                  "-size +8k | head -200); do dd if=/dev/urandom of=$f bs=8192 count=2 conv=notrunc status=none; "
                  "done")
        timeline.add("fault_injected", at=fault_at, fault="PostgreSQL stopped; 16 KiB of random bytes written over "
                                                          "the first pages of up to 200 data files")
        return fault_at, {}, None
    raise DrillRefused(f"no fault for scenario {request.scenario}")


def deadline_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _recovery_values(request: DrillRequest, shell: SiteShell, values: dict[str, str], timeline: _Timeline,
                     fault_at: datetime) -> dict[str, str]:
    """The runbook's placeholder values, as the operator would choose them; waits for the WAL archive."""
    if request.scenario == "documents-lost":
        snapshot = _last_snapshot(shell, before=fault_at)
        values = {"target_time": floor_second(snapshot).strftime("%Y-%m-%dT%H:%M:%SZ")}
        timeline.add("recovery_point_chosen", reason="the last documents snapshot before the loss (a later one "
                     "holds the emptied folder)", snapshot=snapshot.isoformat())
    elif request.scenario == "database-corrupted":
        archived = _newest_archived_segment_time(shell)
        target = floor_second(archived) - timedelta(seconds=5)
        values = {"target_time": target.strftime("%Y-%m-%dT%H:%M:%SZ")}
        timeline.add("recovery_point_chosen", reason="5 s before the newest WAL segment in the local repository "
                     "(PostgreSQL is down: what is not archived is lost)", newest_segment=archived.isoformat())
    if request.target_time is not None:
        values = {"target_time": request.target_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        timeline.add("recovery_point_overridden", target_time=values["target_time"])
    elif request.scenario in ("rows-deleted", "documents-lost"):
        target = datetime.fromisoformat(values["target_time"].replace("Z", "+00:00"))
        _wait_for(lambda: _last_archived_wal_time(shell) > target, ARCHIVE_WAIT_S,
                  f"the WAL archive to pass {values['target_time']}", every_s=3.0)
        timeline.add("wal_archived_past_target", target_time=values["target_time"])
    return values


def _last_archived_wal_time(shell: SiteShell) -> datetime:
    """When PostgreSQL last archived a WAL segment (pg_stat_archiver; while it runs) or pgBackRest's newest WAL."""
    out = shell.sql("SELECT to_char(last_archived_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') "
                    "FROM pg_stat_archiver")
    if not out:
        return datetime.fromtimestamp(0, UTC)
    return datetime.fromisoformat(out).replace(tzinfo=UTC)


def _newest_archived_segment_time(shell: SiteShell) -> datetime:
    """When the newest WAL segment reached the local pgBackRest repository (its file's time), PostgreSQL down."""
    out = shell.run("path=$(sed -n 's/^repo1-path=//p' /etc/pgbackrest/pgbackrest.conf); "
                    "find \"${path:-/var/lib/pgbackrest}/archive\" -type f -regextype posix-extended "
                    "-regex '.*/[0-9A-F]{24}-[0-9a-f]+(\\.[a-z0-9]+)?' -printf '%T@\\n' | sort -n | tail -1").strip()
    if not out:
        raise RuntimeError("no archived WAL segment in the local pgBackRest repository")
    return datetime.fromtimestamp(float(out), UTC)


def _last_snapshot(shell: SiteShell, before: datetime) -> datetime:
    """The newest restic snapshot of the site's documents in the local repository taken *before* the loss."""
    data = json.loads(shell.run("lpse-backup list", timeout=300))
    times = [datetime.fromisoformat(snap["time"].replace("Z", "+00:00"))
             for snap in (data.get("restic") or {}).get("local") or [] if snap.get("time")]
    times = [moment for moment in times if moment < before]
    if not times:
        raise RuntimeError("no documents snapshot before the loss in the site's local restic repository")
    return max(times)


def _verify(shell: SiteShell, hostvars: dict[str, Any], prefix: str, acks: list[dict[str, Any]],
            fault_at: datetime, timeline: _Timeline) -> tuple[datetime | None, dict[str, Any], str | None]:
    """After the runbook: health, the documents' consistency and the surviving markers.

    Returns (the moment the data was verified, marker figures, the failed check or None).
    """
    figures: dict[str, Any] = {"acknowledged": len(acks)}
    try:
        _wait_for(lambda: _healthy(hostvars), HEALTH_WAIT_S, "the site to answer /health with status ok", every_s=1.0)
    except RuntimeError as error:
        timeline.add("verify_failed", check="health", error=str(error))
        return None, figures, "verify-health"
    timeline.add("serving")
    rows = shell.sql(f"SELECT t.code, d.sha256 FROM tenders t LEFT JOIN documents d ON d.tender_id = t.id "  # noqa: S608
                     f"WHERE t.code LIKE '{prefix}-%'")  # the prefix is DRILL<int>
    check = consistency(shell)
    bad = set(check["not_matching"])
    check["not_matching"] = check["not_matching"][:50]
    tenders: set[int] = set()
    documents: set[int] = set()
    expected = {ack["seq"]: ack.get("doc_sha256") for ack in acks}
    for line in rows.splitlines():
        code, _, sha = line.partition("|")
        seq = int(code.rsplit("-", 1)[1])
        tenders.add(seq)
        sha = sha.strip()
        # a marker document is present when its row is back with the sha256 written and its file matches it
        if sha and expected.get(seq) == sha and f"{sha[:2]}/{sha}" not in bad:
            documents.add(seq)
    verified_at = timeline.add("data_verified", referenced=check["referenced"],
                               not_matching=check["not_matching_count"], marker_tenders=len(tenders))
    figures.update(tenders_present=len(tenders), documents_present=len(documents),
                   last_tender_present=max(tenders, default=None), last_document_present=max(documents, default=None),
                   last_acknowledged_before_fault=max((ack["seq"] for ack in acks
                                                       if _at(ack["tender_ack"]) <= fault_at), default=None),
                   rpo_db_s=rpo_seconds(acks, tenders, fault_at, "tender_ack"),
                   rpo_docs_s=rpo_seconds(acks, documents, fault_at, "doc_ack"), consistency=check,
                   # no marker survived: the figure is only a lower bound (the loss began before the first marker)
                   rpo_db_lower_bound=not tenders, rpo_docs_lower_bound=not documents)
    if check["not_matching_count"]:
        return verified_at, figures, "verify-documents"
    return verified_at, figures, None


def _health(hostvars: dict[str, Any]) -> dict[str, Any] | None:
    """The site's ``/health`` answer through nginx, or None when it does not answer with JSON."""
    import urllib.request

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"{site_url(hostvars)}/health", context=context, timeout=5) as answer:  # noqa: S310
            data = json.loads(answer.read() or b"{}")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _healthy(hostvars: dict[str, Any]) -> bool:
    return ((_health(hostvars) or {}).get("status")) == "ok"


def _verify_version(hostvars: dict[str, Any], before: str | None, timeline: _Timeline) -> str | None:
    """After a failed upgrade or a rebuild: the site serves the version it ran before (None), else the failed
    check."""
    now = (_health(hostvars) or {}).get("version")
    if before is None or now != before:
        timeline.add("verify_failed", check="version", before=before, now=now)
        return "verify-version"
    timeline.add("version_verified", version=now)
    return None
