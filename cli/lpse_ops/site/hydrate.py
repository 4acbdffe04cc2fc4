"""Serve first, then hydrate (issue 20): the documents a restore left for later, brought back in the background.

A restore with ``--serve-first`` brings back the database and the documents that matter first (those of the
open tenders, :func:`choose_first`), opens SPSE, and leaves the rest to ``lpse-backup hydrate`` (the
``lpse-backup-hydrate`` service). What it leaves is written down once, in the plan (``hydration-plan.json``,
root's, in the state folder): the restic snapshot and, for each document, its id, path, size and sha256 as the
recovered database records them.

``hydrate`` works through the plan in batches (a ``restic restore --include`` of a batch into a root-only
scratch folder on the documents' filesystem); a file goes into place only when its sha256 is the database's
(``documents.bring_back``), so a document is either absent or right, never a wrong file. Progress is written
after every batch (``hydration.json``: files and bytes done, the rate, an estimated end), which ``lpse-backup
status`` reports and the fleet probe reads. Killed at any point, it starts again where the files on disk say it
is: a file in place was verified before it was renamed there. A document the snapshot lacks or holds with
another hash is looked for in the other snapshots; at the end, every document the database references is
checked against its sha256 (the full check of a restore), and the result is kept.

While the plan runs, nginx answers a request for a document that is not back yet with 503, ``Retry-After`` and
a page in Bahasa Indonesia (the nginx role's ``lpse-hydrating.conf``, linked into ``spse-hydration/`` by
:func:`open_gate`); the documents backups take deltas instead of full snapshots (``run.py``: a full one would
record the documents not back yet as gone).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lpse_ops.site import documents, engine, locking, postgres, restic, safefs
from lpse_ops.site.clock import from_epoch, iso, now_utc, parse_time
from lpse_ops.site.errors import Failure
from lpse_ops.site.proc import log, run
from lpse_ops.site.settings import Settings

PLAN_NAME = "hydration-plan.json"
STATUS_NAME = "hydration.json"
GATE_SNIPPET = "/etc/nginx/snippets/lpse-hydrating.conf"
"""The documents location that answers 503 for a file not back yet (written by the nginx role)."""
GATE_DIR = "/etc/nginx/spse-hydration"
"""Included by the site's server block: the gate is open while a link to the snippet is in it."""
GATE_LINK = os.path.join(GATE_DIR, "documents.conf")
BATCH_BYTES = 512 << 20
BATCH_FILES = 1000
FIRST_BYTES = 1 << 30
"""How much the restore brings back before SPSE opens (the open tenders' documents first), by default."""
RUNNING, DONE, INCOMPLETE = "running", "done", "incomplete"
UNIT = "lpse-backup-hydrate"
"""The transient systemd service the hydration runs in (``systemd-run``: no unit file, so a rebuilt server whose
backup setup has not run yet has it too)."""
TOOL = "/usr/local/sbin/lpse-backup"


@dataclass(frozen=True)
class Pending:
    """A document left for later: the database's row, and its size in the snapshot."""

    document: documents.Document
    size: int

    def as_dict(self) -> dict:
        return {"id": self.document.id, "sha256": self.document.sha256, "stored_path": self.document.stored_path,
                "size": self.size}

    @classmethod
    def from_dict(cls, data: dict) -> Pending:
        return cls(documents.Document(str(data["id"]), data["sha256"], data["stored_path"]), int(data["size"]))


# --- pure: what first, in which batches, how long still ----------------------------------------

def choose_first(referenced: list[documents.Document], sizes: dict[str, int], mtimes: dict[str, str],
                 priority_ids: list[str] | None, budget: int) -> tuple[list[documents.Document], str]:
    """Return (the documents to bring back before SPSE opens, how they were chosen).

    *sizes* and *mtimes* are the snapshot's files (paths under the documents folder); *priority_ids* the ids
    the release's query returned, in its order (None: the release declares none, or its schema cannot run it):
    then the newest files of the snapshot come first. Taken in that order while they fit *budget* bytes; a
    document the snapshot lacks is not taken here (the restore looks for it elsewhere before SPSE opens).
    """
    by_id = {d.id: d for d in referenced if d.stored_path in sizes}
    if priority_ids is not None:
        ordered = [by_id[i] for i in dict.fromkeys(priority_ids) if i in by_id]
        how = "the release's query (open tenders first)"
    else:
        ordered = sorted(by_id.values(), key=lambda d: (mtimes.get(d.stored_path, ""), int(d.id)), reverse=True)
        how = "the newest files of the snapshot"
    chosen, used = [], 0
    for document in ordered:
        size = sizes[document.stored_path]
        if used + size > budget:
            continue
        chosen.append(document)
        used += size
    return chosen, how


def batches(pending: list[Pending], max_bytes: int = BATCH_BYTES, max_files: int = BATCH_FILES) -> list[list[Pending]]:
    """Split *pending* in order into batches of at most *max_bytes* (a larger file alone) and *max_files*."""
    out: list[list[Pending]] = []
    current: list[Pending] = []
    size = 0
    for item in pending:
        if current and (size + item.size > max_bytes or len(current) >= max_files):
            out.append(current)
            current, size = [], 0
        current.append(item)
        size += item.size
    if current:
        out.append(current)
    return out


def estimate(bytes_total: int, bytes_done: int, bytes_this_run: int, seconds_this_run: float) -> dict:
    """The rate of this run and the seconds still needed at it (None before a first batch ended)."""
    if bytes_this_run <= 0 or seconds_this_run <= 0:
        return {"rate_bytes_s": None, "eta_s": None}
    rate = bytes_this_run / seconds_this_run
    return {"rate_bytes_s": round(rate), "eta_s": round(max(0, bytes_total - bytes_done) / rate, 1)}


def parse_listing(stdout: str, docs_dir: str) -> tuple[dict[str, int], dict[str, str]]:
    """The regular files under *docs_dir* in ``restic ls --json`` output: ({path: size}, {path: mtime}),
    paths relative to *docs_dir* (pure)."""
    prefix = docs_dir.rstrip("/") + "/"
    sizes: dict[str, int] = {}
    mtimes: dict[str, str] = {}
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        node = json.loads(line)
        path = node.get("path", "")
        if node.get("struct_type") != "node" or node.get("type") != "file" or not path.startswith(prefix):
            continue
        relative = node["path"][len(prefix):]
        sizes[relative] = int(node.get("size") or 0)
        mtimes[relative] = node.get("mtime") or ""
    return sizes, mtimes


# --- the plan and the progress, on disk ------------------------------------------------------------

def plan_path(settings: Settings) -> str:
    return os.path.join(settings.state_dir, PLAN_NAME)


def status_path(settings: Settings) -> str:
    return os.path.join(settings.state_dir, STATUS_NAME)


def _write_json(path: str, data: dict) -> None:
    """Root's file, written whole then renamed (the state folder is root's own)."""
    folder = os.path.dirname(path)
    handle, partial = tempfile.mkstemp(prefix=".hydration-", dir=folder)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(data, out)
    os.chmod(partial, 0o600)
    os.replace(partial, path)


def read_status(settings: Settings) -> dict | None:
    """The hydration's progress (None: no restore ever left documents for later)."""
    try:
        with open(status_path(settings), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


SUMMARY_KEYS = ("state", "files_done", "files_total", "bytes_done", "bytes_total", "rate_bytes_s", "eta_s", "eta_at",
                "planned_at", "first_document_at", "finished_at", "hydration_s", "missing_count", "runs")


def summary(settings: Settings) -> dict | None:
    """What ``status`` and the probe show: the state, the progress, the rate and the estimated end."""
    status = read_status(settings)
    if not status:
        return None
    out = {key: status.get(key) for key in SUMMARY_KEYS}
    total = status.get("bytes_total") or 0
    out["percent"] = round(100.0 * (status.get("bytes_done") or 0) / total, 1) if total else 100.0
    return out


def in_progress(settings: Settings) -> bool:
    """Whether documents are still coming back (the documents backups then take deltas only)."""
    return (read_status(settings) or {}).get("state") == RUNNING


def write_plan(settings: Settings, snapshot: restic.Snapshot, restic_name: str, restic_url: str | None,
               pending: list[Pending], first: dict, database: dict | None = None) -> dict:
    """Write the plan and a first progress record; return the progress record. *first*: what came back before SPSE
    opened; *database*: the recovered database's bytes and restore seconds (what the DRP's RTO model reads)."""
    _write_json(plan_path(settings), {"snapshot": snapshot.as_dict(), "restic_name": restic_name,
                                      "restic_url": restic_url, "pending": [p.as_dict() for p in pending]})
    status = {"state": RUNNING, "planned_at": iso(now_utc()), "snapshot": snapshot.short_id,
              "files_total": len(pending), "bytes_total": sum(p.size for p in pending), "files_done": 0,
              "bytes_done": 0, "first": first, "database": database or {}, "first_document_at": None,
              "finished_at": None, "runs": 0,
              "rate_bytes_s": None, "eta_s": None, "eta_at": None, "missing": [], "mismatched": []}
    _write_json(status_path(settings), status)
    return status


# --- the nginx gate ------------------------------------------------------------------------------

def open_gate() -> dict:
    """Link the 503 page for documents not back yet into nginx and reload; a site whose nginx role predates it
    gets a warning (such documents then answer SPSE's own 404)."""
    if not os.path.isfile(GATE_SNIPPET):
        return {"gate": False, "warning": f"{GATE_SNIPPET} is missing (run `lpse-ops install` to update nginx): a "
                                          "document not back yet answers 404, not 503"}
    if not os.path.isdir(GATE_DIR):
        os.mkdir(GATE_DIR, 0o755)
    if not os.path.islink(GATE_LINK):
        os.symlink(GATE_SNIPPET, GATE_LINK)
    try:
        _reload_nginx()
    except Failure as failure:  # the live configuration refused it: nginx keeps running without the gate
        os.unlink(GATE_LINK)
        return {"gate": False, "warning": f"nginx refused the hydration gate ({failure.message}): a document not "
                                          "back yet answers 404, not 503"}
    return {"gate": True}


def tool_path() -> str:
    """This site tool's own path (the role's ``site_tool``), else the default."""
    here = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return here if os.path.isfile(here) and os.access(here, os.X_OK) else TOOL


def start_service() -> bool:
    """Start the hydration in its own transient service unless it runs already; True when started now.

    ``Restart=on-failure``: killed or failed halfway, systemd starts it again and it goes on from the files in
    place; ``--collect``: a failed run leaves no unit behind that would block the next start."""
    active = run(["systemctl", "is-active", f"{UNIT}.service"], check=False, step="hydration service")
    if active.stdout.strip() in ("active", "activating", "reloading"):
        return False
    run(["systemd-run", f"--unit={UNIT}", "--collect", "--description=lpse-backup: documents a serve-first restore "
         "left for later", "--property=Type=exec", "--property=Restart=on-failure", "--property=RestartSec=15s",
         "--property=Nice=5", "--property=IOSchedulingClass=best-effort", tool_path(), "hydrate"],
        step="start hydration")
    return True


def close_gate() -> None:
    """Take the 503 page away (every document is back) and reload nginx."""
    if os.path.lexists(GATE_LINK):
        os.unlink(GATE_LINK)
        _reload_nginx()


def _reload_nginx() -> None:
    run(["nginx", "-t", "-q"], step="nginx -t")
    run(["systemctl", "reload", "nginx"], step="reload nginx")


# --- the service -----------------------------------------------------------------------------------

def main(settings: Settings, args) -> dict:
    """``lpse-backup hydrate``: bring back what the plan left, then check every document; return the record."""
    status = read_status(settings)
    if not status or status.get("state") != RUNNING:
        return {"action": "hydrate", "ok": True, "state": (status or {}).get("state") or "none",
                "note": "nothing to hydrate"}
    with open(plan_path(settings), encoding="utf-8") as handle:
        plan = json.load(handle)
    snapshot = restic.parse_snapshots([plan["snapshot"]])[0]
    pending = [Pending.from_dict(p) for p in plan["pending"]]
    status["runs"] = int(status.get("runs") or 0) + 1
    for stale in os.listdir(settings.state_dir):  # scratch a killed run left (root's own folder: no link followed)
        if stale.startswith(".lpse-hydrate-"):
            safefs.remove_tree(os.path.join(settings.state_dir, stale))
    todo = [p for p in pending if not _placed(p, settings.docs_dir)]
    status["bytes_done"] = status["bytes_total"] - sum(p.size for p in todo)
    status["files_done"] = len(pending) - len(todo)
    log(f"hydrate: {len(todo)} of {len(pending)} documents still to bring back (run {status['runs']})")
    _write_json(status_path(settings), status)
    began, moved, placed_now = time.monotonic(), 0, 0
    left: list[Pending] = []
    done_before = len(pending) - len(todo)
    groups = batches(todo, int(getattr(args, "batch_mb", 0) or 0) * (1 << 20) or BATCH_BYTES)
    # Pipelined: the next batch downloads while this one is checked and put in place, so the link never waits
    # for the local disk (one batch ahead: two batches of scratch space at most).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hydrate-download") as pool:
        ahead = pool.submit(download, settings, plan, snapshot, groups[0]) if groups else None
        try:
            for index, batch in enumerate(groups):
                scratch, ahead = ahead.result(), None
                if index + 1 < len(groups):
                    ahead = pool.submit(download, settings, plan, snapshot, groups[index + 1])
                not_placed = place(settings, batch, scratch)
                left += not_placed
                missing = {p.document.id for p in not_placed}
                placed = [p for p in batch if p.document.id not in missing]
                moved += sum(p.size for p in placed)
                placed_now += len(placed)
                status["bytes_done"] = status["bytes_total"] - sum(p.size for p in todo) + moved
                status["files_done"] = done_before + placed_now
                if placed and not status.get("first_document_at"):
                    status["first_document_at"] = iso(now_utc())
                status.update(estimate(status["bytes_total"], status["bytes_done"], moved, time.monotonic() - began))
                status["eta_at"] = iso(from_epoch(time.time() + status["eta_s"])) \
                    if status.get("eta_s") is not None else None
                _write_json(status_path(settings), status)
        finally:
            if ahead is not None:  # a failure left a download running: wait for it and remove what it wrote
                with contextlib.suppress(Failure, OSError):
                    safefs.remove_tree(ahead.result())
    if left:
        left = from_other_snapshots(settings, plan, snapshot, left)
    return finish(settings, status, left)


def _placed(item: Pending, docs_dir: str) -> bool:
    """A file of the document's size is in place (``bring_back`` renames a file there only once its sha256
    matched, so a resumed run trusts it; the final check hashes every document anyway)."""
    try:
        fd = safefs.open_under(docs_dir, item.document.stored_path)
    except (FileNotFoundError, safefs.Unsafe, OSError):
        return False
    try:
        return os.fstat(fd).st_size == item.size
    finally:
        os.close(fd)


def download(settings: Settings, plan: dict, snapshot: restic.Snapshot, batch: list[Pending]) -> str:
    """Restore one batch into a new scratch folder of root's (no documents' lock: the deltas go on); return it."""
    docs = settings.docs_dir
    scratch = tempfile.mkdtemp(prefix=".lpse-hydrate-", dir=settings.state_dir)
    try:
        # --no-lock: a read that holds no lock, so a verification's `restic check` (an exclusive lock) is never
        # refused for hours; nothing removes data meanwhile (retention waits for the hydration: run.py)
        engine.restic_call(settings, plan["restic_name"],
                           ["--no-lock", *restic.restore_args(snapshot.id, scratch,
                                                              include=[os.path.join(docs, p.document.stored_path)
                                                                       for p in batch])],
                           url=plan.get("restic_url"), step="restic restore", timeout=engine.DAY_S)
    except BaseException:
        safefs.remove_tree(scratch)
        raise
    return scratch


def place(settings: Settings, batch: list[Pending], scratch: str) -> list[Pending]:
    """Put each downloaded file whose sha256 matches in place, under the documents' lock (a delta never reads half
    of a batch); remove the scratch folder; return those not placed."""
    docs = settings.docs_dir
    try:
        with locking.exclusive(settings.files_lock_path, settings.lock_wait_s):
            still = documents.bring_back([p.document for p in batch], scratch + docs, docs)
    finally:
        safefs.remove_tree(scratch)
    missing = {d.id for d in still}
    return [p for p in batch if p.document.id in missing]


def bring_batch(settings: Settings, plan: dict, snapshot: restic.Snapshot, batch: list[Pending]) -> list[Pending]:
    """Download one batch and put what matches in place; return those not placed."""
    return place(settings, batch, download(settings, plan, snapshot, batch))


def from_other_snapshots(settings: Settings, plan: dict, chosen: restic.Snapshot, left: list[Pending]) -> list[Pending]:
    """Look for the documents the chosen snapshot lacked (or held with another hash) in every other snapshot,
    newest first; return those still not placed."""
    docs = settings.docs_dir
    snapshots = restic.covering(engine.restic_snapshots(settings, plan["restic_name"], plan.get("restic_url")), docs)
    for snapshot in sorted((s for s in snapshots if s.id != chosen.id), key=lambda s: s.time, reverse=True):
        if not left:
            break
        left = bring_batch(settings, plan, snapshot, left)
    return left


def finish(settings: Settings, status: dict, left: list[Pending]) -> dict:
    """The full check (every document the database references, by sha256); close the gate; keep the result."""
    referenced = documents.parse_rows(postgres.psql(settings, documents.QUERY, step="documents", timeout=3600))
    missing, mismatched = documents.check(referenced, settings.docs_dir)
    status.update(state=DONE if not missing and not mismatched else INCOMPLETE, finished_at=iso(now_utc()),
                  missing=missing[:200], missing_count=len(missing), mismatched=mismatched[:200],
                  referenced=len(referenced), eta_s=0 if not left else None, eta_at=None,
                  not_found_anywhere=[p.document.label for p in left][:200])
    planned = parse_time(status.get("planned_at"))
    if planned:
        status["hydration_s"] = round((now_utc() - planned).total_seconds(), 1)
    if status["state"] == DONE:
        close_gate()
    _write_json(status_path(settings), status)
    ok = status["state"] == DONE
    result = {"action": "hydrate", "ok": ok, **{k: status.get(k) for k in (
        "state", "files_total", "files_done", "bytes_total", "bytes_done", "referenced", "missing_count",
        "mismatched", "hydration_s", "first_document_at", "finished_at", "runs")}}
    if not ok:
        raise Failure("documents_missing", f"hydration ended with {len(missing)} document(s) missing and "
                      f"{len(mismatched)} not matching their sha256 (kept in {status_path(settings)}); SPSE keeps "
                      "answering 503 for them", step="hydrate")
    return result
