"""Fleet upgrades on the lab's real hosts: bad releases roll back by themselves on the canary and halt the
rollout; plain ansible-playbook (as AWX runs it) gives the CLI's result; 1.0 -> 1.2 through 1.1 on three
sites in two waves, with the notice delivered and the maintenance page seen during the change.

This module runs last (it moves the sites off 1.0). The lab drives steady read traffic on every site
(``lpse-ops lab traffic``), so the canary analysis has real requests in nginx's log to judge.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.lab.labkit import CLI, SITES, documents_not_matching, on_site, run_cli, sql, upload_documents
from tests.tampering import tamper_jar

ALL = [f"site{i}" for i in range(1, SITES + 1)]
# A short bake, and a p95 latency allowance of 1.5 s over the baseline: these tests judge waves, paths, rollbacks
# and the 5xx rule, while CI's two labs share two cores, so a fresh JVM's p95 over a 10 s bake is the machine's
# load (ci12: 462 ms against a limit of 418, baseline 168, on a good release). The p95 rule itself is proven
# by tests/unit/test_site_canary.py.
FAST = ("--bake", "10", "--baseline", "60", "--min-requests", "20", "--health-timeout", "30", "--p95-slack-ms", "1500")


def version_through_nginx(site: str) -> str:
    """The version SPSE reports through nginx on the site (what a user reaches)."""
    out = on_site("curl -sk https://127.0.0.1/health", site=site)
    return json.loads(out)["version"]


def data_of(site: str) -> dict:
    """Row counts of the tables that hold the tenders and documents, and the documents' checksum."""
    return {"tenders": sql("SELECT count(*) FROM tenders", site=site),
            "documents": sql("SELECT count(*) FROM documents", site=site),
            "documents_md5": sql("SELECT md5(string_agg(id || ':' || sha256 || ':' || stored_path, ',' ORDER BY id)) "
                                 "FROM documents", site=site)}


@pytest.fixture(scope="module")
def fleet(lab, installed, release, lab_home):
    """Every site on 1.0 with backups set up, a verified backup, documents, and steady read traffic."""
    from lpse_ops import reference

    code, _report, output = run_cli("backup", "setup", "--json", timeout=3600)
    assert code == 0, output
    for site in ALL:
        upload_documents(f"UPG{site}-{int(time.time())}", 5, site=site)
    code, _report, output = run_cli("backup", "run", "--type", "full", "--json", timeout=3600)
    assert code == 0, output
    code, _report, output = run_cli("backup", "verify", "--json", timeout=3600)
    assert code == 0, output
    code, _report, output = run_cli("lab", "traffic", "start", "--rate", "5")
    assert code == 0, output
    bundles = lab_home / "upgrade-bundles"
    bundles.mkdir(exist_ok=True)
    built = {"1.0": release["bundles"]["1.0"], "1.1": release["bundles"]["1.1"],
             "1.2": reference.build_reference_bundle("1.2", release["key"], bundles)}
    for kind in ("migration-fails-halfway", "unhealthy", "partial-5xx"):
        path = reference.build_bad_release(kind, release["key"], bundles)
        built[kind] = path
    yield {"bundles": built, "trusted": release["trusted"]}
    run_cli("lab", "traffic", "stop")


def releases_dir(base: Path, *bundles: Path) -> Path:
    """A release folder holding just *bundles* (the plan reads every bundle in it)."""
    base.mkdir(parents=True, exist_ok=True)
    for bundle in bundles:
        target = base / bundle.name
        if not target.exists():
            target.symlink_to(bundle)
    return base


def version_of_bundle(path: Path) -> str:
    return re.match(r"spse-(.+)\.tar\.gz$", path.name).group(1)


def _tampered_copy(bundle: Path, into: Path) -> Path:
    """A copy of *bundle* in *into* with one byte of its jar changed (the signature stays the old one)."""
    into.mkdir(parents=True, exist_ok=True)
    return tamper_jar(bundle, into / bundle.name)


def _site_marks() -> dict:
    """What an upgrade would change first on each site: the version, the maintenance flags, the checkpoints."""
    return {site: (version_through_nginx(site),
                   on_site("ls /etc/nginx/spse-maintenance/ /var/lib/lpse-backup/checkpoints/ 2>/dev/null; true",
                           site=site))
            for site in ALL}


def yaml_inventory_with_dead_site(lab_inventory: Path, path: Path) -> Path:
    """The lab's inventory plus site9, whose SSH port nothing listens on."""
    import yaml

    data = yaml.safe_load(lab_inventory.read_text())
    sites = data["all"]["children"]["sites"]["hosts"]
    sites["site9"] = {**sites["site1"], "ansible_port": 2499, "site_code": "lab09"}
    path.write_text(yaml.safe_dump(data))
    return path


EXPECTED_STEP = {"migration-fails-halfway": "migrate", "unhealthy": "health", "partial-5xx": "canary"}


@pytest.mark.parametrize("kind", list(EXPECTED_STEP))
def test_bad_release_rolls_back_the_canary_by_itself_and_halts_the_rollout(fleet, tmp_path, kind):
    before = {site: data_of(site) for site in ALL}
    folder = releases_dir(tmp_path / "releases", fleet["bundles"]["1.1"], fleet["bundles"][kind])
    target = version_of_bundle(fleet["bundles"][kind])
    # One kind runs with a failure budget of 1 and waves of one site: the canary's failure is within the
    # budget, so the next wave runs; its failure is the second, past the budget, so the third never starts.
    budget = kind == "unhealthy"
    waves = ["--failure-budget", "1", "--wave-size", "1"] if budget else ["--wave-size", "100%"]
    code, report, output = run_cli("upgrade", "run", "--to", target, "--releases", str(folder), "--trusted-keys",
                                   str(fleet["trusted"]), "--canary", "1", *waves, "--no-notice",
                                   *FAST, "--yes", "--json", timeout=1800)
    assert code == 3, output
    assert report["halted"] and "failure budget" in report["halted"], report
    if budget:
        assert "2 site(s) failed, more than the failure budget (1 = 1 site(s))" in report["halted"], report
        assert report["not_started"] == [ALL[2:]], report
        [second] = report["waves"][1]["sites"]
        assert second["host"] == "site2" and second["outcome"] == "rolled_back", second
        assert second["record"]["failed_step"] == "health", second["record"]
    else:
        assert report["not_started"] == [ALL[1:]], report
    [canary] = report["waves"][0]["sites"]
    assert canary["host"] == "site1" and canary["outcome"] == "rolled_back", canary
    record = canary["record"]
    assert record["failed_step"] == EXPECTED_STEP[kind], record
    assert record["migrated"] is True  # 1.0 -> 1.1 -> bad: migrations ran, so the database came back
    assert record["rollback"]["database"]["ok"] is True, record["rollback"]
    assert record["rollback"]["compare"]["identical"] is True, record["rollback"]["compare"]
    if kind == "partial-5xx":
        assert record["canary"]["verdict"] == "fail" and "5xx rate" in " ".join(record["canary"]["reasons"])
    # the canary serves its old version with identical data; the other sites were never touched
    for site in ALL:
        assert version_through_nginx(site) == "1.0", site
        assert data_of(site) == before[site], site
    assert documents_not_matching("site1") == []
    # the maintenance page is down again: a write reaches SPSE
    assert on_site("curl -sk -o /dev/null -w '%{http_code}' -X POST https://127.0.0.1/tenders "
                   "-H 'Content-Type: application/json' -d '{}'", site="site1").strip() != "503"
    code, status, output = run_cli("upgrade", "status", "--rollout", str(report["run_id"]), "--json")
    assert code == 0 and status["waves"][0]["sites"]["site1"]["outcome"] == "rolled_back", output


def _custom_stats(output: str) -> dict:
    """The typed result records plain ansible-playbook prints under CUSTOM STATS (show_custom_stats)."""
    found = re.search(r"^\s*RUN:\s*(\{.*\})\s*$", output, re.MULTILINE)
    assert found, output[-3000:]
    return json.loads(found.group(1))["lpse_result"]


def test_plain_ansible_playbook_upgrades_a_site_as_awx_would(fleet, lab_home, tmp_path):
    """AWX parity: the upgrade playbook with only the inventory and documented extra variables."""
    from lpse_ops.lab import lab as lab_actions

    bundle_1_1 = fleet["bundles"]["1.1"]
    extra = {"upgrade_from_version": "1.0", "upgrade_checkpoint": "awx-parity",
             # what an AWX job template is given: the bundle, the sha256 its verification printed, the trusted keys
             "upgrade_path": [{"version": "1.1", "bundle": str(bundle_1_1),
                               "sha256": hashlib.sha256(bundle_1_1.read_bytes()).hexdigest()}],
             "upgrade_trusted_keys": [path.read_text() for path in sorted(Path(fleet["trusted"]).glob("*.pub"))],
             "upgrade_to_schema": 2, "upgrade_bake_seconds": 10, "upgrade_baseline_seconds": 60,
             "upgrade_canary_min_requests": 10, "upgrade_canary_p95_slack_ms": 1500}
    vars_file = tmp_path / "upgrade-vars.json"
    vars_file.write_text(json.dumps(extra))
    project = Path(__file__).resolve().parents[2]
    # JSON rather than the configured YAML, so the one-line CUSTOM STATS can be parsed (AWX reads artifacts)
    env = {**os.environ, "ANSIBLE_CONFIG": str(project / "ansible.cfg"), "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["ansible-playbook", "-i", str(lab_actions.inventory_path()), "playbooks/upgrade.yml",
                           "--limit", "site3", "-e", f"@{vars_file}"], cwd=project, env=env, capture_output=True,
                          text=True, timeout=1800, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    record = _custom_stats(done.stdout)["site3"]
    assert record["kind"] == "upgrade" and record["outcome"] == "upgraded", record
    assert record["from_version"] == "1.0" and record["to_version"] == "1.1" and record["path"] == ["1.1"]
    assert record["health"]["schema_version"] == 2 and record["canary"]["verdict"] == "pass", record
    assert version_through_nginx("site3") == "1.1"
    # a second run changes nothing and says so in the same record
    again = subprocess.run(["ansible-playbook", "-i", str(lab_actions.inventory_path()), "playbooks/upgrade.yml",
                            "--limit", "site3", "-e", f"@{vars_file}"], cwd=project, env=env, capture_output=True,
                           text=True, timeout=900, check=False)
    assert again.returncode == 0, again.stdout[-3000:]
    assert _custom_stats(again.stdout)["site3"]["outcome"] == "already"
    assert re.search(r"site3\s*:.*changed=0", again.stdout), again.stdout[-1500:]


@pytest.mark.parametrize("case", ["tampered", "downgrade", "no_path", "unreachable"])
def test_run_is_refused_before_any_site_is_changed(fleet, lab_home, tmp_path, case):
    from lpse_ops.lab import lab as lab_actions

    bundles = fleet["bundles"]
    folder = releases_dir(tmp_path / "releases", bundles["1.1"], bundles["1.2"])
    target, extra, expected = "1.2", [], ""
    if case == "tampered":
        (folder / bundles["1.1"].name).unlink()
        _tampered_copy(bundles["1.1"], folder)
        expected = "sha256 mismatch"
    elif case == "downgrade":  # site3 runs 1.1 since the AWX-parity test
        target, expected = "1.0", "site3: downgrade"
        releases_dir(folder, bundles["1.0"])
    elif case == "no_path":  # site1 and site2 run 1.0: without 1.1 in the folder they have no path to 1.2
        (folder / bundles["1.1"].name).unlink()
        expected = "site1: no_path"
    else:  # a site of the inventory that does not answer
        inventory = yaml_inventory_with_dead_site(lab_actions.inventory_path(), tmp_path / "inventory.yml")
        extra, expected = ["-i", str(inventory)], "site9: unreachable"
    before = _site_marks()
    newest_before = _newest_rollout()
    code, _report, output = run_cli("upgrade", "run", "--to", target, "--releases", str(folder), "--trusted-keys",
                                    str(fleet["trusted"]), *extra, "--no-notice", *FAST, "--yes", "--json",
                                    check_json=False, timeout=900)
    assert code == 1, output
    assert expected in output and ("no site was touched" in output or "no host was touched" in output), output
    assert _site_marks() == before
    # refused before anything: no rollout recorded (the newest is the one from before, or still none at all)
    assert _newest_rollout() == newest_before


def _newest_rollout() -> int | None:
    """The id of the newest recorded rollout per ``upgrade status --json`` (None: none yet, printed as null);
    fails when the command fails or prints anything but that JSON."""
    done = subprocess.run([CLI, "upgrade", "status", "--json"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr + done.stdout
    status = json.loads(done.stdout)  # "null" or the rollout: never empty, never prose
    assert status is None or (isinstance(status, dict) and isinstance(status["id"], int)), done.stdout
    return None if status is None else status["id"]


class PageWatcher:
    """Polls every site's front page through its published HTTPS port; notes when the maintenance page shows.

    During a rollout a read may get only two answers: 200 (SPSE serving, before the switch and during the
    read-only bake) or 503 with the maintenance page (``full`` maintenance while SPSE is stopped and
    switched: nginx answers every request but /health itself). nginx is never stopped, so anything else is
    recorded in ``unexpected``: another status (a 502 means a read reached a stopped SPSE), a 503 that is
    not the maintenance page, a refused or reset connection, a TLS error. A read that times out (3 s) on a
    loaded machine is counted in ``timeouts`` and is not an error page.
    """

    def __init__(self, ports: dict[str, int]) -> None:
        self.ports, self.seen, self.stop = ports, {site: 0 for site in ports}, threading.Event()
        self.unexpected: list[tuple[str, str]] = []
        self.timeouts = {site: 0 for site in ports}
        self.context = ssl.create_default_context()
        self.context.check_hostname, self.context.verify_mode = False, ssl.CERT_NONE
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def poll(self) -> None:
        deadline = time.monotonic() + 1800
        while not self.stop.is_set() and time.monotonic() < deadline:
            for site, port in self.ports.items():
                self.read(site, port)
            self.stop.wait(0.5)

    def read(self, site: str, port: int) -> None:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/tenders?limit=1", timeout=3,  # noqa: S310
                                        context=self.context) as answer:
                answer.read()
                if answer.status != 200:
                    self.unexpected.append((site, f"HTTP {answer.status}"))
        except urllib.error.HTTPError as error:
            body = error.read().decode("utf-8", "replace").lower()
            if error.code == 503 and "pemeliharaan" in body:
                self.seen[site] += 1
            else:
                self.unexpected.append((site, f"HTTP {error.code}: {body[:200]}"))
        except (TimeoutError, urllib.error.URLError) as error:
            reason = error.reason if isinstance(error, urllib.error.URLError) else error
            if isinstance(reason, TimeoutError):
                self.timeouts[site] += 1
            else:
                self.unexpected.append((site, f"{type(reason).__name__}: {reason}"))
        except (OSError, http.client.HTTPException) as error:  # reset mid-answer, TLS error, cut-off answer
            self.unexpected.append((site, f"{type(error).__name__}: {error}"))


def test_upgrade_three_sites_to_1_2_through_1_1_in_two_waves(fleet, lab, tmp_path):
    from lpse_ops.lab import lab as lab_actions
    from lpse_ops.lab import smtp as lab_smtp

    before = {site: data_of(site) for site in ALL}
    folder = releases_dir(tmp_path / "releases", fleet["bundles"]["1.1"], fleet["bundles"]["1.2"])
    inventory = json.loads(subprocess.run(["ansible-inventory", "-i", str(lab_actions.inventory_path()), "--list"],
                                          capture_output=True, text=True, check=True,
                                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}:"
                                                                     f"{os.environ['PATH']}"}).stdout)
    ports = {site: inventory["_meta"]["hostvars"][site]["lab_https_port"] for site in ALL}
    maildir = lab_smtp.running(lab_actions.lab_dir() / "smtp").maildir
    mails_before = len(lab_smtp.messages(maildir))
    watcher = PageWatcher(ports)
    watcher.thread.start()
    try:
        code, report, output = run_cli("upgrade", "run", "--to", "1.2", "--releases", str(folder), "--trusted-keys",
                                       str(fleet["trusted"]), "--canary", "1", "--wave-size", "100%", *FAST,
                                       "--yes", "--json", timeout=3600)
    finally:
        watcher.stop.set()
        watcher.thread.join()
    assert code == 0, output
    assert [[site["host"] for site in wave["sites"]] for wave in report["waves"]] == [["site1"], ["site2", "site3"]]
    outcomes = {site["host"]: site for wave in report["waves"] for site in wave["sites"]}
    assert {host: site["outcome"] for host, site in outcomes.items()} == dict.fromkeys(ALL, "upgraded")
    assert outcomes["site1"]["record"]["path"] == ["1.1", "1.2"]
    assert outcomes["site3"]["record"]["path"] == ["1.2"]  # it was already on 1.1 (the AWX-parity test)
    for site in ALL:
        assert version_through_nginx(site) == "1.2", site
        assert data_of(site) == before[site], site
        assert documents_not_matching(site) == [], site
        assert outcomes[site]["record"]["canary"]["verdict"] == "pass"
        assert outcomes[site]["downtime_s"] is not None and outcomes[site]["downtime_s"] < 120
    assert all(count > 0 for count in watcher.seen.values()), watcher.seen
    assert watcher.unexpected == [], (watcher.unexpected[:20], watcher.timeouts)
    # the notices: maintenance and completion, to every site's contacts, in Indonesian, citing the clause
    delivered = lab_smtp.messages(maildir)[mails_before:]
    subjects = [str(message["Subject"]) for message in delivered]
    assert len(delivered) >= 2 * SITES, subjects
    bodies = " ".join(message.get_body(("plain",)).get_content() for message in delivered)
    assert "6.2.13" in bodies and "pemeliharaan" in bodies.lower(), bodies[:2000]
    # the rollout groups its waves and their sites in the state store
    code, status, output = run_cli("upgrade", "status", "--rollout", str(report["run_id"]), "--json")
    assert code == 0, output
    assert [sorted(wave["sites"]) for wave in status["waves"]] == [["site1"], ["site2", "site3"]]


def test_rollback_by_hand_puts_the_site_back_on_its_release_and_data(fleet):
    """After the rollout: site2 back on 1.0, its database at the checkpoint, a backup of 1.2's data first."""
    before_rollout = json.loads(sql("SELECT json_build_object('tenders', (SELECT count(*) FROM tenders), "
                                    "'documents', (SELECT count(*) FROM documents))", site="site2"))
    code, report, output = run_cli("upgrade", "rollback", "--site", "site2", "--yes", "--json", timeout=1800)
    assert code == 0, output
    assert report["outcome"] == "rolled_back" and report["target"]["from_version"] == "1.0", report
    record = report["record"]
    assert record["backup"]["ok"] is True and record["database"]["ok"] is True, record
    assert version_through_nginx("site2") == "1.0"
    assert sql("SELECT max(schema_version) FROM schema_migrations", site="site2") == "1"
    assert json.loads(sql("SELECT json_build_object('tenders', (SELECT count(*) FROM tenders), "
                          "'documents', (SELECT count(*) FROM documents))", site="site2")) == before_rollout
    assert documents_not_matching("site2") == []
    # a second rollback finds the site already there and changes nothing
    code, report, output = run_cli("upgrade", "rollback", "--site", "site2", "--yes", "--json", timeout=900)
    assert code == 0 and report["outcome"] == "already", output
