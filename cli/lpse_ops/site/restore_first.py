"""``lpse-backup restore --serve-first``: the database and the documents that matter first, then SPSE, then the rest.

The steps of :mod:`restore` up to the recovered database, then:

1. ``restore_first_documents``: the recovered database says which documents exist; the snapshot's listing
   (``restic ls``) says which it holds and their sizes; the documents of the open tenders come first (the
   query the running release declares in its signed manifest, ``documents_first``), else the newest files of the
   snapshot, up to ``--first-mb``. Only those are restored now (into root's staging folder).
2. ``put_first_documents_in_place``: the live documents folder is moved aside (kept), a new one made with its
   owner and mode, and the staged documents copied in by sha256.
3. ``reconcile_first``: what the set-aside folder holds comes back from it (a local copy); documents the
   chosen snapshot lacks are looked for in the other snapshots now (few: the 30-second deltas), and with
   ``latest`` the database is recovered to just before any that is nowhere (as :mod:`restore` does). Every other
   referenced document the snapshot holds is left for later: its size and sha256 go into the hydration plan.
4. ``open_hydration``: the plan is written and nginx's gate opened (503 with Retry-After for a document not
   back yet); 5. SPSE starts; 6. ``start_hydration`` starts ``lpse-backup-hydrate.service`` (:mod:`hydrate`).

A failure before SPSE starts rolls the site back as any restore does (the plan is removed, the gate closed).
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from lpse_ops.site import documents, engine, hydrate, postgres, restic, safefs
from lpse_ops.site import run as backup_run
from lpse_ops.site.errors import Failure
from lpse_ops.site.proc import log
from lpse_ops.site.restore import (
    Restore,
    documents_from_snapshots,
    move_database_aside,
    note_live_timeline,
    recover,
    recover_before_lost_documents,
    restore_database,
    select_backup,
    select_snapshot,
    staging_parent,
    start_application,
    stop_services,
)

QUERY_TIMEOUT = "60s"


def release_query(base: str) -> tuple[str | None, str | None]:
    """(The running release's ``documents_first.query``, None) from its signed manifest kept by the unpack
    (``<base>/manifests/<version>.json``, root's), or (None, why not)."""
    current = os.path.join(base, "current")
    try:
        version = os.path.basename(os.readlink(current).rstrip("/"))
        with open(os.path.join(base, "manifests", f"{version}.json"), encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as error:
        return None, f"no signed manifest of the running release ({error})"
    query = (manifest.get("documents_first") or {}).get("query")
    return (query, None) if query else (None, f"release {version} declares no documents_first query")


def priority_ids(current: Restore) -> tuple[list[str] | None, str | None]:
    """The ids the release's query returns, in its order, run read-only with a time limit; (None, why) when
    there is none or it fails (the newest files of the snapshot then come first)."""
    query, why = release_query(current.spse_base)
    if not query:
        return None, why
    sql = (f"BEGIN READ ONLY;\nSET LOCAL statement_timeout = '{QUERY_TIMEOUT}';\n{query.rstrip().rstrip(';')};\n"
           "COMMIT;")
    try:
        lines = postgres.psql(current.settings, sql, step="documents first", timeout=120)
    except Failure as failure:
        return None, f"the release's documents_first query failed ({failure.message})"
    return [line.split("\t")[0].strip() for line in lines if line.strip().split("\t")[0].strip().isdigit()], None


def snapshot_listing(current: Restore) -> tuple[dict[str, int], dict[str, str]]:
    """The chosen snapshot's documents: ({path: size}, {path: mtime}), paths under the documents folder."""
    docs = current.settings.docs_dir
    # the whole snapshot, filtered here: restic 0.14 (Debian 12) lists only a directory's own entries when given one
    done = engine.restic_call(current.settings, current.restic_name, ["ls", "--json", current.snapshot.id],
                              url=current.restic_url, step="restic ls", timeout=engine.DAY_S)
    return hydrate.parse_listing(done.stdout, docs)


def restore_first_documents(current: Restore) -> None:
    """Choose the documents SPSE opens with and restore just those into a staging folder (root's own)."""
    settings = current.settings
    referenced = documents.parse_rows(postgres.psql(settings, documents.QUERY, step="documents", timeout=3600))
    sizes, mtimes = snapshot_listing(current)
    ids, why = priority_ids(current)
    first, how = hydrate.choose_first(referenced, sizes, mtimes, ids, current.first_bytes)
    current.first.update(referenced=referenced, sizes=sizes, chosen=first)
    current.result["serve_first"] = {"chosen_by": how, **({"query_not_used": why} if why and ids is None else {}),
                                     "first_files": len(first),
                                     "first_bytes": sum(sizes[d.stored_path] for d in first),
                                     "budget_bytes": current.first_bytes}
    parent, warning = staging_parent(settings)
    if warning:
        current.result["staging_warning"] = warning
    current.staging = tempfile.mkdtemp(prefix=".lpse-restore-", dir=parent)
    if first:
        current.step(f"restoring the {len(first)} first documents ({how}) of snapshot {current.snapshot.short_id}")
        engine.restic_call(settings, current.restic_name,
                           restic.restore_args(current.snapshot.id, current.staging,
                                               include=[os.path.join(settings.docs_dir, d.stored_path) for d in first]),
                           url=current.restic_url, step="restic restore", timeout=engine.DAY_S)


def put_first_documents_in_place(current: Restore) -> None:
    """Move the live documents folder aside (kept), make a new one with its owner and mode, and copy the staged
    first documents into it by sha256 (``documents.bring_back``: restic makes the folders an ``--include``
    passes through root's, so the staged tree itself is never put in place)."""
    docs = current.settings.docs_dir
    if not os.path.lexists(docs):
        raise Failure("documents_move_failed", f"{docs} does not exist: run the install first (it makes the "
                      "documents folder with its owner and mode)", step="documents")
    live = os.lstat(docs)
    aside = safefs.aside_name(docs, "before-restore", current.stamp)
    try:
        safefs.rename_beside(docs, aside)
        current.result["moved_aside"]["documents"] = {"from": docs, "to": aside}
        safefs.make_owned_dir(docs, live.st_uid, live.st_gid, live.st_mode & 0o7777)
    except OSError as error:
        raise Failure("documents_move_failed", f"could not make a new documents folder ({error})",
                      step="documents") from None
    documents.bring_back(current.first["chosen"], current.staging + docs, docs, current.documents_skipped)
    safefs.remove_tree(current.staging)
    current.step(f"first documents in place (previous ones at {aside})")


def reconcile_first(current: Restore) -> None:
    """The first documents checked by sha256, what is elsewhere brought back now, the rest planned for later."""
    settings, docs = current.settings, current.settings.docs_dir
    referenced, sizes = current.first["referenced"], current.first["sizes"]
    aside = (current.result["moved_aside"].get("documents") or {}).get("to")
    wanted = [d for d in referenced if not documents.matches(d, docs)]
    still = documents.bring_back(wanted, aside, docs, current.documents_skipped) if aside and wanted else wanted
    from_aside = len(wanted) - len(still)
    chosen = {d.id for d in current.first["chosen"]}  # a set: a site has tens of thousands of documents
    later = [d for d in still if d.stored_path in sizes and d.id not in chosen]
    hydrated_later = {d.id for d in later}
    elsewhere = [d for d in still if d.id not in hydrated_later]
    elsewhere = documents_from_snapshots(current, [s for s in reversed(current.snapshots)
                                                   if s.id != current.snapshot.id], elsewhere)
    if elsewhere and current.latest:
        recover_before_lost_documents(current, elsewhere)
        kept = {d.id for d in documents.parse_rows(postgres.psql(settings, documents.QUERY, step="documents",
                                                                 timeout=3600))}
        later = [d for d in later if d.id in kept]
        elsewhere = [d for d in elsewhere if d.id in kept]
        current.result["database_recovered_before_lost_documents"] = True
    if elsewhere:
        raise Failure("documents_missing", f"{len(elsewhere)} document(s) the recovered database references are in no "
                      f"snapshot and not in the set-aside folder: {', '.join(d.label for d in elsewhere[:20])}; the "
                      "site was not left with a database that points at missing files", step="documents")
    current.first["later"] = [hydrate.Pending(d, sizes[d.stored_path]) for d in later]
    report = current.result["serve_first"]
    report.update(referenced=len(referenced), from_set_aside=from_aside, later_files=len(later),
                  later_bytes=sum(p.size for p in current.first["later"]))
    if current.documents_skipped:
        report["skipped"] = current.documents_skipped[:50]
    current.step(f"documents: {len(referenced)} referenced, {report['first_files']} first, {from_aside} from the "
                 f"set-aside folder, {len(later)} ({report['later_bytes']} bytes) left to hydrate")


def open_hydration(current: Restore) -> None:
    """Write the plan of what is left and open nginx's gate (nothing left: no plan, no gate)."""
    later = current.first.get("later") or []
    if not later:
        current.result["hydration"] = {"state": "none", "note": "every document was back before SPSE opened"}
        return
    current.result["database_bytes"] = postgres.cluster_size(current.settings)
    status = hydrate.write_plan(current.settings, current.snapshot, current.restic_name, current.restic_url, later,
                                first=current.result["serve_first"],
                                database={"bytes": current.result["database_bytes"],
                                          "restore_s": current.result.get("database_restore_duration_s")})
    # the documents deltas start from here: what SPSE receives from now on is backed up within 30 s, hydration or not
    backup_run.write_stamp(current.settings, time.time())
    gate = hydrate.open_gate()
    current.result["hydration"] = {"state": status["state"], "files": status["files_total"],
                                   "bytes": status["bytes_total"], **gate}
    current.step(f"hydration planned: {status['files_total']} documents, {status['bytes_total']} bytes")


def start_hydration(current: Restore) -> None:
    """Start the hydration service (no wait): SPSE already serves, so a service that does not start is a warning,
    never a rollback."""
    if (current.result.get("hydration") or {}).get("state") != hydrate.RUNNING:
        return
    try:
        hydrate.start_service()
    except Failure as failure:  # SPSE serves the recovered data: never rolled back for this; the 5-minute documents
        # run starts the service again (run.py), or `lpse-backup hydrate` by hand
        current.result["hydration"]["warning"] = f"the hydration service did not start: {failure.message}"
        log(current.result["hydration"]["warning"])
        return
    current.step(f"{hydrate.UNIT}.service started")


def forget_hydration(current: Restore) -> None:
    """A rolled-back restore leaves no plan and no gate behind."""
    for path in (hydrate.plan_path(current.settings), hydrate.status_path(current.settings)):
        if os.path.exists(path):
            os.unlink(path)
    try:
        hydrate.close_gate()
    except Failure as failure:
        log(f"closing the hydration gate failed: {failure.message}")


STEPS = (select_backup, select_snapshot, note_live_timeline, stop_services, move_database_aside, restore_database,
         recover, restore_first_documents, put_first_documents_in_place, reconcile_first, open_hydration,
         start_application, start_hydration)
