"""Control-node CPU per site when one ``upgrade run`` moves several sites (issue 17).

A command pays its fixed costs once (Python start-up, the inventory read, the bundle's verification, the
plan's probe, the records, ansible-playbook's own start) and the playbook's tasks once per site. So the CPU a
600-site rollout costs per site is the *marginal* CPU of a site, not the CPU of a one-site command.

Each round, on a lab that is already up with every listed site on ``--from`` (1.2), a verified backup and a
release folder up to ``--to`` (1.3, the reference release without migrations; set-up as for
``bench/upgrade_wave.py``): a one-site rollout of the first site, then an N-site rollout of all of them
(``--canary 1 --wave-size 100%``: two waves), each ``--bake 0 --min-requests 0 --no-notice``, each followed by
``upgrade rollback`` of every site it moved. CPU is ``getrusage(RUSAGE_CHILDREN)`` around each command: the
whole ``lpse-ops`` process tree. Reports min/median/max of the CPU per site of both, the marginal CPU of a
site ((CPU_N - CPU_1) / (N - 1)) and a 600-site projection from it, labelled as one.

Writes ``bench/results/upgrade_fleet_cpu.json``. Usage:
``.venv/bin/python bench/upgrade_fleet_cpu.py --sites site1,site2,site3 --rounds 2 --releases DIR --trusted-keys DIR``
Rounds are bounded (1..5) and so is the wall time (``--max-minutes``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import upgrade_wave as wave  # noqa: E402 (the lab helpers of the one-site benchmark)

OUT = wave.ROOT / "bench" / "results" / "upgrade_fleet_cpu.json"
MAX_ROUNDS = 5


def rollout(sites: list[str], args: argparse.Namespace) -> dict:
    """One ``upgrade run`` of *sites*; its wall time, CPU and outcomes."""
    wall, rc, data, err = wave.cli("upgrade", "run", "--to", args.to, "--limit", ",".join(sites), "--releases",
                                   str(args.releases), "--trusted-keys", str(args.trusted_keys), "--canary", "1",
                                   "--wave-size", "100%", "--bake", "0", "--min-requests", "0", "--no-notice",
                                   "--yes", "--json", timeout=1800)
    cpu = wave.LAST_CPU["s"]
    outcomes = {s["host"]: s["outcome"] for w in (data or {}).get("waves", []) for s in w.get("sites", [])}
    return {"ok": rc == 0 and outcomes == dict.fromkeys(sites, "upgraded"), "rc": rc, "sites": len(sites),
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "cpu_per_site_s": round(cpu / len(sites), 2),
            "outcomes": outcomes, "error": None if rc == 0 else err}


def roll_back(sites: list[str]) -> list[dict]:
    done = []
    for site in sites:
        wall, rc, _data, err = wave.cli("upgrade", "rollback", "--site", site, "--yes", "--json", timeout=1800)
        done.append({"site": site, "rc": rc, "wall_s": round(wall, 2), "cpu_s": round(wave.LAST_CPU["s"], 2),
                     "error": None if rc == 0 else err})
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", default="site1,site2,site3")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-minutes", type=float, default=30.0)
    parser.add_argument("--inventory", type=Path, default=wave.HOME / "lab" / "inventory" / "hosts.yml")
    parser.add_argument("--releases", type=Path, default=wave.HOME / "bench-upgrade-wave" / "releases")
    parser.add_argument("--trusted-keys", type=Path, default=wave.HOME / "trusted-keys")
    parser.add_argument("--from", dest="from_version", default="1.2")
    parser.add_argument("--to", default="1.3")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    sites = [name for name in args.sites.split(",") if name]
    if len(sites) < 2 or not 1 <= args.rounds <= MAX_ROUNDS:
        parser.error(f"give at least two --sites and --rounds 1..{MAX_ROUNDS}")
    hosts = {name: wave.Site(args.inventory, name) for name in sites}
    for name, host in hosts.items():
        if wave.site_version(host) != args.from_version:
            raise SystemExit(f"{name} runs {wave.site_version(host)!r}, not {args.from_version}")
    began, rounds, stopped = time.monotonic(), [], None
    for index in range(1, args.rounds + 1):
        spent = time.monotonic() - began
        if rounds and spent + spent / len(rounds) > args.max_minutes * 60:
            stopped = f"wall-clock cap: {spent:.0f} s spent"
            break
        entry: dict = {"round": index}
        for count, group in (("one", sites[:1]), ("all", sites)):
            for name in group:
                wave.reset_target(hosts[name], args.to)
            print(f"round {index}: {len(group)} site(s)", file=sys.stderr)
            entry[count] = rollout(group, args)
            entry[f"{count}_rollbacks"] = roll_back(group)
            print(f"  {entry[count]['wall_s']} s wall, {entry[count]['cpu_s']} s CPU", file=sys.stderr)
            if any(wave.site_version(hosts[name]) != args.from_version for name in group):
                entry["stopped"] = "a site is not back on the starting version"
                break
        rounds.append(entry)
        if "stopped" in entry:
            break
    ok = [r for r in rounds if r.get("one", {}).get("ok") and r.get("all", {}).get("ok")]
    marginal = [round((r["all"]["cpu_s"] - r["one"]["cpu_s"]) / (len(sites) - 1), 2) for r in ok]
    figures = {
        "one_site_cpu_s": wave.summary([r["one"]["cpu_s"] for r in ok]),
        f"{len(sites)}_sites_cpu_s": wave.summary([r["all"]["cpu_s"] for r in ok]),
        f"{len(sites)}_sites_cpu_per_site_s": wave.summary([r["all"]["cpu_per_site_s"] for r in ok]),
        "marginal_cpu_per_site_s": wave.summary(marginal),
        "one_site_wall_s": wave.summary([r["one"]["wall_s"] for r in ok]),
        f"{len(sites)}_sites_wall_s": wave.summary([r["all"]["wall_s"] for r in ok]),
        "rollback_cpu_s": wave.summary([b["cpu_s"] for r in ok for key in ("one_rollbacks", "all_rollbacks")
                                        for b in r[key]]),
    }
    per_site = figures["marginal_cpu_per_site_s"]["median"]
    result = {
        "benchmark": "upgrade_fleet_cpu",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
                    "note": "2 cores; the lab's containers on this machine; nothing else running"},
        "settings": {"sites": sites, "from": args.from_version, "to": args.to, "rounds": args.rounds,
                     "rounds_done": len(rounds), "cli": "lpse-ops upgrade run --to TO --limit SITES --canary 1 "
                     "--wave-size 100% --bake 0 --min-requests 0 --no-notice --yes --json"},
        "targets": {"cpu_per_site_s_max": wave.TARGET_CPU_PER_SITE_S},
        "verdict": {"marginal_cpu_per_site_median_s": per_site,
                    "cpu_ok (marginal)": per_site is not None and per_site <= wave.TARGET_CPU_PER_SITE_S,
                    "cpu_per_site_of_the_n_site_command_median_s":
                        figures[f"{len(sites)}_sites_cpu_per_site_s"]["median"]},
        "figures": figures,
        "projection_600_sites": wave.projection(
            per_site, figures[f"{len(sites)}_sites_wall_s"]["median"],
            basis=f"the marginal CPU of a site measured between a 1-site and a {len(sites)}-site command (the "
                  "command's fixed costs, paid once per wave command, are left out)"),
        "cpu_note": "getrusage(RUSAGE_CHILDREN) around each command; see bench/upgrade_wave.py",
        "stopped": stopped,
        "took_s": round(time.monotonic() - began, 1),
        "rounds": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"verdict": result["verdict"], "figures": figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
