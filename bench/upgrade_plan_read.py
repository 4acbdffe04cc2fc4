"""How long ``lpse-ops upgrade plan`` takes on the lab's real sites, and what reading the sites costs (issue 17).

The plan reads every site over the probe's SSH path (one connection and one command per site); before, it ran
``playbooks/site_state.yml`` through Ansible. Both readings are timed side by side on the same lab, in turn
(A B A B ...), as whole processes with their children: ``lpse-ops upgrade plan --to TARGET --json`` (the whole
command: bundles verified, inventory read once, sites probed, plan computed and recorded) against
``ansible-playbook playbooks/site_state.yml`` alone (the old reading without the rest of the command, so the
ratio flatters the old path). Wall seconds and CPU seconds (user + system of the process tree) per round,
min/median/max, into ``bench/results/upgrade_plan_read.json``. Target (issue 17): the plan <= 3 s wall for the
lab's sites.

Runs against an existing lab with SPSE installed and backups set up (the lab tests' lab, kept with
``LPSE_OPS_REUSE_LAB=1 LPSE_OPS_KEEP_LAB=1``, or the demo lab): set ``LPSE_OPS_HOME`` and ``LPSE_OPS_LAB_NAME``
as for that lab.

Usage: ``.venv/bin/python bench/upgrade_plan_read.py [--rounds 5] [--to 1.1]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "upgrade_plan_read.json"
TARGET_S = 3.0
BIN = Path(sys.executable).parent


def timed(argv: list[str], env: dict[str, str]) -> dict:
    """Run *argv* once; return its wall and CPU seconds (its whole process tree) and exit code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False, cwd=ROOT)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "exit": done.returncode,
            "tail": (done.stderr or done.stdout)[-300:] if done.returncode else ""}


def spread(values: list[float]) -> dict:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, choices=range(1, 21), metavar="1-20")
    parser.add_argument("--to", default="1.1", help="the plan's target version (a bundle of it must be there)")
    args = parser.parse_args()
    from lpse_ops import config
    from lpse_ops.backends import ansible
    from lpse_ops.lab import lab as lab_actions

    inventory = lab_actions.inventory_path()
    env = {**os.environ}
    plan = [str(BIN / "lpse-ops"), "upgrade", "plan", "--to", args.to, "--json", "-i", str(inventory)]
    playbook = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(ROOT / "playbooks" / "site_state.yml")]
    playbook_env = {**env, **ansible.environment()}
    sites = len(json.loads(subprocess.run(plan, capture_output=True, text=True, env=env, check=True,
                                          cwd=ROOT).stdout)["states"])  # warm-up, and how many sites
    subprocess.run(playbook, capture_output=True, env=playbook_env, check=False, cwd=ROOT)  # warm-up
    rounds = []
    for number in range(1, args.rounds + 1):
        rounds.append({"round": number, "plan": timed(plan, env), "site_state_yml": timed(playbook, playbook_env)})
    plan_wall = [r["plan"]["wall_s"] for r in rounds]
    result = {
        "what": "lpse-ops upgrade plan (sites read over the probe's SSH path) against the old reading alone "
                "(ansible-playbook playbooks/site_state.yml), in turn, on the lab's real sites",
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": f"{platform.node()} {os.cpu_count()} CPUs",
        "lab": os.environ.get("LPSE_OPS_LAB_NAME", "lpse"), "home": str(config.home()), "sites": sites,
        "target": args.to, "rounds": rounds,
        "plan_wall_s": spread(plan_wall), "plan_cpu_s": spread([r["plan"]["cpu_s"] for r in rounds]),
        "site_state_yml_wall_s": spread([r["site_state_yml"]["wall_s"] for r in rounds]),
        "site_state_yml_cpu_s": spread([r["site_state_yml"]["cpu_s"] for r in rounds]),
        "wall_ratio_old_over_plan": spread([r["site_state_yml"]["wall_s"] / r["plan"]["wall_s"] for r in rounds]),
        "target_plan_wall_s": TARGET_S, "target_met": max(plan_wall) <= TARGET_S,
        "failures": [r for r in rounds if r["plan"]["exit"] or r["site_state_yml"]["exit"]],
    }
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: result[key] for key in ("sites", "plan_wall_s", "plan_cpu_s", "site_state_yml_wall_s",
                                                   "site_state_yml_cpu_s", "wall_ratio_old_over_plan",
                                                   "target_met")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
