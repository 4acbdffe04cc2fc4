"""Backup and restore throughput against a plain copy of the same data on the same host (issue 4).

Brings up its own one-site lab (name ``lpse-bench``, ports from 2720), installs the reference SPSE,
configures backups, generates a database and documents of at least 1 GB together, then measures side
by side in one run, on the site itself:

- plain copy: ``cp -a`` of the PostgreSQL data directory and of the documents directory;
- backup: a full ``pgbackrest backup`` to the local repository, and ``restic backup`` of the documents
  to the local repository (encrypted, compressed/deduplicated as the engines do);
- restore: ``pgbackrest restore`` (``--process-max``) into a scratch data directory and ``restic restore``
  into a scratch folder AT THE SAME TIME (the database and the documents are independent), timed until
  both are done and written out.

Every step starts from a warm page cache (its sources read first) with nothing left to write back; the
copy and the restores alternate for several rounds; every round's figures are kept, with their
min/median/max and the restore/copy ratio of each round (targets: median >= 0.8, no round < 0.6).

Then, once, a restore as an operator lives it: ``lpse-ops backup run --type full`` from the control
machine, a recovery target after it, and ``lpse-ops backup restore --limit site1 --target-time T --yes
--json`` timed from the control machine until the site's ``/health`` answers ok and every ``documents``
row's file matches its sha256 (time to serving). A failure of that command is recorded, not raised.

Writes ``bench/results/backup_throughput.json``. Usage: ``.venv/bin/python bench/backup_throughput.py``
(``--keep-lab`` leaves the lab up; ``--db-mb`` and ``--docs-mb`` size the data).
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

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("lpse-ops"))
NAME, PORT_BASE = "lpse-bench", 2720
CONTAINER = f"{NAME}-site1"
RESTIC = ("set -a; . /etc/lpse-backup/restic.env; set +a; "
          "export RESTIC_PASSWORD_FILE=/etc/lpse-backup/restic.password; restic -r /var/lib/lpse-backup/restic")


def sh(*argv: str, env: dict | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed:\n{done.stderr[-2000:]}{done.stdout[-2000:]}")
    return done.stdout


def on_site(script: str) -> str:
    return sh("docker", "exec", CONTAINER, "bash", "-c", "set -euo pipefail\n" + script)


def timed(script: str) -> float:
    """Run *script* on the site and return its wall time in seconds, measured on the site."""
    out = on_site(f"start=$(date +%s.%N)\n{script}\nend=$(date +%s.%N)\necho \"TIME $start $end\"")
    start, end = out.strip().splitlines()[-1].split()[1:]
    return float(end) - float(start)


def du_bytes(path: str) -> int:
    return int(on_site(f"du -sb {path} | cut -f1").strip())


def prepare(env: dict, home: Path) -> None:
    sh(CLI, "lab", "up", "--sites", "1", "--port-base", str(PORT_BASE), env=env)
    keys, trusted = home / "keys", home / "trusted"
    trusted.mkdir(parents=True, exist_ok=True)
    if not (keys / "release.key").exists():
        sh(CLI, "bundle", "keygen", "--out-dir", str(keys), "--name", "release", env=env)
    (trusted / "release.pub").write_bytes((keys / "release.pub").read_bytes())
    sh(CLI, "bundle", "reference", "--version", "1.0", "--key", str(keys / "release.key"), "--out",
       str(home / "bundles"), env=env)
    sh(CLI, "install", str(home / "bundles" / "spse-1.0.tar.gz"), "--trusted-keys", str(trusted), "--json", env=env)
    sh(CLI, "backup", "setup", "--json", env=env)


def generate(db_mb: int, docs_mb: int) -> None:
    rows = db_mb * 1024 * 1024 // 700  # ~700 bytes per row on disk with its index entries
    on_site(f"""runuser -u postgres -- psql -d spse -qAtX -c "INSERT INTO tenders (code, title, agency, hps_amount)
      SELECT 'BENCH-' || g, repeat(md5(g::text), 10), 'Satuan kerja ' || (g % 97), g
      FROM generate_series(1, {rows}) g" """)
    on_site(f"""mkdir -p /var/lib/spse/documents/bench
      for i in $(seq 1 {docs_mb}); do head -c 1048576 /dev/urandom > /var/lib/spse/documents/bench/doc-$i.pdf; done
      chown -R spse:spse /var/lib/spse/documents/bench
      cd /var/lib/spse/documents
      tender=$(runuser -u postgres -- psql -d spse -qAtX -c "INSERT INTO tenders (code, title, agency)
        VALUES ('BENCH-DOCS', 'bench documents', 'bench') RETURNING id")
      sha256sum bench/*.pdf | while read -r sum path; do
        printf '%s\t%s\t%s\t%s\t%s\n' "$tender" "${{path#bench/}}" "$sum" "$(stat -c %s "$path")" "$path"
      done | runuser -u postgres -- psql -d spse -qAtX -c \
        "COPY documents (tender_id, name, sha256, size_bytes, stored_path) FROM STDIN"
      runuser -u postgres -- psql -d spse -qAtX -c CHECKPOINT""")


def stats(values: list[float]) -> dict:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def measure(rounds: int, process_max: int) -> dict:
    """Measure copy, backup and restore on the site; copy and restore alternate for *rounds* rounds,
    so both meet the same page-cache and writeback conditions. The two restores run concurrently."""
    pgdata = "/var/lib/postgresql/15/main"
    docs = "/var/lib/spse/documents"
    on_site("rm -rf /var/tmp/bench && mkdir -p /var/tmp/bench")
    # pg_wal is not part of a base backup (pgBackRest takes WAL from its archive), so neither the
    # size nor the plain copy counts it: both sides handle the same bytes.
    sizes = {"database_bytes": du_bytes(pgdata) - du_bytes(f"{pgdata}/pg_wal"), "documents_bytes": du_bytes(docs)}
    warm = (f"find {pgdata} {docs} /var/lib/pgbackrest /var/lib/lpse-backup/restic -type f "
            "-exec cat {} + > /dev/null; sync")
    results: dict[str, float] = {}
    on_site(warm)
    results["backup_pgbackrest_s"] = timed("runuser -u postgres -- pgbackrest --stanza=spse --repo=1 "
                                           "--type=full --log-level-console=warn backup")
    results["backup_restic_s"] = timed(f"{RESTIC} backup --quiet --tag bench {docs}")
    on_site("sync")
    samples: dict[str, list[float]] = {"copy_s": [], "restore_s": [], "restore_pgbackrest_s": [],
                                       "restore_restic_s": [], "restore_ratio_to_copy": []}
    restored: dict[str, int] = {}
    for _ in range(rounds):
        on_site(warm)
        samples["copy_s"].append(timed(
            f"mkdir /var/tmp/bench/copy-db\n"
            f"find {pgdata} -mindepth 1 -maxdepth 1 ! -name pg_wal -exec cp -a {{}} /var/tmp/bench/copy-db/ \\;\n"
            f"cp -a {docs} /var/tmp/bench/copy-docs\nsync"))
        on_site("rm -rf /var/tmp/bench/copy-db /var/tmp/bench/copy-docs; sync")
        on_site(warm)
        on_site("install -d -o postgres -g postgres -m 0700 /var/tmp/bench/restore-db")
        # Both engines at once, each timed on its own; the round's figure is until both are done and synced.
        out = on_site(
            "start=$(date +%s.%N)\n"
            "( s=$(date +%s.%N); runuser -u postgres -- pgbackrest --stanza=spse --repo=1 "
            f"--pg1-path=/var/tmp/bench/restore-db --process-max={process_max} --type=immediate "
            "--target-action=promote --archive-mode=off --log-level-console=warn restore; "
            "echo \"PGB $s $(date +%s.%N)\" ) > /var/tmp/bench/pgb.out 2>&1 &\npgb=$!\n"
            f"( s=$(date +%s.%N); {RESTIC} restore latest --tag bench --target /var/tmp/bench/restore-docs --quiet; "
            "echo \"RESTIC $s $(date +%s.%N)\" ) > /var/tmp/bench/restic.out 2>&1 &\nrst=$!\n"
            "wait $pgb || { cat /var/tmp/bench/pgb.out; exit 1; }\n"
            "wait $rst || { cat /var/tmp/bench/restic.out; exit 1; }\n"
            "sync\nend=$(date +%s.%N)\n"
            "tail -1 /var/tmp/bench/pgb.out; tail -1 /var/tmp/bench/restic.out; echo \"TOTAL $start $end\"")
        spans = {line.split()[0]: float(line.split()[2]) - float(line.split()[1])
                 for line in out.strip().splitlines()[-3:]}
        samples["restore_s"].append(spans["TOTAL"])
        samples["restore_pgbackrest_s"].append(spans["PGB"])
        samples["restore_restic_s"].append(spans["RESTIC"])
        samples["restore_ratio_to_copy"].append(samples["copy_s"][-1] / spans["TOTAL"])
        restored = {"restored_database_bytes": du_bytes("/var/tmp/bench/restore-db")
                    - du_bytes("/var/tmp/bench/restore-db/pg_wal"),
                    "restored_documents_bytes": du_bytes("/var/tmp/bench/restore-docs")}
        # A restore that wrote less than it should have is a failed restore, not a fast one.
        if restored["restored_database_bytes"] < 0.9 * sizes["database_bytes"] or \
                restored["restored_documents_bytes"] < 0.99 * sizes["documents_bytes"]:
            raise SystemExit(f"restore incomplete: {restored} against {sizes}")
        on_site("rm -rf /var/tmp/bench/restore-db /var/tmp/bench/restore-docs; sync")
    on_site("rm -rf /var/tmp/bench")
    total = sizes["database_bytes"] + sizes["documents_bytes"]
    mb = total / 1e6
    backup_s = results["backup_pgbackrest_s"] + results["backup_restic_s"]
    ratio = stats(samples["restore_ratio_to_copy"])
    return {
        **sizes, "total_bytes": total, **restored, "rounds": rounds, "restore_process_max": process_max,
        "restore_mode": "pgBackRest and restic concurrently; each round's restore_s is until both are done and synced",
        "samples_s": {name: [round(v, 3) for v in values] for name, values in samples.items()},
        "stats": {name: stats(values) for name, values in samples.items()},
        **{key: round(value, 2) for key, value in results.items()},
        "copy_mb_s": stats([mb / v for v in samples["copy_s"]]),
        "restore_mb_s": stats([mb / v for v in samples["restore_s"]]),
        "backup_mb_s": round(mb / backup_s, 1),
        "backup_speed_ratio_to_copy_median": round(statistics.median(samples["copy_s"]) / backup_s, 3),
        "restore_ratio_to_copy": ratio,
        "target": {"median_ratio_at_least": 0.8, "every_round_at_least": 0.6},
        "restore_meets_target": ratio["median"] >= 0.8 and ratio["min"] >= 0.6,
    }


def site_sql(query: str) -> str:
    return on_site(f"runuser -u postgres -- psql -d spse -qAtX -c \"{query}\"").strip()


def documents_verified() -> tuple[int, list[str]]:
    """Return (rows checked, rows whose file is missing or has another sha256)."""
    out = on_site("cd /var/lib/spse/documents && runuser -u postgres -- psql -d spse -AtX -F ' ' -c "
                  "\"SELECT sha256, stored_path FROM documents\" > /var/tmp/bench-sums && wc -l < /var/tmp/bench-sums "
                  "&& { sha256sum --quiet -c /var/tmp/bench-sums 2>&1 || true; }")
    lines = out.strip().splitlines()
    return int(lines[0]), lines[1:]


def time_to_serving(env: dict) -> dict:
    """``lpse-ops backup restore`` from the control machine until /health is ok and every document matches."""
    report: dict = {}
    began = time.monotonic()
    backup = subprocess.run([CLI, "backup", "run", "--limit", "site1", "--type", "full", "--json"], env=env,
                            capture_output=True, text=True, check=False, timeout=3600)
    report["backup_run"] = {"exit_code": backup.returncode, "wall_s": round(time.monotonic() - began, 1)}
    if backup.returncode != 0:
        report["error"] = f"backup run failed: {backup.stderr[-1500:]}{backup.stdout[-1500:]}"
        return report
    stamp = int(time.time())
    site_sql(f"INSERT INTO tenders (code, title, agency) VALUES ('KEEP-{stamp}', 'before', 'bench')")
    time.sleep(2)
    target = datetime.now(UTC)
    time.sleep(2)
    site_sql(f"INSERT INTO tenders (code, title, agency) VALUES ('LATE-{stamp}', 'after', 'bench')")
    segment = site_sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    site_sql("SELECT pg_switch_wal()")
    deadline = time.monotonic() + 120
    while site_sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < segment:
        if time.monotonic() > deadline:
            report["error"] = f"WAL {segment} not archived within 120 s"
            return report
        time.sleep(1)
    expected_rows = site_sql("SELECT count(*) FROM documents")
    report["target_time"] = target.isoformat()
    began = time.monotonic()
    done = subprocess.run([CLI, "backup", "restore", "--limit", "site1", "--target-time", target.isoformat(),
                           "--yes", "--json"], env=env, capture_output=True, text=True, check=False, timeout=3600)
    report["restore_command_s"] = round(time.monotonic() - began, 2)
    report["exit_code"] = done.returncode
    try:
        site = json.loads(done.stdout)["outputs"]["site1"]
        report["site_json"] = {key: site.get(key) for key in (
            "ok", "duration_s", "database_restore_duration_s", "backup_set", "restic_snapshot", "recovery_point",
            "health", "steps", "error", "step", "rolled_back")}
    except (json.JSONDecodeError, KeyError, TypeError):
        report["site_json"] = None
    if done.returncode != 0:
        report["error"] = f"backup restore exited {done.returncode}: {done.stderr[-1500:]}{done.stdout[-1500:]}"
        return report
    deadline = time.monotonic() + 300
    health = ""
    while time.monotonic() < deadline:
        health = subprocess.run(["docker", "exec", CONTAINER, "curl", "-sk", "--max-time", "5",
                                 "https://127.0.0.1/health"], capture_output=True, text=True, check=False).stdout
        if '"ok"' in health:
            break
        time.sleep(0.5)
    report["health_after_s"] = round(time.monotonic() - began, 2)
    report["health"] = health.strip()[:300]
    rows, bad = documents_verified()
    report["time_to_serving_s"] = round(time.monotonic() - began, 2)
    report["documents"] = {"rows": rows, "rows_before": int(expected_rows), "not_matching": bad[:20]}
    report["recovered_to_target"] = {
        "keep_row": site_sql(f"SELECT count(*) FROM tenders WHERE code = 'KEEP-{stamp}'") == "1",
        "late_row_absent": site_sql(f"SELECT count(*) FROM tenders WHERE code = 'LATE-{stamp}'") == "0"}
    report["verified"] = ('"ok"' in health and not bad and rows == int(expected_rows)
                          and all(report["recovered_to_target"].values()))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-mb", type=int, default=720)
    parser.add_argument("--docs-mb", type=int, default=450)
    parser.add_argument("--rounds", type=int, default=5, help="Alternating copy/restore rounds.")
    parser.add_argument("--process-max", type=int, default=2, help="pgBackRest restore --process-max.")
    parser.add_argument("--skip-serving", action="store_true", help="Skip the lpse-ops backup restore timing.")
    parser.add_argument("--keep-lab", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "backup_throughput.json")
    args = parser.parse_args()
    home = Path(os.environ.get("LPSE_OPS_BENCH_HOME", "/tmp/lpse-ops-bench"))
    env = {**os.environ, "LPSE_OPS_HOME": str(home), "LPSE_OPS_LAB_NAME": NAME}
    env.pop("LPSE_OPS_INVENTORY", None)
    started = time.monotonic()
    try:
        prepare(env, home)
        generate(args.db_mb, args.docs_mb)
        figures = measure(args.rounds, args.process_max)
        if not args.skip_serving:
            try:
                figures["time_to_serving"] = time_to_serving(env)
            except (subprocess.SubprocessError, SystemExit, ValueError) as error:
                figures["time_to_serving"] = {"error": f"{type(error).__name__}: {error}"[-3000:]}
    finally:
        if not args.keep_lab:
            subprocess.run([CLI, "lab", "down"], env=env, capture_output=True, check=False)
    result = {"benchmark": "backup_throughput", "when": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "engines": {"pgbackrest": "local posix repo, aes-256-cbc", "restic": "local repo, encrypted"},
              "figures": figures, "bench_wall_s": round(time.monotonic() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
