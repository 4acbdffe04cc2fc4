"""Cost of a documents backup run (``lpse-backup run --type files``) on a site with 100,000 documents (issue 7).

The documents timer runs ``lpse-backup run --type files`` every 5 minutes (the documents' RPO,
``backup_schedule_files``), so every run must be affordable on the site. This brings up its own one-site
lab (``lpse-bench``, ports from 2720), installs the reference SPSE and ``lpse-ops backup setup``, stops
the bench site's backup timers (so that nothing else runs during a measurement), then on the site:

- writes ``--files`` documents under ``/var/lib/spse/documents`` in SPSE's content-addressed layout
  ``<2 hex>/<sha256>`` with one Python script (random, incompressible content; sizes log-normal, median
  ``--median-kb``, clipped to ``--min-kb``..``--max-kb``; refused above ``--max-total-mb``);
- takes the first run (the initial upload, reported on its own);
- then ``--rounds`` rounds of (a) a run with nothing changed and (b) a run after adding ``--add`` new
  documents (about 5 minutes of a busy LPSE's uploads).

Every run is measured on the site by a wrapper that starts ``lpse-backup`` and reads
``getrusage(RUSAGE_CHILDREN)`` (the tool and every process it waited for: restic): wall time, CPU
seconds (user + system), peak RSS of the largest process; plus bytes added to the local restic repository
(``du``) and to the offsite one (every object version under ``restic/<site>/`` in the bucket), and the
tool's own JSON. Each round also splits an unchanged run by hand, with the tool's arguments: ``restic
backup`` alone and ``restic forget --prune`` alone, per repository (the tool prunes on every run).

Writes ``bench/results/documents_backup_cost.json``. Usage:
``.venv/bin/python bench/documents_backup_cost.py`` (``--keep-lab`` leaves the lab up, ``--reuse-lab``
skips the set-up of a lab left up).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backup_throughput import CLI, CONTAINER, NAME, ROOT, on_site, prepare  # noqa: E402

PERIOD_S = 300  # backup_schedule_files: every 5 minutes
TARGET_SHARE = 0.10  # an unchanged run costs < 10% of one core over its 5 minutes
DOCS = "/var/lib/spse/documents"
LOCAL_REPO = "/var/lib/lpse-backup/restic"
TOOL = "/usr/local/sbin/lpse-backup"

# Runs on the site: writes documents in the content-addressed layout, prints a JSON summary.
WRITE_DOCUMENTS = r"""
import hashlib, json, math, os, random, sys
count, median_kb, min_kb, max_kb, max_total, seed, root = sys.argv[1:8]
count, median_kb, min_kb, max_kb, max_total, seed = (int(count), float(median_kb), float(min_kb),
                                                      float(max_kb), int(max_total), int(seed))
rng = random.Random(seed)
sizes = [int(1024 * min(max_kb, max(min_kb, rng.lognormvariate(math.log(median_kb), 1.0)))) for _ in range(count)]
if sum(sizes) > max_total:
    sys.exit(f"{sum(sizes)} bytes would exceed --max-total-mb")
uid, gid = __import__("pwd").getpwnam("spse")[2:4]
written = 0
for size in sizes:
    data = os.urandom(size)
    digest = hashlib.sha256(data).hexdigest()
    folder = os.path.join(root, digest[:2])
    if not os.path.isdir(folder):
        os.mkdir(folder, 0o750)
        os.chown(folder, uid, gid)
    path = os.path.join(folder, digest)
    with open(path, "wb") as handle:
        handle.write(data)
    os.chown(path, uid, gid)
    written += size
sizes.sort()
print(json.dumps({"files": count, "bytes": written, "min_bytes": sizes[0], "median_bytes": sizes[count // 2],
                  "p90_bytes": sizes[int(count * 0.9)], "max_bytes": sizes[-1]}))
"""

# Runs on the site: runs argv[1:] and reports its wall time and the rusage of it and its children.
MEASURE = r"""
import json, resource, subprocess, sys, time
began = time.monotonic()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=3600)
wall = time.monotonic() - began
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": done.returncode, "wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
                  "peak_rss_kb": usage.ru_maxrss, "stdout": done.stdout[-200000:], "stderr": done.stderr[-2000:]}))
"""

RESTIC_ENV = ("set -a; . /etc/lpse-backup/restic.env; set +a; "
              "export RESTIC_PASSWORD_FILE=/etc/lpse-backup/restic.password "
              "RESTIC_CACHE_DIR=/var/lib/lpse-backup/cache/restic")


def site_python(script: str, *args: str) -> str:
    done = subprocess.run(["docker", "exec", "-i", CONTAINER, "python3", "-", *args], input=script,
                          capture_output=True, text=True, check=False, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"site script failed:\n{done.stderr[-2000:]}{done.stdout[-2000:]}")
    return done.stdout


def measured(*argv: str) -> dict:
    """Run *argv* on the site under the rusage wrapper."""
    out = json.loads(site_python(MEASURE, *argv))
    out["cpu_s"] = out["user_s"] + out["sys_s"]
    return out


class Offsite:
    """Bytes the offsite bucket stores for this site's restic repository (every object version)."""

    def __init__(self, home: Path):
        from lpse_ops.backends import s3

        lab = json.loads((home / "lab" / "s3-credentials.json").read_text()) \
            if (home / "lab" / "s3-credentials.json").exists() else None
        self.client = None
        if lab:
            admin = lab["credentials"]["admin"]
            self.client = s3.client(lab["endpoint_control"], lab["ca_cert"], admin["access_key"], admin["secret_key"])
            self.bucket = lab["bucket"]

    def bytes(self, site_code: str) -> int | None:
        if self.client is None:
            return None
        from lpse_ops.backends.s3 import list_versions

        return sum(v.size for v in list_versions(self.client, self.bucket, f"restic/{site_code}/"))


def local_repo_bytes() -> int:
    return int(on_site(f"du -sb {LOCAL_REPO} | cut -f1").strip())


def tool_run(offsite: Offsite, site_code: str) -> dict:
    """One ``lpse-backup run --type files``, measured."""
    local_before, offsite_before = local_repo_bytes(), offsite.bytes(site_code)
    out = measured(TOOL, "run", "--type", "files")
    try:
        tool = json.loads(out["stdout"])
    except json.JSONDecodeError:
        tool = {"unparsed_stdout": out["stdout"][-2000:]}
    local_after, offsite_after = local_repo_bytes(), offsite.bytes(site_code)
    restic = tool.get("restic") or {}
    engine_s = sum((restic.get(name) or {}).get("duration_s") or 0 for name in ("local", "offsite"))
    return {
        "ok": out["rc"] == 0 and bool(tool.get("ok")), "wall_s": round(out["wall_s"], 2),
        "cpu_s": round(out["cpu_s"], 2), "user_s": round(out["user_s"], 2), "sys_s": round(out["sys_s"], 2),
        "peak_rss_mb": round(out["peak_rss_kb"] / 1024, 1),
        "core_share_of_period": round(out["cpu_s"] / PERIOD_S, 4),
        "local_repo_bytes_added": local_after - local_before,
        "offsite_repo_bytes_added": None if offsite_after is None else offsite_after - offsite_before,
        # The tool times each restic backup, not its forget --prune nor the preflight (a walk of the tree).
        "tool_restic_backup_s": round(engine_s, 2),
        "tool_other_s_preflight_and_forget": round((tool.get("duration_s") or 0) - engine_s, 2),
        "forget": {name: (restic.get(name) or {}).get("forget") for name in ("local", "offsite")},
        "tool": tool, **({"stderr": out["stderr"]} if out["rc"] else {}),
    }


def split_run(site_code: str, conf: dict) -> dict:
    """An unchanged run split by hand with the tool's arguments: restic backup, then forget --prune, per
    repository; plus the preflight's walk of the documents (the tool sizes the tree before every run)."""
    paths = " ".join(conf["restic_paths"])
    keep = conf["restic_keep"]
    parts: dict[str, dict] = {}
    for name, url in conf["restic_repos"].items():
        repo = f"-r {url}" + (f" --cacert {conf['s3_ca_file']} {' '.join(conf.get('restic_s3_options') or [])}"
                              if url.startswith("s3:") else "")
        for step, args in (("backup", f"backup --json --one-file-system --exclude-caches --tag {site_code} {paths}"),
                           ("forget_prune", f"forget --prune --tag {site_code} --group-by host,tags "
                                            f"--keep-daily {keep['daily']} --keep-weekly {keep['weekly']} "
                                            f"--keep-monthly {keep['monthly']} --keep-last 1")):
            out = measured("bash", "-c", f"{RESTIC_ENV}; exec restic {repo} {args} >/dev/null")
            if out["rc"] != 0:
                raise SystemExit(f"restic {step} {name} failed: {out['stderr']}")
            parts[f"{step}_{name}"] = {"wall_s": round(out["wall_s"], 2), "cpu_s": round(out["cpu_s"], 2),
                                       "peak_rss_mb": round(out["peak_rss_kb"] / 1024, 1)}
    walk = measured("python3", "-c", f"import os\nn=0\nfor r, d, f in os.walk({DOCS!r}):\n"
                                     "    for x in f: n += os.lstat(os.path.join(r, x)).st_size\nprint(n)")
    parts["preflight_walk"] = {"wall_s": round(walk["wall_s"], 2), "cpu_s": round(walk["cpu_s"], 2)}
    return parts


def add_documents(count: int, seed: int) -> None:
    site_python(WRITE_DOCUMENTS, str(count), "40", "2", "200", str(10**9), str(seed), DOCS)


def stats(values: list[float]) -> dict:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3), "samples": [round(v, 3) for v in values]}


def summarise(runs: list[dict]) -> dict:
    keys = ("wall_s", "cpu_s", "peak_rss_mb", "core_share_of_period", "local_repo_bytes_added",
            "offsite_repo_bytes_added", "tool_restic_backup_s", "tool_other_s_preflight_and_forget")
    summary = {key: stats([r[key] for r in runs]) for key in keys if all(r[key] is not None for r in runs)}
    summary["files_new"] = stats([sum(((r["tool"].get("restic") or {}).get(n) or {}).get("files_new") or 0
                                      for n in ("local", "offsite")) / 2 for r in runs])
    summary["snapshots_removed_by_forget"] = stats([sum((f or {}).get("snapshots_removed") or 0
                                                        for f in r["forget"].values()) for r in runs])
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--median-kb", type=float, default=12)
    parser.add_argument("--min-kb", type=float, default=2)
    parser.add_argument("--max-kb", type=float, default=200)
    parser.add_argument("--max-total-mb", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--add", type=int, default=20, help="New documents before each changed run.")
    parser.add_argument("--keep-lab", action="store_true")
    parser.add_argument("--reuse-lab", action="store_true", help="The lab is up and set up: skip to the data.")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "documents_backup_cost.json")
    args = parser.parse_args()
    home = Path(os.environ.get("LPSE_OPS_BENCH_HOME", "/tmp/lpse-ops-bench"))
    env = {**os.environ, "LPSE_OPS_HOME": str(home), "LPSE_OPS_LAB_NAME": NAME}
    env.pop("LPSE_OPS_INVENTORY", None)
    started = time.monotonic()
    figures: dict = {}
    try:
        if not args.reuse_lab:
            prepare(env, home)
        # Nothing else may run on the bench site while it is measured (the timers would fire every 5 min).
        on_site("systemctl stop 'lpse-backup-*.timer'")
        conf = json.loads(on_site("cat /etc/lpse-backup/lpse-backup.json"))
        site_code = conf["site_code"]
        offsite = Offsite(home)
        began = time.monotonic()
        figures["documents"] = json.loads(site_python(
            WRITE_DOCUMENTS, str(args.files), str(args.median_kb), str(args.min_kb), str(args.max_kb),
            str(args.max_total_mb * 10**6), "7", DOCS))
        figures["documents"]["write_s"] = round(time.monotonic() - began, 1)
        figures["documents"]["files_in_documents_dir"] = int(on_site(f"find {DOCS} -type f | wc -l").strip())
        on_site("sync")
        figures["initial_run"] = tool_run(offsite, site_code)
        changed, unchanged, split = [], [], []
        for index in range(args.rounds):
            unchanged.append(tool_run(offsite, site_code))
            add_documents(args.add, 1000 + index)
            changed.append(tool_run(offsite, site_code))
            split.append(split_run(site_code, conf))
            print(f"round {index + 1}: unchanged {unchanged[-1]['wall_s']} s wall {unchanged[-1]['cpu_s']} s cpu; "
                  f"changed {changed[-1]['wall_s']} s wall {changed[-1]['cpu_s']} s cpu", file=sys.stderr)
        figures["unchanged_runs"] = {"summary": summarise(unchanged), "runs": unchanged}
        figures["changed_runs"] = {"summary": summarise(changed), "runs": changed}
        figures["split_unchanged"] = {
            "summary": {part: {key: stats([s[part][key] for s in split]) for key in split[0][part]}
                        for part in split[0]},
            "rounds": split}
        cpu = figures["unchanged_runs"]["summary"]["cpu_s"]["median"]
        prune_cpu = sum(figures["split_unchanged"]["summary"][f"forget_prune_{n}"]["cpu_s"]["median"]
                        for n in ("local", "offsite"))
        backup_cpu = sum(figures["split_unchanged"]["summary"][f"backup_{n}"]["cpu_s"]["median"]
                         for n in ("local", "offsite"))
        figures["verdict"] = {
            "period_s": PERIOD_S, "target_core_share_unchanged": TARGET_SHARE,
            "unchanged_core_share_median": round(cpu / PERIOD_S, 4),
            "unchanged_core_share_max": round(figures["unchanged_runs"]["summary"]["cpu_s"]["max"] / PERIOD_S, 4),
            "changed_core_share_median": round(figures["changed_runs"]["summary"]["cpu_s"]["median"] / PERIOD_S, 4),
            "unchanged_meets_target": cpu / PERIOD_S < TARGET_SHARE,
            "prune_every_run": any(sum((f or {}).get("snapshots_removed") or 0 for f in r["forget"].values())
                                   for r in unchanged + changed),
            "split_cpu_s_median": {"restic_backup_both_repos": round(backup_cpu, 2),
                                   "forget_prune_both_repos": round(prune_cpu, 2)},
        }
    finally:
        if not args.keep_lab:
            subprocess.run([CLI, "lab", "down"], env=env, capture_output=True, check=False)
    result = {"benchmark": "documents_backup_cost", "when": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "note": "2 cores shared with other work; the bench site's backup timers stopped"},
              "command": "lpse-backup run --type files (the documents timer's run), measured on the site",
              "settings": {"files": args.files, "median_kb": args.median_kb, "min_kb": args.min_kb,
                           "max_kb": args.max_kb, "rounds": args.rounds, "added_per_changed_run": args.add},
              "figures": figures, "bench_wall_s": round(time.monotonic() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(figures.get("verdict"), indent=2))


if __name__ == "__main__":
    main()
