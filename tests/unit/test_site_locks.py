"""Site locks in the state store (SQLite): one change at a time per site, across operators and processes."""

from __future__ import annotations

import json
import multiprocessing
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from lpse_ops.actions import operation
from lpse_ops.backends.ansible import PlaybookRun
from lpse_ops.commands.lock import lock
from lpse_ops.state import StateStore
from lpse_ops.state.store import LockNotHeldError, SiteLockedError, describe_lock

SINCE = re.compile(r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def store(url: str) -> StateStore:
    with StateStore.open(url) as opened:
        yield opened


def _audit_ops(store: StateStore) -> list[str]:
    return [entry["operation"] for entry in store.audit_entries()]


# -- the table and the message -------------------------------------------------------------------


def test_open_creates_site_locks_table(url: str) -> None:
    StateStore.open(url).close()
    engine = sa.create_engine(url)
    try:
        columns = {column["name"] for column in sa.inspect(engine).get_columns("site_locks")}
        primary = sa.inspect(engine).get_pk_constraint("site_locks")["constrained_columns"]
    finally:
        engine.dispose()
    assert columns == {"site", "operation", "run_id", "holder", "acquired_at"}
    assert primary == ["site"]


def test_describe_lock_names_holder_since_operation_run_and_way_out() -> None:
    lock_row = {"site": "site1", "holder": "alice@ctl", "operation": "install", "run_id": 42,
                "acquired_at": "2026-11-28T17:02:11+07:00"}
    assert describe_lock(lock_row) == ("site1 is locked by alice@ctl since 2026-11-28 10:02:11 UTC for install "
                                       "(run 42): wait for it, or `lpse-ops lock release site1 --force` if that "
                                       "run is dead")


# -- acquire ---------------------------------------------------------------------------------------


def test_acquire_free_sites_records_locks_and_audits(store: StateStore) -> None:
    run_id = store.start_run("install", {}, ["site1", "site2"], actor="alice@ctl")
    before = datetime.now(UTC).replace(microsecond=0)
    taken = store.acquire_sites(["site1", "site2", "site1"], "install", run_id=run_id, holder="alice@ctl")
    assert [row["site"] for row in taken] == ["site1", "site2"]
    locks = store.list_locks()
    assert [(row["site"], row["holder"], row["operation"], row["run_id"]) for row in locks] == \
        [("site1", "alice@ctl", "install", run_id), ("site2", "alice@ctl", "install", run_id)]
    assert datetime.fromisoformat(locks[0]["acquired_at"]) >= before
    entry = store.audit_entries()[-1]
    assert entry["operation"] == "lock.acquire" and entry["actor"] == "alice@ctl"
    assert entry["detail"] == {"sites": ["site1", "site2"], "operation": "install", "run_id": run_id}
    assert store.audit_verify().ok


def test_acquire_locked_site_refused_naming_holder_and_since(store: StateStore) -> None:
    run_id = store.start_run("install", {}, ["site1"], actor="alice@ctl")
    store.acquire_sites(["site1"], "install", run_id=run_id, holder="alice@ctl")
    with pytest.raises(SiteLockedError) as refused:
        store.acquire_sites(["site1"], "backup.restore", holder="bob@laptop")
    message = str(refused.value)
    assert message.startswith("site1 is locked by alice@ctl since ") and SINCE.search(message)
    assert f"for install (run {run_id}): wait for it, or `lpse-ops lock release site1 --force`" in message
    assert [row["holder"] for row in refused.value.locks] == ["alice@ctl"]
    assert [row["holder"] for row in store.list_locks()] == ["alice@ctl"]


def test_acquire_same_holder_twice_is_refused_too(store: StateStore) -> None:
    store.acquire_sites(["site1"], "install", holder="alice@ctl")
    with pytest.raises(SiteLockedError, match="site1 is locked by alice@ctl"):
        store.acquire_sites(["site1"], "install", holder="alice@ctl")


def test_acquire_is_all_or_nothing(store: StateStore) -> None:
    store.acquire_sites(["site2"], "backup.restore", holder="bob@laptop")
    audit_before = store.audit_count()
    with pytest.raises(SiteLockedError) as refused:
        store.acquire_sites(["site1", "site2", "site3"], "install", holder="alice@ctl")
    assert [row["site"] for row in refused.value.locks] == ["site2"]
    assert [row["site"] for row in store.list_locks()] == ["site2"]
    assert store.audit_count() == audit_before


def test_acquire_reports_every_locked_site(store: StateStore) -> None:
    store.acquire_sites(["site1"], "install", holder="alice@ctl")
    store.acquire_sites(["site3"], "backup.restore", holder="bob@laptop")
    with pytest.raises(SiteLockedError) as refused:
        store.acquire_sites(["site1", "site2", "site3"], "install", holder="carol@ctl")
    lines = str(refused.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("site1 is locked by alice@ctl") and lines[1].startswith("site3 is locked by bob@laptop")


# -- release ---------------------------------------------------------------------------------------


def test_release_own_lock_frees_site_and_audits(store: StateStore) -> None:
    store.acquire_sites(["site1", "site2"], "install", holder="alice@ctl")
    released = store.release_sites(["site1"], holder="alice@ctl")
    assert [row["site"] for row in released] == ["site1"]
    assert [row["site"] for row in store.list_locks()] == ["site2"]
    entry = store.audit_entries()[-1]
    assert entry["operation"] == "lock.release" and entry["detail"]["forced"] is False
    assert entry["detail"]["sites"] == ["site1"]
    store.acquire_sites(["site1"], "backup.restore", holder="bob@laptop")
    assert store.audit_verify().ok


def test_release_other_holders_lock_needs_force_and_force_is_audited(store: StateStore) -> None:
    run_id = store.start_run("install", {}, ["site1"], actor="alice@ctl")
    store.acquire_sites(["site1"], "install", run_id=run_id, holder="alice@ctl")
    with pytest.raises(LockNotHeldError) as refused:
        store.release_sites(["site1"], holder="bob@laptop")
    assert "site1 is locked by alice@ctl since" in str(refused.value)
    assert "not by bob@laptop" in str(refused.value) and "--force" in str(refused.value)
    assert [row["site"] for row in store.list_locks()] == ["site1"]

    released = store.release_sites(["site1"], holder="bob@laptop", force=True)
    assert [row["holder"] for row in released] == ["alice@ctl"]
    assert store.list_locks() == []
    entry = store.audit_entries()[-1]
    assert entry["operation"] == "lock.release" and entry["actor"] == "bob@laptop"
    assert entry["detail"]["forced"] is True
    assert entry["detail"]["locks"][0]["holder"] == "alice@ctl" and entry["detail"]["locks"][0]["run_id"] == run_id


def test_release_unlocked_site_refused_and_releases_nothing(store: StateStore) -> None:
    store.acquire_sites(["site1"], "install", holder="alice@ctl")
    with pytest.raises(LockNotHeldError, match="site9 is not locked"):
        store.release_sites(["site1", "site9"], holder="alice@ctl")
    assert [row["site"] for row in store.list_locks()] == ["site1"]


def test_release_by_run_leaves_other_runs_locks(store: StateStore) -> None:
    first = store.start_run("install", {}, ["site1"], actor="alice@ctl")
    second = store.start_run("backup.restore", {}, ["site2"], actor="bob@laptop")
    store.acquire_sites(["site1"], "install", run_id=first, holder="alice@ctl")
    store.acquire_sites(["site2"], "backup.restore", run_id=second, holder="bob@laptop")
    released = store.release_sites(["site1", "site2", "site3"], run_id=first, holder="alice@ctl")
    assert [row["site"] for row in released] == ["site1"]
    assert [row["site"] for row in store.list_locks()] == ["site2"]
    assert store.release_sites(["site1"], run_id=first, holder="alice@ctl") == []


# -- concurrency -----------------------------------------------------------------------------------


def test_concurrent_acquire_from_threads_has_exactly_one_winner(url: str) -> None:
    StateStore.open(url).close()
    start = threading.Barrier(6)
    winners: list[str] = []
    refused: list[str] = []
    errors: list[BaseException] = []

    def contender(name: str) -> None:
        try:
            with StateStore.open(url) as own:
                start.wait()
                own.acquire_sites(["site1", "site2"] if name[-1] in "024" else ["site2", "site1"], "install",
                                  holder=name)
                winners.append(name)
        except SiteLockedError:
            refused.append(name)
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=contender, args=(f"op{index}",)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(winners) == 1 and len(refused) == 5
    with StateStore.open(url) as store:
        assert {row["holder"] for row in store.list_locks()} == set(winners)
        assert _audit_ops(store).count("lock.acquire") == 1
        assert store.audit_verify().ok


def _acquire_in_child(url: str, head: str, name: str, sites: list[str], barrier: Any, results: Any) -> None:
    try:
        with StateStore.open(url, head_path=head) as own:
            barrier.wait(timeout=60)
            own.acquire_sites(sites, "install", holder=name)
        results.put((name, "won"))
    except SiteLockedError:
        results.put((name, "refused"))
    except BaseException as error:  # reported to the parent
        results.put((name, f"error: {error!r}"))


def race_for_sites(url: str, head: Path, sites: list[str], operators: int = 4) -> dict[str, str]:
    """Start *operators* processes that take *sites* at the same moment on the store at *url*; return
    each operator's outcome ("won", "refused" or the error)."""
    StateStore.open(url, head_path=head).close()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(operators)
    results = context.Queue()
    workers = [context.Process(target=_acquire_in_child,
                               args=(url, str(head), f"operator-{index}", sites, barrier, results))
               for index in range(operators)]
    for worker in workers:
        worker.start()
    outcomes = dict(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    return outcomes


def test_concurrent_acquire_from_processes_has_exactly_one_winner(url: str, tmp_path: Path) -> None:
    sites = ["site1", "site2", "site3"]
    outcomes = race_for_sites(url, tmp_path / "head.json", sites)
    assert sorted(outcomes.values()) == ["refused", "refused", "refused", "won"], outcomes
    winner = next(name for name, outcome in outcomes.items() if outcome == "won")
    with StateStore.open(url, head_path=tmp_path / "head.json") as store:
        assert [row["holder"] for row in store.list_locks()] == [winner] * 3
        assert store.audit_verify().ok


# -- operations hold the lock for their whole run --------------------------------------------------


class FakePlaybooks:
    """Stands in for ansible-runner: records calls, and what the site locks were while 'running'."""

    def __init__(self, url: str, fail_with: BaseException | None = None) -> None:
        self.url = url
        self.fail_with = fail_with
        self.calls: list[str] = []
        self.locks_during: list[dict] = []

    def __call__(self, playbook: str, *_args: Any, **_kwargs: Any) -> PlaybookRun:
        self.calls.append(playbook)
        with StateStore.open(self.url) as peek:
            self.locks_during = peek.list_locks()
        if self.fail_with is not None:
            raise self.fail_with
        return PlaybookRun(ident="fake", status="successful", rc=0, artifact_dir="/nowhere")


@pytest.fixture
def fake_fleet(monkeypatch: pytest.MonkeyPatch, url: str) -> FakePlaybooks:
    monkeypatch.setattr(operation.fleet, "read", lambda *_args, **_kwargs: SimpleNamespace(hosts=["site1", "site2"]))
    fake = FakePlaybooks(url)
    monkeypatch.setattr(operation.ansible, "run_playbook", fake)
    return fake


def _context(url: str, lock_sites: bool, name: str = "install") -> operation.OperationContext:
    return operation.OperationContext(operation=name, playbook="install.yml", inventory=Path("/dev/null"),
                                      state_url=url, progress=None, lock_sites=lock_sites)


def test_locking_operation_holds_locks_while_running_and_releases_them(url: str, fake_fleet: FakePlaybooks) -> None:
    result = operation.run(_context(url, lock_sites=True))
    assert result.exit_code == 0 and fake_fleet.calls == ["install.yml"]
    assert [(row["site"], row["run_id"], row["holder"]) for row in fake_fleet.locks_during] == \
        [("site1", result.run_id, "tester@control"), ("site2", result.run_id, "tester@control")]
    with StateStore.open(url) as store:
        assert store.list_locks() == []
        assert _audit_ops(store) == ["run.start", "lock.acquire", "run.finish", "lock.release"]


@pytest.mark.parametrize("failure", [RuntimeError("runner crashed"), KeyboardInterrupt()])
def test_locking_operation_releases_locks_when_interrupted(url: str, fake_fleet: FakePlaybooks,
                                                           failure: BaseException) -> None:
    fake_fleet.fail_with = failure
    with pytest.raises(type(failure)):
        operation.run(_context(url, lock_sites=True))
    assert [row["site"] for row in fake_fleet.locks_during] == ["site1", "site2"]
    with StateStore.open(url) as store:
        assert store.list_locks() == []
        assert store.list_runs()[0]["result"] == "aborted"


def test_operation_on_locked_site_refused_before_anything_runs(url: str, fake_fleet: FakePlaybooks) -> None:
    with StateStore.open(url) as store:
        holder_run = store.start_run("install", {}, ["site2"], actor="alice@ctl")
        store.acquire_sites(["site2"], "install", run_id=holder_run, holder="alice@ctl")
    with pytest.raises(operation.OperationRefused) as refused:
        operation.run(_context(url, lock_sites=True, name="backup.restore"))
    message = str(refused.value)
    assert message.startswith("site2 is locked by alice@ctl since ") and SINCE.search(message)
    assert f"for install (run {holder_run}): wait for it, or `lpse-ops lock release site2 --force`" in message
    assert "no host was touched" in message
    assert fake_fleet.calls == []
    with StateStore.open(url) as store:
        assert [(row["site"], row["holder"]) for row in store.list_locks()] == [("site2", "alice@ctl")]
        refused_run = store.list_runs()[0]
        assert refused_run["operation"] == "backup.restore" and refused_run["result"] == "aborted"
        assert refused_run["summary"]["refused"] == "site locked"


def test_non_locking_operation_runs_beside_a_lock(url: str, fake_fleet: FakePlaybooks) -> None:
    with StateStore.open(url) as store:
        store.acquire_sites(["site1"], "install", holder="alice@ctl")
    result = operation.run(_context(url, lock_sites=False, name="backup.verify"))
    assert result.exit_code == 0 and fake_fleet.calls == ["install.yml"]
    with StateStore.open(url) as store:
        assert [row["site"] for row in store.list_locks()] == ["site1"]


# -- lpse-ops lock ---------------------------------------------------------------------------------


def test_lock_cli_list_shows_holder_and_json(store: StateStore, url: str) -> None:
    empty = CliRunner().invoke(lock, ["list", "--state-url", url])
    assert empty.exit_code == 0 and "no site is locked" in empty.stderr
    run_id = store.start_run("install", {}, ["site1"], actor="alice@ctl")
    store.acquire_sites(["site1"], "install", run_id=run_id, holder="alice@ctl")
    table = CliRunner().invoke(lock, ["list", "--state-url", url])
    assert table.exit_code == 0, table.output
    assert "site1" in table.stdout and "alice@ctl" in table.stdout and "install" in table.stdout
    as_json = CliRunner().invoke(lock, ["list", "--json"], env={"LPSE_OPS_STATE_URL": url})
    assert as_json.exit_code == 0, as_json.output
    assert [(row["site"], row["holder"], row["run_id"]) for row in json.loads(as_json.stdout)] == \
        [("site1", "alice@ctl", run_id)]


def test_lock_cli_release_other_holder_needs_force(store: StateStore, url: str) -> None:
    store.acquire_sites(["site1"], "install", holder="alice@ctl")
    refused = CliRunner().invoke(lock, ["release", "site1", "--state-url", url])
    assert refused.exit_code == 1
    assert "nothing released: site1 is locked by alice@ctl since" in refused.stderr
    assert "not by tester@control" in refused.stderr
    assert [row["site"] for row in store.list_locks()] == ["site1"]
    forced = CliRunner().invoke(lock, ["release", "site1", "--force", "--state-url", url])
    assert forced.exit_code == 0, forced.output
    assert "released site1 (held by alice@ctl" in forced.stderr
    assert store.list_locks() == []
    entry = store.audit_entries()[-1]
    assert entry["operation"] == "lock.release" and entry["actor"] == "tester@control"
    assert entry["detail"]["forced"] is True


def test_lock_cli_release_own_lock_and_unknown_site(store: StateStore, url: str) -> None:
    store.acquire_sites(["site1"], "install", holder="tester@control")
    done = CliRunner().invoke(lock, ["release", "site1", "--json", "--state-url", url])
    assert done.exit_code == 0, done.output
    assert [row["site"] for row in json.loads(done.stdout)] == ["site1"]
    unknown = CliRunner().invoke(lock, ["release", "site1", "--state-url", url])
    assert unknown.exit_code == 1 and "site1 is not locked" in unknown.stderr
