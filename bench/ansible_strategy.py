"""Ansible's own strategy (linear) against Mitogen's (mitogen_linear, lpse-ops' default), on the lab's real hosts.

Each round runs ``tests/lab/test_install.py`` alone on a fresh lab, once per strategy (``LPSE_OPS_ANSIBLE_STRATEGY``),
the strategies alternating so neither always runs on a warmer machine: the lab comes up (the same for both), SPSE
1.0 is installed on its three sites at once, then one site is installed again (a no-op: changed=0) and another in
check mode. Measured per run:

- ``wall_s``: the whole module;
- ``machine_cpu_s``: CPU of the whole machine from ``/proc/stat`` (user, nice, system, irq, softirq): the control
  node and the sites' containers together, since both ends pay for each task; run it on a quiet machine;
- ``control_cpu_s``: ``getrusage(RUSAGE_CHILDREN)`` around the pytest process tree: the control node alone;
- from the run's state store, each ``install`` operation's duration: the fleet install, the no-op and the check.

Writes ``bench/results/ansible_strategy.json`` (each run, then min/median/max per strategy and the ratios
mitogen/linear side by side). Usage: ``.venv/bin/python bench/ansible_strategy.py --rounds 2``; rounds are
bounded (1..5) and so is the wall time (``--max-minutes``). Needs Docker (``scripts/setup.sh``) and the lab ports
from ``--port-base`` free.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "ansible_strategy.json"
STRATEGIES = ("linear", "mitogen_linear")
MAX_ROUNDS = 5


def machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine since boot (every core)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def operations(state_db: Path) -> list[dict]:
    """Each top-level install of the run, in order: its hosts and duration."""
    with sqlite3.connect(state_db) as db:
        rows = db.execute("select operation, hosts, duration_s from runs where parent_id is null "
                          "order by started_at").fetchall()
    return [{"operation": op, "hosts": json.loads(hosts or "[]"), "duration_s": round(duration or 0, 1)}
            for op, hosts, duration in rows if op == "install"]


def one_run(strategy: str, args: argparse.Namespace, number: int) -> dict:
    base = Path(args.tmp) / f"strategy-{number}-{strategy}"
    shutil.rmtree(base, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'cli'}:{ROOT}", "LPSE_OPS_ANSIBLE_STRATEGY": strategy,
           "LPSE_OPS_TEST_LAB_NAME": args.lab_name, "LPSE_OPS_TEST_PORT_BASE": str(args.port_base)}
    env.pop("LPSE_OPS_KEEP_LAB", None)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={base}",
            "tests/lab/test_install.py"]
    cpu0, children0, t0 = machine_cpu_s(), children_cpu_s(), time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.max_minutes * 60,
                          check=False)
    wall = time.monotonic() - t0
    run = {"strategy": strategy, "ok": done.returncode == 0, "rc": done.returncode, "wall_s": round(wall, 1),
           "machine_cpu_s": round(machine_cpu_s() - cpu0, 1), "control_cpu_s": round(children_cpu_s() - children0, 1),
           "summary": (done.stdout.strip().splitlines() or [""])[-1]}
    if done.returncode:
        run["failures"] = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR", "E "))][:40]
    state_db = base / "lpse-ops-home0" / "state.db"
    run["installs"] = operations(state_db) if state_db.exists() else []
    return run


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": round(statistics.median(values), 1), "max": max(values)}


def summary(runs: list[dict]) -> dict:
    out: dict = {}
    for strategy in STRATEGIES:
        good = [r for r in runs if r["strategy"] == strategy and r["ok"]]
        if not good:
            continue
        out[strategy] = {key: spread([r[key] for r in good]) for key in ("wall_s", "machine_cpu_s", "control_cpu_s")}
        for index, label in enumerate(("fleet_install_s", "noop_install_s", "check_install_s")):
            values = [r["installs"][index]["duration_s"] for r in good if len(r["installs"]) > index]
            if values:
                out[strategy][label] = spread(values)
    if all(s in out for s in STRATEGIES):
        out["ratio_mitogen_to_linear_median"] = {
            key: round(out["mitogen_linear"][key]["median"] / out["linear"][key]["median"], 2)
            for key in out["linear"] if key in out["mitogen_linear"]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds, each one run per strategy (1..5)")
    parser.add_argument("--max-minutes", type=float, default=15, help="bound of each run")
    parser.add_argument("--lab-name", default="lab-strategy")
    parser.add_argument("--port-base", type=int, default=25000)
    parser.add_argument("--tmp", default="/tmp")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if not 1 <= args.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds must be 1..{MAX_ROUNDS}")
    runs = []
    for number in range(args.rounds):
        order = STRATEGIES if number % 2 == 0 else tuple(reversed(STRATEGIES))
        for strategy in order:
            run = one_run(strategy, args, number)
            print(json.dumps(run), flush=True)
            runs.append(run)
    result = {"benchmark": "ansible_strategy", "when": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "what": "tests/lab/test_install.py alone on a fresh 3-site lab, once per strategy per round",
              "runs": runs, "summary": summary(runs)}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
