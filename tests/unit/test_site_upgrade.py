"""An upgrade's phases in the site tool (site/upgrade.py): prepare (guard, baseline, smoke items) and bake."""

from __future__ import annotations

import json
import subprocess

import pytest

from lpse_ops.site import cli, upgrade
from lpse_ops.site.errors import Failure

T0 = 1_764_342_000.0  # 2025-11-28 15:00:00 UTC


def line(moment: float, status: int = 200, request_s: float = 0.010, path: str = "/tenders") -> str:
    """One lpse_timed line (roles/nginx/templates/spse.conf.j2)."""
    return f"{moment:.3f}\tGET\t{path}\t{status}\t{request_s:.3f}\t{request_s:.3f}\t123\t-\n"


class FakeTime:
    """A clock that only moves when slept on; remembers every sleep."""

    def __init__(self, now: float) -> None:
        self.now, self.slept = now, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def bake_args(log, *extra: str) -> list[str]:
    return ["upgrade-bake", "--log", str(log), "--baseline-since", str(T0), "--baseline-until", str(T0 + 60), *extra]


def write(log, lines: list[str]) -> None:
    log.write_text("".join(lines))


# ---- the guard ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("found, outcome, reason", [
    ("1.0", "proceed", ""),
    ("1.1", "already", ""),
    ("0.9", "refused", "site runs SPSE 0.9, the plan expected 1.0: plan again (lpse-ops upgrade plan)"),
    ("", "refused", "site runs SPSE nothing, the plan expected 1.0: plan again (lpse-ops upgrade plan)"),
])
def test_guard_outcome_and_reason(found, outcome, reason):
    assert upgrade.guard(found, "1.0", "1.1") == (outcome, reason)


def site_base(tmp_path, version: str | None):
    base = tmp_path / "spse"
    if version is not None:
        release = base / "releases" / version
        release.mkdir(parents=True)
        (release / "VERSION").write_text(version + "\n")
        (base / "current").symlink_to(release)
    else:
        base.mkdir()
    return base


def prepare_args(base, log, *extra: str):
    return cli.parser().parse_args(["upgrade-prepare", "--base", str(base), "--from", "1.0", "--to", "1.1",
                                    "--database", "spse", "--baseline-seconds", "60", "--log", str(log), *extra])


def test_prepare_on_another_version_is_refused_without_reading_anything_else(tmp_path, monkeypatch):
    monkeypatch.setattr(upgrade, "run", lambda *a, **k: pytest.fail("psql must not run on a refused site"))
    record = upgrade.prepare(None, prepare_args(site_base(tmp_path, "0.9"), tmp_path / "absent.log"))
    assert record["outcome"] == "refused" and record["version_found"] == "0.9", record
    assert record["ok"] is True and record["baseline"] is None and record["known"] is None


def test_prepare_refuses_when_the_site_tool_is_not_the_one_the_plan_found(tmp_path, monkeypatch):
    """The play copied no tool because the plan found this sha256 installed: a tool that changed since is
    refused at the guard, before anything is read or changed."""
    tool = tmp_path / "lpse-backup"
    tool.write_bytes(b"#!/usr/bin/python3\nthe tool the plan read\n")
    monkeypatch.setattr(upgrade.sys, "argv", [str(tool)])
    monkeypatch.setattr(upgrade, "run", lambda *a, **k: pytest.fail("nothing may run after the guard refused"))
    found = upgrade.own_sha256()
    base = site_base(tmp_path, "0.9")  # the guard refuses 0.9 by itself: reaching it means the check passed
    record = upgrade.prepare(None, prepare_args(base, tmp_path / "absent.log", "--tool-sha256", found))
    assert record["outcome"] == "refused" and record["version_found"] == "0.9"
    tool.write_bytes(b"#!/usr/bin/python3\nanother tool\n")
    with pytest.raises(Failure) as caught:
        upgrade.prepare(None, prepare_args(base, tmp_path / "absent.log", "--tool-sha256", found))
    assert (caught.value.code, caught.value.step) == ("site_tool_changed", "guard")
    assert "plan again" in caught.value.message


def test_prepare_on_a_bare_site_is_refused(tmp_path):
    record = upgrade.prepare(None, prepare_args(site_base(tmp_path, None), tmp_path / "absent.log"))
    assert (record["outcome"], record["version_found"]) == ("refused", ""), record
    assert "runs SPSE nothing" in record["reason"]


def test_prepare_on_the_target_is_already(tmp_path):
    record = upgrade.prepare(None, prepare_args(site_base(tmp_path, "1.1"), tmp_path / "absent.log"))
    assert record["outcome"] == "already" and record["reason"] == "", record


def test_prepare_proceeds_with_the_release_baseline_and_known_items(tmp_path, monkeypatch):
    base = site_base(tmp_path, "1.0")
    log = tmp_path / "spse-access.log"
    # 60 s of baseline: one request a second, two 5xx; /health and older lines left out
    write(log, [line(T0 - 30, status=500)] + [line(T0 + i, status=500 if i < 2 else 200) for i in range(60)]
          + [line(T0 + 10.5, path="/health")])
    calls = []

    def fake_run(argv, **kwargs):
        calls.append((argv, kwargs))
        return subprocess.CompletedProcess(argv, 0, stdout="42|7|ab12\n", stderr="")

    monkeypatch.setattr(upgrade, "run", fake_run)
    record = upgrade.prepare(None, prepare_args(base, log), clock=lambda: T0 + 60)
    assert record["outcome"] == "proceed" and record["previous_release"] == str(base.resolve() / "releases/1.0")
    assert record["baseline"]["requests"] == 60 and record["baseline"]["errors_5xx"] == 2, record["baseline"]
    assert (record["baseline"]["since"], record["baseline"]["until"]) == (T0, T0 + 60)
    assert record["known"] == {"tender": "42", "document": "7", "sha256": "ab12"}
    [(argv, kwargs)] = calls
    assert kwargs["user"] == "postgres" and "--dbname=spse" in argv


def test_prepare_without_the_log_fails_at_the_baseline_step(tmp_path):
    args = prepare_args(site_base(tmp_path, "1.0"), tmp_path / "absent.log")
    with pytest.raises(Failure) as caught:
        upgrade.prepare(None, args)
    assert (caught.value.code, caught.value.step) == ("log_missing", "baseline")


@pytest.mark.parametrize("stdout, known", [
    ("42|7|ab12\n", {"tender": "42", "document": "7", "sha256": "ab12"}),
    ("||\n", {"tender": "", "document": "", "sha256": ""}),  # an empty database: no smoke reads
    ("42|\n", {"tender": "42", "document": "", "sha256": ""}),
])
def test_parse_known(stdout, known):
    assert upgrade.parse_known(stdout) == known


# ---- the bake -------------------------------------------------------------------------------------------


def test_bake_waits_out_the_warmup_and_judges_only_the_bake(tmp_path):
    """Slow requests in the warm-up do not count; the bake's fast ones pass against the baseline."""
    log = tmp_path / "spse-access.log"
    start = T0 + 100  # the bake command starts here; warm-up 10 s, bake 30 s
    write(log, [line(T0 + i, request_s=0.050) for i in range(60)]            # baseline: p95 50 ms
          + [line(start + i, request_s=3.0, status=500) for i in range(10)]  # cold JVM: slow and failing
          + [line(start + 10 + i, request_s=0.060) for i in range(30)])      # the bake
    fake = FakeTime(start)
    args = cli.parser().parse_args(bake_args(log, "--warmup", "10", "--bake", "30", "--min-requests", "20"))
    record = upgrade.bake(None, args, clock=fake.clock, sleep=fake.sleep)
    assert fake.slept == [10, 30]
    assert record["verdict"] == "pass" and record["ok"] is True, record
    assert record["bake"]["requests"] == 30 and record["bake"]["since"] == start + 10, record["bake"]
    assert record["baseline"]["requests"] == 60 and record["baseline_usable"] is True


def test_bake_without_warmup_counts_the_cold_start_and_fails_on_5xx(tmp_path):
    log = tmp_path / "spse-access.log"
    start = T0 + 100
    write(log, [line(T0 + i) for i in range(60)] + [line(start + i, status=500) for i in range(10)]
          + [line(start + 10 + i) for i in range(30)])
    fake = FakeTime(start)
    args = cli.parser().parse_args(bake_args(log, "--warmup", "0", "--bake", "40"))
    record = upgrade.bake(None, args, clock=fake.clock, sleep=fake.sleep)
    assert fake.slept == [40]
    assert record["verdict"] == "fail" and record["ok"] is False and record["code"] == "canary_failed", record
    assert record["step"] == "canary"
    assert record["error"] == "canary analysis failed: 5xx rate 25.0% during the bake, limit 1.0% (baseline 0.0%)"


def test_bake_of_zero_seconds_skips_the_warmup(tmp_path):
    log = tmp_path / "spse-access.log"
    write(log, [line(T0 + i) for i in range(60)])
    fake = FakeTime(T0 + 100)
    args = cli.parser().parse_args(bake_args(log, "--warmup", "10", "--bake", "0", "--min-requests", "0"))
    record = upgrade.bake(None, args, clock=fake.clock, sleep=fake.sleep)
    assert fake.slept == [] and record["verdict"] == "pass", record


def test_bake_too_few_requests_is_inconclusive_and_fails(tmp_path):
    log = tmp_path / "spse-access.log"
    write(log, [line(T0 + i) for i in range(60)] + [line(T0 + 110 + i) for i in range(5)])
    fake = FakeTime(T0 + 100)
    args = cli.parser().parse_args(bake_args(log, "--warmup", "0", "--bake", "30"))
    record = upgrade.bake(None, args, clock=fake.clock, sleep=fake.sleep)
    assert record["verdict"] == "fail"
    assert record["reasons"] == ["inconclusive: 5 request(s) during the bake, at least 20 needed to judge"]


@pytest.mark.parametrize("as_file", [False, True])
def test_bake_takes_the_baseline_as_json_text_or_file(tmp_path, as_file):
    log = tmp_path / "spse-access.log"
    write(log, [line(T0 + 100 + i, request_s=0.9) for i in range(30)])  # p95 900 ms
    baseline = {"requests": 100, "rate_5xx": 0.0, "p95_ms": 100.0}
    text = json.dumps(baseline)
    if as_file:
        (tmp_path / "baseline.json").write_text(text)
        text = str(tmp_path / "baseline.json")
    args = cli.parser().parse_args(["upgrade-bake", "--log", str(log), "--baseline-json", text, "--warmup", "0",
                                    "--bake", "30"])
    record = upgrade.bake(None, args, clock=FakeTime(T0 + 100).clock, sleep=lambda s: None)
    assert record["baseline"] == baseline
    # the clock did not move (sleep is a no-op here), so the bake window is empty: inconclusive
    assert record["verdict"] == "fail" and record["bake"]["requests"] == 0


def test_bake_subcommand_prints_one_json_record_and_exits_1_on_fail(tmp_path, monkeypatch, capsys):
    log = tmp_path / "spse-access.log"
    write(log, [line(T0 + i) for i in range(60)])
    monkeypatch.setattr(upgrade.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(cli.os, "geteuid", lambda: 0)
    code = cli.main(bake_args(log, "--warmup", "0", "--bake", "1"))
    [out] = capsys.readouterr().out.splitlines()
    record = json.loads(out)
    assert code == 1 and record["action"] == "upgrade-bake" and record["verdict"] == "fail", record
    assert {"baseline", "bake", "baseline_usable", "limits", "reasons", "verdict"} <= record.keys()


def test_bake_needs_a_baseline(tmp_path):
    args = cli.parser().parse_args(["upgrade-bake", "--log", str(tmp_path / "x.log")])
    with pytest.raises(Failure) as caught:
        upgrade.bake(None, args, clock=FakeTime(T0).clock, sleep=lambda s: None)
    assert caught.value.code == "bad_arguments"


# ---- apply ----------------------------------------------------------------------------------------------


class FakeSite:
    """systemctl, the migrations and SPSE's HTTP answers of a site, recorded in one list of events."""

    def __init__(self, base, healthy_after: int = 2, version: str = "1.2", schema: int = 3,
                 fail_migration: str | None = None, tender: str = "42", document_sha: str = "ab12") -> None:
        self.base, self.events, self.polls = base, [], 0
        self.healthy_after, self.version, self.schema = healthy_after, version, schema
        self.fail_migration, self.tender, self.document_sha = fail_migration, tender, document_sha

    def command(self, verb, unit, step):
        self.events.append((verb, unit))

    def migrator(self, base, version, env_file, java, user):
        self.events.append(("migrate", version, env_file, user))
        if version == self.fail_migration:
            raise Failure("command_failed", f"migration of {version} failed", step="migrate")
        return {"applied": [version]}

    def fetch(self, url, timeout):
        if url.endswith("/health"):
            self.polls += 1
            if self.polls < self.healthy_after:
                return 503, b'{"status": "starting"}'
            return 200, json.dumps({"status": "ok", "version": self.version,
                                    "schema_version": self.schema}).encode()
        if "/tenders" in url:
            return 200, json.dumps([{"id": int(self.tender)}]).encode()
        raise AssertionError(url)

    def fetch_sha256(self, url, timeout):
        assert url.endswith("/documents/7"), url
        return 200, self.document_sha


def apply_args(base, *extra: str):
    return cli.parser().parse_args(["upgrade-apply", "--base", str(base), "--path", "1.1,1.2", "--unit", "spse.service",
                                    "--port", "8080", "--env-file", "/etc/spse/spse.env", "--schema", "3",
                                    "--known-tender", "42", "--known-document", "7", "--known-sha256", "ab12", *extra])


def apply_on(site: FakeSite, args) -> dict:
    fake = FakeTime(T0)
    return upgrade.apply(None, args, clock=fake.clock, sleep=fake.sleep, fetch=site.fetch,
                         fetch_sha256=site.fetch_sha256, command=site.command, migrator=site.migrator)


def with_releases(tmp_path):
    base = site_base(tmp_path, "1.0")
    for version in ("1.1", "1.2"):
        (base / "releases" / version).mkdir()
    return base


def test_apply_stops_migrates_in_order_switches_starts_and_checks(tmp_path):
    base = with_releases(tmp_path)
    site = FakeSite(base, healthy_after=3)
    record = apply_on(site, apply_args(base))
    assert record["ok"] is True, record
    assert site.events == [("stop", "spse.service"), ("migrate", "1.1", "/etc/spse/spse.env", "spse"),
                           ("migrate", "1.2", "/etc/spse/spse.env", "spse"), ("start", "spse.service")]
    assert (base / "current").resolve() == (base / "releases" / "1.2").resolve()
    assert record["migrated"] and record["switched"] and record["health"]["version"] == "1.2"
    assert record["serving_at"] - record["stopped_at"] == 2  # two 1 s waits for /health
    assert record["smoke"] == {"tender": "42", "document": "7"}


def test_apply_failed_migration_stops_before_the_switch_and_says_the_database_changed(tmp_path):
    base = with_releases(tmp_path)
    site = FakeSite(base, fail_migration="1.2")
    record = apply_on(site, apply_args(base))
    assert record["ok"] is False and record["step"] == "migrate" and record["migrated"] is True, record
    assert record["switched"] is False and ("start", "spse.service") not in site.events
    assert (base / "current").resolve() == (base / "releases" / "1.0").resolve()


def test_apply_unhealthy_release_fails_the_health_step_after_the_timeout(tmp_path):
    base = with_releases(tmp_path)
    site = FakeSite(base, healthy_after=10**6)
    record = apply_on(site, apply_args(base, "--health-timeout", "5"))
    assert (record["ok"], record["code"], record["step"]) == (False, "unhealthy", "health"), record
    assert record["switched"] is True and record["serving_at"] is None and site.polls == 6


@pytest.mark.parametrize("change, code", [({"version": "1.1"}, "unhealthy"), ({"schema": 2}, "wrong_schema"),
                                          ({"tender": "41"}, "smoke_tender"),
                                          ({"document_sha": "ffff"}, "smoke_document")])
def test_apply_health_gate_and_smoke_test_failures(tmp_path, change, code):
    base = with_releases(tmp_path)
    site = FakeSite(base, **change)
    record = apply_on(site, apply_args(base, "--health-timeout", "3"))
    assert (record["ok"], record["code"], record["step"]) == (False, code, "health"), record


def test_apply_without_known_items_skips_the_smoke_reads(tmp_path):
    base = with_releases(tmp_path)
    site = FakeSite(base)
    args = cli.parser().parse_args(["upgrade-apply", "--base", str(base), "--path", "1.1", "--unit", "spse.service",
                                    "--port", "8080", "--env-file", "/etc/spse/spse.env"])
    site.version = "1.1"
    record = apply_on(site, args)
    assert record["ok"] is True and record["smoke"] == {"tender": None, "document": None}, record


def test_apply_unexpected_error_still_reports_how_far_it_went(tmp_path):
    base = with_releases(tmp_path)
    site = FakeSite(base)

    def broken(*args):
        raise RuntimeError("disk on fire")

    site.migrator = broken
    record = apply_on(site, apply_args(base))
    assert record["code"] == "unexpected" and record["migrated"] is True and record["switched"] is False, record


def test_migrate_runs_the_jar_as_the_user_with_the_env_file_not_the_password(tmp_path, monkeypatch):
    calls = []

    def fake_run(argv, **kwargs):
        calls.append((argv, kwargs))
        return subprocess.CompletedProcess(argv, 0, stdout='migrating\n{"applied": ["0002"]}\n', stderr="")

    monkeypatch.setattr(upgrade, "run", fake_run)
    assert upgrade.migrate("/opt/spse", "1.1", "/etc/spse/spse.env", "/usr/bin/java", "spse") == {"applied": ["0002"]}
    [(argv, kwargs)] = calls
    assert kwargs["user"] == "spse" and argv[:2] == ["/bin/sh", "-c"]
    assert argv[-3:] == ["/etc/spse/spse.env", "/usr/bin/java", "/opt/spse/releases/1.1/lib/spse.jar"]
