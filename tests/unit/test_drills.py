"""DR drills: the state module (migration 0007) and the pure measurements of actions/drill.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from lpse_ops.state import drills as drill_state
from lpse_ops.state.store import StateError, StateStore

JAYAPURA = ZoneInfo("Asia/Jayapura")


def test_drills_round_trip_with_offsets_and_window(tmp_path):
    with StateStore.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        run_id = store.start_run("drill.run", {"scenario": "rows-deleted"}, ["site1"])
        first = drill_state.start_drill(store, "rows-deleted", "site1",
                                        {"rto_s": 1800, "rpo_db_s": 60, "rpo_docs_s": 300}, run_id=run_id,
                                        started_at=datetime(2026, 11, 28, 9, 0, tzinfo=JAYAPURA))
        drill_state.finish_drill(store, first, ok=True, rto_s=95.5, rpo_db_s=1.2, rpo_docs_s=0.0, met=True,
                                 timeline=[{"at": "2026-11-28T00:00:05+00:00", "event": "fault"}])
        second = drill_state.start_drill(store, "documents-lost", "site1", {"rto_s": 1800},
                                         started_at=datetime(2026, 11, 28, 10, 0, tzinfo=JAYAPURA))
        drill_state.finish_drill(store, second, ok=False, failed_step="restore-to-snapshot", met=False)
        everything = drill_state.list_drills(store)
        # 09:00 WIT is 00:00 UTC: the window is read in absolute time, whatever zone the caller uses.
        window = drill_state.list_drills(store, since=datetime(2026, 11, 28, 0, 30, tzinfo=UTC),
                                         until=datetime(2026, 11, 28, 10, 30, tzinfo=JAYAPURA))
        entries = [entry["operation"] for entry in store.audit_entries()]
    assert [drill["id"] for drill in everything] == [first, second]
    drill = everything[0]
    assert set(drill) >= {"id", "scenario", "site", "started_at", "finished_at", "ok", "failed_step", "rto_s",
                          "rpo_db_s", "rpo_docs_s", "targets", "met", "timeline"}
    assert drill["started_at"] == "2026-11-28T00:00:00+00:00"
    assert datetime.fromisoformat(drill["finished_at"]).utcoffset() == timedelta(0)
    assert drill["targets"] == {"rto_s": 1800, "rpo_db_s": 60, "rpo_docs_s": 300}
    assert drill["timeline"] == [{"at": "2026-11-28T00:00:05+00:00", "event": "fault"}]
    assert (drill["ok"], drill["met"], drill["rto_s"], drill["run_id"]) == (True, True, 95.5, run_id)
    assert everything[1]["failed_step"] == "restore-to-snapshot" and everything[1]["ok"] is False
    assert everything[1]["targets"] == {"rto_s": 1800, "rpo_db_s": None, "rpo_docs_s": None}
    assert [drill["id"] for drill in window] == [second]
    assert entries.count("drill.start") == 2 and entries.count("drill.finish") == 2


def test_finishing_an_unknown_drill_is_refused(tmp_path):
    with StateStore.open(f"sqlite:///{tmp_path / 'state.db'}") as store, \
            pytest.raises(StateError, match="drill 42 not found"):
        drill_state.finish_drill(store, 42, ok=True)
