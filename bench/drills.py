"""DR drills on a site holding at least 1 GB of data: RTO, database RPO and documents RPO per scenario (issue 9).

Targets (the issue; the runbooks' own targets are compared too): database RPO <= 60 s wherever the WAL
archive survives, documents RPO <= 5 min, server-lost RTO <= 10 min, no referenced document missing after
a recovery. Every scenario runs through ``lpse-ops drill run`` (server-lost replaces the lab host; ransomware
attacks the offsite copy too; failed-upgrade needs ``--upgrade-to``/``--releases``, a breaking release).

Runs against a lab that is already up, on ONE drillable site with SPSE installed and backups set up
(``lpse-ops backup setup --limit SITE``). Never the lab ``lpse-test``.

1. **Seed** (bounded): while the site's database plus documents folder is under ``--min-gb`` (1 GB),
   add tenders in SQL batches (``generate_series``, 200k rows of ~1 KB each per batch) and documents of
   4 MiB of random bytes **through the app** (``POST /tenders``, ``POST /tenders/ID/documents`` over the
   site's own nginx), at most ``--max-seed-batches`` batches; then one full backup, so the drills restore
   a base that holds the data.
2. **Drill** each ``--scenario`` ``--rounds`` times with ``lpse-ops drill run SCENARIO --site SITE --json``
   (the real command; nothing is measured here that the drill does not measure itself).
3. Write ``bench/results/drills.json``: the site's data size, and per scenario every round's RTO, RPO of
   rows and of documents, the consistency check, ok/met and failed step; min/median/max over the rounds
   that recovered. Scenarios not run this time keep their earlier figures (with ``measured_at``).

Usage: ``LPSE_OPS_HOME=... LPSE_OPS_LAB_NAME=... .venv/bin/python bench/drills.py --site site1
[--scenario rows-deleted --scenario documents-lost ...] [--rounds 1] [--min-gb 1.0]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "cli"))

from lpse_ops.actions import drill_types  # noqa: E402
from lpse_ops.backends import ansible  # noqa: E402
from lpse_ops.backends.site_shell import SiteShell  # noqa: E402
from lpse_ops.commands._options import default_inventory  # noqa: E402

CLI = str(Path(sys.executable).with_name("lpse-ops"))
ISSUE_TARGETS = {"rpo_db_s": 60, "rpo_docs_s": 300, "server_lost_rto_s": 600, "documents_missing": 0}

SIZE_SCRIPT = ("echo $(( $(runuser -u postgres -- psql -d spse -AtX -c 'SELECT pg_database_size(current_database())')"
               " + $(du -sb /var/lib/spse/documents | cut -f1) ))")

SEED_ROWS_SQL = ("INSERT INTO tenders (code, title, agency, hps_amount) SELECT 'BENCH{batch}-' || g, "
                 "'Pengadaan ' || g || ' ' || repeat(md5(g::text), 28), 'Satuan kerja ' || (g % 97), g * 1000.5 "
                 "FROM generate_series(1, 200000) g ON CONFLICT (code) DO NOTHING")

SEED_DOCUMENTS_SCRIPT = """set -e
for i in $(seq 1 {count}); do
  tender=$(curl -sk -X POST https://127.0.0.1/tenders -H 'Content-Type: application/json' \\
    -d "{{\\"code\\":\\"BENCHDOC{batch}-$i\\",\\"title\\":\\"Dokumen bench $i\\",\\"agency\\":\\"Dinas bench\\"}}" \\
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  head -c 4194304 /dev/urandom > /tmp/bench-doc
  curl -sk -X POST "https://127.0.0.1/tenders/$tender/documents?name=bench-{batch}-$i.bin" \\
    --data-binary @/tmp/bench-doc -o /dev/null -w '%{{http_code}}\\n' | grep -q 201
done
rm -f /tmp/bench-doc
"""


def site_shell(inventory: Path, site: str) -> SiteShell:
    hostvars = ansible.inventory_list(inventory)["_meta"]["hostvars"][site]
    return SiteShell(site, hostvars)


def data_bytes(shell: SiteShell) -> int:
    return int(shell.run(SIZE_SCRIPT).strip())


def seed(shell: SiteShell, min_bytes: int, max_batches: int) -> dict:
    """Grow the site's data to *min_bytes* (rows through SQL, documents through the app), bounded."""
    started = time.monotonic()
    before = data_bytes(shell)
    batches = 0
    while data_bytes(shell) < min_bytes and batches < max_batches:
        batch = f"{int(time.time())}{batches}"
        shell.sql(SEED_ROWS_SQL.format(batch=batch), timeout=1800)
        shell.run(SEED_DOCUMENTS_SCRIPT.format(batch=batch, count=50), timeout=3600)
        batches += 1
        print(f"seed batch {batches}: {data_bytes(shell) / 1e9:.2f} GB", flush=True)
    after = data_bytes(shell)
    return {"bytes_before": before, "bytes_after": after, "batches": batches,
            "seconds": round(time.monotonic() - started, 1), "reached": after >= min_bytes}


def cli(*args: str, timeout: float = 7200) -> tuple[int, dict | None, str]:
    done = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout, check=False)
    data = json.loads(done.stdout) if done.stdout.strip().startswith("{") else None
    return done.returncode, data, done.stderr[-3000:]


def spread(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default="site1")
    parser.add_argument("--scenario", action="append", choices=sorted(drill_types.SCENARIOS))
    parser.add_argument("--rounds", type=int, default=1, choices=range(1, 6))
    parser.add_argument("--min-gb", type=float, default=1.0)
    parser.add_argument("--max-seed-batches", type=int, default=12)
    parser.add_argument("--skip-seed", action="store_true", help="Measure the site as it is (size still recorded).")
    parser.add_argument("--warmup-markers", type=int, default=10,
                        help="Markers before the fault: 90 or more puts markers on both sides of the WAL's last "
                             "switch, so the rows RPO is measured, not a lower bound")
    parser.add_argument("--upgrade-to", default=None, help="failed-upgrade: the version of the breaking release")
    parser.add_argument("--releases", default=None, help="failed-upgrade: its release folder")
    parser.add_argument("--trusted-keys", default=None, help="failed-upgrade: trusted release keys")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "drills.json")
    args = parser.parse_args()
    inventory = Path(default_inventory() or "")
    scenarios = args.scenario or ["rows-deleted", "documents-lost", "database-corrupted"]
    shell = site_shell(inventory, args.site)
    try:
        seeded = None if args.skip_seed else seed(shell, int(args.min_gb * 1e9), args.max_seed_batches)
        size = data_bytes(shell)
    finally:
        shell.close()
    if seeded and seeded["batches"]:
        code, _, err = cli("backup", "run", "--limit", args.site, "--type", "full", "--json")
        if code != 0:
            raise SystemExit(f"full backup after seeding failed: {err}")
    results: dict[str, dict] = {}
    for scenario in scenarios:
        rounds = []
        extra: list[str] = []
        if scenario == "failed-upgrade":
            if not (args.upgrade_to and args.releases):
                raise SystemExit("failed-upgrade needs --upgrade-to and --releases")
            extra = ["--to", args.upgrade_to, "--releases", args.releases]
            extra += ["--trusted-keys", args.trusted_keys] if args.trusted_keys else []
            # an upgrade needs a restore verified within 26 h: set-up, not measured
            code, _, err = cli("backup", "verify", "--limit", args.site, "--json")
            if code != 0:
                raise SystemExit(f"backup verify before the failed-upgrade drill failed: {err}")
        for number in range(args.rounds):
            started = time.monotonic()
            code, report, err = cli("drill", "run", scenario, "--site", args.site, "--warmup-markers",
                                    str(args.warmup_markers), *extra, "--json")
            report = report or {}
            rounds.append({"round": number + 1, "exit_code": code, "drill_id": report.get("id"),
                           "ok": report.get("ok"), "met": report.get("met"), "failed_step": report.get("failed_step"),
                           "rto_s": report.get("rto_s"), "rpo_db_s": report.get("rpo_db_s"),
                           "rpo_docs_s": report.get("rpo_docs_s"), "targets": report.get("targets"),
                           "consistency": {key: (report.get("markers") or {}).get("consistency", {}).get(key)
                                           for key in ("referenced", "not_matching_count")},
                           "steps": [{"id": step["id"], "status": step["status"], "duration_s": step["duration_s"]}
                                     for step in (report.get("runbook") or {}).get("steps", [])],
                           "wall_s": round(time.monotonic() - started, 1),
                           "error": None if report else err})
            print(f"{scenario} round {number + 1}: ok={report.get('ok')} met={report.get('met')} "
                  f"rto={report.get('rto_s')} rpo_db={report.get('rpo_db_s')} rpo_docs={report.get('rpo_docs_s')} "
                  f"failed_step={report.get('failed_step')}", flush=True)
        recovered = [one for one in rounds if one["ok"]]
        results[scenario] = {
            "rounds": rounds,
            "rto_s": spread([one["rto_s"] for one in recovered if one["rto_s"] is not None]),
            "rpo_db_s": spread([one["rpo_db_s"] for one in recovered if one["rpo_db_s"] is not None]),
            "rpo_docs_s": spread([one["rpo_docs_s"] for one in recovered if one["rpo_docs_s"] is not None]),
            "targets": rounds[0]["targets"], "issue_targets": ISSUE_TARGETS,
            "met": bool(recovered) and all(one["met"] for one in rounds),
            "issue_rpo_met": bool(recovered) and all(
                (one["rpo_db_s"] or 0) <= ISSUE_TARGETS["rpo_db_s"] and (one["rpo_docs_s"] or 0)
                <= ISSUE_TARGETS["rpo_docs_s"] and not one["consistency"]["not_matching_count"] for one in recovered),
        }
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    kept = {name: value for name, value in (previous.get("scenarios") or {}).items() if name not in results}
    for value in kept.values():
        value.setdefault("measured_at", previous.get("when"))
    results = {**kept, **{name: {**value, "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}
                          for name, value in results.items()}}
    out = {"bench": "drills", "when": datetime.now(UTC).isoformat(timespec="seconds"), "site": args.site,
           "data_bytes": size, "seed": seeded, "host": platform.node(), "python": platform.python_version(),
           "scenarios": results,
           "warmup_markers": args.warmup_markers, "load_1m_at_end": round(os.getloadavg()[0], 1),
           "notes": "RTO from the fault to serving with the data verified; RPO = last write acknowledged before "
                    "the fault minus the last acknowledged write present after recovery (control machine clock). "
                    "failed-upgrade: the fault is the upgrade's start, the RPO counts every write acknowledged "
                    "until it returned."}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
