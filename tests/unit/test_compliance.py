"""The compliance audit: the catalogue, each control on both sides, the score, drift and the stored audits."""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from lpse_ops.actions import compliance
from lpse_ops.site import audit as site_audit
from lpse_ops.state import StateStore
from lpse_ops.state.audits import drift_between, list_audits, record_audit

VALIDATOR = Path(__file__).resolve().parents[2] / "roles" / "hardening" / "files" / "lpse-validate.py"
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)

HARDENED = {
    "ok": True,
    "baseline": {"sshd_config_sha256": "a" * 64, "sshd_dropin": "/etc/ssh/sshd_config.d/10-lpse-hardening.conf",
                 "sshd_dropin_sha256": "b" * 64, "suid_files": ["/usr/bin/passwd", "/usr/bin/su"],
                 "sysctls": {"kernel.kptr_restrict": 2, "net.ipv4.tcp_syncookies": 1},
                 "password_policy": {"PASS_MAX_DAYS": 180, "PASS_MIN_DAYS": 1, "minlen": 12},
                 "support": {"firewall": True, "sysctl": True, "auditd": True}},
    "ssh": {"ok": True, "sshd_config_sha256": "a" * 64, "dropin_sha256": "b" * 64,
            "effective": {"permitrootlogin": "no", "passwordauthentication": "no",
                          "kbdinteractiveauthentication": "no", "permitemptypasswords": "no",
                          "x11forwarding": "no", "allowtcpforwarding": "no", "allowagentforwarding": "no",
                          "maxauthtries": "3", "kexalgorithms": "sntrup761x25519-sha512@openssh.com,curve25519-sha256",
                          "ciphers": "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com",
                          "macs": "hmac-sha2-512-etm@openssh.com"}},
    "suid": {"ok": True, "files": ["/usr/bin/passwd", "/usr/bin/su"]},
    "release": {"ok": True, "version": "1.0", "files": 4, "modified": [], "missing": [], "extra": []},
    "aide": {"ran": True, "rc": 0, "added": [], "removed": [], "changed": []},
    "firewall": {"loaded": True, "policy_drop": True, "not_permitted": False, "conf_sha256": "c" * 64},
    "updates": {"installed": True,
                "origins_patterns": ["origin=Debian,codename=bookworm-security,label=Debian-Security"],
                "periodic": {"Unattended-Upgrade": "1"}},
    "clamav": {"installed": True, "timer": {"enabled": "enabled", "active": "active"},
               "last_scan": {"finished_at": (NOW - timedelta(hours=3)).isoformat(), "rc": 0, "infected": [],
                             "official_databases": ["main.cvd"]}},
    "auditd": {"rules_file_sha256": "d" * 64, "service": {"active": "active"}, "loaded_rules": 17},
    "sysctl": {"writable": True, "values": {"kernel.kptr_restrict": "2", "net.ipv4.tcp_syncookies": "1"}},
    "login": {"login_defs": {"PASS_MAX_DAYS": "180", "PASS_MIN_DAYS": "1", "UMASK": "027"},
              "pwquality_minlen": 12, "pam_pwquality": True},
    "services": {"cups.service": "inactive"},
    "lynis": {"ran": True, "hardening_index": 81},
    "postgresql": {"present": True, "listen_addresses": "localhost", "port": 5432,
                   "listening": ["127.0.0.1:5432", "[::1]:5432"],
                   "hba": [{"line_number": 3, "type": "local", "database": ["all"], "user_name": ["postgres"],
                            "auth_method": "peer"},
                           {"line_number": 7, "type": "host", "database": ["all"], "user_name": ["all"],
                            "address": "127.0.0.1", "auth_method": "scram-sha-256"}]},
    # what the control node was offered (lpse_ops.backends.wire): Mozilla's intermediate, ssh-audit's policy
    "wire": {"tls_profile": "intermediate", "ssh_rsa_host_key": False,
             "tls": {"protocols": {"TLSv1": False, "TLSv1.1": False, "TLSv1.2": True, "TLSv1.3": True},
                     "tls12_suites": ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305"],
                     "groups": {"X25519": True, "prime256v1": True, "secp384r1": True, "X448": False,
                                "secp521r1": False, "ffdhe2048": False, "ffdhe3072": False},
                     "certificate": {"lifetime_days": 90.0, "days_left": 70.0, "serial": "1f"},
                     "hsts": "max-age=63072000"},
             "ssh": {"kex": ["sntrup761x25519-sha512@openssh.com", "curve25519-sha256"], "host_keys": ["ssh-ed25519"]},
             "postgresql": {"port": 5432, "from_control_node": "no answer"}},
}


def facts(**changes) -> dict:
    """A copy of the hardened facts with dotted-path *changes* (``ssh.effective.permitrootlogin="yes"``)."""
    found = copy.deepcopy(HARDENED)
    for dotted, value in changes.items():
        node = found
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return found


def test_catalogue_every_control_has_a_clause_a_check_and_a_remediation():
    catalogue = compliance.load_catalogue()
    ids = [control["id"] for control in catalogue["controls"]]
    assert {"suid-baseline", "sshd-config-unchanged", "spse-release-integrity", "aide-integrity"} <= set(ids)
    assert all(control["clause"] in {"6.1.2", "6.1.4.3", "6.2.7", "6.1.3", "6.1.10", "6.2.19"}
               for control in catalogue["controls"])


def test_catalogue_unknown_check_is_refused_naming_the_control(tmp_path):
    bad = tmp_path / "controls.yml"
    bad.write_text("severity_weights: {high: 5}\ncontrols:\n  - {id: x, clause: '6.2.7', severity: high, title: t,"
                   " check: no_such_check, remediation: r}\n")
    with pytest.raises(ValueError, match="x: unknown check 'no_such_check'"):
        compliance.load_catalogue(bad)


def test_hardened_facts_pass_every_control_and_score_100():
    site = compliance.evaluate("site1", facts(), compliance.load_catalogue(), now=NOW)
    failing = {control["id"]: control["evidence"] for control in site.controls if control["status"] != "pass"}
    assert failing == {}
    assert site.score == 100.0 and site.failed == [] and site.lynis_index == 81


@pytest.mark.parametrize(("check", "changes", "evidence"), [
    ("ssh_keys_only", {"ssh__effective__passwordauthentication": "yes"}, "passwordauthentication yes"),
    ("ssh_root_login", {"ssh__effective__permitrootlogin": "yes"}, "PermitRootLogin yes"),
    ("ssh_crypto", {"ssh__effective__ciphers": "aes128-cbc,aes256-gcm@openssh.com"}, "ciphers: aes128-cbc"),
    ("ssh_crypto", {"ssh__effective__kexalgorithms": "diffie-hellman-group16-sha512"}, "no curve25519"),
    ("ssh_session_limits", {"ssh__effective__maxauthtries": "6"}, "maxauthtries 6"),
    ("sshd_config_unchanged", {"ssh__sshd_config_sha256": "e" * 64}, "/etc/ssh/sshd_config"),
    ("suid_baseline", {"suid__files": ["/usr/bin/passwd", "/usr/bin/su", "/tmp/.x/sh"]}, "/tmp/.x/sh"),
    ("release_integrity", {"release__modified": ["lib/spse.jar"]}, "modified: lib/spse.jar"),
    ("aide_clean", {"aide__changed": ["/etc/ssh/sshd_config"], "aide__rc": 4}, "changed: /etc/ssh/sshd_config"),
    ("firewall_active", {"firewall__loaded": False, "firewall__error": "No such table"}, "not loaded"),
    ("updates_security", {"updates__origins_patterns": ["origin=Debian,codename=bookworm,label=Debian"]},
     "non-security origin"),
    ("antivirus_clean", {"clamav__last_scan__infected": ["/var/lib/spse/documents/x.pdf"]}, "x.pdf"),
    ("antivirus_signatures", {"clamav__last_scan__official_databases": []}, "no scan record"),
    ("auditd_rules", {"auditd__service": {"active": "failed"}}, "auditd is not running"),
    ("kernel_settings", {"sysctl__values": {"kernel.kptr_restrict": "0", "net.ipv4.tcp_syncookies": "1"}},
     "kernel.kptr_restrict=0 (want 2)"),
    ("password_policy", {"login__login_defs": {"PASS_MAX_DAYS": "99999", "PASS_MIN_DAYS": "1", "UMASK": "027"}},
     "PASS_MAX_DAYS 99999"),
    ("services_off", {"services": {"cups.service": "active"}}, "cups.service"),
    ("baseline_present", {"baseline": None}, "not been hardened"),
])
def test_control_fails_with_the_reason(check, changes, evidence):
    function = compliance.CHECKS[check]
    found, text = function(facts(**changes))
    assert found == "fail"
    assert evidence in text


def test_scan_older_than_48_hours_fails_and_a_fresh_one_passes():
    old = facts(clamav__last_scan__finished_at=(NOW - timedelta(hours=49)).isoformat())
    assert compliance.antivirus_scheduled(old, now=NOW)[0] == "fail"
    fresh = facts(clamav__last_scan__finished_at=(NOW - timedelta(hours=47)).astimezone(ZoneInfo("Asia/Jayapura"))
                  .isoformat())
    assert compliance.antivirus_scheduled(fresh, now=NOW)[0] == "pass"


def test_container_without_capabilities_is_unsupported_not_failed_and_left_out_of_the_score():
    container = facts(firewall__loaded=False, firewall__not_permitted=True, firewall__error="Operation not permitted",
                      auditd__service={"active": "failed"}, auditd__loaded_rules=None,
                      sysctl__values={"kernel.kptr_restrict": "1", "net.ipv4.tcp_syncookies": "1"},
                      baseline__support={"firewall": False, "sysctl": False, "auditd": False})
    site = compliance.evaluate("site1", container, compliance.load_catalogue(), now=NOW)
    states = {control["id"]: control["status"] for control in site.controls}
    assert states["firewall-active"] == states["auditd-rules"] == states["kernel-settings"] == "unsupported"
    assert site.score == 100.0
    # A host the role found able to enforce it fails the same facts.
    able = facts(firewall__loaded=False, firewall__not_permitted=True, firewall__error="Operation not permitted")
    assert compliance.firewall_active(able)[0] == "fail"


def test_score_weighs_by_severity():
    weights = {"critical": 10, "high": 6, "medium": 3, "low": 1}
    controls = [{"severity": "critical", "status": "fail"}, {"severity": "low", "status": "pass"},
                {"severity": "high", "status": "unsupported"}]
    assert compliance.score(controls, weights) == round(100 * 1 / 11, 1)


def test_unhardened_site_scores_below_50():
    bare = {"ok": True, "baseline": None, "ssh": {"ok": True, "effective": {"permitrootlogin": "no",
            "passwordauthentication": "no", "kbdinteractiveauthentication": "no", "permitemptypasswords": "no",
            "x11forwarding": "yes", "kexalgorithms": "curve25519-sha256,diffie-hellman-group14-sha1"}},
            "suid": {"ok": True, "files": []}, "release": HARDENED["release"], "aide": {"ran": False, "error": "x"},
            "firewall": {"loaded": False, "not_permitted": True}, "updates": {"installed": False},
            "clamav": {"installed": False}, "auditd": {}, "sysctl": {"values": {}}, "login": {}, "services": {}}
    site = compliance.evaluate("site1", bare, compliance.load_catalogue(), now=NOW)
    assert site.score < 50
    assert "firewall-active" in site.failed  # no baseline: the host never said it cannot


def test_drift_first_audit_is_the_baseline_then_worse_and_better():
    assert drift_between(None, ["a"]) == {"worse": [], "better": []}
    assert drift_between(["a", "b"], ["b", "c"]) == {"worse": ["c"], "better": ["a"]}


def test_audits_stored_with_drift_and_listed_by_window_in_any_zone(tmp_path):
    store = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    store.migrate()
    jakarta = ZoneInfo("Asia/Jakarta")
    first = record_audit(store, "site1", score=60.0, failed=["aide-integrity", "suid-baseline"], lynis_index=58,
                         audited_at=datetime(2026, 11, 28, 8, 0, tzinfo=jakarta))
    record_audit(store, "site1", score=None, failed=[], audited_at=datetime(2026, 11, 28, 9, 0, tzinfo=jakarta))
    second = record_audit(store, "site1", score=95.0, failed=["suid-baseline", "antivirus-clean"],
                          audited_at=datetime(2026, 11, 28, 10, 0, tzinfo=jakarta))
    assert first["drift"] == {"worse": [], "better": []}
    # The unreachable audit in between (no score) is not what the drift compares with.
    assert second["drift"] == {"worse": ["antivirus-clean"], "better": ["aide-integrity"]}
    # 02:30 UTC is 09:30 in Jakarta: only the last audit is at or after it.
    later = list_audits(store, since=datetime(2026, 11, 28, 2, 30, tzinfo=UTC))
    assert [row["id"] for row in later] == [second["id"]]
    window = list_audits(store, since=datetime(2026, 11, 28, 8, 0, tzinfo=jakarta),
                         until=datetime(2026, 11, 28, 9, 0, tzinfo=jakarta))
    assert [row["id"] for row in window] == [first["id"]]
    assert set(window[0]) >= {"id", "site", "audited_at", "score", "lynis_index", "failed", "drift"}
    assert window[0]["audited_at"] == "2026-11-28T01:00:00+00:00" and window[0]["lynis_index"] == 58
    store.close()


def test_site_parsers_read_real_tool_output():
    assert site_audit.parse_sshd_t("port 22\npermitrootlogin no\nPermitRootLogin yes\n")["permitrootlogin"] == "no"
    report = ('Start timestamp: 2026-11-28 10:00:00\n{\n  "changed": {"/etc/ssh/sshd_config": {"sha256": ["a", "b"]}},'
              '\n  "added": {"/usr/local/bin/x": "f++++"}\n}\n')
    assert site_audit.parse_aide_report(report) == {"added": ["/usr/local/bin/x"], "removed": [],
                                                 "changed": ["/etc/ssh/sshd_config"]}
    text = ("Start timestamp: 2026-11-28 17:07:12 +0700 (AIDE 0.18.3)\nAIDE found differences between database and "
            "filesystem!!\n\nSummary:\n  Total number of entries:\t2557\n  Added entries:\t\t2\n\n"
            "---------------------------------------------------\nAdded entries:\n"
            "---------------------------------------------------\n\n"
            "f+++++++++++++++++: /usr/bin/zz-test\n\n---------------------------------------------------\n"
            "Changed entries:\n---------------------------------------------------\n\n"
            "f > ...   ..H     : /etc/issue.net\n\n---------------------------------------------------\n"
            "The attributes of the (uncompressed) database(s):\n---------------------------------------------------\n"
            "\n/var/lib/aide/aide.db\n SHA256    : 6+mir568rCOU5r/2cyNjfyoNvG08RnnR\n")
    assert site_audit.parse_aide_report(text) == {"added": ["/usr/bin/zz-test"], "removed": [],
                                                 "changed": ["/etc/issue.net"]}
    with pytest.raises(ValueError):
        site_audit.parse_aide_report("aide: cannot open database\n")
    lynis = "lynis_tests_done=231\nhardening_index=67\nwarning[]=FIRE-4512|No firewall|-|-|\n"
    assert site_audit.parse_lynis_report(lynis)["hardening_index"] == 67
    assert site_audit.parse_lynis_report(lynis)["warnings"] == ["FIRE-4512"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the site's unpack sets owners: it runs as root")
def test_release_facts_name_the_modified_missing_and_extra_files(tmp_path):
    """The audit compares the release with the signed manifest its unpack kept (site/release.py), no copy."""
    from lpse_ops import bundle
    from lpse_ops.site import release as site_release
    from tests.unit.test_bundle import make_source

    bundle.keygen(tmp_path / "keys" / "r.key", tmp_path / "keys" / "r.pub", "test")
    built = bundle.build(make_source(tmp_path), tmp_path / "keys" / "r.key", tmp_path / "out")
    base = tmp_path / "spse"
    (base / "releases").mkdir(parents=True)
    keys = site_release.trusted_keys([(tmp_path / "keys" / "r.pub").read_text()])
    site_release.unpack(str(built), hashlib.sha256(built.read_bytes()).hexdigest(), "1.1", str(base), keys)
    release = base / "releases" / "1.1"
    (base / "current").symlink_to(release)
    assert site_audit.release_facts(str(base))["modified"] == []
    (release / "lib" / "spse.jar").write_bytes(b"jar with a backdoor")
    (release / "migrations" / "0001_initial.sql").unlink()
    (release / "lib" / "extra.class").write_bytes(b"x")
    found = site_audit.release_facts(str(base))
    assert (found["modified"], found["missing"], found["extra"]) == (["lib/spse.jar"], ["migrations/0001_initial.sql"],
                                                                      ["lib/extra.class"])
    (base / "manifests" / "1.1.json").unlink()
    assert "cannot read the signed manifest of SPSE 1.1" in site_audit.release_facts(str(base))["error"]


@pytest.mark.parametrize(("kind", "text", "ok"), [
    ("audit-rules", "-w /etc/passwd -p wa -k identity\n-a always,exit -F arch=b64 -S execve\n", True),
    ("audit-rules", "-w /etc/passwd -p wa -k identity\nwatch /etc/shadow\n", False),
    ("login-defs", "PASS_MAX_DAYS\t180\nUMASK 027\n", True),
    ("login-defs", "PASS_MAX_DAYS=180\n", False),
    ("pwquality", "minlen = 12\nenforce_for_root\n", True),
    ("pwquality", "min_length = 12\n", False),
])
def test_validator_accepts_good_files_and_names_the_bad_line(tmp_path, kind, text, ok):
    candidate = tmp_path / "candidate"
    candidate.write_text(text)
    done = subprocess.run(["python3", str(VALIDATOR), kind, str(candidate)], capture_output=True, text=True,
                          check=False)
    assert (done.returncode == 0) is ok, done.stderr
    if not ok:
        assert "line " in done.stderr



def _unpacked(tmp_path: Path, versions: tuple[str, ...]) -> Path:
    """A site base with each of *versions* unpacked by the site tool (its signed manifest kept); current: the last."""
    from lpse_ops import bundle
    from lpse_ops.site import release as site_release
    from tests.unit.test_bundle import RELEASE_YML, make_source

    bundle.keygen(tmp_path / "keys" / "r.key", tmp_path / "keys" / "r.pub", "test")
    keys = site_release.trusted_keys([(tmp_path / "keys" / "r.pub").read_text()])
    base = tmp_path / "spse"
    (base / "releases").mkdir(parents=True)
    for version in versions:
        release_yml = RELEASE_YML.replace('version: "1.1"', f'version: "{version}"')
        source = make_source(tmp_path / f"src-{version}", release_yml)
        built = bundle.build(source, tmp_path / "keys" / "r.key", tmp_path / f"out-{version}")
        site_release.unpack(str(built), hashlib.sha256(built.read_bytes()).hexdigest(), version, str(base), keys)
    (base / "current").symlink_to(base / "releases" / versions[-1])
    return base


@pytest.mark.skipif(os.geteuid() != 0, reason="the site's unpack sets owners: it runs as root")
def test_releases_facts_judge_every_release_folder_not_only_current(tmp_path):
    base = _unpacked(tmp_path, ("1.1", "1.2"))
    older = base / "releases" / "1.1"
    (older / "lib" / "spse.jar").write_bytes(b"old jar with a backdoor")
    (base / "releases" / "9.9").mkdir()
    (base / "releases" / "9.9" / "README").write_text("not signed")
    (base / "releases" / "stray").write_text("a file, not a release folder")
    found = site_audit.releases_facts(str(base))
    by_name = {Path(release["release_dir"]).name: release for release in found["releases"]}
    assert sorted(by_name) == ["1.1", "1.2", "9.9"] and found["unexpected"] == ["stray"]
    assert by_name["1.1"]["modified"] == ["lib/spse.jar"] and by_name["1.1"]["release_dir"] == str(older)
    assert by_name["1.2"]["modified"] == [] and by_name["1.2"]["ok"] is True
    assert by_name["9.9"]["ok"] is False and str(base / "manifests" / "9.9.json") in by_name["9.9"]["error"]
    assert "lpse-release-view" not in by_name["9.9"]["error"]
    assert (base / "current").resolve() == base / "releases" / "1.2"  # the real current is untouched


@pytest.mark.skipif(os.geteuid() != 0, reason="the site's unpack sets owners: it runs as root")
def test_release_integrity_fails_naming_an_older_tampered_release_and_an_unknown_folder(tmp_path):
    base = _unpacked(tmp_path, ("1.1", "1.2"))
    status, evidence = compliance.release_integrity(facts(releases=site_audit.releases_facts(str(base))))
    assert status == compliance.PASS and "(1.1, 1.2)" in evidence, evidence
    older = base / "releases" / "1.1"
    (older / "lib" / "spse.jar").write_bytes(b"old jar with a backdoor")
    (base / "releases" / "9.9").mkdir()
    status, evidence = compliance.release_integrity(facts(releases=site_audit.releases_facts(str(base))))
    assert status == compliance.FAIL
    assert f"{older} (SPSE 1.1): modified: lib/spse.jar" in evidence, evidence
    assert str(base / "releases" / "9.9") in evidence and "cannot read the signed manifest" in evidence, evidence

def test_release_integrity_without_releases_facts_judges_the_running_release_alone():
    status, evidence = compliance.release_integrity(facts())
    assert status == compliance.PASS and "4 files match" in evidence
