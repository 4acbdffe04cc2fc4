"""The hash-chained, append-only audit log: intact chains verify, every kind of tampering is named."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from lpse_ops.commands.audit import audit_log
from lpse_ops.state import AuditVerifyResult, StateStore
from lpse_ops.state.audit import GENESIS_HASH, canonical_json, entry_hash


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def store(url: str) -> StateStore:
    store = StateStore.open(url)
    for number in range(1, 11):
        store.audit_append("test.step", {"n": number, "hosts": [f"site{number}"]})
    yield store
    store.close()


def _bypass(url: str, *statements: str, params: dict | None = None) -> None:
    """Act as a DBA with raw SQL access: drop the append-only triggers, then run *statements*."""
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_update")
        connection.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_delete")
        for statement in statements:
            connection.execute(sa.text(statement), params or {})
    engine.dispose()


def test_audit_verify_intact_chain_is_ok(store: StateStore) -> None:
    result = store.audit_verify()
    assert isinstance(result, AuditVerifyResult)
    assert result.ok and result.problems == [] and result.warnings == []
    assert result.entries == 10 and result.head_seq == 10 and result.anchor_seq == 10
    assert result.head_hash == store.audit_entries()[-1]["hash"]


def test_audit_append_returns_entry_chained_by_canonical_json(url: str) -> None:
    with StateStore.open(url) as store:
        first = store.audit_append("bundle.build", {"b": 2, "a": [1, "x"], "path": Path("/srv")}, actor="bob")
        second = store.audit_append("install.start", {})
    assert first["seq"] == 1 and first["prev_hash"] == GENESIS_HASH and first["actor"] == "bob"
    assert first["detail"] == {"a": [1, "x"], "b": 2, "path": "/srv"}
    document = {key: first[key] for key in ("seq", "ts", "actor", "operation", "detail", "prev_hash")}
    assert canonical_json(document) == (
        '{"actor":"bob","detail":{"a":[1,"x"],"b":2,"path":"/srv"},"operation":"bundle.build",'
        f'"prev_hash":"{GENESIS_HASH}","seq":1,"ts":"{first["ts"]}"}}'
    )
    assert first["hash"] == entry_hash(**document)
    assert second["seq"] == 2 and second["prev_hash"] == first["hash"] and second["actor"] == "tester@control"


def test_audit_log_update_is_refused_by_trigger(store: StateStore, url: str) -> None:
    engine = sa.create_engine(url)
    with pytest.raises(sa.exc.DatabaseError, match="audit_log is append-only"), engine.begin() as connection:
        connection.execute(sa.text("UPDATE audit_log SET detail = '{}' WHERE seq = 3"))
    engine.dispose()
    assert store.audit_verify().ok


def test_audit_log_delete_is_refused_by_trigger(store: StateStore, url: str) -> None:
    engine = sa.create_engine(url)
    for statement in ("DELETE FROM audit_log WHERE seq = 10", "DELETE FROM audit_log"):
        with pytest.raises(sa.exc.DatabaseError, match="audit_log is append-only"), engine.begin() as connection:
            connection.execute(sa.text(statement))
    engine.dispose()
    assert store.audit_verify().entries == 10


def test_audit_verify_edited_entry_reports_edited(store: StateStore, url: str) -> None:
    _bypass(url, """UPDATE audit_log SET detail = '{"n": 7, "hosts": ["elsewhere"]}' WHERE seq = 7""")
    result = store.audit_verify()
    assert not result.ok
    assert result.problems == ["entry 7: hash does not match its content (edited)"]


def test_audit_verify_deleted_middle_entry_reports_gap(store: StateStore, url: str) -> None:
    _bypass(url, "DELETE FROM audit_log WHERE seq = 5")
    result = store.audit_verify()
    assert not result.ok and result.entries == 9
    assert result.problems == ["entry 5 missing: sequence jumps from 4 to 6 (deleted)"]


def test_audit_verify_deleted_first_entries_reports_start(store: StateStore, url: str) -> None:
    _bypass(url, "DELETE FROM audit_log WHERE seq <= 2")
    assert store.audit_verify().problems == ["entries 1-2 missing: chain starts at 3 (deleted)"]


def test_audit_verify_deleted_tail_reports_anchor_mismatch(store: StateStore, url: str) -> None:
    _bypass(url, "DELETE FROM audit_log WHERE seq >= 9")
    result = store.audit_verify()
    assert not result.ok and result.head_seq == 8
    assert result.problems == ["chain ends at 8 but the head anchor says 10 (tail deleted)"]


def test_audit_verify_all_entries_deleted_reports_empty_chain(store: StateStore, url: str) -> None:
    _bypass(url, "DELETE FROM audit_log")
    assert store.audit_verify().problems == ["chain is empty but the head anchor says 10 (deleted)"]


def test_audit_verify_swapped_entries_reports_reordered(store: StateStore, url: str) -> None:
    columns = ("ts", "actor", "operation", "detail", "prev_hash", "hash")
    rows = {row["seq"]: row for row in store.audit_entries() if row["seq"] in (3, 4)}
    params = {f"{column}{seq}": json.dumps(rows[seq][column]) if column == "detail" else rows[seq][column]
              for seq in (3, 4) for column in columns}

    def move(source: int, target: int) -> str:
        assignments = ", ".join(f"{column} = :{column}{source}" for column in columns)
        return f"UPDATE audit_log SET {assignments} WHERE seq = {target}"

    _bypass(url, "UPDATE audit_log SET hash = 'x' || hash WHERE seq IN (3, 4)",  # free the unique hashes
            move(4, 3), move(3, 4), params=params)
    result = store.audit_verify()
    assert not result.ok
    assert result.problems == [
        "entry 3: hash does not match its content, which was written as entry 4 (reordered)",
        "entry 3: prev_hash does not match entry 2 (reordered or replaced)",
        "entry 4: hash does not match its content, which was written as entry 3 (reordered)",
        "entry 4: prev_hash does not match entry 3 (reordered or replaced)",
        "entry 5: prev_hash does not match entry 4 (reordered or replaced)",
    ]


def test_audit_verify_forged_recomputed_entry_breaks_successor_link(store: StateStore, url: str) -> None:
    original = store.audit_entries()[5]  # seq 6
    forged_detail = {"n": 6, "hosts": ["nobody-was-here"]}
    forged_hash = entry_hash(6, original["ts"], original["actor"], original["operation"], forged_detail,
                             original["prev_hash"])
    _bypass(url, "UPDATE audit_log SET detail = :detail, hash = :hash WHERE seq = 6",
            params={"detail": json.dumps(forged_detail), "hash": forged_hash})
    result = store.audit_verify()
    assert result.problems == ["entry 7: prev_hash does not match entry 6 (reordered or replaced)"]


def test_audit_verify_forged_recomputed_tail_differs_from_anchor(store: StateStore, url: str) -> None:
    last = store.audit_entries()[-1]
    forged_hash = entry_hash(10, last["ts"], last["actor"], last["operation"], {"n": 0}, last["prev_hash"])
    _bypass(url, "UPDATE audit_log SET detail = :detail, hash = :hash WHERE seq = 10",
            params={"detail": json.dumps({"n": 0}), "hash": forged_hash})
    assert store.audit_verify().problems == ["entry 10: hash differs from the head anchor (replaced)"]


def test_audit_verify_missing_anchor_is_a_warning_corrupt_anchor_a_problem(store: StateStore) -> None:
    store.head_path.unlink()
    result = store.audit_verify()
    assert result.ok and result.anchor_seq is None
    assert "no head anchor" in result.warnings[0]
    store.head_path.write_text("not json")
    result = store.audit_verify()
    assert not result.ok and "is not valid" in result.problems[0]


def test_audit_anchor_written_atomically_and_never_moves_back(store: StateStore) -> None:
    anchor = json.loads(store.head_path.read_text())
    assert anchor["seq"] == 10 and anchor["hash"] == store.audit_entries()[-1]["hash"]
    from lpse_ops.state.audit import write_anchor
    write_anchor(store.head_path, 3, "0" * 64, store=store.identity)
    assert json.loads(store.head_path.read_text())["seq"] == 10
    assert not list(store.head_path.parent.glob(".audit-head.json.*"))  # no temporary files left


def test_audit_other_store_gets_its_own_anchor_file(url: str, tmp_path: Path, lpse_home: Path) -> None:
    with StateStore.open(f"sqlite:///{tmp_path / 'other.db'}") as other:
        other.audit_append("test.other", {})
        assert other.head_path.parent == lpse_home and other.head_path.name.startswith("audit-head-")
    with StateStore.open(url) as store:
        store.audit_append("test.main", {})
        assert store.audit_verify().ok


def test_audit_append_concurrent_writers_keep_one_chain(url: str) -> None:
    StateStore.open(url).close()
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            with StateStore.open(url) as store:
                for number in range(15):
                    store.audit_append("test.concurrent", {"writer": name, "n": number})
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(f"w{index}",)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with StateStore.open(url) as store:
        result = store.audit_verify()
        assert result.ok, result.problems
        assert result.entries == 45 and result.anchor_seq == 45


def test_audit_cli_verify_intact_exits_0(store: StateStore, url: str) -> None:
    result = CliRunner().invoke(audit_log, ["verify", "--state-url", url])
    assert result.exit_code == 0, result.output
    head = store.audit_entries()[-1]["hash"][:12]
    assert f"audit log intact: 10 entries, head {head}" in result.stdout


def test_audit_cli_verify_tampered_exits_1_listing_problems(store: StateStore, url: str) -> None:
    _bypass(url, "DELETE FROM audit_log WHERE seq = 5", "DELETE FROM audit_log WHERE seq = 10")
    result = CliRunner().invoke(audit_log, ["verify", "--state-url", url])
    assert result.exit_code == 1
    assert "entry 5 missing: sequence jumps from 4 to 6 (deleted)" in result.stderr
    assert "chain ends at 9 but the head anchor says 10 (tail deleted)" in result.stderr
    as_json = CliRunner().invoke(audit_log, ["verify", "--json"], env={"LPSE_OPS_STATE_URL": url})
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["ok"] is False


def test_audit_cli_show_prints_newest_entries(store: StateStore, url: str) -> None:
    result = CliRunner().invoke(audit_log, ["show", "--limit", "3", "--json", "--state-url", url])
    assert result.exit_code == 0, result.output
    assert [entry["seq"] for entry in json.loads(result.stdout)] == [8, 9, 10]
    table = CliRunner().invoke(audit_log, ["show", "--state-url", url])
    assert table.exit_code == 0 and "test.step" in table.stdout


def test_verify_without_an_anchor_warns_once(tmp_path):
    from lpse_ops.state import StateStore

    with StateStore.open("sqlite:///:memory:") as store:
        store.audit_append("x", {"n": 1})
        result = store.audit_verify()
    assert result.ok and len([w for w in result.warnings if "anchor" in w]) == 1, result.warnings
