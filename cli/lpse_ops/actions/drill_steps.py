"""The steps of a DR drill on the site, in order: inject the scenario's fault for real, choose the runbook's
recovery point as the operator would (waiting for the WAL archive), and verify the recovery (health, the
documents' consistency, the surviving markers, the version served). Each step adds its events to the drill's
:class:`Timeline`; :func:`lpse_ops.actions.drill.run` calls them.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lpse_ops.actions import drill_rebuild, drill_upgrade, fleet, runbook_run
from lpse_ops.actions.drill_rules import deadline_text, floor_second, parse_at, rpo_seconds, site_url
from lpse_ops.actions.drill_types import DrillRefused, DrillRequest
from lpse_ops.backends import spse_http
from lpse_ops.backends.site_shell import SiteShell, consistency

ARCHIVE_WAIT_S = 180.0
"""How long the drill waits for the WAL archive to pass the recovery point (archive_timeout is 30 s)."""
HEALTH_WAIT_S = 180.0


class Timeline:
    """The drill's events, each with its time, told to *say* as they happen."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.events: list[dict[str, Any]] = []
        self.say = say

    def add(self, event: str, at: datetime | None = None, **detail: Any) -> datetime:
        moment = at or datetime.now(UTC)
        self.events.append({"at": moment.isoformat(timespec="milliseconds"), "event": event, **detail})
        self.say(f"{moment.astimezone(UTC).strftime('%H:%M:%S')} {event}"
                 + (f" {json.dumps(detail, default=str)}" if detail else ""))
        return moment


def site_hostvars(inventory: Path, site: str) -> dict[str, Any]:
    """Return *site*'s host variables from *inventory* (fleet.read); raise DrillRefused when it is not a site of it."""
    try:
        read = fleet.read_site(inventory, site, validate_for=None)
    except fleet.OperationRefused as error:
        raise DrillRefused(str(error)) from error
    if read is None:
        raise DrillRefused(f"{site} is not a site of the inventory {inventory}")
    return dict(read.hostvars(site))


def wait_for(condition: Callable[[], bool], bound_s: float, what: str, every_s: float = 0.5) -> None:
    """Poll *condition* until true, at most *bound_s* seconds; raise RuntimeError naming *what* otherwise."""
    deadline = time.monotonic() + bound_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up after {bound_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def inject(request: DrillRequest, shell: SiteShell, prefix: str, timeline: Timeline, run_id: int
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
            request.site, shell, site_hostvars(request.inventory, request.site))
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


def recovery_values(request: DrillRequest, shell: SiteShell, values: dict[str, str], timeline: Timeline,
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
        wait_for(lambda: _last_archived_wal_time(shell) > target, ARCHIVE_WAIT_S,
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


def verify(shell: SiteShell, hostvars: dict[str, Any], prefix: str, acks: list[dict[str, Any]],
            fault_at: datetime, timeline: Timeline) -> tuple[datetime | None, dict[str, Any], str | None]:
    """After the runbook: health, the documents' consistency and the surviving markers.

    Returns (the moment the data was verified, marker figures, the failed check or None).
    """
    figures: dict[str, Any] = {"acknowledged": len(acks)}
    try:
        wait_for(lambda: _healthy(hostvars), HEALTH_WAIT_S, "the site to answer /health with status ok", every_s=1.0)
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
                                                       if parse_at(ack["tender_ack"]) <= fault_at), default=None),
                   rpo_db_s=rpo_seconds(acks, tenders, fault_at, "tender_ack"),
                   rpo_docs_s=rpo_seconds(acks, documents, fault_at, "doc_ack"), consistency=check,
                   # no marker survived: the figure is only a lower bound (the loss began before the first marker)
                   rpo_db_lower_bound=not tenders, rpo_docs_lower_bound=not documents)
    if check["not_matching_count"]:
        return verified_at, figures, "verify-documents"
    return verified_at, figures, None


def site_health(hostvars: dict[str, Any]) -> dict[str, Any] | None:
    """The site's ``/health`` answer through nginx, or None when it does not answer with JSON."""
    return spse_http.health(site_url(hostvars))


def _healthy(hostvars: dict[str, Any]) -> bool:
    return ((site_health(hostvars) or {}).get("status")) == "ok"


def verify_version(hostvars: dict[str, Any], before: str | None, timeline: Timeline) -> str | None:
    """After a failed upgrade or a rebuild: the site serves the version it ran before (None), else the failed
    check."""
    now = (site_health(hostvars) or {}).get("version")
    if before is None or now != before:
        timeline.add("verify_failed", check="version", before=before, now=now)
        return "verify-version"
    timeline.add("version_verified", version=now)
    return None


HYDRATION_STATUS = "/var/lib/lpse-backup/hydration.json"
"""The site tool's record of a serve-first restore's hydration (site/hydrate.py; the backup role's state folder)."""
HYDRATION_WAIT_S = 6 * 3600.0
"""The longest the drill waits for the documents to be back (200 GB at 100 Mbit/s takes about 4.4 hours)."""


def follow_hydration(shell: SiteShell, book: runbook_run.RunbookResult, fault_at: datetime, timeline: Timeline,
                     link_mbit: float | None = None, bound_s: float = HYDRATION_WAIT_S) -> dict[str, Any] | None:
    """After a runbook whose restore served first: when SPSE served again (the restore step's end), when the first
    hydrated document and the last were in place; waits (bounded) for the hydration to end. None when the runbook
    restored without --serve-first."""
    restore = next((s for s in book.steps if s.step.action == "backup.restore" and "--serve-first" in s.step.argv
                    and s.status == "ok" and s.finished_at), None)
    if restore is None:
        return None
    figures: dict[str, Any] = {"rto_serving_s": round((restore.finished_at - fault_at).total_seconds(), 1),
                               "link_mbit": link_mbit}
    timeline.add("serving_again", at=restore.finished_at, step=restore.step.id)

    def read() -> dict[str, Any]:
        text = shell.run(f"cat {HYDRATION_STATUS} 2>/dev/null || true", timeout=60)
        return json.loads(text) if text.strip() else {}

    seen: dict[str, Any] = read()
    if not seen:
        figures["hydration"] = {"state": "none"}  # every document was back before SPSE opened
        return figures

    def ended() -> bool:
        seen.update(read())
        return seen.get("state") != "running"

    wait_for(ended, bound_s, "the documents' hydration to end", every_s=2.0)
    for key, event in (("first_document_at", "hydration_first_document"), ("finished_at", "hydrated")):
        moment = parse_at(seen[key]) if seen.get(key) else None
        if moment is not None:
            figures[key.replace("_at", "_s")] = round((moment - fault_at).total_seconds(), 1)
            timeline.add(event, at=moment, **({"state": seen.get("state"), "files": seen.get("files_total"),
                                               "bytes": seen.get("bytes_total")} if event == "hydrated" else {}))
    seconds = seen.get("hydration_s")
    figures["hydration"] = {key: seen.get(key) for key in ("state", "files_total", "bytes_total", "missing_count",
                                                           "runs", "hydration_s")}
    figures["hydration"]["rate_bytes_s"] = round(seen["bytes_total"] / seconds) if seconds else None
    figures["database"] = seen.get("database") or {}
    figures["first_bytes"] = (seen.get("first") or {}).get("first_bytes")
    return figures
