"""Pure parsers over output recorded from the real engines in the lab (tests/fixtures/engines)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from lpse_ops.actions.backup import catalogue
from lpse_ops.backends import pgbackrest, restic

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engines"


def recorded(name: str):
    return json.loads((FIXTURES / name).read_text())["output"]


def test_pgbackrest_info_parses_sets_per_repo_and_archive_range():
    (stanza,) = pgbackrest.parse_info(recorded("pgbackrest-info.json"))
    assert stanza.name == "spse" and stanza.status_code == 0 and stanza.repo_status == {1: "ok", 2: "ok"}
    assert [(b.repo, b.label, b.type) for b in stanza.backups] == [(1, "20261124-093245F", "full"),
                                                                   (2, "20261124-093249F", "full")]
    assert stanza.backups[0].stopped == datetime.fromtimestamp(1795512768, tz=UTC)
    assert stanza.backups[0].size == 31861617 and not stanza.backups[0].error
    assert stanza.archive_max == {1: "000000010000000000000007", 2: "000000010000000000000007"}
    assert pgbackrest.latest_backup([stanza], repo=2).label == "20261124-093249F"


def test_pgbackrest_info_empty_stanza_has_no_backup():
    (stanza,) = pgbackrest.parse_info([{"name": "spse", "backup": [], "archive": [], "repo": [],
                                        "status": {"code": 2, "message": "no valid backups"}}])
    assert stanza.backups == [] and pgbackrest.latest_backup([stanza]) is None
    assert stanza.status_message == "no valid backups"


def test_restic_snapshots_parse_nanosecond_times_and_tags():
    (snapshot,) = restic.parse_snapshots(recorded("restic-snapshots.json"))
    assert snapshot.short_id == "46244e4d"
    assert snapshot.time == datetime(2026, 11, 24, 9, 32, 56, 795173, tzinfo=UTC)
    assert snapshot.tags == ("lab01", "20261124-093245F", "20261124-093249F")
    assert "/var/lib/spse/documents" in snapshot.paths
    assert restic.snapshot_at([snapshot], datetime(2026, 11, 24, 9, 32, tzinfo=UTC)) is None
    assert restic.snapshot_at([snapshot], datetime(2026, 11, 24, 9, 33, tzinfo=UTC)) == snapshot


def test_catalogue_lists_every_engine_and_repo():
    rows = catalogue({"site1": {"pgbackrest": recorded("pgbackrest-info.json"),
                                "restic": {"local": recorded("restic-snapshots.json"), "offsite": []}}})
    assert [(r["engine"], str(r["repo"]), r["id"]) for r in rows] == [
        ("pgbackrest", "1", "20261124-093245F"), ("pgbackrest", "2", "20261124-093249F"),
        ("restic", "local", "46244e4d")]


def test_control_side_and_site_share_one_parser():
    from lpse_ops import site  # noqa: F401 (the site package is importable on the control machine)
    from lpse_ops.site import pgbackrest as site_pgbackrest
    from lpse_ops.site import restic as site_restic

    assert pgbackrest.parse_info is site_pgbackrest.parse_info and pgbackrest.BackupSet is site_pgbackrest.BackupSet
    assert restic.parse_snapshots is site_restic.parse_snapshots and restic.parse_time is site_restic.parse_time
