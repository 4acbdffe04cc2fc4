"""Fixtures for tests against the lab of real hosts.

The session brings up its own lab (name ``lpse-test``, ports from 2420, its own LPSE_OPS_HOME) so it
never disturbs a demo lab, and takes it down at the end. Nothing here is mocked: the hosts are
Debian 12 systemd containers reached over SSH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LAB_NAME = "lpse-test"
PORT_BASE = 2420
SITES = 2
CLI = str(Path(sys.executable).with_name("lpse-ops"))


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/lab" in str(item.fspath):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def lab_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("lpse-ops-home")
    os.environ["LPSE_OPS_HOME"] = str(home)
    os.environ["LPSE_OPS_LAB_NAME"] = LAB_NAME
    os.environ.pop("LPSE_OPS_INVENTORY", None)
    os.environ.pop("LPSE_OPS_STATE_URL", None)
    return home


@pytest.fixture(scope="session")
def lab(lab_home):
    """A lab of SITES site hosts and the offsite host; yields its state."""
    from lpse_ops.lab import lab as lab_actions

    lab_actions.down(LAB_NAME, purge=False)
    state = lab_actions.up(lab_actions.plan(SITES, PORT_BASE, LAB_NAME), progress=lambda m: print(m, flush=True))
    yield state
    if not os.environ.get("LPSE_OPS_KEEP_LAB"):
        lab_actions.down(LAB_NAME, purge=False)


@pytest.fixture(scope="session")
def release(lab_home):
    """A release key pair, trusted-keys folder and signed reference bundles 1.0 and 1.1."""
    from lpse_ops import bundle, reference

    keys = lab_home / "release-keys"
    keys.mkdir()
    bundle.keygen(keys / "release.key", keys / "release.pub", "lab release key")
    trusted = lab_home / "trusted-keys"
    trusted.mkdir()
    (trusted / "release.pub").write_bytes((keys / "release.pub").read_bytes())
    out = lab_home / "bundles"
    bundles = {}
    for version in ("1.0", "1.1"):
        source = reference.build_reference_source(version, lab_home / f"src-{version}")
        bundles[version] = bundle.build(source, keys / "release.key", out)
    return {"key": keys / "release.key", "trusted": trusted, "bundles": bundles}


def run_cli(*args: str, check_json: bool = True, timeout: float = 1800) -> tuple[int, dict | None, str]:
    """Run the real ``lpse-ops`` command; return (exit code, parsed JSON stdout or None, stderr)."""
    done = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout, check=False)
    data = None
    if check_json and done.stdout.strip().startswith("{"):
        data = json.loads(done.stdout)
    return done.returncode, data, done.stderr + done.stdout


@pytest.fixture(scope="session")
def installed(lab, release):
    """SPSE 1.0 installed on every lab site through the CLI; yields the install JSON report."""
    code, report, output = run_cli("install", str(release["bundles"]["1.0"]), "--trusted-keys",
                                   str(release["trusted"]), "--json")
    assert code == 0, output
    return report


def extra_host(lab_state: dict, name: str, ssh_port: int, https_port: int, tmpfs: dict[str, str] | None = None):
    """Start one more lab host (not in the lab inventory) and return its HostSpec."""
    from lpse_ops.lab import lab as lab_actions

    lab_plan = lab_actions.LabPlan(lab_state["name"], lab_state["port_base"], [])
    host = lab_actions.HostSpec(name, "site", ssh_port, https_port=https_port, site_code=name, tmpfs=tmpfs or {})
    subprocess.run(["docker", "rm", "-f", lab_plan.container(host)], capture_output=True, check=False)
    lab_actions.start_host(lab_plan, host, lab_state["image"])
    lab_actions.provision_access(lab_plan, host, (lab_actions.lab_dir() / "id_ed25519.pub").read_text())
    assert lab_actions.ssh_ok(host, wait_s=60), f"{name} does not answer SSH"
    return host


def inventory_for(path: Path, hosts: dict[str, dict], with_secret: bool = True) -> Path:
    """Write an inventory for *hosts* (name -> vars) using the lab's SSH settings."""
    import yaml

    from lpse_ops.lab import lab as lab_actions

    lab_inventory = yaml.safe_load(lab_actions.inventory_path().read_text())
    common = dict(lab_inventory["all"]["vars"])
    if with_secret:
        common["vault_spse_db_password"] = "lab-only-password"
    data = {"all": {"vars": common, "children": {"sites": {"hosts": hosts}}}}
    path.write_text(yaml.safe_dump(data))
    return path


def container_of(host_name: str) -> str:
    return f"{LAB_NAME}-{host_name}"


def ssh_logins(host_name: str) -> int:
    """Return how many SSH logins the host's sshd has accepted so far (from its journal)."""
    done = subprocess.run(["docker", "exec", container_of(host_name), "journalctl", "-u", "ssh", "--no-pager",
                           "-o", "cat"], capture_output=True, text=True, check=True)
    return done.stdout.count("Accepted publickey")
