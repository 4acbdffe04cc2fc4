"""The upgrade plan's pure core: catalogue, paths, exclusions and waves, with real signed bundles.

The bundles are signed by ``lpse_ops.bundle.build`` from release sources carrying the reference SPSE's
release metadata (``reference.releases()``: 1.0, 1.1 from 1.0, 1.2 from 1.1) and its real migrations;
the jar is a stand-in (no JDK needed), which the plan never looks into. Built once per module.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lpse_ops import bundle, reference
from lpse_ops.actions import fleet, operation
from lpse_ops.actions import upgrade_catalogue as uc
from lpse_ops.actions import upgrade_plan as up
from lpse_ops.actions import upgrade_plan_rules as ur
from lpse_ops.actions import upgrade_plan_types as ut
from lpse_ops.actions import upgrade_site_state as us
from lpse_ops.commands import upgrade as upgrade_cli
from lpse_ops.runner_events import HostState, PlayTracker
from tests.tampering import tamper_jar

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
FRESH = {"ok": True, "verified_at": (NOW - timedelta(hours=2)).isoformat()}
GIB = 1024**3


def release_source(root: Path, version: str, min_upgrade_from: str, migrations: list[str]) -> Path:
    source = root / f"src-{version}"
    (source / "payload" / "lib").mkdir(parents=True)
    (source / "payload" / "migrations").mkdir()
    (source / "payload" / "lib" / "spse.jar").write_bytes(f"stand-in jar {version}\n".encode() * 50)
    (source / "payload" / "VERSION").write_text(f"{version}\n")
    listed = []
    for number, migration_id in enumerate(migrations, start=1):
        sql = reference.FIXTURE_DIR / "migrations" / f"{migration_id}.sql"
        shutil.copyfile(sql, source / "payload" / "migrations" / sql.name)
        listed.append({"id": migration_id, "path": f"migrations/{sql.name}", "schema_version": number})
    (source / "release.yml").write_text(yaml.safe_dump({
        "version": version, "min_upgrade_from": min_upgrade_from, "migrations": listed,
        "run": {"jar": "lib/spse.jar", "health_path": "/health"}}, sort_keys=False))
    return source


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Signed 1.0, 1.1, 1.2 (reference metadata) in ``releases``, the trusted keys folder, and the key."""
    root = tmp_path_factory.mktemp("upgrade-plan")
    bundle.keygen(root / "keys" / "release.key", root / "keys" / "release.pub", "upgrade plan test key")
    trusted = root / "trusted"
    trusted.mkdir()
    shutil.copyfile(root / "keys" / "release.pub", trusted / "release.pub")
    releases = root / "releases"
    for version, meta in reference.releases().items():
        if version not in ("1.0", "1.1", "1.2"):  # 1.3 (no migrations) is the benchmark's
            continue
        bundle.build(release_source(root, version, str(meta["min_upgrade_from"]), meta["migrations"]),
                     root / "keys" / "release.key", releases)
    return {"root": root, "releases": releases, "trusted": trusted, "key": root / "keys" / "release.key"}


@pytest.fixture(scope="module")
def catalogue(signed: dict) -> uc.Catalogue:
    return uc.load_catalogue(signed["releases"], signed["trusted"])


def folder_with(signed: dict, tmp_path: Path, *versions: str) -> Path:
    folder = tmp_path / "releases"
    folder.mkdir()
    for version in versions:
        shutil.copyfile(signed["releases"] / f"spse-{version}.tar.gz", folder / f"spse-{version}.tar.gz")
    return folder


def tamper(path: Path) -> None:
    """Rewrite the bundle with one byte of its jar changed (the signature stays the old one)."""
    tamper_jar(path, path)


def state(host: str, version: str | None = "1.0", **changes: object) -> us.SiteState:
    values = {"schema_version": 1, "health": "ok", "free_bytes": 10 * GIB, "verification": dict(FRESH)}
    values.update(changes)
    return us.SiteState(host, version=version, **values)  # type: ignore[arg-type]


def states(*items: us.SiteState) -> dict[str, us.SiteState]:
    return {item.host: item for item in items}


def options(target: str = "1.2", **changes: object) -> ut.PlanOptions:
    return ut.PlanOptions(target, now=NOW, **changes)  # type: ignore[arg-type]


def codes(plan: ut.UpgradePlan) -> dict[str, list[str]]:
    return {exclusion.host: [reason.code for reason in exclusion.reasons] for exclusion in plan.excluded}


def wave_hosts(plan: ut.UpgradePlan) -> list[list[str]]:
    return [[site.host for site in wave] for wave in plan.waves]


# ------------------------------------------------------------------ catalogue


def test_catalogue_reference_releases_all_verified(catalogue: uc.Catalogue) -> None:
    found = {release.version: release.min_upgrade_from for release in catalogue.releases.values()}
    assert found == {"1.0": "1.0", "1.1": "1.0", "1.2": "1.1"}
    assert catalogue.refused == []
    assert catalogue.get("1.2").schema_version == 3  # type: ignore[union-attr]


def test_catalogue_tampered_bundle_refused_naming_the_file(signed: dict, tmp_path: Path) -> None:
    folder = folder_with(signed, tmp_path, "1.0", "1.1", "1.2")
    tamper(folder / "spse-1.1.tar.gz")
    loaded = uc.load_catalogue(folder, signed["trusted"])
    assert sorted(release.version for release in loaded.releases.values()) == ["1.0", "1.2"]
    [refused] = loaded.refused
    assert refused.version == "1.1" and not refused.verified
    assert str(folder / "spse-1.1.tar.gz") in str(refused.error)
    assert "payload/lib/spse.jar: sha256 mismatch (tampered or corrupt)" in str(refused.error)


def test_catalogue_unsigned_bundle_refused_with_bundle_error(signed: dict, tmp_path: Path) -> None:
    folder = folder_with(signed, tmp_path, "1.2")
    with tarfile.open(folder / "spse-1.2.tar.gz", "r:gz") as tar:
        members = [(info, tar.extractfile(info).read() if info.isreg() else None) for info in tar.getmembers()]
    with tarfile.open(folder / "spse-1.2.tar.gz", "w:gz") as tar:
        for info, data in members:
            if info.name != "manifest.sig":
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
    loaded = uc.load_catalogue(folder, signed["trusted"])
    assert "has no manifest.sig" in str(loaded.refused[0].error)


def test_catalogue_missing_folder_refused(tmp_path: Path, signed: dict) -> None:
    with pytest.raises(uc.PlanRefused, match="does not exist"):
        uc.load_catalogue(tmp_path / "nowhere", signed["trusted"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(uc.PlanRefused, match="holds no spse"):
        uc.load_catalogue(tmp_path / "empty", signed["trusted"])


def test_plan_tampered_target_refused_naming_the_file(signed: dict, tmp_path: Path) -> None:
    folder = folder_with(signed, tmp_path, "1.0", "1.1", "1.2")
    tamper(folder / "spse-1.2.tar.gz")
    loaded = uc.load_catalogue(folder, signed["trusted"])
    with pytest.raises(uc.PlanRefused) as caught:
        ur.compute_plan(loaded, states(state("site1")), {}, options())
    assert "target's bundle failed verification" in str(caught.value)
    assert "spse-1.2.tar.gz" in str(caught.value)


def test_plan_tampered_bundle_on_needed_path_refused(signed: dict, tmp_path: Path) -> None:
    folder = folder_with(signed, tmp_path, "1.0", "1.1", "1.2")
    tamper(folder / "spse-1.1.tar.gz")
    loaded = uc.load_catalogue(folder, signed["trusted"])
    with pytest.raises(uc.PlanRefused) as caught:
        ur.compute_plan(loaded, states(state("site1", "1.0")), {}, options())
    assert "spse-1.1.tar.gz" in str(caught.value) and "sha256 mismatch" in str(caught.value)


def test_plan_tampered_bundle_on_no_path_warns_only(signed: dict, tmp_path: Path) -> None:
    folder = folder_with(signed, tmp_path, "1.0", "1.1", "1.2")
    tamper(folder / "spse-1.2.tar.gz")
    loaded = uc.load_catalogue(folder, signed["trusted"])
    plan = ur.compute_plan(loaded, states(state("site1", "1.0")), {}, options("1.1"))
    assert plan.steps == {"site1": ["1.1"]}
    assert any("spse-1.2.tar.gz" in warning and "on no path" in warning for warning in plan.warnings)


def test_refuse_bad_steps_tampered_older_bundle_refused_before_reading_sites(signed: dict, tmp_path: Path) -> None:
    folder = folder_with(signed, tmp_path, "1.0", "1.1", "1.2")
    tamper(folder / "spse-1.1.tar.gz")
    loaded = uc.load_catalogue(folder, signed["trusted"])
    with pytest.raises(uc.PlanRefused, match=r"could be a step to 1\.2; no host was touched") as caught:
        uc.refuse_bad_steps(loaded, "1.2")
    assert "spse-1.1.tar.gz" in str(caught.value)
    uc.refuse_bad_steps(loaded, "1.0")  # 1.1 is newer than that target: on no path


def test_plan_target_without_bundle_refused(catalogue: uc.Catalogue) -> None:
    with pytest.raises(uc.PlanRefused, match=r"no bundle of SPSE 1\.3 .*verified: 1\.0, 1\.1, 1\.2"):
        ur.compute_plan(catalogue, {}, {}, options("1.3"))


# ------------------------------------------------------------------ paths


def test_upgrade_path_1_0_to_1_2_goes_through_1_1(catalogue: uc.Catalogue) -> None:
    assert [release.version for release in uc.upgrade_path("1.0", "1.2", catalogue)] == ["1.1", "1.2"]


def test_upgrade_path_1_1_to_1_2_is_one_step(catalogue: uc.Catalogue) -> None:
    assert [release.version for release in uc.upgrade_path("1.1", "1.2", catalogue)] == ["1.2"]


def test_upgrade_path_same_version_is_empty(catalogue: uc.Catalogue) -> None:
    assert uc.upgrade_path("1.2", "1.2", catalogue) == []
    assert uc.upgrade_path("1.2.0", "1.2", catalogue) == []


def test_upgrade_path_without_intermediate_bundle_is_none(signed: dict, tmp_path: Path) -> None:
    loaded = uc.load_catalogue(folder_with(signed, tmp_path, "1.0", "1.2"), signed["trusted"])
    assert uc.upgrade_path("1.0", "1.2", loaded) is None


def test_upgrade_path_direct_release_preferred_over_longer_chain(signed: dict, tmp_path: Path) -> None:
    folder = folder_with(signed, tmp_path, "1.0", "1.1", "1.2")
    bundle.build(release_source(tmp_path, "1.3", "1.0", ["0001_initial"]), signed["key"], folder)
    loaded = uc.load_catalogue(folder, signed["trusted"])
    assert [release.version for release in uc.upgrade_path("1.0", "1.3", loaded)] == ["1.3"]


def test_plan_1_0_site_gets_steps_1_1_and_1_2(catalogue: uc.Catalogue) -> None:
    plan = ur.compute_plan(catalogue, states(state("site1", "1.0"), state("site2", "1.1")), {}, options())
    assert plan.steps == {"site1": ["1.1", "1.2"], "site2": ["1.2"]}
    assert [release.version for release in plan.releases] == ["1.1", "1.2"]


def test_plan_same_version_site_is_up_to_date_not_excluded(catalogue: uc.Catalogue) -> None:
    plan = ur.compute_plan(catalogue, states(state("site1", "1.2", verification=None, frozen=True)), {}, options())
    assert plan.up_to_date == ["site1"] and plan.excluded == [] and plan.waves == []


def test_plan_no_path_site_excluded_with_code(signed: dict, tmp_path: Path) -> None:
    loaded = uc.load_catalogue(folder_with(signed, tmp_path, "1.0", "1.2"), signed["trusted"])
    plan = ur.compute_plan(loaded, states(state("site1", "1.0")), {}, options())
    assert codes(plan) == {"site1": ["no_path"]}
    assert "no chain of bundles from 1.0 to 1.2" in plan.excluded[0].message


def test_plan_downgrade_refused_without_flag(catalogue: uc.Catalogue) -> None:
    plan = ur.compute_plan(catalogue, states(state("site1", "1.2")), {}, options("1.1"))
    assert codes(plan) == {"site1": ["downgrade"]}
    assert "--allow-downgrade" in plan.excluded[0].message
    assert plan.waves == []


def test_plan_downgrade_allowed_direct_step_with_warning(catalogue: uc.Catalogue) -> None:
    plan = ur.compute_plan(catalogue, states(state("site1", "1.2")), {}, options("1.0", allow_downgrade=True))
    assert plan.steps == {"site1": ["1.0"]}
    assert plan.sites[0].downgrade
    assert any("DOWNGRADE of site1" in warning and "NOT reversed" in warning for warning in plan.warnings)


# ------------------------------------------------------------------ exclusions


@pytest.mark.parametrize(("site", "code", "words"), [
    (us.SiteState("s", reachable=False, error="ssh: connection refused"), "unreachable", "connection refused"),
    (us.SiteState("s", error="no lpse_result record from the site"), "state_unreadable", "no lpse_result"),
    (state("s", None), "not_installed", "lpse-ops install"),
    (state("s", frozen=True), "frozen", "frozen"),
    (state("s", lock={"site": "s", "operation": "backup.restore", "run_id": 9, "holder": "ana@ctl",
                      "acquired_at": NOW.isoformat()}), "locked", "locked by ana@ctl"),
    (state("s", verification=None), "no_verified_backup", "no restore verification recorded"),
    (state("s", verification={"ok": False, "verified_at": NOW.isoformat()}), "no_verified_backup", "failed"),
    (state("s", verification={"ok": True, "verified_at": (NOW - timedelta(hours=200)).isoformat()}),
     "no_verified_backup", "200.0 h old, older than 192 h"),
    (state("s", free_bytes=1000), "preflight_failed", "1000 bytes free"),
    (state("s", health="degraded", health_reason="database unreachable"), "preflight_failed",
     "health is degraded: database unreachable"),
])
def test_plan_site_with_condition_excluded_with_code(catalogue: uc.Catalogue, site: us.SiteState, code: str,
                                                     words: str) -> None:
    plan = ur.compute_plan(catalogue, states(site), {}, options())
    [exclusion] = plan.excluded
    assert (exclusion.host, exclusion.code) == ("s", code)
    assert words in exclusion.message
    assert exclusion.as_dict()["code"] == code and code in ut.CODES


def test_plan_site_with_several_problems_lists_every_reason(catalogue: uc.Catalogue) -> None:
    plan = ur.compute_plan(catalogue, states(state("s", frozen=True, verification=None, free_bytes=1)), {}, options())
    assert codes(plan) == {"s": ["frozen", "no_verified_backup", "preflight_failed"]}


def test_plan_backup_age_limit_is_an_option(catalogue: uc.Catalogue) -> None:
    site = state("s", verification={"ok": True, "verified_at": (NOW - timedelta(hours=30)).isoformat()})
    plan = ur.compute_plan(catalogue, states(site), {}, options(max_backup_age_hours=48))
    assert plan.steps == {"s": ["1.1", "1.2"]}
    assert codes(ur.compute_plan(catalogue, states(site), {}, options(max_backup_age_hours=24))) == {
        "s": ["no_verified_backup"]}


def test_plan_default_gate_is_met_by_the_default_weekly_verification_schedule(catalogue: uc.Catalogue) -> None:
    """The backup role verifies weekly (Sat 04:00); a site verified on its timer 7 days and 20 h ago is planned."""
    schedule = yaml.safe_load((Path(up.__file__).resolve().parents[3] / "roles/backup/defaults/main.yml")
                              .read_text())["backup_schedule_verify"]
    assert schedule.startswith("Sat ")  # weekly: if this changes, the default gate must be looked at again
    site = state("s", verification={"ok": True, "verified_at": (NOW - timedelta(days=7, hours=20)).isoformat()})
    assert ur.compute_plan(catalogue, states(site), {}, options()).steps == {"s": ["1.1", "1.2"]}
    assert ut.DEFAULT_MAX_BACKUP_AGE_HOURS == 192.0


def site_state_record(**fields: object) -> dict:
    """A ``site_state`` result record as ``playbooks/site_state.yml`` emits it (values as Ansible renders them)."""
    return {"kind": "site_state", "schema": 1, "complete": True, "version": "1.0", "schema_version": 1,
            "health": "ok", "health_reason": "", "free_bytes": 76319580160, "frozen": False, **fields}


def test_parse_site_state_record_read() -> None:
    parsed = us.parse_site_state("site1", site_state_record(schema_version="1", free_bytes="76319580160",
                                                              frozen="False"))
    assert (parsed.version, parsed.schema_version, parsed.free_bytes, parsed.frozen, parsed.error) == (
        "1.0", 1, 76319580160, False, None)
    assert us.parse_site_state("site1", site_state_record(version="", frozen=True)).frozen is True
    assert us.parse_site_state("site1", None, messages=["boom"]).error == "boom"


def test_parse_site_state_incomplete_record_unreadable() -> None:
    parsed = us.parse_site_state("site1", {"kind": "site_state", "schema": 1, "complete": False})
    assert parsed.reachable and parsed.version is None
    assert parsed.error == "the site_state result record is incomplete (a reading failed)"


def test_states_from_run_host_without_record_reported(catalogue: uc.Catalogue) -> None:
    tracker = PlayTracker()
    tracker.hosts["site1"] = HostState(ok=7)
    tracker.hosts["site2"] = HostState(unreachable=1, messages=["unreachable: Connection timed out"])
    tracker.hosts["site4"] = HostState(ok=2, failed=1, messages=["Look for the freeze flag: Permission denied"])
    tracker.records = {"site1": site_state_record(), "site4": {"kind": "site_state", "schema": 1, "complete": False}}
    result = operation.OperationResult(5, ["site1", "site2", "site3", "site4"], tracker, "failed", 4, 1.0, "")
    parsed = us.states_from_run(result)
    assert parsed["site1"].version == "1.0" and parsed["site1"].reachable and parsed["site1"].error is None
    assert not parsed["site2"].reachable and "timed out" in str(parsed["site2"].error)
    assert parsed["site3"].error == "no result record: the run reported nothing for this host"
    assert parsed["site4"].error == "Look for the freeze flag: Permission denied"
    plan = ur.compute_plan(catalogue, parsed, {}, options("1.1"))
    assert {e.host: e.code for e in plan.excluded if e.host != "site1"} == {
        "site2": "unreachable", "site3": "state_unreadable", "site4": "state_unreadable"}


# ------------------------------------------------------------------ waves


def test_waves_canary_group_then_wave_groups_in_number_order(catalogue: uc.Catalogue) -> None:
    sites = states(*(state(f"site{i}") for i in range(1, 9)))
    groups = {"canary": ["site5"], "wave_10": ["site1", "site2"], "wave_2": ["site3", "site4", "site5"],
              "sites": list(sites)}
    plan = ur.compute_plan(catalogue, sites, groups, options())
    assert wave_hosts(plan) == [["site5"], ["site3", "site4"], ["site1", "site2"], ["site6", "site7", "site8"]]
    assert [wave[0].wave for wave in plan.waves] == ["canary", "wave_2", "wave_10", "unassigned"]


def test_waves_ineligible_canary_group_falls_back_to_first_sites(catalogue: uc.Catalogue) -> None:
    sites = states(state("site1"), state("site2"), state("site3", verification=None), state("site10"))
    plan = ur.compute_plan(catalogue, sites, {"canary": ["site3"]},
                           options(canary=2, wave_size=fleet.WaveSize(count=5)))
    assert wave_hosts(plan) == [["site1", "site2"], ["site10"]]
    assert codes(plan) == {"site3": ["no_verified_backup"]}


def test_waves_by_share_percentage(catalogue: uc.Catalogue) -> None:
    sites = states(*(state(f"site{i}") for i in range(1, 11)))
    plan = ur.compute_plan(catalogue, sites, {}, options(wave_size=fleet.WaveSize.parse("25%")))
    assert [len(wave) for wave in plan.waves] == [1, 3, 3, 3]
    assert [wave[0].wave for wave in plan.waves] == ["canary", "wave 1", "wave 2", "wave 3"]


def test_waves_by_share_count(catalogue: uc.Catalogue) -> None:
    sites = states(*(state(f"site{i}") for i in range(1, 8)))
    plan = ur.compute_plan(catalogue, sites, {}, options(wave_size=fleet.WaveSize.parse("4")))
    assert [len(wave) for wave in plan.waves] == [1, 4, 2]


@pytest.mark.parametrize("text", ["0", "-3", "0%", "150%", "many", ""])
def test_wave_size_bad_value_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="count of sites"):
        fleet.WaveSize.parse(text)


def test_plan_600_sites_every_eligible_site_in_exactly_one_wave(catalogue: uc.Catalogue) -> None:
    sites: dict[str, us.SiteState] = {}
    for i in range(600):
        host = f"lpse{i:03d}"
        if i % 50 == 7:
            sites[host] = us.SiteState(host, reachable=False, error="timeout")
        elif i % 40 == 3:
            sites[host] = state(host, verification=None)
        else:
            sites[host] = state(host, "1.0" if i % 3 else "1.1")
    groups = {"canary": ["lpse000", "lpse001"], **{f"wave_{n}": [f"lpse{i:03d}" for i in range(n, 600, 4)]
                                                   for n in range(1, 4)}}
    plan = ur.compute_plan(catalogue, sites, groups, options())
    planned = [site.host for site in plan.sites]
    assert len(planned) == len(set(planned))
    assert set(planned) | {exclusion.host for exclusion in plan.excluded} == set(sites)
    assert len(plan.excluded) == 12 + 15
    assert plan.steps["lpse001"] == ["1.1", "1.2"] and plan.steps["lpse000"] == ["1.2"]
    assert codes(plan)["lpse003"] == ["no_verified_backup"] and codes(plan)["lpse007"] == ["unreachable"]
    assert wave_hosts(plan)[0] == ["lpse000", "lpse001"]
    assert [wave[0].wave for wave in plan.waves] == ["canary", "wave_1", "wave_2", "wave_3", "unassigned"]
    assert "lpse004" in wave_hosts(plan)[-1]


# ------------------------------------------------------------------ the command


@pytest.mark.parametrize("bad", ["1.2", "1.1"])
def test_upgrade_plan_command_bad_bundle_refused_before_any_host(signed: dict, tmp_path: Path, bad: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    folder = folder_with(signed, tmp_path, "1.0", "1.1", "1.2")
    tamper(folder / f"spse-{bad}.tar.gz")

    def no_hosts(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a host was about to be touched")

    monkeypatch.setattr(operation, "run", no_hosts)
    monkeypatch.setattr(operation.fleet, "read", no_hosts)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all: {}\n")
    result = CliRunner().invoke(upgrade_cli.upgrade, ["plan", "--to", "1.2", "--releases", str(folder),
                                                      "--trusted-keys", str(signed["trusted"]), "-i", str(inventory)])
    assert result.exit_code == 1, result.output
    assert f"spse-{bad}.tar.gz" in result.output and "sha256 mismatch" in result.output
    assert "no host was touched" in result.output


def test_upgrade_plan_command_renders_full_names_in_a_pipe(catalogue: uc.Catalogue,
                                                          monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    long_name = "lpse-kabupaten-lebong-production-server-01.example.go.id"
    plan = ur.compute_plan(catalogue, states(state(long_name), state("site2", verification=None)), {}, options())
    monkeypatch.setattr(up, "plan", lambda ctx: plan)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all: {}\n")
    result = CliRunner().invoke(upgrade_cli.upgrade, ["plan", "--to", "1.2", "-i", str(inventory)])
    assert result.exit_code == 0, result.output
    assert long_name in result.output and "1.0 -> 1.1 -> 1.2" in result.output
    assert "no_verified_backup" in result.output
    as_json = CliRunner().invoke(upgrade_cli.upgrade, ["plan", "--to", "1.2", "-i", str(inventory), "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert '"steps"' in as_json.output and long_name in as_json.output


def test_upgrade_plan_command_nothing_possible_exits_3(catalogue: uc.Catalogue, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    plan = ur.compute_plan(catalogue, states(state("site1", verification=None)), {}, options())
    monkeypatch.setattr(up, "plan", lambda ctx: plan)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all: {}\n")
    result = CliRunner().invoke(upgrade_cli.upgrade, ["plan", "--to", "1.2", "-i", str(inventory)])
    assert result.exit_code == 3, result.output
    assert "No site can be upgraded now." in result.output


PROBE_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "probe" / "site1-healthy-backups.txt"


def probed(text: str):
    from lpse_ops.backends import ssh_probe

    return ssh_probe.parse_output("site1", "127.0.0.1:2421", text, NOW)


def test_state_from_probe_reads_what_site_state_yml_reads() -> None:
    """The plan reads sites over the probe's SSH path: version, schema, health, free space, freeze flag."""
    text = PROBE_FIXTURE.read_text().replace("end=1", "release_link=1.2\nspse_free_kb=1000\nend=1")
    state = us.state_from_probe(probed(text))
    assert (state.version, state.schema_version, state.health) == ("1.2", 3, "ok")
    assert state.free_bytes == 1024000 and state.frozen is False and state.error is None and state.reachable
    # no VERSION file: the release folder current points at names it, as site_state.yml does
    bare = "\n".join(line for line in text.splitlines() if not line.startswith("version="))
    assert us.state_from_probe(probed(bare.replace("release_link=1.2", "release_link=1.1"))).version == "1.1"
    # SPSE not answering its health: unanswered (the plan leaves such a site out: preflight_failed)
    silent = "\n".join(line for line in text.splitlines() if not line.startswith("health="))
    assert us.state_from_probe(probed(silent)).health == "unanswered"


def test_state_from_probe_unreachable_and_unreadable_sites_keep_their_reason() -> None:
    from lpse_ops.backends import ssh_probe

    gone = ssh_probe.SiteProbe("site2", "127.0.0.1:2422", reachable=False, error="connection_refused",
                               error_detail="port 2422 refused")
    assert us.state_from_probe(gone).as_dict()["error"] == "connection_refused: port 2422 refused"
    broken = ssh_probe.SiteProbe("site3", "127.0.0.1:2423", reachable=True, error_detail="not a probe output")
    state = us.state_from_probe(broken)
    assert state.reachable and state.error == "not a probe output"
