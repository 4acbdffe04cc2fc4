"""Serve first, then hydrate (site/hydrate.py, site/restore_first.py): what comes first, the batches, the estimate,
the listing parser, the plan and its resumption on a real folder, and the verdicts the control node makes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from lpse_ops.actions import backup
from lpse_ops.site import documents, hydrate, restic, restore_first
from lpse_ops.site.errors import Failure
from lpse_ops.site.settings import Settings


def doc(number: int, path: str | None = None) -> documents.Document:
    return documents.Document(str(number), f"{number:064x}", path or f"{number:02d}/doc{number}")


def test_the_releases_order_comes_first_within_the_budget_and_documents_the_snapshot_lacks_are_left_out():
    referenced = [doc(i) for i in range(1, 6)]
    sizes = {d.stored_path: 100 for d in referenced if d.id != "4"}  # the snapshot lacks document 4
    first, how = hydrate.choose_first(referenced, sizes, {}, ["5", "4", "3", "5", "1"], budget=250)
    assert [d.id for d in first] == ["5", "3"] and "release" in how  # 4 lacks, 1 would pass the budget
    first, _ = hydrate.choose_first(referenced, sizes, {}, [], budget=10_000)
    assert first == []  # the query found no open tender: nothing first, all hydrated


def test_without_a_query_the_newest_files_of_the_snapshot_come_first():
    referenced = [doc(i) for i in range(1, 4)]
    sizes = {d.stored_path: 10 for d in referenced}
    mtimes = {"01/doc1": "2026-12-01T10:00:00Z", "02/doc2": "2026-12-03T10:00:00Z", "03/doc3": "2026-12-02T10:00:00Z"}
    first, how = hydrate.choose_first(referenced, sizes, mtimes, None, budget=20)
    assert [d.id for d in first] == ["2", "3"] and how == "the newest files of the snapshot"


def test_batches_keep_the_order_and_bound_bytes_and_files():
    pending = [hydrate.Pending(doc(i), size) for i, size in enumerate([50, 50, 200, 10, 10, 10], start=1)]
    assert [[p.document.id for p in b] for b in hydrate.batches(pending, max_bytes=100, max_files=2)] == [
        ["1", "2"], ["3"], ["4", "5"], ["6"]]
    assert hydrate.batches([], 100, 2) == []


def test_the_estimate_is_the_rate_of_this_run_and_none_before_a_batch_ended():
    assert hydrate.estimate(1000, 400, 0, 5.0) == {"rate_bytes_s": None, "eta_s": None}
    assert hydrate.estimate(1000, 400, 200, 2.0) == {"rate_bytes_s": 100, "eta_s": 6.0}
    assert hydrate.estimate(1000, 1000, 1000, 10.0)["eta_s"] == 0


def test_the_listing_keeps_the_regular_files_under_the_documents_folder():
    lines = [json.dumps({"struct_type": "snapshot", "id": "abc"}),
             json.dumps({"struct_type": "node", "type": "dir", "path": "/var/lib/spse/documents/ab"}),
             json.dumps({"struct_type": "node", "type": "file", "path": "/var/lib/spse/documents/ab/x", "size": 7,
                         "mtime": "2026-12-01T00:00:00Z"}),
             json.dumps({"struct_type": "node", "type": "file", "path": "/etc/lpse-backup/x", "size": 1}),
             json.dumps({"struct_type": "node", "type": "symlink", "path": "/var/lib/spse/documents/ab/l"})]
    sizes, mtimes = hydrate.parse_listing("\n".join(lines), "/var/lib/spse/documents/")
    assert sizes == {"ab/x": 7} and mtimes == {"ab/x": "2026-12-01T00:00:00Z"}


def settings_for(tmp_path: Path) -> Settings:
    state, docs = tmp_path / "state", tmp_path / "docs"
    state.mkdir()
    docs.mkdir()
    return Settings.from_mapping({
        "site_code": "lab01", "stanza": "spse", "database": "spse", "pg_version": "15", "pg_port": 5432,
        "pg_data": "/x", "pg_unit": "postgresql", "pgbackrest_repo1_path": "/x", "spool_path": "/x",
        "s3_endpoint": "https://s3.invalid", "s3_ca_file": "/x", "restic_repos": {"local": "/x", "offsite": "s3:x"},
        "restic_password_file": "/x", "restic_env_file": "/x", "restic_paths": [str(docs)], "restic_keep": {},
        "docs_dir": str(docs), "state_dir": str(state), "spse_unit": "spse", "health_url": "http://127.0.0.1:1/"})


def test_the_plan_is_written_root_only_and_a_resumed_run_counts_the_files_already_in_place(tmp_path: Path,
                                                                                           monkeypatch):
    settings = settings_for(tmp_path)
    content = b"tender document"
    sha = hashlib.sha256(content).hexdigest()
    placed = hydrate.Pending(documents.Document("1", sha, "aa/one"), len(content))
    missing = hydrate.Pending(documents.Document("2", sha, "bb/two"), len(content))
    snapshot = restic.parse_snapshots([{"id": "f" * 64, "short_id": "ffffffff", "time": "2026-12-04T01:02:03Z",
                                        "paths": [settings.docs_dir], "tags": ["lab01"]}])[0]
    status = hydrate.write_plan(settings, snapshot, "offsite", None, [placed, missing], first={"first_files": 3})
    assert status["state"] == hydrate.RUNNING and status["bytes_total"] == 2 * len(content)
    assert os.stat(hydrate.plan_path(settings)).st_mode & 0o777 == 0o600
    assert hydrate.in_progress(settings)
    (Path(settings.docs_dir) / "aa").mkdir()
    (Path(settings.docs_dir) / "aa" / "one").write_bytes(content)
    asked: list[list[str]] = []

    def download(_settings, _plan, _snapshot, batch):  # a restic restore that brings nothing back
        asked.append([p.document.id for p in batch])
        return str(Path(tempfile.mkdtemp(dir=settings.state_dir, prefix=".lpse-hydrate-")))

    (Path(settings.state_dir) / ".lpse-hydrate-stale").mkdir()  # a killed run's scratch: removed on start
    monkeypatch.setattr(hydrate, "download", download)
    monkeypatch.setattr(hydrate, "from_other_snapshots", lambda _s, _p, _c, left: left)
    monkeypatch.setattr(hydrate, "finish", lambda _s, status, left: {"status": status, "left": left})
    ended = hydrate.main(settings, SimpleNamespace(batch_mb=0))
    assert asked == [["2"]]  # the file already in place (its size) is not asked for again
    assert ended["status"]["files_done"] == 1 and ended["status"]["runs"] == 1
    assert [p.document.id for p in ended["left"]] == ["2"]  # placed for real: nothing came back
    assert not list(Path(settings.state_dir).glob(".lpse-hydrate-*"))  # every scratch folder removed
    summary = hydrate.summary(settings)
    assert summary["percent"] == 50.0 and summary["state"] == hydrate.RUNNING


def test_nothing_to_hydrate_without_a_running_plan(tmp_path: Path):
    settings = settings_for(tmp_path)
    result = hydrate.main(settings, SimpleNamespace(batch_mb=0))
    assert result["ok"] and result["state"] == "none"
    assert hydrate.summary(settings) is None and not hydrate.in_progress(settings)


def test_the_release_query_comes_from_the_running_releases_signed_manifest(tmp_path: Path):
    base = tmp_path / "spse"
    (base / "manifests").mkdir(parents=True)
    (base / "releases" / "1.1").mkdir(parents=True)
    (base / "current").symlink_to(base / "releases" / "1.1")
    assert restore_first.release_query(str(base))[0] is None
    (base / "manifests" / "1.1.json").write_text(json.dumps({"version": "1.1"}))
    assert restore_first.release_query(str(base)) == (None, "release 1.1 declares no documents_first query")
    (base / "manifests" / "1.1.json").write_text(json.dumps({"documents_first": {"query": "SELECT 1"}}))
    assert restore_first.release_query(str(base)) == ("SELECT 1", None)


@pytest.mark.parametrize(("state", "codes"), [("running", ["hydrating"]), ("incomplete", ["hydration_incomplete"]),
                                               ("done", [])])
def test_the_control_node_warns_while_hydrating_and_fails_an_incomplete_one(state: str, codes: list[str]):
    found = backup.hydration_warnings({"state": state, "percent": 40.0, "files_done": 4, "files_total": 10,
                                       "bytes_done": 40e6, "bytes_total": 100e6, "eta_s": 3725, "eta_at": "T",
                                       "missing_count": 2})
    assert [code for code, _ in found] == codes
    if state == "running":
        assert "40.0% (4/10 files, 40/100 MB), about 1 h 2 min left (until T)" in found[0][1]
    assert backup.hydration_warnings(None) == []


def test_a_verification_leaves_out_a_set_taken_while_hydrating_unless_asked_for_it(tmp_path: Path, monkeypatch):
    """A backup set taken while documents were still coming back has no documents snapshot of its own (run.py puts
    them in a delta): the verification picks the newest complete set, and says which it left out."""
    from lpse_ops.site import manifest, verify

    settings = settings_for(tmp_path)
    where = Path(manifest.directory(settings))
    where.mkdir(parents=True)
    (where / "20261204-100000F.json").write_text(json.dumps({"label": "20261204-100000F"}))
    (where / "20261204-120000F.json").write_text(json.dumps({"label": "20261204-120000F", "documents_hydrating": True}))
    stanza = {"backup": [{"label": label, "type": "full", "database": {"repo-key": 2}}
                         for label in ("20261204-100000F", "20261204-120000F")]}
    monkeypatch.setattr(verify.engine, "stanza", lambda *_args, **_kw: stanza)
    current = verify.Verify(settings, "2", {}, scratch=None)
    verify.choose_set(current)
    assert current.label == "20261204-100000F"
    assert current.result["sets_left_out"] == {"20261204-120000F": "taken while documents were still being hydrated"}
    asked = verify.Verify(settings, "2", {}, scratch=None, wanted_set="20261204-120000F")
    verify.choose_set(asked)
    assert asked.label == "20261204-120000F"  # asked for by name: verified, and its documents check says what lacks


def test_an_offsite_verification_waits_for_the_hydration_then_goes_on_and_gives_up_at_its_bound(tmp_path: Path,
                                                                                                 monkeypatch):
    """The offsite link is the hydration's: a verification of the offsite copy (a whole set restored over it) waits
    until the documents are back, and fails with code ``hydrating`` past its bound."""
    from lpse_ops.site import verify

    settings = settings_for(tmp_path)
    snapshot = restic.parse_snapshots([{"id": "f" * 64, "short_id": "ffffffff", "time": "2026-12-04T01:02:03Z",
                                        "paths": [settings.docs_dir], "tags": ["lab01"]}])[0]
    hydrate.write_plan(settings, snapshot, "offsite", None, [], first={})
    polls: list[float] = []

    def finish_on_second_poll(_seconds: float) -> None:  # the hydration ends while the verification waits
        polls.append(_seconds)
        if len(polls) == 2:
            status = hydrate.read_status(settings)
            hydrate._write_json(hydrate.status_path(settings), {**status, "state": hydrate.DONE})

    monkeypatch.setattr(verify.time, "sleep", finish_on_second_poll)
    result: dict = {}
    verify.wait_for_hydration(settings, result)
    assert len(polls) == 2
    hydrate.write_plan(settings, snapshot, "offsite", None, [], first={})  # running again, and never ends
    monkeypatch.setattr(verify.time, "sleep", lambda _s: None)
    with pytest.raises(Failure, match="still being hydrated") as caught:
        verify.wait_for_hydration(settings, {}, bound_s=0.05)
    assert caught.value.code == "hydrating"
