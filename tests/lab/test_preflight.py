"""Pre-flight against the server baseline (clause 6.1.9), on good sites and on a host that breaks it."""

from __future__ import annotations

import subprocess

from tests.lab.labkit import PORT_BASE, container_of, extra_host, inventory_for, remove_extra_host, run_cli


def test_preflight_passes_on_lab_sites(lab):
    code, report, output = run_cli("preflight", "--json")
    assert code == 0, output
    assert report["result"] == "ok"
    assert all(not failures for failures in report["baseline_failures"].values()), report["baseline_failures"]
    assert all(host["changed"] == 0 for host in report["hosts"].values())


def test_preflight_lists_every_broken_check_on_a_bad_host(lab, tmp_path):
    host = extra_host(lab, "broken", PORT_BASE + 50, PORT_BASE + 150, tmpfs={"/var/lib/spse": "16m"})
    try:
        # Something else already holds port 443 (here: Python's web server, not nginx).
        subprocess.run(["docker", "exec", container_of("broken"), "systemd-run", "--unit", "squatter",
                        "python3", "-m", "http.server", "443", "--bind", "0.0.0.0"], check=True, capture_output=True)
        inventory = inventory_for(tmp_path / "broken.yml", {"broken": {"ansible_port": host.ssh_port,
                                                                       "site_code": "broken"}})
        code, report, output = run_cli("preflight", "-i", str(inventory), "--json")
        assert code == 3, output
        failures = report["baseline_failures"]["broken"]
        assert any("/var/lib/spse" in failure for failure in failures), failures
        assert any("443" in failure and "python" in failure for failure in failures), failures
        assert len(failures) == 2, failures  # everything else on the host meets the baseline
        messages = " ".join(report["hosts"]["broken"]["messages"])
        assert "Server baseline not met (clause 6.1.9)" in messages
    finally:
        remove_extra_host(lab, "broken")
