"""Site locks in a shared PostgreSQL store: two operators (two stores, two processes) on one URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from lpse_ops.state import StateStore
from lpse_ops.state.store import LockNotHeldError, SiteLockedError
from tests.unit.test_site_locks import race_for_sites


def test_second_store_on_same_url_cannot_take_locked_site(pg_url: str, tmp_path: Path) -> None:
    with StateStore.open(pg_url, head_path=tmp_path / "alice.json") as alice, \
            StateStore.open(pg_url, head_path=tmp_path / "bob.json") as bob:
        run_id = alice.start_run("install", {"version": "1.0"}, ["site1", "site2"], actor="alice@ctl")
        alice.acquire_sites(["site1", "site2"], "install", run_id=run_id, holder="alice@ctl")

        with pytest.raises(SiteLockedError) as refused:
            bob.acquire_sites(["site3", "site2"], "backup.restore", holder="bob@laptop")
        message = str(refused.value)
        assert message.startswith("site2 is locked by alice@ctl since ")
        assert f"UTC for install (run {run_id}): wait for it, or `lpse-ops lock release site2 --force`" in message
        assert [row["site"] for row in bob.list_locks()] == ["site1", "site2"]  # site3 not taken either

        with pytest.raises(LockNotHeldError, match="not by bob@laptop"):
            bob.release_sites(["site2"], holder="bob@laptop")
        alice.release_sites(["site1", "site2"], run_id=run_id, holder="alice@ctl")
        assert bob.acquire_sites(["site3", "site2"], "backup.restore", holder="bob@laptop")
        assert [(row["site"], row["holder"]) for row in alice.list_locks()] == \
            [("site2", "bob@laptop"), ("site3", "bob@laptop")]
        assert [entry["operation"] for entry in bob.audit_entries()] == \
            ["run.start", "lock.acquire", "lock.release", "lock.acquire"]
        assert bob.audit_verify().ok


def test_forced_release_by_second_operator_is_audited(pg_url: str, tmp_path: Path) -> None:
    with StateStore.open(pg_url, head_path=tmp_path / "alice.json") as alice, \
            StateStore.open(pg_url, head_path=tmp_path / "bob.json") as bob:
        alice.acquire_sites(["site1"], "install", holder="alice@ctl")
        released = bob.release_sites(["site1"], holder="bob@laptop", force=True)
        assert [row["holder"] for row in released] == ["alice@ctl"]
        entry = alice.audit_entries()[-1]
        assert entry["operation"] == "lock.release" and entry["actor"] == "bob@laptop"
        assert entry["detail"]["forced"] is True


def test_concurrent_acquire_from_processes_has_exactly_one_winner(pg_url: str, tmp_path: Path) -> None:
    outcomes = race_for_sites(pg_url, tmp_path / "head.json", ["site1", "site2"])
    assert sorted(outcomes.values()) == ["refused", "refused", "refused", "won"], outcomes
    winner = next(name for name, outcome in outcomes.items() if outcome == "won")
    with StateStore.open(pg_url, head_path=tmp_path / "head.json") as store:
        assert [row["holder"] for row in store.list_locks()] == [winner, winner]
        assert store.audit_verify().ok
