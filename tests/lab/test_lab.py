"""The lab itself: hosts up and reachable as the design says, and clear messages when it is not."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from lpse_ops.lab.lab import ZONES
from tests.lab.labkit import CLI, LAB_NAME, SITES, container_of, on_site, run_cli, sql


def test_lab_status_reports_every_host_up(lab):
    code, report, output = run_cli("lab", "status", "--json")
    assert code == 0, output
    assert report["up"] and all(h["container"] == "running" and h["ssh"] for h in report["hosts"])
    assert [h["name"] for h in report["hosts"] if h["role"] == "offsite"] == ["offsite"]
    assert any(h.get("s3") for h in report["hosts"] if h["role"] == "offsite")


def test_lab_up_again_reuses_the_running_lab(lab):
    code, _, output = run_cli("lab", "up", "--sites", str(len(lab["hosts"]) - 1), "--port-base",
                              str(lab["port_base"]), check_json=False)
    assert code == 0 and "already up" in output, output


def test_hosts_reach_each_other_and_the_offsite_s3_by_name(lab):
    script = ("getent hosts site2 >/dev/null && "
              "curl -s -o /dev/null -w '%{http_code}' --cacert /dev/stdin https://offsite:8333/ ")
    ca = (Path(os.environ["LPSE_OPS_HOME"]) / "lab" / "tls" / "ca.crt").read_bytes()
    done = subprocess.run(["docker", "exec", "-i", container_of("site1"), "sh", "-c", script], input=ca,
                          capture_output=True, check=False)
    assert done.returncode == 0 and done.stdout.decode() in ("200", "403"), done
    rules = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True, check=True).stdout
    chain = [line for line in rules.splitlines() if "LPSE-" + LAB_NAME.upper() in line]
    assert any(line.endswith("-j REJECT --reject-with icmp-port-unreachable") for line in chain), chain


def test_half_built_lab_gets_a_clear_message(lab, tmp_path):
    env = {**os.environ, "LPSE_OPS_HOME": str(tmp_path), "LPSE_OPS_LAB_NAME": "lpse-half"}
    subprocess.run(["docker", "run", "-d", "--name", "lpse-half-site1", "--label", "lpse-ops.lab=lpse-half",
                    lab["image"], "sleep", "600"], check=True, capture_output=True)
    try:
        done = subprocess.run([CLI, "lab", "up", "--sites", "1", "--port-base", "2820"], env=env,
                              capture_output=True, text=True, check=False)
        assert done.returncode == 1, done.stderr
        assert "half-built or stopped lab" in done.stderr and "lpse-ops lab down" in done.stderr
        assert "Traceback" not in done.stderr
        down = subprocess.run([CLI, "lab", "down"], env=env, capture_output=True, text=True, check=False)
        assert down.returncode == 0 and "lpse-half-site1" in down.stderr, down.stderr
    finally:
        subprocess.run(["docker", "rm", "-f", "lpse-half-site1"], capture_output=True, check=False)


def test_sites_run_in_indonesian_zones_in_the_os_and_postgresql(installed):
    for index in range(1, SITES + 1):
        site, zone = f"site{index}", ZONES[(index - 1) % len(ZONES)]
        assert on_site("cat /etc/timezone", site=site).strip() == zone
        assert on_site("date +%z", site=site).strip() in ("+0700", "+0800", "+0900")
        assert sql("SHOW timezone", site=site) == zone, site


def test_lab_down_keeps_the_lab_folder_and_purge_removes_it_and_only_that_labs_hosts(lab, tmp_path):
    """``lab down`` keeps the SSH key and credentials for the next ``lab up``; ``--purge`` deletes them too.
    Neither touches another lab (the test lab's own hosts keep running)."""
    env = {**os.environ, "LPSE_OPS_HOME": str(tmp_path), "LPSE_OPS_LAB_NAME": "lpse-purge"}
    folder = tmp_path / "lab"
    folder.mkdir()
    (folder / "id_ed25519").write_text("a key the next lab up would reuse\n")

    def host() -> None:
        subprocess.run(["docker", "run", "-d", "--name", "lpse-purge-site1", "--label", "lpse-ops.lab=lpse-purge",
                        lab["image"], "sleep", "600"], check=True, capture_output=True)
    try:
        host()
        down = subprocess.run([CLI, "lab", "down"], env=env, capture_output=True, text=True, check=False)
        assert down.returncode == 0 and "lpse-purge-site1" in down.stderr, down.stderr
        assert (folder / "id_ed25519").exists(), "lab down without --purge deleted the lab folder"
        host()
        purged = subprocess.run([CLI, "lab", "down", "--purge"], env=env, capture_output=True, text=True,
                                check=False)
        assert purged.returncode == 0 and "lpse-purge-site1" in purged.stderr, purged.stderr
        assert str(folder) in purged.stderr and not folder.exists(), purged.stderr
        running = subprocess.run(["docker", "ps", "-a", "--filter", "name=lpse-purge-", "--format", "{{.Names}}"],
                                 capture_output=True, text=True, check=True).stdout
        assert running.strip() == "", running
    finally:
        subprocess.run(["docker", "rm", "-f", "lpse-purge-site1"], capture_output=True, check=False)
    state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", container_of("site1")],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert state == "true", "lab down of another lab stopped this one"


def test_a_wan_link_shapes_each_sites_transfers_to_the_offsite_s3_and_comes_off_again(lab):
    """Issue 20: `lab wan set` shapes every site's link to the offsite host both ways; `lab status` shows the
    rate the kernel holds; a real S3 transfer (curl on the site, presigned URLs) reaches 85-102 % of it each way
    (90-100 % by hand: bench/README); `lab wan off` takes it away, so the transfer is faster than the link."""
    mbit = 20
    code, _, output = run_cli("lab", "wan", "set", "--mbit", str(mbit), check_json=False)
    try:
        assert code == 0, output
        code, status, output = run_cli("lab", "status", "--json")
        assert code == 0 and status["wan"] == {"mbit": mbit, "delay_ms": 0}, output
        sites = [h for h in status["hosts"] if h["role"] == "site"]
        assert sites and all(h["wan"] == {"up_mbit": mbit, "down_mbit": mbit} for h in sites), sites
        code, measured, output = run_cli("lab", "wan", "measure", "--site", "site1", "--seconds", "3", "--json")
        assert code == 0, output
        assert 0.85 <= measured["down_ratio"] <= 1.02 and 0.85 <= measured["up_ratio"] <= 1.02, measured
        assert measured["kernel"] == {"up_mbit": mbit, "down_mbit": mbit}, measured
    finally:
        code, _, output = run_cli("lab", "wan", "off", check_json=False)
        assert code == 0, output
    code, status, output = run_cli("lab", "status", "--json")
    assert status["wan"] is None and all("wan" not in h for h in status["hosts"]), status
    code, unshaped, output = run_cli("lab", "wan", "measure", "--site", "site1", "--seconds", "3", "--json")
    assert code == 0 and unshaped["set_mbit"] is None and unshaped["kernel"] == {"up_mbit": None, "down_mbit": None}, \
        output
    assert unshaped["down_mbit"] > 2 * mbit and unshaped["up_mbit"] > 2 * mbit, unshaped
