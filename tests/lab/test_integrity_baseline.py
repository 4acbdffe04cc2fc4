"""Our own changes keep the integrity baseline true; a change made outside lpse-ops still fails (issue 21).

Clause 6.2.19, on a real lab site through the real CLI: after `harden` the audit's `aide-integrity` and
`spse-release-integrity` pass; a recorded lpse-ops change inside AIDE's scope (a second `harden` with a
stricter password length rewrites /etc/security/pwquality.conf) ends with the AIDE baseline refreshed for
exactly what it touched, recorded in its result record, its run and the audit log; the lab's traffic
generator (started after hardening) is out of the baseline's scope in the lab; an upgrade through
`lpse-ops upgrade run` leaves both controls passing and records its refresh; then an unrecorded change to a
file of the older release folder, an unknown release folder and a binary under /usr/bin fails both controls,
each naming its own paths (the release folders belong to spse-release-integrity, /usr/bin to AIDE), and
undoing it passes again; rolling the upgrade back through `lpse-ops upgrade rollback` passes too.

Runs after test_hardening.py (LATE_MODULES): it hardens SITE for good (and leaves it on the release it found).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.lab.labkit import CLI, SITE, backup_cli, on_site, run_cli

# The upgrade here is the change whose AIDE refresh is under test, not the canary (tests/lab/test_upgrade.py
# judges real bad releases): no bake, so a latency spike of a fresh JVM on a loaded machine cannot roll it back
# (CI once saw p95 665 ms against a limit of 410 with both lab streams running). The finish, and its refresh,
# run after the canary's pass exactly as after a bake.
NO_BAKE = ("--bake", "0", "--baseline", "60", "--min-requests", "0", "--health-timeout", "30")
BINARY = "/usr/bin/yes"  # a binary nothing in the lab runs
PWQUALITY = "/etc/security/pwquality.conf"
STRICTER_LENGTH = 14


def audit() -> dict:
    code, report, output = run_cli("audit", "--limit", SITE, "--json")
    assert code == 0, output
    (site,) = report["sites"]
    assert site["score"] is not None, site
    return site


def controls(site: dict) -> dict[str, dict]:
    return {control["id"]: control for control in site["controls"]}


def assert_integrity_passes(site: dict) -> None:
    found = controls(site)
    for control in ("aide-integrity", "spse-release-integrity"):
        assert found[control]["status"] == "pass", (control, found[control]["evidence"])


def audit_log(limit: int = 200) -> list[dict]:
    done = subprocess.run([CLI, "audit-log", "show", "--limit", str(limit), "--json"], capture_output=True,
                          text=True, check=True, timeout=120)
    return json.loads(done.stdout)


def running_version() -> str:
    return json.loads(on_site("curl -sk https://127.0.0.1/health"))["version"]


@pytest.fixture(scope="module")
def hardened(backed_up, lab_home):
    """SITE hardened, the lab's traffic running (started after the AIDE database was built), then hardened
    again with a stricter password length: a recorded change inside AIDE's scope."""
    code, first, output = run_cli("harden", "--limit", SITE, "--yes", "--json")
    assert code == 0, output
    code, _report, output = run_cli("lab", "traffic", "start", "--rate", "5")
    assert code == 0, output
    code, second, output = run_cli("harden", "--limit", SITE, "--yes", "--json", "-e",
                                   f"hardening_password_min_length={STRICTER_LENGTH}")
    assert code == 0, output
    yield {"first": first, "second": second}
    run_cli("lab", "traffic", "stop")


def test_harden_ends_by_refreshing_the_baseline_with_what_it_changed(hardened):
    first = hardened["first"]["records"][SITE]["integrity_baseline"]
    assert first["ran"] is True, first
    second = hardened["second"]["records"][SITE]["integrity_baseline"]
    assert second["ran"] is True and second["refreshed"] is True, second
    assert PWQUALITY in second["accepted"]["changed"], second
    assert f"minlen = {STRICTER_LENGTH}" in on_site(f"cat {PWQUALITY}")


def test_hardened_site_passes_both_integrity_controls_with_the_lab_traffic_running(hardened):
    assert "active" in on_site("systemctl is-active lpse-lab-traffic.service || true")
    site = audit()
    assert_integrity_passes(site)
    assert "lpse-lab-traffic" not in controls(site)["aide-integrity"]["evidence"]


def test_the_refresh_is_in_the_run_and_the_audit_log(hardened):
    run_id = hardened["second"]["run_id"]
    code, run, output = run_cli("runs", "show", str(run_id), "--json")
    assert code == 0, output
    refresh = run["host_results"][SITE]["detail"]["integrity_baseline"]
    assert refresh["refreshed"] is True and PWQUALITY in refresh["paths"], refresh
    entries = [entry for entry in audit_log() if entry["operation"] == "integrity.refresh"
               and entry["detail"]["run_id"] == run_id]
    assert len(entries) == 1, entries
    (entry,) = entries
    assert entry["actor"] and entry["detail"]["site"] == SITE and PWQUALITY in entry["detail"]["paths"], entry


@pytest.fixture(scope="module")
def upgraded(hardened, release, lab_home, tmp_path_factory):
    """SITE upgraded one release on through `lpse-ops upgrade run` (1.0 -> 1.1 when run alone)."""
    from lpse_ops import reference

    versions = sorted(reference.releases(), key=lambda text: tuple(int(part) for part in text.split(".")))
    before = running_version()
    assert before in versions[:-1], f"{SITE} runs {before}: no newer reference release to upgrade to"
    target = versions[versions.index(before) + 1]
    folder = tmp_path_factory.mktemp("integrity-releases")
    bundle = release["bundles"].get(target) or reference.build_reference_bundle(target, release["key"],
                                                                                lab_home / "integrity-bundles")
    (folder / bundle.name).symlink_to(bundle)
    code, _report, output = backup_cli("verify")  # the plan asks for a recent restore verification
    assert code == 0, output
    code, report, output = run_cli("upgrade", "run", "--to", target, "--releases", str(folder), "--trusted-keys",
                                   str(release["trusted"]), "--limit", SITE, "--canary", "1", "--wave-size", "100%",
                                   *NO_BAKE, "--yes", "--json", timeout=3600)
    assert code == 0, output
    (step,) = [site for wave in report["waves"] for site in wave["sites"] if site["host"] == SITE]
    assert step["outcome"] == "upgraded", step
    assert running_version() == target
    return {"from": before, "to": target, "step": step}


def test_upgrade_keeps_both_integrity_controls_passing_and_records_its_refresh(upgraded):
    refresh = upgraded["step"]["record"]["integrity_baseline"]
    assert refresh["ran"] is True and refresh.get("error") is None, refresh
    assert refresh["left"] == [], refresh
    site = audit()
    assert_integrity_passes(site)
    evidence = controls(site)["spse-release-integrity"]["evidence"]
    assert upgraded["from"] in evidence and upgraded["to"] in evidence, evidence  # both release folders judged
    assert any(entry["operation"] == "integrity.refresh" and entry["detail"]["site"] == SITE
               and entry["detail"]["operation"].startswith("upgrade") for entry in audit_log()), "no refresh logged"


def test_unrecorded_changes_fail_under_their_owning_control_until_undone(upgraded):
    old_release = f"/opt/spse/releases/{upgraded['from']}"
    relative = on_site(f"cd {old_release} && find . -type f -path './migrations/*' | sort | head -1").strip()[2:]
    assert relative, f"no migration file under {old_release}"
    tampered = f"{old_release}/{relative}"
    unknown = "/opt/spse/releases/9.9"
    on_site(f"cp -p {tampered} /root/release-file.orig && cp -p {BINARY} /root/binary.orig")
    try:
        on_site(f"echo '-- injected' >> {tampered}")
        on_site(f"printf 'x' >> {BINARY}")
        on_site(f"mkdir -p {unknown} && echo 'not signed' > {unknown}/README")
        site = audit()
        found = controls(site)
        assert {"aide-integrity", "spse-release-integrity"} <= set(site["failed"]), site["failed"]
        release_evidence = found["spse-release-integrity"]["evidence"]
        assert f"{old_release} (SPSE {upgraded['from']}): modified: {relative}" in release_evidence, release_evidence
        assert unknown in release_evidence, release_evidence
        aide_evidence = found["aide-integrity"]["evidence"]
        assert f"changed: {BINARY}" in aide_evidence, aide_evidence
        assert "/opt/spse" not in aide_evidence, aide_evidence  # releases are not AIDE's to judge
        assert BINARY not in release_evidence
    finally:
        on_site(f"cat /root/release-file.orig > {tampered}; cat /root/binary.orig > {BINARY}; rm -rf {unknown}; "
                "rm -f /root/release-file.orig /root/binary.orig")
    assert_integrity_passes(audit())


def test_rollback_through_lpse_ops_keeps_both_integrity_controls_passing_and_records_its_refresh(upgraded):
    code, report, output = run_cli("upgrade", "rollback", "--site", SITE, "--yes", "--json", timeout=1800)
    assert code == 0, output
    assert report["outcome"] == "rolled_back", report
    refresh = report["record"]["integrity_baseline"]
    assert refresh["ran"] is True and refresh.get("error") is None and refresh["left"] == [], refresh
    assert running_version() == upgraded["from"]
    assert_integrity_passes(audit())
