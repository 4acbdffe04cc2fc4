"""How long the upgrade plan takes for 600 sites (issue 8: "a plan for 600 sites is computed in under a second").

No hosts: the 600 site states are synthetic (as ``site_state.yml`` would report them, with the state
store's verification and lock facts), mixing versions 1.0, 1.1 and 1.2 and every exclusion (unreachable,
frozen, locked, no verified backup, low disk, degraded health, newer than the target). The bundles are
real: 1.0, 1.1 and 1.2 with the reference SPSE's release metadata (1.2 needs 1.1), signed by a
throwaway key and verified into the catalogue once (timed separately: it reads every bundle).

Times :func:`lpse_ops.actions.upgrade_plan_rules.compute_plan` to 1.2 five times (with inventory groups
``canary`` + ``wave_1..4``, and by share, alternately) and writes min/median/max to
``bench/results/upgrade_plan_600.json``. Target: max < 1 s.

Usage: ``.venv/bin/python bench/upgrade_plan_600.py [--rounds 5] [--sites 600]``
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from lpse_ops import bundle, reference
from lpse_ops.actions import upgrade_catalogue as uc
from lpse_ops.actions import upgrade_plan_rules as ur
from lpse_ops.actions import upgrade_plan_types as ut
from lpse_ops.actions import upgrade_site_state as us

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "upgrade_plan_600.json"
TARGET_S = 1.0


def build_releases(work: Path) -> tuple[Path, Path]:
    """Sign 1.0, 1.1, 1.2 (reference metadata and migrations, a stand-in jar); return (releases, trusted keys)."""
    bundle.keygen(work / "release.key", work / "trusted" / "release.pub", "bench key")
    releases = work / "releases"
    for version, meta in reference.releases().items():
        source = work / f"src-{version}"
        (source / "payload" / "lib").mkdir(parents=True)
        (source / "payload" / "migrations").mkdir()
        (source / "payload" / "lib" / "spse.jar").write_bytes(f"stand-in jar {version}\n".encode() * 1000)
        listed = []
        for number, migration_id in enumerate(meta["migrations"], start=1):
            shutil.copyfile(reference.FIXTURE_DIR / "migrations" / f"{migration_id}.sql",
                            source / "payload" / "migrations" / f"{migration_id}.sql")
            listed.append({"id": migration_id, "path": f"migrations/{migration_id}.sql", "schema_version": number})
        (source / "release.yml").write_text(yaml.safe_dump({
            "version": version, "min_upgrade_from": str(meta["min_upgrade_from"]), "migrations": listed,
            "run": {"jar": "lib/spse.jar", "health_path": "/health"}}, sort_keys=False))
        bundle.build(source, work / "release.key", releases)
    return releases, work / "trusted"


def synthetic_states(count: int, now: datetime) -> dict[str, us.SiteState]:
    """*count* sites as the state reading would give them, about 10 % left out for one reason or another."""
    fresh = {"ok": True, "verified_at": (now - timedelta(hours=3)).isoformat()}
    states: dict[str, us.SiteState] = {}
    for i in range(count):
        host = f"lpse-{i:04d}"
        site = us.SiteState(host, version=("1.0", "1.1", "1.0", "1.2")[i % 4], schema_version=1 + i % 3,
                            health="ok", free_bytes=50 * 1024**3, verification=dict(fresh))
        kind = i % 97
        if kind == 1:
            site = us.SiteState(host, reachable=False, error="ssh: connect to host timed out")
        elif kind == 2:
            site.frozen = True
        elif kind == 3:
            site.lock = {"site": host, "operation": "backup.restore", "run_id": 7, "holder": "ops@ctl",
                         "acquired_at": now.isoformat()}
        elif kind == 4:
            site.verification = None
        elif kind == 5:
            site.free_bytes = 1024
        elif kind == 6:
            site.health, site.health_reason = "degraded", "database unreachable"
        elif kind == 7:
            site.version = "1.3"
        states[host] = site
    return states


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sites", type=int, default=600)
    args = parser.parse_args()
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="bench-upgrade-plan-") as work:
        releases, trusted = build_releases(Path(work))
        started = time.perf_counter()
        catalogue = uc.load_catalogue(releases, trusted)
        catalogue_s = time.perf_counter() - started
    states = synthetic_states(args.sites, now)
    hosts = sorted(states)
    grouped = {"canary": hosts[:3], **{f"wave_{n}": hosts[n::4] for n in range(1, 5)}}
    rounds = []
    for round_number in range(args.rounds):
        groups = grouped if round_number % 2 == 0 else {}
        options = ut.PlanOptions("1.2", canary=3, wave_size=ut.WaveSize.parse("20%"), now=now)
        started = time.perf_counter()
        plan = ur.compute_plan(catalogue, states, groups, options)
        elapsed = time.perf_counter() - started
        rounds.append({"round": round_number + 1, "seconds": round(elapsed, 6),
                       "waves": "inventory groups" if groups else "share 20%", "planned": len(plan.sites),
                       "excluded": len(plan.excluded), "up_to_date": len(plan.up_to_date),
                       "wave_sizes": [len(wave) for wave in plan.waves]})
    seconds = [entry["seconds"] for entry in rounds]
    excluded_codes: dict[str, int] = {}
    for exclusion in plan.excluded:
        excluded_codes[exclusion.code] = excluded_codes.get(exclusion.code, 0) + 1
    result = {
        "benchmark": "upgrade_plan_600", "sites": args.sites, "target_version": "1.2",
        "measured": "compute_plan (pure: paths, exclusions, waves) for synthetic site states",
        "when": now.isoformat(timespec="seconds"), "python": platform.python_version(), "machine": platform.machine(),
        "catalogue_verify_s": round(catalogue_s, 4),
        "min_s": min(seconds), "median_s": statistics.median(seconds), "max_s": max(seconds),
        "target_s": TARGET_S, "ok": max(seconds) < TARGET_S, "excluded_by_code": excluded_codes, "rounds": rounds,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: result[key] for key in ("sites", "min_s", "median_s", "max_s", "ok",
                                                    "catalogue_verify_s", "excluded_by_code")}))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
