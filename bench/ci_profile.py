"""Where a full CI run's time and CPU go: per lab module and stream from its JUnit XML, per command from BSD
process accounting, and the machine's CPU use over the run.

    python bench/ci_profile.py .ci-artifacts [--pacct FILE] [--cpu-log FILE] [--label TEXT]
        [--out bench/results/ci_profile.json]

Reads every ``junit-*.xml`` of the folder (scripts/test.sh writes them). ``--pacct``: a process-accounting
file (Debian's ``acct``: ``accton on`` before the run, ``accton off`` after), summarised with ``sa -a``: the
CPU-minutes of each command name (Ansible's modules run as ``python3`` on the sites, its controller as
``ansible-playboo``). ``--cpu-log``: lines of ``EPOCH total=NS [name=NS ...]`` sampled from the cgroup v1
``cpuacct.usage`` of the machine and of each container (``total`` alone is enough), which give the cores used
on average. The JSON keeps the figures; nothing here is timed by a test.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path


def junit_profile(path: Path) -> dict:
    """Wall seconds per lab module (in run order) and per tier, the 15 slowest tests, and the total."""
    modules: dict[str, float] = {}
    tiers: dict[str, float] = {}
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        classname, seconds = case.get("classname", ""), float(case.get("time") or 0)
        parts = classname.split(".")
        tier = parts[1] if len(parts) > 1 else classname
        tiers[tier] = tiers.get(tier, 0.0) + seconds
        if tier == "lab":
            modules[parts[2]] = modules.get(parts[2], 0.0) + seconds
        tests.append((seconds, f"{parts[-1]}::{case.get('name')}"))
    tests.sort(reverse=True)
    return {"total_s": round(sum(tiers.values()), 1), "tiers_s": {k: round(v, 1) for k, v in tiers.items()},
            "lab_modules_s": {k: round(v, 1) for k, v in modules.items()},
            "slowest": [{"test": name, "s": round(seconds, 1)} for seconds, name in tests[:15]]}


def pacct_profile(path: Path, top: int = 20) -> dict:
    """CPU-minutes per command name from ``sa -a`` (the biggest *top*), and their total."""
    if shutil.which("sa") is None:
        raise SystemExit("sa is not installed: apt-get install acct")
    text = subprocess.run(["sa", "-a", str(path)], capture_output=True, text=True, check=True).stdout
    rows = []
    total = None
    for line in text.splitlines():
        match = re.match(r"\s*(\d+)\s+([\d.]+)re\s+([\d.]+)cp\s+\S+\s+\S+\s*(.*)$", line)
        if not match:
            continue
        calls, cpu_min, command = int(match.group(1)), float(match.group(3)), match.group(4).strip()
        if not command:
            total = cpu_min
            continue
        rows.append({"command": command, "calls": calls, "cpu_min": cpu_min})
    rows.sort(key=lambda row: row["cpu_min"], reverse=True)
    return {"total_cpu_min": total, "by_command": rows[:top]}


def cpu_log_profile(path: Path) -> dict:
    """Cores used on average between the first and last sample, and the containers' share of it."""
    samples = []
    for line in path.read_text().splitlines():
        fields = dict(item.split("=", 1) for item in line.split()[1:] if "=" in item and item.split("=", 1)[1])
        samples.append((int(line.split()[0]), {key: int(value) / 1e9 for key, value in fields.items()}))
    if len(samples) < 2:
        return {}
    (t0, first), (t1, last) = samples[0], samples[-1]
    containers = 0.0
    previous: dict[str, float] = {}
    for _, values in samples:  # containers come and go (a drill replaces one): add each one's own growth
        for name, value in values.items():
            if name != "total":
                before = previous.get(name, value if not previous else 0.0)
                containers += value - before if value >= before else value  # a new container of that name
                previous[name] = value
    seconds = t1 - t0
    return {"seconds": seconds, "cpu_s": round(last["total"] - first["total"], 1),
            "cores_used": round((last["total"] - first["total"]) / seconds, 2),
            "containers_cores": round(containers / seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", type=Path)
    parser.add_argument("--pacct", type=Path)
    parser.add_argument("--cpu-log", type=Path)
    parser.add_argument("--label", default="")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ci_profile.json"))
    args = parser.parse_args()
    result: dict = {"label": args.label,
                    "junit": {path.name: junit_profile(path) for path in sorted(args.artifacts.glob("junit-*.xml"))}}
    if args.pacct:
        result["pacct"] = pacct_profile(args.pacct)
    if args.cpu_log:
        result["cpu"] = cpu_log_profile(args.cpu_log)
    runs = json.loads(args.out.read_text()) if args.out.exists() else []
    runs.append(result)
    args.out.write_text(json.dumps(runs, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
