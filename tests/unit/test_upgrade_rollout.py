"""The rollout's pure parts: the failure budget, groups per wave, extra variables, outcomes from records."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from lpse_ops.actions import fleet
from lpse_ops.actions import upgrade as rollout
from lpse_ops.actions.upgrade_catalogue import Release
from lpse_ops.actions.upgrade_plan_types import Exclusion, Reason, SitePlan, UpgradePlan
from lpse_ops.runner_events import PlayTracker


@pytest.mark.parametrize(("text", "planned", "allowed"), [("0", 600, 0), ("2", 600, 2), ("5%", 600, 30),
                                                          ("5%", 10, 0), ("100%", 3, 3)])
def test_budget_is_a_count_or_a_share_of_the_whole_rollout(text: str, planned: int, allowed: int) -> None:
    assert fleet.Budget.parse(text).allowed(planned) == allowed


@pytest.mark.parametrize("text", ["-1", "x", "101%", "1.5"])
def test_bad_budget_is_refused_with_what_to_write(text: str) -> None:
    with pytest.raises(ValueError, match="failure budget .*use a count of sites"):
        fleet.Budget.parse(text)


def test_waves_halt_before_the_next_wave_once_the_failures_exceed_the_budget() -> None:
    """fleet.run_waves: budget 1 of 5 sites; the canary fails 1 (within), wave 1 fails 1 more (2 > 1): wave 2
    never runs and is named as not started."""
    ran: list[tuple[int, list[str]]] = []
    failures = {0: 1, 1: 1, 2: 0}

    def one(index: int, hosts: list[str]) -> int:
        ran.append((index, hosts))
        return failures[index]

    waves = [["site1"], ["site2", "site3"], ["site4", "site5"]]
    run = fleet.run_waves(waves, one, fleet.Budget.parse("1"))
    assert ran == [(0, ["site1"]), (1, ["site2", "site3"])]
    assert (run.failures, run.allowed_failures, run.not_started) == (2, 1, [["site4", "site5"]])
    assert run.halted == ("2 site(s) failed, more than the failure budget (1 = 1 site(s)): waves 2 onwards "
                          "not started")
    everything = fleet.run_waves(waves, one, fleet.Budget.parse("40%"))  # 2 of 5 allowed: all three run
    assert (everything.halted, everything.failures, everything.allowed_failures) == (None, 2, 2)


def test_waves_are_a_canary_then_the_wave_groups_then_the_rest_in_natural_order() -> None:
    groups = {"canary": ["site10"], "wave_2": ["site3", "site2"], "wave_1": ["site9", "site10"]}
    hosts = ["site1", "site2", "site3", "site9", "site10", "site11"]
    waves = fleet.assign_waves(hosts, groups, 1, fleet.WaveSize.parse("2"))
    assert [(w.name, w.hosts) for w in waves] == [
        ("canary", ["site10"]), ("wave_1", ["site9"]), ("wave_2", ["site2", "site3"]),
        ("unassigned", ["site1", "site11"])]
    sized = fleet.assign_waves(hosts, {}, 2, fleet.WaveSize.parse("50%"))
    assert [(w.name, w.hosts) for w in sized] == [
        ("canary", ["site1", "site2"]), ("wave 1", ["site3", "site9", "site10"]), ("wave 2", ["site11"])]


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


def test_the_site_tool_copy_is_skipped_only_when_every_site_of_the_group_has_this_build() -> None:
    """The plan's probe read each site's tool sha256: a group whose sites all have the tool this lpse-ops
    builds gets upgrade_site_tool_sha256 (the play copies none, upgrade-prepare checks it); one site with
    another tool, or none, and the play installs it as before."""
    ours = rollout.site_tool_sha256()
    assert len(ours) == 64 and ours == rollout.site_tool_sha256()  # deterministic build
    start = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
    same = [SitePlan("a", "1.1", ["1.2"], "canary", tool_sha256=ours), SitePlan("b", "1.1", ["1.2"], "canary",
                                                                                tool_sha256=ours)]
    extra = rollout.extravars(_plan([same]), same, "upgrade-7", rollout.RolloutOptions(Path("inv")), start)
    assert extra["upgrade_site_tool_sha256"] == ours
    for other in ("0" * 64, None):
        mixed = [same[0], SitePlan("b", "1.1", ["1.2"], "canary", tool_sha256=other)]
        extra = rollout.extravars(_plan([mixed]), mixed, "upgrade-7", rollout.RolloutOptions(Path("inv")), start)
        assert "upgrade_site_tool_sha256" not in extra


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


def test_the_canary_limits_reach_the_playbook_and_default_to_its_own() -> None:
    """`upgrade run --max-5xx-increase/--max-p95-ratio/--p95-slack-ms` become the playbook's
    upgrade_canary_* variables; left alone, they are the playbook's defaults (and the site tool's)."""
    import yaml

    from lpse_ops.config import PROJECT_DIR

    play = yaml.safe_load((PROJECT_DIR / "playbooks" / "upgrade.yml").read_text())
    play_vars = next(item["vars"] for item in play if "upgrade_canary_p95_slack_ms" in item.get("vars", {}))
    wave = [SitePlan("a", "1.1", ["1.2"], "canary")]
    start = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
    default = rollout.extravars(_plan([wave]), wave, "upgrade-7", rollout.RolloutOptions(Path("inv")), start)
    for name in ("max_5xx_increase", "max_p95_ratio", "p95_slack_ms"):
        assert default[f"upgrade_canary_{name}"] == play_vars[f"upgrade_canary_{name}"], name
    tuned = rollout.RolloutOptions(Path("inv"), max_5xx_increase=0.05, max_p95_ratio=3.0, p95_slack_ms=900.0)
    extra = rollout.extravars(_plan([wave]), wave, "upgrade-7", tuned, start)
    assert (extra["upgrade_canary_max_5xx_increase"], extra["upgrade_canary_max_p95_ratio"],
            extra["upgrade_canary_p95_slack_ms"]) == (0.05, 3.0, 900.0)


def test_a_canary_limit_out_of_range_is_refused_before_any_plan(tmp_path) -> None:
    from click.testing import CliRunner

    from lpse_ops.main import main

    for option, value in (("--max-p95-ratio", "0.5"), ("--max-5xx-increase", "2"), ("--p95-slack-ms", "-1")):
        result = CliRunner().invoke(main, ["upgrade", "run", "--to", "1.2", option, value, "--yes", "--json"],
                                    env={"LPSE_OPS_HOME": str(tmp_path)})
        assert result.exit_code == 2 and option in result.output, result.output
