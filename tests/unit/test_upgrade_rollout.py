"""The rollout's pure parts: the failure budget, groups per wave, extra variables, outcomes from records."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from lpse_ops.actions import upgrade as rollout
from lpse_ops.actions.upgrade_catalogue import Release
from lpse_ops.actions.upgrade_plan_types import Exclusion, Reason, SitePlan, UpgradePlan
from lpse_ops.runner_events import PlayTracker


@pytest.mark.parametrize(("text", "planned", "allowed"), [("0", 600, 0), ("2", 600, 2), ("5%", 600, 30),
                                                          ("5%", 10, 0), ("100%", 3, 3)])
def test_budget_is_a_count_or_a_share_of_the_whole_rollout(text: str, planned: int, allowed: int) -> None:
    assert rollout.Budget.parse(text).allowed(planned) == allowed


@pytest.mark.parametrize("text", ["-1", "x", "101%", "1.5"])
def test_bad_budget_is_refused_with_what_to_write(text: str) -> None:
    with pytest.raises(ValueError, match="failure budget .*use a count of sites"):
        rollout.Budget.parse(text)


def _plan(waves: list[list[SitePlan]], excluded: list[Exclusion] | None = None) -> UpgradePlan:
    releases = [Release("1.1", "1.0", Path("/b/spse-1.1.tar.gz"), 2, sha256="1" * 64),
                Release("1.2", "1.1", Path("/b/spse-1.2.tar.gz"), 3, sha256="2" * 64)]
    return UpgradePlan(target="1.2", waves=waves, excluded=excluded or [], releases=releases)


def test_a_wave_runs_once_per_starting_version_and_path() -> None:
    wave = [SitePlan("a", "1.0", ["1.1", "1.2"], "wave 1"), SitePlan("b", "1.1", ["1.2"], "wave 1"),
            SitePlan("c", "1.0", ["1.1", "1.2"], "wave 1")]
    groups = rollout.groups_of(wave)
    assert [[site.host for site in group] for group in groups] == [["a", "c"], ["b"]]
    extra = rollout.extravars(_plan([wave]), groups[0], "upgrade-7", rollout.RolloutOptions(Path("inv")),
                              datetime(2026, 11, 28, 15, 0, tzinfo=UTC))
    assert extra["upgrade_from_version"] == "1.0" and extra["upgrade_checkpoint"] == "upgrade-7"
    # each hop carries the sha256 of the bytes verified: the site refuses any other
    assert extra["upgrade_path"] == [{"version": "1.1", "bundle": "/b/spse-1.1.tar.gz", "sha256": "1" * 64},
                                     {"version": "1.2", "bundle": "/b/spse-1.2.tar.gz", "sha256": "2" * 64}]
    assert extra["upgrade_to_schema"] == 3
    assert extra["upgrade_maintenance_reason"] == "pemutakhiran SPSE 1.0 ke 1.2"


def test_a_plan_that_leaves_a_site_out_refuses_the_whole_run() -> None:
    excluded = [Exclusion("site9", [Reason("unreachable", "site9 does not answer SSH")], "1.0")]
    with pytest.raises(rollout.RolloutRefused, match="site9: unreachable") as refused:
        rollout.refuse_unless_clean(_plan([[SitePlan("a", "1.0", ["1.1", "1.2"], "canary")]], excluded))
    assert "no site was touched" in str(refused.value)
    with pytest.raises(rollout.RolloutRefused, match="nothing to do"):
        rollout.refuse_unless_clean(_plan([]))


def test_outcome_comes_from_the_typed_record_and_a_missing_record_is_never_dropped() -> None:
    tracker = PlayTracker()
    tracker.feed({"event": "runner_on_unreachable", "event_data": {"host": "b", "task": "Gathering",
                                                                   "res": {"msg": "ssh: connect refused"}}})
    tracker.feed({"event": "playbook_on_stats", "event_data": {"dark": {"b": 1}, "artifact_data": {
        "lpse_result": {"a": {"kind": "upgrade", "outcome": "rolled_back", "failed_step": "canary"}}}}})
    result = type("R", (), {"tracker": tracker})()
    assert rollout.outcome_of("a", 0, result).outcome == "rolled_back"
    unreachable = rollout.outcome_of("b", 0, result)
    assert unreachable.outcome == "unreachable" and "connect refused" in unreachable.record["reason"]
    assert rollout.outcome_of("c", 0, result).outcome == "no_result"
    assert not rollout.outcome_of("c", 0, None).ok
