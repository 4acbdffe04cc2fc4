"""Per-engineer SSH access through the LKPP CA (clauses 6.1.3, 6.1.10) against the lab's real sshd on every site.

A certificate opens only its own sites, works until it expires or is revoked and not a second after (sshd's own
reason read from its journal), a key never granted never opens anything, and a revocation reaches every site at
once while a site it cannot reach is reported as not revoked. Ordered late (conftest LATE_MODULES): it leaves the
access drop-in and the ``lkpp`` account on the sites; the lab's admin key keeps working.
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from tests.lab.labkit import PORT_BASE, container_of, inventory_for, run_cli

PASSPHRASE = "lab-only-ca-passphrase"
LOGIN = "lkpp"
EXPIRY_S = 20  # the short grant's lifetime


def _sites() -> dict[str, int]:
    """Return each lab site's SSH port, from the lab's inventory."""
    from lpse_ops.lab import lab as lab_actions

    data = yaml.safe_load(lab_actions.inventory_path().read_text())
    return {name: spec["ansible_port"] for name, spec in data["all"]["children"]["sites"]["hosts"].items()}


def _keypair(folder: Path, name: str) -> Path:
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def _login(key: Path, port: int, certificate: Path | None = None) -> tuple[int, float, float]:
    """Try one SSH login as the access account; return (ssh's exit code, start, end) in epoch seconds."""
    argv = ["ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "-p", str(port)]
    if certificate is not None:
        argv += ["-o", f"CertificateFile={certificate}"]
    start = time.time()
    done = subprocess.run([*argv, f"{LOGIN}@127.0.0.1", "true"], capture_output=True, timeout=30, check=False)
    return done.returncode, start, time.time()


def _sshd_log(site: str, since: float) -> str:
    """Return what the site's sshd logged since *since* (epoch seconds), one message per line."""
    done = subprocess.run(["docker", "exec", container_of(site), "journalctl", "-u", "ssh", "--no-pager", "-o", "cat",
                           "--since", f"@{int(since) - 1}"], capture_output=True, text=True, check=True)
    return done.stdout


def _poll_log(site: str, since: float, needle: str, bound_s: float = 10) -> str:
    """Wait (at most *bound_s*) until *needle* is in the site's sshd log since *since*; return the log."""
    deadline = time.monotonic() + bound_s
    while True:
        log = _sshd_log(site, since)
        if needle in log or time.monotonic() > deadline:
            return log
        time.sleep(0.5)


@pytest.fixture(scope="module")
def access(lab, tmp_path_factory):
    """The CA, the sites set up (twice: the second run changes nothing), and a grant on the first site only."""
    os.environ.setdefault("LPSE_OPS_ACCESS_CA_PASSPHRASE", PASSPHRASE)  # a reused lab home keeps its CA
    from lpse_ops import config

    if not (config.home() / "access" / "ca" / "lkpp-ca").exists():
        code, _, output = run_cli("access", "ca", "init", "--json")
        assert code == 0, output
    sites = _sites()
    code, first, output = run_cli("access", "setup", "--json")
    assert code == 0, output
    assert set(first["records"]) == set(sites) and all(r["complete"] for r in first["records"].values()), first
    first_site = sorted(sites)[0]
    code, second, output = run_cli("access", "setup", "--limit", first_site, "--json")  # idempotent: nothing changes
    assert code == 0, output
    assert {host: state["changed"] for host, state in second["hosts"].items()} == {first_site: 0}, second

    folder = tmp_path_factory.mktemp("engineers")
    key = _keypair(folder, "ani")
    code, granted, output = run_cli("access", "grant", "--engineer", "ani", "--key", f"{key}.pub", "--sites",
                                    first_site, "--hours", "1", "--reason", "uji: pemutakhiran macet di situs pertama",
                                    "--json")
    assert code == 0, output
    return {"sites": sites, "first": first_site, "key": key, "cert": Path(granted["certificate_path"]),
            "grant": granted}


def test_grant_opens_only_its_own_site(access):
    sites, first = access["sites"], access["first"]
    assert access["grant"]["principals"] == [f"site:{first}"]
    started = time.time()
    for site, port in sorted(sites.items()):
        code, _, _ = _login(access["key"], port, access["cert"])
        if site == first:
            assert code == 0, f"the grant does not open {site}"
        else:
            assert code == 255, f"a grant for {first} opened {site}"
            assert "Certificate does not contain an authorized principal" in _poll_log(
                site, started, "authorized principal")


def test_key_never_granted_never_opens_a_site(access, tmp_path):
    stranger = _keypair(tmp_path, "stranger")
    # A certificate naming every site, signed by a CA the sites do not trust.
    rogue_ca = _keypair(tmp_path, "rogue-ca")
    principals = ",".join(f"site:{site}" for site in access["sites"])
    subprocess.run(["ssh-keygen", "-q", "-s", str(rogue_ca), "-I", "rogue", "-n", principals, "-V", "-5m:+1h",
                    f"{stranger}.pub"], check=True)
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", f"{stranger}.pub"], capture_output=True, text=True,
                                 check=True).stdout.split()[1]
    started = time.time()
    for site, port in sorted(access["sites"].items()):
        assert _login(stranger, port)[0] == 255, f"a bare key opened {site}"
        assert _login(stranger, port, Path(f"{stranger}-cert.pub"))[0] == 255, f"a rogue certificate opened {site}"
        accepted = [line for line in _sshd_log(site, started).splitlines() if line.startswith("Accepted publickey")]
        assert not [line for line in accepted if fingerprint in line or "ID rogue" in line], accepted


def test_revoke_reaches_every_site_at_once_and_names_the_one_it_missed(access, tmp_path):
    sites = access["sites"]
    key = _keypair(tmp_path, "budi")
    code, granted, output = run_cli("access", "grant", "--engineer", "budi", "--key", f"{key}.pub", "--limit", "sites",
                                    "--hours", "2", "--reason", "uji: migrasi server di semua situs", "--json")
    assert code == 0, output
    certificate = Path(granted["certificate_path"])
    assert sorted(granted["sites"]) == sorted(sites)
    for site, port in sorted(sites.items()):
        assert _login(key, port, certificate)[0] == 0, f"the grant does not open {site}"

    # The fleet as the lab has it, plus one site that does not answer (nothing listens on its port).
    ghost_port = PORT_BASE + 77
    hosts = {name: {"ansible_port": port, "site_code": name} for name, port in sites.items()}
    hosts["ghost"] = {"ansible_port": ghost_port, "site_code": "ghost"}
    inventory = inventory_for(tmp_path / "fleet.yml", hosts)
    code, _, output = run_cli("access", "revoke", "--engineer", "budi", "--reason", "uji: akses dicabut",
                              "-i", str(inventory), "--yes", check_json=False)
    revoked_at = time.time()
    assert code == 4, output  # a host unreachable
    assert f"revoked serial(s) {granted['serial']}; KRL version" in output, output
    assert f"in force on {len(sites)} site(s)" in output, output
    assert "NOT REVOKED on ghost" in output and "unreachable" in output, output

    for site, port in sorted(sites.items()):
        assert _login(key, port, certificate)[0] == 255, f"a revoked certificate still opens {site}"
        log = _poll_log(site, revoked_at, "revoked by file")
        assert "revoked by file /etc/ssh/lpse-access/revoked.krl" in log, log

    from lpse_ops.actions import access as access_actions

    recorded = {g["serial"]: g for g in access_actions.list_grants(engineer="budi")}
    assert recorded[granted["serial"]]["revoked"] is True, recorded


def test_grant_works_until_it_expires_and_not_a_second_after(access, tmp_path):
    sites = access["sites"]
    key = _keypair(tmp_path, "citra")
    code, granted, output = run_cli("access", "grant", "--engineer", "citra", "--key", f"{key}.pub", "--limit", "sites",
                                    "--hours", f"{EXPIRY_S / 3600:.6f}", "--reason", "uji: masa berlaku singkat",
                                    "--json")
    assert code == 0, output
    certificate = Path(granted["certificate_path"])
    valid_before = datetime.fromisoformat(granted["valid_before"]).timestamp()
    assert valid_before - datetime.fromisoformat(granted["granted_at"]).timestamp() <= EXPIRY_S + 1
    attempts: dict[str, list[tuple[int, float, float]]] = {site: [] for site in sites}
    # Every site in turn until each has had a try begun after the grant's end (on a loaded machine a round of
    # logins can take longer than a fixed margin: wait for that state, bounded by the end plus 60 s).
    deadline = valid_before + 60
    while not all(any(start >= valid_before for _, start, _ in tries) for tries in attempts.values()):
        assert time.time() < deadline, ("no login tried after the grant's end on every site", attempts)
        for site, port in sorted(sites.items()):
            attempts[site].append(_login(key, port, certificate))
    for site, tries in attempts.items():
        before = [code for code, _, end in tries if end < valid_before]
        after = [code for code, start, _ in tries if start >= valid_before]
        assert before and all(code == 0 for code in before), (site, tries)
        # it still worked in its last seconds, and no attempt begun after its end got in
        assert any(code == 0 and end >= valid_before - 3 for code, _, end in tries), (site, tries)
        assert after and all(code == 255 for code in after), (site, tries)
        assert "Certificate invalid: expired" in _poll_log(site, valid_before, "expired"), site


def test_ca_show_is_the_key_every_site_trusts_and_list_shows_the_grant(access):
    """``access ca show``: the same key (and the fingerprint ssh-keygen computes on the site) every site's sshd
    trusts; ``access list``: the grant with its sites, reason and window, filtered by engineer and --active."""
    code, shown, output = run_cli("access", "ca", "show", "--json")
    assert code == 0, output
    for site in access["sites"]:
        trusted = subprocess.run(["docker", "exec", container_of(site), "cat", "/etc/ssh/lpse-access/lkpp-ca.pub"],
                                 capture_output=True, text=True, check=True).stdout
        assert trusted.split()[:2] == shown["public_key"].split()[:2], site
        fingerprint = subprocess.run(["docker", "exec", container_of(site), "ssh-keygen", "-lf",
                                      "/etc/ssh/lpse-access/lkpp-ca.pub"], capture_output=True, text=True,
                                     check=True).stdout.split()[1]
        assert fingerprint == shown["fingerprint"], site
    code, grants, output = run_cli("access", "list", "--engineer", "ani", "--active", "--json")
    assert code == 0, output
    grant = next(g for g in grants if g["serial"] == access["grant"]["serial"])
    assert grant["sites"] == [access["first"]] and grant["reason"] == "uji: pemutakhiran macet di situs pertama"
    assert grant["active"] and not grant["revoked"] and "certificate" not in grant
    code, others, output = run_cli("access", "list", "--engineer", "nobody-by-this-name", "--json")
    assert code == 0 and others == [], output
    code, _, table = run_cli("access", "list", "--engineer", "ani", check_json=False)
    assert code == 0 and "uji: pemutakhiran macet di situs pertama" in table and "active" in table, table
