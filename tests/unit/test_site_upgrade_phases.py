"""The changing phases of an upgrade on the site (site/upgrade_phases.py, site/maintenance.py) and the
playbook filter that reads their records: the order of the steps, how far a failed change says it went,
what a rollback puts back, what pruning spares, and the maintenance flags nginx checks."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from lpse_ops.site import cli, maintenance, upgrade_phases
from lpse_ops.site.errors import Failure

ROOT = Path(__file__).resolve().parents[2]
SHA = {"1.1": "a" * 64, "1.2": "b" * 64}
PAGES = {"full": "<p>tutup</p>", "read-only": "<p>baca saja</p>"}


@pytest.fixture
def nginx(tmp_path):
    """A site configuration that checks the flags, and where the flags and the page go."""
    flags, root, conf = tmp_path / "flags", tmp_path / "www", tmp_path / "spse.conf"
    conf.write_text(f"if (-f {flags}/full) {{ set $spse_maintenance full; }}\n")
    return SimpleNamespace(flags=flags, root=root, conf=conf,
                           set=lambda mode, page=None: maintenance.set_mode(mode, page, flag_dir=str(flags),
                                                                            root=str(root), site_conf=str(conf)))


def test_maintenance_paths_are_the_nginx_roles():
    """The site tool writes the flags where the nginx role's site configuration looks for them."""
    role = yaml.safe_load((ROOT / "roles/nginx/vars/main.yml").read_text())
    assert role["__nginx_maintenance_flag_dir"] == maintenance.FLAG_DIR
    assert role["__nginx_maintenance_root"] == maintenance.PAGE_ROOT
    assert role["__nginx_site_enabled"] == maintenance.SITE_ENABLED
    assert list(maintenance.MODES) == role["__nginx_maintenance_flags"]


def test_maintenance_full_then_read_only_then_off(nginx):
    assert nginx.set("full", PAGES["full"]) == {"mode": "full", "changed": True}
    assert sorted(os.listdir(nginx.flags)) == ["full"]
    assert (nginx.root / "index.html").read_text() == PAGES["full"]
    assert nginx.set("full", PAGES["full"])["changed"] is False  # again: nothing to do
    assert nginx.set("read-only", PAGES["read-only"])["changed"] is True
    assert sorted(os.listdir(nginx.flags)) == ["read-only"]
    assert (nginx.root / "index.html").read_text() == PAGES["read-only"]
    assert nginx.set("off") == {"mode": "off", "changed": True}
    assert os.listdir(nginx.flags) == []
    assert nginx.set("off")["changed"] is False


def test_maintenance_refuses_a_site_that_does_not_check_the_flags(nginx):
    nginx.conf.write_text("server { }\n")
    with pytest.raises(Failure) as raised:
        nginx.set("full", PAGES["full"])
    assert raised.value.code == "maintenance_unsupported" and "run the install" in raised.value.message
    assert not nginx.flags.exists()


def test_maintenance_needs_its_page(nginx):
    with pytest.raises(Failure, match="needs its page"):
        nginx.set("full", "")


class Phases:
    """Fakes of the engines a phase drives, recording one list of events."""

    def __init__(self, fail: str | None = None) -> None:
        self.events, self.fail = [], fail

    def set_mode(self, mode, page=None):
        self.events.append(("maintenance", mode))
        return {"mode": mode, "changed": True}

    def take(self, settings, args):
        self.events.append(("checkpoint", args.name))
        if self.fail == "checkpoint":
            return {"action": "checkpoint", "ok": False, "code": "backup_failed", "error": "disk full"}
        return {"action": "checkpoint", "ok": True, "name": args.name}

    def unpack(self, bundle, sha256, version, base, keys):
        self.events.append(("unpack", version, os.path.basename(bundle), sha256[:1]))
        if self.fail == f"unpack {version}":
            raise Failure("bundle_sha256_mismatch", "bytes changed", step="sha256")
        return {"ok": True, "unpacked": True}

    def apply(self, settings, args):
        self.events.append(("apply", args.path))
        if self.fail == "apply":
            return {"ok": False, "migrated": True, "switched": True, "stopped_at": 1.0, "serving_at": None,
                    "code": "unhealthy", "step": "health", "error": "/health did not report 1.2"}
        return {"ok": True, "migrated": True, "switched": True, "stopped_at": 1.0, "serving_at": 7.5,
                "health": {"version": "1.2"}, "smoke": {"tender": "42"}, "migrations": []}

    def command(self, verb, unit, step):
        self.events.append((verb, unit))

    def restore_db(self, settings, args):
        self.events.append(("rollback-db", args.name))
        return {"ok": self.fail != "database", "error": "restore failed", "code": "restore_failed"}

    def healthy(self, port, version, timeout):
        self.events.append(("health", version))
        if self.fail == "health":
            raise Failure("unhealthy", f"/health did not report {version}", step="health")
        return {"status": "ok", "version": version}

    def compare(self, settings, args):
        self.events.append(("compare", args.name))
        return {"identical": self.fail != "compare", "error": "1 table(s) differ"}

    def refresh(self, settings, args):
        self.events.append(("integrity", args.since, tuple(args.scope)))
        if self.fail == "integrity":
            raise Failure("aide_unreadable", "aide said nothing")
        return {"ran": True, "refreshed": True}


def change_args(base="/opt/spse"):
    return cli.parser().parse_args(["upgrade-change", "--checkpoint", "upgrade-7", "--base", base, "--path", "1.1,1.2",
                                    "--unit", "spse.service", "--port", "8080", "--env-file", "/etc/spse/spse.env"])


def run_change(fakes: Phases, given=None):
    given = {"trusted_keys": [KEY], "sha256": SHA, "pages": PAGES} if given is None else given
    return upgrade_phases.change(None, change_args(), given, set_mode=fakes.set_mode, take=fakes.take,
                                 unpack=fakes.unpack, apply=fakes.apply)


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL526+aYFYCn8QsDj9wGhRD5LiknJybMv0B6L7UiycE3 lpse-release"


def test_change_runs_page_checkpoint_each_unpack_apply_then_read_only():
    fakes = Phases()
    record = run_change(fakes)
    assert record["ok"] is True, record
    assert fakes.events == [("maintenance", "full"), ("checkpoint", "upgrade-7"),
                            ("unpack", "1.1", "spse-1.1.tar.gz", "a"), ("unpack", "1.2", "spse-1.2.tar.gz", "b"),
                            ("apply", "1.1,1.2"), ("maintenance", "read-only")]
    assert record["maintenance"] is True and record["checkpoint"]["ok"] is True
    assert record["migrated"] is True and record["serving_at"] == 7.5 and record["health"] == {"version": "1.2"}
    assert [hop["version"] for hop in record["unpacked"]] == ["1.1", "1.2"]


def test_change_refuses_a_missing_sha256_before_the_page_goes_up():
    fakes = Phases()
    record = run_change(fakes, {"trusted_keys": [KEY], "sha256": {"1.1": SHA["1.1"]}, "pages": PAGES})
    assert record["ok"] is False and record["maintenance"] is False and fakes.events == []
    assert "no verified sha256 for release 1.2" in record["error"]


def test_change_refuses_bad_keys_and_missing_pages_before_anything():
    for given in ({"trusted_keys": ["not a key"], "sha256": SHA, "pages": PAGES},
                  {"trusted_keys": [KEY], "sha256": SHA, "pages": {"full": "x"}}):
        fakes = Phases()
        record = run_change(fakes, given)
        assert record["ok"] is False and fakes.events == [] and record["maintenance"] is False, record


def test_change_checkpoint_failure_stops_before_any_release_and_says_the_page_is_up():
    fakes = Phases(fail="checkpoint")
    record = run_change(fakes)
    assert fakes.events == [("maintenance", "full"), ("checkpoint", "upgrade-7")]
    assert record["step"] == "checkpoint" and record["code"] == "backup_failed" and "disk full" in record["error"]
    assert record["maintenance"] is True and record["migrated"] is False


def test_change_unexpected_error_after_the_page_went_up_still_says_the_page_is_up():
    """Any error (not only a Failure) after the page went up keeps the record: the playbook then rolls back."""
    fakes = Phases()

    def broken_checkpoint(settings, args):
        raise OSError(28, "No space left on device")

    record = upgrade_phases.change(None, change_args(), {"trusted_keys": [KEY], "sha256": SHA, "pages": PAGES},
                                   set_mode=fakes.set_mode, take=broken_checkpoint, unpack=fakes.unpack,
                                   apply=fakes.apply)
    assert record["ok"] is False and record["maintenance"] is True, record
    assert record["step"] == "checkpoint" and record["code"] == "unexpected" and "No space left" in record["error"]
    assert record["migrated"] is False


def test_change_unpack_failure_is_the_unpack_step_and_nothing_is_stopped():
    fakes = Phases(fail="unpack 1.2")
    record = run_change(fakes)
    assert record["step"] == "unpack" and record["code"] == "bundle_sha256_mismatch"
    assert ("apply", "1.1,1.2") not in fakes.events and record["migrated"] is False


def test_change_apply_failure_keeps_how_far_it_went_and_leaves_the_page_full():
    fakes = Phases(fail="apply")
    record = run_change(fakes)
    assert record["ok"] is False and record["step"] == "health" and record["code"] == "unhealthy"
    assert record["migrated"] is True and record["switched"] is True
    assert ("maintenance", "read-only") not in fakes.events


@pytest.fixture
def releases(tmp_path):
    base = tmp_path / "spse"
    (base / "releases").mkdir(parents=True)
    (base / "bundles").mkdir()
    for age, version in enumerate(["1.4", "1.3", "1.2", "1.1", "1.0"]):
        folder = base / "releases" / version
        folder.mkdir()
        (base / "bundles" / f"spse-{version}.tar.gz").write_text("x")
        os.utime(folder, (1_000_000 - age * 100, 1_000_000 - age * 100))
    os.symlink(base / "releases" / "1.0", base / "current")
    return base


def rollback_args(base, release, *extra):
    return cli.parser().parse_args(["upgrade-rollback", "--base", str(base), "--release-dir", str(release),
                                    "--version", "1.0", "--unit", "spse.service", "--port", "8080",
                                    "--checkpoint", "upgrade-7", "--since", "100", "--scope=/etc/nginx", *extra])


def run_rollback(fakes: Phases, args):
    return upgrade_phases.rollback(None, args, {"pages": PAGES}, set_mode=fakes.set_mode, command=fakes.command,
                                   restore_db=fakes.restore_db, compare=fakes.compare, healthy=fakes.healthy,
                                   refresh=fakes.refresh)


def test_rollback_puts_back_database_release_then_proves_the_data(releases):
    os.replace(releases / "current", releases / "old")
    os.symlink(releases / "releases" / "1.2", releases / "current")
    fakes = Phases()
    record = run_rollback(fakes, rollback_args(releases, releases / "releases" / "1.0", "--database", "--compare"))
    assert record["ok"] is True, record
    assert fakes.events == [("maintenance", "full"), ("stop", "spse.service"), ("rollback-db", "upgrade-7"),
                            ("start", "spse.service"), ("health", "1.0"), ("compare", "upgrade-7"),
                            ("maintenance", "off"), ("integrity", 100.0, ("/etc/nginx",))]
    assert os.readlink(releases / "current") == str(releases / "releases" / "1.0")


def test_rollback_without_database_leaves_the_database_alone(releases):
    fakes = Phases()
    record = run_rollback(fakes, rollback_args(releases, releases / "releases" / "1.0"))
    assert record["ok"] is True and record["database"] is None and record["compare"] is None
    assert ("rollback-db", "upgrade-7") not in fakes.events


@pytest.mark.parametrize(("fail", "step"), [("database", "database"), ("health", "health"), ("compare", "compare")])
def test_rollback_failure_names_its_step_and_leaves_the_page_up(releases, fail, step):
    fakes = Phases(fail=fail)
    record = run_rollback(fakes, rollback_args(releases, releases / "releases" / "1.0", "--database", "--compare"))
    assert record["ok"] is False and record["step"] == step, record
    assert ("maintenance", "off") not in fakes.events and record["integrity_baseline"] is None


def test_rollback_refuses_a_release_folder_outside_releases_or_a_link(releases, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, releases / "releases" / "9.9")
    for wanted in (outside, releases / "releases" / "9.9", releases / "releases" / "8.8"):
        fakes = Phases()
        record = run_rollback(fakes, rollback_args(releases, wanted))
        assert record["ok"] is False and record["code"] == "release_missing", record
        assert fakes.events == []  # refused before the page went up or SPSE stopped


def test_prune_keeps_the_newest_the_target_current_and_the_previous(releases):
    removed = upgrade_phases.prune(str(releases), 2, [str(releases / "releases" / "1.1")], "1.2")
    left = sorted(os.listdir(releases / "releases"))
    # newest two (1.4, 1.3), the target 1.2, the kept 1.1 and current's 1.0 all stay
    assert left == ["1.0", "1.1", "1.2", "1.3", "1.4"] and removed == []
    removed = upgrade_phases.prune(str(releases), 2, [], "1.3")
    assert sorted(os.path.basename(path) for path in removed) == ["1.1", "1.2"]
    assert sorted(os.listdir(releases / "releases")) == ["1.0", "1.3", "1.4"]
    assert sorted(os.listdir(releases / "bundles")) == ["spse-1.0.tar.gz", "spse-1.3.tar.gz", "spse-1.4.tar.gz"]


def test_prune_spares_current_when_the_base_is_reached_through_a_link(releases, tmp_path):
    linked = tmp_path / "opt-spse"
    os.symlink(releases, linked)
    removed = upgrade_phases.prune(str(linked), 1, [], "1.4")
    assert "1.0" in os.listdir(releases / "releases")  # current's release, named through the link
    assert sorted(os.path.basename(path) for path in removed) == ["1.1", "1.2", "1.3"]


def test_finish_takes_the_page_down_prunes_and_keeps_a_failed_refresh(releases):
    fakes = Phases(fail="integrity")
    args = cli.parser().parse_args(["upgrade-finish", "--base", str(releases), "--version", "1.4", "--keep", "1",
                                    "--since", "50"])
    record = upgrade_phases.finish(None, args, set_mode=fakes.set_mode, refresh=fakes.refresh)
    assert record["ok"] is True and fakes.events[0] == ("maintenance", "off")
    assert sorted(os.listdir(releases / "releases")) == ["1.0", "1.4"]
    assert record["integrity_baseline"] == {"ran": False, "refreshed": False, "reason": "refresh failed",
                                            "error": "aide said nothing"}


def complete_args(releases, *extra: str):
    return cli.parser().parse_args(["upgrade-complete", "--baseline-json", '{"requests": 0}', "--warmup", "0",
                                    "--bake", "0", "--base", str(releases), "--version", "1.4", "--keep", "1",
                                    "--since", "50", *extra])


def test_complete_finishes_only_after_the_canary_passed(releases):
    fakes = Phases()
    verdict = {"action": "upgrade-bake", "ok": True, "verdict": "pass", "reasons": []}

    def bake(settings, args):
        fakes.events.append(("bake", args.bake, args.base))  # one namespace carries both phases' options
        return verdict

    def done(settings, args):
        return upgrade_phases.finish(settings, args, set_mode=fakes.set_mode, refresh=fakes.refresh)

    record = upgrade_phases.complete(None, complete_args(releases, "--scope", "/etc/nginx"), bake=bake, done=done)
    assert record["ok"] is True and record["bake"] == verdict and record["finish"]["ok"] is True
    assert fakes.events == [("bake", 0.0, str(releases)), ("maintenance", "off"), ("integrity", 50.0, ("/etc/nginx",))]
    assert sorted(os.listdir(releases / "releases")) == ["1.0", "1.4"]


def test_complete_leaves_the_page_and_releases_alone_when_the_canary_failed(releases):
    fakes = Phases()
    failed = {"action": "upgrade-bake", "ok": False, "verdict": "fail", "code": "canary_failed", "step": "canary",
              "error": "canary analysis failed: 5xx 40.0% > 1.0%"}
    record = upgrade_phases.complete(None, complete_args(releases), bake=lambda settings, args: failed,
                                     done=lambda settings, args: fakes.events.append("finish"))
    assert record["ok"] is False and record["finish"] is None and fakes.events == []
    assert (record["code"], record["step"], record["error"]) == ("canary_failed", "canary", failed["error"])
    assert sorted(os.listdir(releases / "releases")) == ["1.0", "1.1", "1.2", "1.3", "1.4"]


def test_complete_names_the_finish_step_when_the_page_cannot_come_down(releases):
    def set_mode(mode, page=None):
        raise Failure("nginx_reload_failed", "nginx -t failed")

    record = upgrade_phases.complete(
        None, complete_args(releases), bake=lambda settings, args: {"ok": True, "verdict": "pass"},
        done=lambda settings, args: upgrade_phases.finish(settings, args, set_mode=set_mode))
    assert record["ok"] is False and (record["code"], record["step"]) == ("nginx_reload_failed", "finish")
    assert record["error"] == "nginx -t failed"


def _filter():
    spec = importlib.util.spec_from_file_location("lpse_filters", ROOT / "playbooks/filter_plugins/lpse_ops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()["lpse_ops_record"]


@pytest.mark.parametrize(("result", "expected"), [
    ({"stdout": '{"ok": true, "step": "x"}\n'}, {"ok": True, "step": "x"}),
    ({"stdout": "Traceback ..."}, {}),
    ({"stdout": "[1, 2]"}, {}),
    ({"stdout": "{broken"}, {}),
    ({}, {}),
    ("not a result", {}),
])
def test_the_playbooks_read_a_phase_record_one_way(result, expected):
    assert _filter()(result) == expected


def test_the_filter_gives_its_default_when_nothing_was_printed():
    assert _filter()({"skipped": True}, {"outcome": "refused"}) == {"outcome": "refused"}


def test_the_upgrade_playbook_is_a_short_table_of_contents():
    """Issue 17: at most 12 tasks per site per hop, the typed record and the final check included."""
    play = yaml.safe_load((ROOT / "playbooks/upgrade.yml").read_text())[0]

    def count(tasks):
        total = 0
        for task in tasks:
            if "block" in task:
                total += count(task["block"]) + count(task.get("rescue", [])) + count(task.get("always", []))
            else:
                total += 1
        return total

    assert count(play["tasks"]) <= 12, json.dumps(play["tasks"])[:500]
