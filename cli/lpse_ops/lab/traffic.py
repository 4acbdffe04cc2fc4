"""``lpse-ops lab traffic``: steady synthetic READ-ONLY traffic to each lab site, for canary analyses.

On each chosen lab site (inside its container, through ``docker exec``) ``start`` installs
``traffic_agent.py`` and the systemd unit ``lpse-lab-traffic.service`` and (re)starts it at the given
rate; ``stop`` stops it; ``status`` reports whether it runs and its counts. The agent sends GET requests
through the site's nginx (https://127.0.0.1/), so they land in nginx's ``lpse_timed`` log that
``lpse-backup traffic`` reads. Lab only: no action a real fleet runs imports this module.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lpse_ops.backends import docker
from lpse_ops.lab import lab as lab_module
from lpse_ops.lab import traffic_agent
from lpse_ops.lab.lab import LabError

UNIT = "lpse-lab-traffic.service"
AGENT_PATH = "/usr/local/lib/lpse-lab/traffic_agent.py"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
STATE_PATH = "/var/lib/lpse-lab-traffic/state.json"
START_WAIT_S = 30.0


def unit_text(rate: float) -> str:
    """Return the systemd unit that runs the agent at *rate* requests per second."""
    return f"""[Unit]
Description=lpse-ops lab: steady read-only synthetic traffic to SPSE through nginx ({rate:g}/s)
After=nginx.service

[Service]
ExecStart=/usr/bin/python3 {AGENT_PATH} --rate {rate:g} --base-url https://127.0.0.1 --state {STATE_PATH}
StateDirectory=lpse-lab-traffic
DynamicUser=yes
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
"""


def check_rate(rate: float) -> None:
    """Raise LabError unless 0 < *rate* <= the agent's bound."""
    if not 0 < rate <= traffic_agent.MAX_RATE:
        raise LabError(f"--rate must be above 0 and at most {traffic_agent.MAX_RATE:g} requests per second "
                       f"(got {rate:g})")


def choose_sites(state: dict | None, limit: str | None) -> list[tuple[str, str]]:
    """Return (site name, container) for the lab's sites, or those *limit* names (``site1,lab02``).

    Raises LabError when there is no lab or a name in *limit* is not one of its sites.
    """
    if not state or not state.get("hosts"):
        raise LabError("no lab: run `lpse-ops lab up`")
    sites = [host for host in state["hosts"] if host["role"] == "site"]
    if limit:
        wanted = [name.strip() for name in limit.split(",") if name.strip()]
        known = {host["name"] for host in sites} | {host.get("site_code") for host in sites}
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise LabError(f"not lab sites: {', '.join(unknown)} (the lab has "
                           f"{', '.join(host['name'] for host in sites)})")
        sites = [host for host in sites if host["name"] in wanted or host.get("site_code") in wanted]
    return [(host["name"], f"{state['name']}-{host['name']}") for host in sites]


def _read_state(container: str) -> dict | None:
    done = docker.exec_in(container, "cat", STATE_PATH, check=False)
    if done.returncode != 0:
        return None
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return None


def _active(container: str) -> bool:
    return docker.exec_in(container, "systemctl", "is-active", "--quiet", UNIT, check=False).returncode == 0


def _not_going(name: str, container: str) -> str:
    """Say why the agent on one site is not going: its status and the last line of its journal."""
    row = site_status(name, container)
    journal = docker.exec_in(container, "journalctl", "-u", UNIT, "-n", "1", "--no-pager", "-o", "cat",
                             check=False).stdout.strip()
    return (f"{name} (running: {row['running']}, requests: {row['requests']}, last error: {row['last_error']}, "
            f"journal: {journal or '-'})")


def site_status(name: str, container: str) -> dict:
    """Return one site's agent: running, rate (asked), achieved_rate (requests per second so far: one connection
    waits for each answer, so it is below the rate when SPSE answers slower than 1/rate), requests, by_status,
    transport_errors, documents_known, last_error, started_at, updated_at (epoch seconds)."""
    counts = _read_state(container) or {}
    elapsed = (counts.get("updated_at") or 0) - (counts.get("started_at") or 0)
    achieved = round(counts.get("requests", 0) / elapsed, 2) if elapsed > 0 else None
    return {"site": name, "running": _active(container), "rate": counts.get("rate"), "achieved_rate": achieved,
            "requests": counts.get("requests", 0), "by_status": counts.get("by_status", {}),
            "transport_errors": counts.get("transport_errors", 0), "documents_known": counts.get("documents_known"),
            "last_error": counts.get("last_error"), "started_at": counts.get("started_at"),
            "updated_at": counts.get("updated_at")}


def start(rate: float = 5.0, limit: str | None = None, wait_s: float = START_WAIT_S) -> list[dict]:
    """Install and (re)start the agent on the chosen sites at *rate*; wait (at most *wait_s*) until each has
    answered requests. Returns each site's status; raises LabError for a bad rate or an agent that did not
    get going, naming the site and its last error."""
    check_rate(rate)
    sites = choose_sites(lab_module.load_state(), limit)
    agent = Path(traffic_agent.__file__).read_bytes()
    for _name, container in sites:
        docker.exec_in(container, "install", "-d", "-m", "0755", str(Path(AGENT_PATH).parent))
        docker.write_file(container, AGENT_PATH, agent, mode="0755")
        docker.write_file(container, UNIT_PATH, unit_text(rate).encode(), mode="0644")
        docker.exec_in(container, "sh", "-c", f"rm -f {STATE_PATH} && systemctl daemon-reload && "
                                              f"systemctl restart {UNIT}")
    deadline = time.monotonic() + wait_s
    pending = dict(sites)
    results: dict[str, dict] = {}
    while pending:
        for name, container in list(pending.items()):
            row = site_status(name, container)
            if row["running"] and row["requests"] > 0 and row["rate"] == rate:
                results[name] = row
                del pending[name]
        if not pending:
            break
        if time.monotonic() > deadline:
            raise LabError(f"lab traffic did not get going within {wait_s:.0f}s on: "
                           + "; ".join(_not_going(name, container) for name, container in pending.items()))
        time.sleep(0.5)  # poll interval of the bounded wait above
    return [results[name] for name, _container in sites]


def stop(limit: str | None = None) -> list[dict]:
    """Stop the agent on the chosen sites (a site without it is left as it is); return each site's status."""
    sites = choose_sites(lab_module.load_state(), limit)
    for _name, container in sites:
        docker.exec_in(container, "sh", "-c", f"systemctl stop {UNIT} 2>/dev/null || true")
    return [site_status(name, container) for name, container in sites]


def status(limit: str | None = None) -> list[dict]:
    """Return each chosen site's agent status (``site_status``)."""
    return [site_status(name, container) for name, container in choose_sites(lab_module.load_state(), limit)]
