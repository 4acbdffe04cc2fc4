"""Backup and restore throughput against a plain copy of the same data on the same host (issue 4).

Brings up its own one-site lab (name ``lpse-bench``, ports from 2720), installs the reference SPSE,
configures backups, generates a database and documents of at least 1 GB together, then measures side
by side in one run, on the site itself:

- plain copy: ``cp -a`` of the PostgreSQL data directory and of the documents directory;
- backup: a full ``pgbackrest backup`` to the local repository, and ``restic backup`` of the documents
  to the local repository (encrypted, compressed/deduplicated as the engines do);
- restore: ``pgbackrest restore`` into a scratch data directory, ``restic restore`` into a scratch folder.

Every step starts from a warm page cache (its sources read first) with nothing left to write back; the
copy and the restores alternate for several rounds and the medians are kept.
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
      runuser -u postgres -- psql -d spse -qAtX -c CHECKPOINT""")


def measure(rounds: int) -> dict:
    """Measure copy, backup and restore on the site; copy and restore alternate for *rounds* rounds
    (medians), so both meet the same page-cache and writeback conditions."""
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
    samples: dict[str, list[float]] = {"copy_s": [], "restore_pgbackrest_s": [], "restore_restic_s": []}
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
        samples["restore_pgbackrest_s"].append(timed(
            "runuser -u postgres -- pgbackrest --stanza=spse --repo=1 --pg1-path=/var/tmp/bench/restore-db "
            "--type=immediate --target-action=promote --archive-mode=off --log-level-console=warn restore\nsync"))
        samples["restore_restic_s"].append(timed(
            f"{RESTIC} restore latest --tag bench --target /var/tmp/bench/restore-docs --quiet\nsync"))
        restored = {"restored_database_bytes": du_bytes("/var/tmp/bench/restore-db")
                    - du_bytes("/var/tmp/bench/restore-db/pg_wal"),
                    "restored_documents_bytes": du_bytes("/var/tmp/bench/restore-docs")}
        # A restore that wrote less than it should have is a failed restore, not a fast one.
        if restored["restored_database_bytes"] < 0.9 * sizes["database_bytes"] or \
                restored["restored_documents_bytes"] < 0.99 * sizes["documents_bytes"]:
            raise SystemExit(f"restore incomplete: {restored} against {sizes}")
        on_site("rm -rf /var/tmp/bench/restore-db /var/tmp/bench/restore-docs; sync")
    on_site("rm -rf /var/tmp/bench")
    results.update({name: statistics.median(values) for name, values in samples.items()})
    total = sizes["database_bytes"] + sizes["documents_bytes"]
    backup_s = results["backup_pgbackrest_s"] + results["backup_restic_s"]
    restore_s = results["restore_pgbackrest_s"] + results["restore_restic_s"]
    mb = total / 1e6
    return {
        **sizes, "total_bytes": total, **restored, "rounds": rounds,
        "samples_s": {name: [round(v, 2) for v in values] for name, values in samples.items()},
        **{key: round(value, 2) for key, value in results.items()},
        "copy_mb_s": round(mb / results["copy_s"], 1),
        "backup_mb_s": round(mb / backup_s, 1), "restore_mb_s": round(mb / restore_s, 1),
        "backup_speed_ratio_to_copy": round(results["copy_s"] / backup_s, 3),
        "restore_speed_ratio_to_copy": round(results["copy_s"] / restore_s, 3),
        "target_restore_ratio": 0.5,
        "restore_meets_target": results["copy_s"] / restore_s >= 0.5,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-mb", type=int, default=720)
    parser.add_argument("--docs-mb", type=int, default=450)
    parser.add_argument("--rounds", type=int, default=3, help="Alternating copy/restore rounds (medians).")
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
        figures = measure(args.rounds)
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
