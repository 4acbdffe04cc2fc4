"""The server baseline's checks (cli/lpse_ops/site/preflight.py), from a host's files and outputs as given.

The lab test (tests/lab/test_preflight.py) runs the same code on real hosts through the role; these pin each
rule with the outputs that break it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lpse_ops.site import preflight

SPEC = {"os": {"distribution": "Debian", "major_version": "12"}, "min_vcpus": 2, "min_memory_mb": 1500,
        "disk_paths": [{"path": "/var/lib/spse", "min_free_mb": 2048}],
        "ports": [{"port": 443, "allowed": ["nginx"]}, {"port": 5432, "allowed": ["postgres"]}],
        "dns_names": ["deb.debian.org"], "check_apt_sources": True}
OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'
SS_NGINX = ('LISTEN 0 511 0.0.0.0:443 0.0.0.0:* users:(("nginx",pid=81,fd=6),("nginx",pid=80,fd=6)) ino:1 sk:2\n'
            'LISTEN 0 244 127.0.0.1:5432 0.0.0.0:* uid:104 ino:3 sk:4\n')


def host(**changes) -> preflight.Host:
    base = dict(os_release=preflight.parse_os_release(OS_RELEASE), debian_version="12.8\n", vcpus=2, memory_mb=2000,
                ss=SS_NGINX, users={0: "root", 104: "postgres"},
                apt_sources="# deb http://old.example/ bookworm main\nTypes: deb\nURIs: http://deb.debian.org/debian\n"
                            "deb [signed-by=/k.gpg] https://user:pw@mirror.example.id/debian bookworm main\n",
                free_mb=lambda path: ("/var/lib", 5000, "/"), resolve=lambda name: ["192.0.2.1"])
    base.update(changes)
    return preflight.Host(**base)


def by_name(checks: list[dict]) -> dict[str, dict]:
    return {check["check"]: check for check in checks}


def test_a_host_that_meets_the_baseline_passes_every_check_in_the_roles_order():
    checks = preflight.checks(SPEC, host())
    assert [c["check"] for c in checks] == ["os", "vcpus", "memory", "disk /var/lib/spse", "port 443", "port 5432",
                                            "dns deb.debian.org", "dns mirror.example.id"]
    assert all(c["ok"] for c in checks), checks
    found = by_name(checks)
    assert found["os"]["detail"] == "Debian 12.8 (required Debian 12)"
    assert found["disk /var/lib/spse"]["detail"] == "5000 MB free on / (measured at /var/lib, minimum 2048 MB)"
    assert found["port 443"]["detail"] == "held by nginx"
    assert found["port 5432"]["detail"] == "held by user postgres"  # ss could not name it: its owner decides


def test_each_broken_item_fails_its_own_check_and_says_what_was_found():
    broken = host(os_release=preflight.parse_os_release('ID=ubuntu\nVERSION_ID="22.04"\n'), debian_version="",
                  vcpus=1, memory_mb=900, free_mb=lambda path: ("/var/lib/spse", 16, "/var/lib/spse"),
                  ss='LISTEN 0 5 0.0.0.0:443 0.0.0.0:* users:(("python3",pid=9,fd=3)) uid:0 ino:1\n',
                  resolve=lambda name: [] if name == "mirror.example.id" else ["192.0.2.1"])
    found = by_name(preflight.checks(SPEC, broken))
    assert found["os"] == {"check": "os", "ok": False, "detail": "Ubuntu 22.04 (required Debian 12)"}
    assert not found["vcpus"]["ok"] and found["vcpus"]["detail"] == "1 vCPUs (minimum 2)"
    assert not found["memory"]["ok"] and found["memory"]["detail"] == "900 MB (minimum 1500 MB)"
    assert not found["disk /var/lib/spse"]["ok"] and "16 MB free on /var/lib/spse" in found["disk /var/lib/spse"][
        "detail"]
    assert found["port 443"] == {"check": "port 443", "ok": False, "detail": "held by python3 (allowed: nginx)"}
    assert found["port 5432"] == {"check": "port 5432", "ok": True, "detail": "free"}
    assert found["dns mirror.example.id"] == {"check": "dns mirror.example.id", "ok": False,
                                              "detail": "does not resolve"}
    assert found["dns deb.debian.org"]["ok"]


def test_a_port_held_by_another_users_process_fails_naming_the_user():
    ss = "LISTEN 0 5 [::]:5432 [::]:* uid:1000 ino:1\n"
    check = preflight.port_check(5432, ["postgres"], ss, {1000: "mallory"})
    assert check == {"check": "port 5432", "ok": False, "detail": "held by user mallory (allowed: postgres)"}
    unknown = preflight.port_check(5432, ["postgres"], "LISTEN 0 5 [::]:5432 [::]:* ino:1\n", {})
    assert not unknown["ok"] and unknown["detail"].startswith("held by an unknown process")
    # another port's listener (54321, :15432) is not this port's
    other = "LISTEN 0 5 0.0.0.0:54321 0.0.0.0:* uid:1000\nLISTEN 0 5 0.0.0.0:15432 0.0.0.0:* uid:1000\n"
    assert preflight.port_check(5432, ["postgres"], other, {1000: "mallory"})["detail"] == "free"


def test_a_disk_that_cannot_be_measured_fails_with_the_reason():
    def refuse(path):
        raise PermissionError(13, "Permission denied", path)

    found = by_name(preflight.checks(SPEC, host(free_mb=refuse)))
    assert not found["disk /var/lib/spse"]["ok"]
    assert found["disk /var/lib/spse"]["detail"].startswith("df failed: [Errno 13] Permission denied")


def test_apt_sources_are_read_without_comments_and_only_when_asked():
    assert preflight.apt_hosts("# deb http://a.example/ x\ndeb http://b.example/ y\nURIs: https://c.example/d\n") == [
        "b.example", "c.example"]
    found = by_name(preflight.checks({**SPEC, "check_apt_sources": False}, host()))
    assert "dns mirror.example.id" not in found and "dns deb.debian.org" in found


def test_free_space_is_measured_at_the_nearest_existing_folder(tmp_path: Path):
    measured, free, mount = preflight.free_mb(str(tmp_path / "not" / "yet"))
    assert measured == str(tmp_path) and free > 0 and Path(mount).is_dir()


def test_the_file_runs_as_a_plain_script_as_the_role_runs_it(tmp_path: Path):
    """roles/preflight runs the file with python3 and nothing else (ansible.builtin.script): stdlib only."""
    spec = {**SPEC, "disk_paths": [{"path": str(tmp_path), "min_free_mb": 1}], "dns_names": ["localhost"],
            "check_apt_sources": False, "ports": []}
    done = subprocess.run([sys.executable, "-I", preflight.__file__, "--spec", json.dumps(spec)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["ntp"] in ("yes", "no", "unknown") and isinstance(out["clock"], float)
    assert by_name(out["checks"])["dns localhost"]["ok"]
