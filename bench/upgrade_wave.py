"""Downtime of an upgrade, the orchestration overhead of a wave against its raw steps, and the control
node's CPU per site (issues 8 and 17).

Targets (issue 17): a site's ``/health`` does not answer ok for at most 15 s during an upgrade to a release
without migrations; the orchestration overhead of a one-site wave (CLI wall time / raw steps - 1) has a
median of at most 0.5; the control node spends at most 3 s of CPU per site on a one-hop upgrade, counted
over the whole ``lpse-ops`` process tree (``getrusage(RUSAGE_CHILDREN)`` around the command: every process
it started and waited for, Ansible's forks and their ssh clients included; an ssh ControlPersist master
that outlives the command is not, see ``cpu_note`` in the JSON). The JSON ends with a 600-site projection
from the measured CPU, labelled as one.

Runs against a lab that is already up (default the demo lab, ``lpse-lab``; never ``lpse-test``), on ONE
site that runs ``--from`` (1.2) with a verified backup younger than 26 h and lab traffic flowing, with a
release folder holding signed bundles up to ``--to`` (1.3, the reference release without migrations).
Set-up (once, by hand): ``lpse-ops backup setup|run --type full|verify --limit site1``, ``lpse-ops lab
traffic start --rate 5 --limit site1``, bundles built with ``lpse_ops.reference.build_reference_bundle``,
``lpse-ops upgrade run --to 1.2 --limit site1 --releases DIR ... --bake 10 --yes``.

Each round, alternating, on the site:

1. **CLI wave**: ``lpse-ops upgrade run --to 1.3 --limit SITE --bake 0 --min-requests 0 --no-notice --yes
   --json``, while a poller thread GETs ``https://127.0.0.1:<lab_https_port>/health`` (through nginx,
   which lets /health through the maintenance page) every 0.1 s: downtime = the seconds from the first
   poll that did not get 200 + ``status: ok`` to the next poll that did. Also the site record's own
   ``downtime_s``, the command's wall time, and from the state store and the runner's job events where
   that time went (the plan's ``site_state`` playbook, the locks and records, the ``upgrade.yml`` run and
   its tasks).
2. ``lpse-ops upgrade rollback --site SITE --yes --json`` back to ``--from`` (timed, its downtime polled).
3. **Raw steps**: the same work without Ansible: one ``scp`` of the bundle (and the
   trusted keys), then ONE ``ssh`` session running a Python script on the site that times each
   step: the traffic baseline, the smoke-test query, the maintenance flag, ``lpse-backup checkpoint``,
   ``lpse-backup release-unpack`` (sha256, signature, unpack, the tree against the signed manifest),
   ``systemctl stop spse``, the release's ``spse.jar migrate`` as the spse user with
   ``/etc/spse/spse.env``, ``ln -sfn`` current, ``systemctl start spse``, ``/health`` polled every 0.1 s
   until it reports the target, the smoke reads, the read-only flag, the bake's traffic reading, the flags
   down. Downtime polled the same way.
4. The same rollback (it restores the database to the last CLI upgrade's checkpoint; 1.3 has 1.2's
   schema, so that is sound).

Before each upgrade the target's release directory and bundle copy are removed from the site (neither
is current then), so both the CLI and the raw steps copy and unpack it.

Overhead = (CLI wall - raw steps total) / raw steps total, per round (raw steps total = the sum of the
timed steps, the scp included; the raw run's wall time, with its SSH connection, is kept beside it).

Writes ``bench/results/upgrade_wave.json``. Usage:
``.venv/bin/python bench/upgrade_wave.py --rounds 3 --releases DIR --trusted-keys DIR``.
Rounds are bounded (at most 10) and so is the run's wall time (``--max-minutes``): no round starts
once the estimate of one more would pass it.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import platform
import resource
import shlex
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / ".venv" / "bin" / "lpse-ops"
HOME = Path(os.environ.get("LPSE_OPS_HOME", Path.home() / ".local" / "share" / "lpse-ops"))
OUT = ROOT / "bench" / "results" / "upgrade_wave.json"
TARGET_DOWNTIME_S = 15.0
TARGET_OVERHEAD = 0.5
TARGET_CPU_PER_SITE_S = 3.0
FLEET = 600
DEFAULT_CANARY, DEFAULT_WAVE_SHARE, DEFAULT_FORKS = 1, 0.25, 10  # `upgrade run`'s defaults
MAX_ROUNDS = 10
POLL_INTERVAL_S = 0.1

# Runs on the site as root (one ssh session): the upgrade's steps by hand, each timed; prints JSON.
RAW_STEPS = r"""
import hashlib, json, os, shutil, subprocess, sys, time, urllib.request
version, upload, keys_upload, sha256, checkpoint, port = sys.argv[1:7]
base, tool, flags = "/opt/spse", "/usr/local/sbin/lpse-backup", "/etc/nginx/spse-maintenance"
release = f"{base}/releases/{version}"
bundle = f"{base}/bundles/spse-{version}.tar.gz"
steps, marks = [], {}

def run(argv, **kw):
    done = subprocess.run(argv, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        raise SystemExit(json.dumps({"failed": argv[:4], "rc": done.returncode, "stderr": done.stderr[-800:],
                                     "steps": steps}))
    return done.stdout

def step(name, action):
    began = time.monotonic()
    out = action()
    steps.append({"step": name, "s": round(time.monotonic() - began, 3)})
    return out

def flag(mode):
    os.makedirs(flags, exist_ok=True)
    for other in ("full", "read-only"):
        if other != mode and os.path.exists(f"{flags}/{other}"):
            os.remove(f"{flags}/{other}")
    if mode != "off":
        with open(f"{flags}/{mode}", "w") as handle:
            handle.write(f"SPSE maintenance mode {mode}, set by bench/upgrade_wave.py\n")

def place_bundle():
    os.makedirs(f"{base}/bundles", exist_ok=True)
    shutil.move(upload, bundle)
    os.chown(bundle, 0, 0)
    os.chmod(bundle, 0o640)

def unpack():
    with open(keys_upload) as handle:
        keys = handle.read()
    run([tool, "release-unpack", "--bundle", bundle, "--sha256", sha256, "--version", version, "--base", base],
        input=keys)

def health(url, want):
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                body = json.loads(answer.read())
                if answer.status == 200 and body.get("status") == "ok" and str(body.get("version")) == want:
                    return body
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(json.dumps({"failed": "health", "steps": steps}))

def smoke(known):
    tender, document, sha = (known.strip().split("|") + ["", "", ""])[:3]
    if tender:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/tenders?limit=1", timeout=10) as answer:
            assert str(json.loads(answer.read())[0]["id"]) == tender
    if document:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/documents/{document}", timeout=30) as answer:
            assert hashlib.sha256(answer.read()).hexdigest() == sha

session_began = time.monotonic()
step("copy: move the uploaded bundle into place", place_bundle)
now = int(time.time())
step("baseline: lpse-backup traffic", lambda: run([tool, "traffic", "--since", str(now - 300), "--until", str(now)]))
known = step("smoke query: newest tender and document", lambda: run(
    ["runuser", "-u", "postgres", "--", "psql", "--no-psqlrc", "--tuples-only", "--no-align", "--field-separator=|",
     "--dbname=spse", "--command", "SELECT (SELECT coalesce(max(id)::text, '') FROM tenders), "
     "(SELECT coalesce(max(id)::text, '') FROM documents), "
     "(SELECT coalesce(sha256, '') FROM documents ORDER BY id DESC LIMIT 1)"], cwd="/"))
step("maintenance page up (flag full)", lambda: flag("full"))
step("checkpoint: lpse-backup checkpoint", lambda: run([tool, "checkpoint", "--name", checkpoint]))
step("unpack and verify: lpse-backup release-unpack (sha256, signature, tree vs signed manifest)", unpack)
marks["stopped"] = time.time()
step("systemctl stop spse", lambda: run(["systemctl", "stop", "spse.service"]))
step("migrate (spse.jar migrate as spse)", lambda: run(
    ["runuser", "-u", "spse", "--", "/bin/sh", "-c", 'set -a && . "$1" && set +a && exec "$2" -jar "$3" migrate',
     "spse-migrate", "/etc/spse/spse.env", "/usr/bin/java", f"{release}/lib/spse.jar"], cwd="/"))
step("switch current (ln -sfn)", lambda: run(["ln", "-sfn", release, f"{base}/current"]))
step("systemctl start spse", lambda: run(["systemctl", "start", "spse.service"]))
step("wait for /health (every 0.1 s)", lambda: health(f"http://127.0.0.1:{port}/health", version))
marks["serving"] = time.time()
step("smoke reads: tender and document sha256", lambda: smoke(known))
step("read-only maintenance (flag read-only)", lambda: flag("read-only"))
bake_start = str(int(time.time()))
step("bake traffic reading: lpse-backup traffic", lambda: run([tool, "traffic", "--since", bake_start]))
step("maintenance page down (flags removed)", lambda: flag("off"))
os.remove(keys_upload)
print(json.dumps({"steps": steps, "session_s": round(time.monotonic() - session_began, 3),
                  "downtime_s": round(marks["serving"] - marks["stopped"], 2)}))
"""


class HealthPoller(threading.Thread):
    """GET ``url`` every POLL_INTERVAL_S on one keep-alive TLS connection; keep (time, ok, version) per poll."""

    def __init__(self, host: str, port: int):
        super().__init__(daemon=True)
        self.host, self.port = host, port
        # The lab sites' nginx certificates are self-signed: this only reads the lab's own /health.
        self.context = ssl._create_unverified_context()
        self.samples: list[tuple[float, bool, str]] = []
        self.stopping = threading.Event()
        self.connection: http.client.HTTPSConnection | None = None

    def poll(self) -> tuple[bool, str]:
        try:
            if self.connection is None:
                self.connection = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=2)
            self.connection.request("GET", "/health")
            answer = self.connection.getresponse()
            body = answer.read()
            if answer.getheader("connection", "").lower() == "close":
                self.connection.close()
                self.connection = None
            data = json.loads(body) if body[:1] == b"{" else {}
            return answer.status == 200 and data.get("status") == "ok", str(data.get("version", ""))
        except (OSError, http.client.HTTPException, ValueError):
            if self.connection is not None:
                self.connection.close()
            self.connection = None
            return False, ""

    def run(self) -> None:
        while not self.stopping.is_set():
            sent = time.time()
            ok, version = self.poll()
            self.samples.append((sent, ok, version))
            self.stopping.wait(max(0.0, POLL_INTERVAL_S - (time.time() - sent)))

    def stop(self) -> dict:
        self.stopping.set()
        self.join(timeout=5)
        return downtime(self.samples)


def downtime(samples: list[tuple[float, bool, str]]) -> dict:
    """Seconds /health did not answer ok: from each first failed poll to the next ok poll (or the last poll)."""
    total, outages, longest, down_since = 0.0, 0, 0.0, None
    for sent, ok, _version in samples:
        if not ok and down_since is None:
            down_since, outages = sent, outages + 1
        elif ok and down_since is not None:
            longest = max(longest, sent - down_since)
            total += sent - down_since
            down_since = None
    if down_since is not None and samples:
        longest = max(longest, samples[-1][0] - down_since)
        total += samples[-1][0] - down_since
    versions = [v for _s, _ok, v in samples if v]
    return {"downtime_s": round(total, 2), "outages": outages, "longest_s": round(longest, 2),
            "polls": len(samples), "failed_polls": sum(1 for _s, ok, _v in samples if not ok),
            "first_version": versions[0] if versions else None, "last_version": versions[-1] if versions else None}


def summary(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"min": None, "median": None, "max": None, "samples": []}
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3), "samples": [round(v, 3) for v in values]}


class Site:
    """The bench site as the lab inventory describes it: SSH and HTTPS endpoints."""

    def __init__(self, inventory: Path, host: str):
        data = yaml.safe_load(inventory.read_text())
        common = data["all"]["vars"]
        found = data["all"]["children"]["sites"]["hosts"][host]
        self.name, self.address = host, common["ansible_host"]
        self.ssh_port, self.user = int(found["ansible_port"]), common["ansible_user"]
        self.https_port = int(found["lab_https_port"])
        common_args = shlex.split(common.get("ansible_ssh_common_args", ""))
        options = ["-i", common["ansible_ssh_private_key_file"], *common_args, "-o", "BatchMode=yes"]
        self.ssh_argv = ["ssh", *options, "-p", str(self.ssh_port), f"{self.user}@{self.address}"]
        self.scp_argv = ["scp", "-q", *options, "-P", str(self.ssh_port)]

    def sudo(self, command: str, script: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
        return subprocess.run([*self.ssh_argv, f"sudo -n {command}"], input=script, capture_output=True, text=True,
                              timeout=timeout, check=False)


def children_cpu() -> float:
    """User + system CPU seconds of every child process this one has waited for (and their waited-for children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


LAST_CPU: dict[str, float] = {}


def cli(*args: str, timeout: int = 900) -> tuple[float, int, dict | None, str]:
    """Run ``lpse-ops ARGS``; return its wall time, exit code, parsed JSON stdout (or None) and stderr's tail.
    The process tree's CPU seconds are left in ``LAST_CPU["s"]``."""
    began, cpu_began = time.monotonic(), children_cpu()
    done = subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=ROOT)
    wall = time.monotonic() - began
    LAST_CPU["s"] = children_cpu() - cpu_began
    try:
        data = json.loads(done.stdout)
    except json.JSONDecodeError:
        data = None
    return wall, done.returncode, data, (done.stderr or done.stdout)[-1500:]


def epoch(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


def playbook_tasks(artifact_dir: str | None) -> dict:
    """Tasks of a playbook run from its runner job events: counts, summed task time, the slowest tasks."""
    folder = Path(artifact_dir or "") / "job_events"
    if not artifact_dir or not folder.is_dir():
        return {"available": False}
    events = [json.loads(path.read_text()) for path in folder.glob("*.json")]
    done = [e for e in events if e.get("event") in ("runner_on_ok", "runner_on_failed", "runner_on_skipped",
                                                    "runner_on_unreachable")]
    ran = [e for e in done if e["event"] != "runner_on_skipped"]
    durations = [(e["event_data"].get("task", ""), float(e["event_data"].get("duration") or 0)) for e in ran]
    starts = [epoch(e["created"]) for e in events if e.get("event") == "playbook_on_start"]
    stats = [epoch(e["created"]) for e in events if e.get("event") == "playbook_on_stats"]
    slowest = sorted(durations, key=lambda item: -item[1])[:8]
    task_sum = sum(d for _t, d in durations)
    return {
        "available": True, "task_starts": sum(1 for e in events if e.get("event") == "playbook_on_task_start"),
        "tasks_ran": len(ran), "tasks_skipped": len(done) - len(ran),
        "task_time_sum_s": round(task_sum, 2),
        "play_s": round(stats[0] - starts[0], 2) if starts and stats else None,
        "slowest": [{"task": t, "s": round(d, 2)} for t, d in slowest],
    }


def cli_breakdown(wall_began: float, wall_ended: float, result: dict | None) -> dict:
    """Where the CLI's wall time went, from the state store: plan (site_state), rollout, the playbook run."""
    from lpse_ops import config
    from lpse_ops.state import StateStore

    if not result or "run_id" not in result:
        return {"available": False}
    with StateStore.open(config.state_url()) as store:
        rollout = store.get_run(result["run_id"])
        plan = store.get_run(rollout["args"]["plan_run_id"]) if rollout["args"].get("plan_run_id") else None
        playbook_ids = [i for wave in result.get("waves", []) for i in wave.get("playbook_runs", []) if i]
        playbooks = [store.get_run(i) for i in playbook_ids]
    plan_began, plan_ended = (epoch(plan["started_at"]), epoch(plan["finished_at"])) if plan else (None, None)
    r_began, r_ended = epoch(rollout["started_at"]), epoch(rollout["finished_at"])
    pb_s = sum(p["duration_s"] or 0 for p in playbooks)
    parts = {
        "startup_and_bundle_verify_s": (plan_began - wall_began) if plan_began else None,
        "plan_site_state_playbook_s": (plan_ended - plan_began) if plan else None,
        "plan_to_rollout_s (plan core, state reads, show)": (r_began - plan_ended) if plan else None,
        "rollout_before_playbook_s (locks, records)": (epoch(playbooks[0]["started_at"]) - r_began) if playbooks
        else None,
        "upgrade_playbook_s": pb_s,
        "rollout_after_playbook_s (records, unlock)": (r_ended - epoch(playbooks[-1]["finished_at"])) if playbooks
        else None,
        "exit_after_rollout_s": wall_ended - r_ended,
    }
    parts = {k: (round(v, 2) if v is not None else None) for k, v in parts.items()}
    return {"available": True, "rollout_run": rollout["id"], "plan_run": plan["id"] if plan else None,
            "playbook_runs": playbook_ids, "parts": parts,
            "fixed_s": round((wall_ended - wall_began) - pb_s, 2),
            "plan_tasks": playbook_tasks(plan["artifact_dir"]) if plan else None,
            "upgrade_tasks": playbook_tasks(playbooks[0]["artifact_dir"]) if playbooks else None}


def polled(site: Site, action) -> tuple[object, dict]:
    """Run *action* while /health is polled; refuse to start unless the poller sees the site ok first."""
    poller = HealthPoller(site.address, site.https_port)
    poller.start()
    time.sleep(0.5)  # a few ok polls first
    if not any(ok for _sent, ok, _version in poller.samples):
        poller.stop()
        raise SystemExit(f"/health of {site.name} on port {site.https_port} does not answer ok before the step")
    try:
        out = action()
    finally:
        time.sleep(0.5)
        health = poller.stop()
    return out, health


def reset_target(site: Site, version: str) -> None:
    """Remove the target's release directory and bundle copy (not current) so the next upgrade unpacks it."""
    done = site.sudo(f"sh -c 'test \"$(cat /opt/spse/current/VERSION)\" != {shlex.quote(version)} && "
                     f"rm -rf /opt/spse/releases/{shlex.quote(version)} "
                     f"/opt/spse/bundles/spse-{shlex.quote(version)}.tar.gz'")
    if done.returncode != 0:
        raise SystemExit(f"cannot reset {site.name}: {done.stderr}{done.stdout}")


def site_version(site: Site) -> str:
    return site.sudo("cat /opt/spse/current/VERSION").stdout.strip()


def cli_wave(site: Site, args: argparse.Namespace) -> dict:
    began = time.time()
    (wall, rc, data, err), health = polled(site, lambda: cli(
        "upgrade", "run", "--to", args.to, "--limit", site.name, "--releases", str(args.releases),
        "--trusted-keys", str(args.trusted_keys), "--bake", "0", "--min-requests", "0", "--no-notice", "--yes",
        "--json"))
    ended = time.time()
    cpu = LAST_CPU.get("s")
    sites = [s for wave in (data or {}).get("waves", []) for s in wave.get("sites", [])]
    record = sites[0].get("record", {}) if sites else {}
    return {"ok": rc == 0 and bool(data) and data.get("result") == "ok", "rc": rc, "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2) if cpu is not None else None,
            "poller": health, "record_downtime_s": record.get("downtime_s"),
            "record_duration_s": record.get("duration_s"), "outcome": sites[0].get("outcome") if sites else None,
            "breakdown": cli_breakdown(began, ended, data), "error": None if rc == 0 else err}


def rollback(site: Site) -> dict:
    (wall, rc, data, err), health = polled(site, lambda: cli("upgrade", "rollback", "--site", site.name, "--yes",
                                                             "--json"))
    record = (data or {}).get("record") or {}
    return {"ok": rc == 0, "rc": rc, "wall_s": round(wall, 2), "poller": health,
            "cpu_s": round(LAST_CPU.get("s", 0.0), 2),
            "outcome": record.get("outcome") or (data or {}).get("outcome"),
            "error": None if rc == 0 else err}


def raw_steps(site: Site, args: argparse.Namespace, index: int) -> dict:
    bundle = args.releases / f"spse-{args.to}.tar.gz"
    checkpoint = f"bench-{int(time.time())}-{index}"

    def work() -> tuple[float, float, subprocess.CompletedProcess]:
        began = time.monotonic()
        keys = Path(tempfile.mkdtemp()) / "bench-keys.json"
        keys.write_text(json.dumps({"trusted_keys": [p.read_text() for p in sorted(args.trusted_keys.glob("*.pub"))]}))
        digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
        copied = subprocess.run([*site.scp_argv, str(bundle), str(keys),
                                 f"{site.user}@{site.address}:/tmp/"], capture_output=True, text=True, check=False,
                                timeout=300)
        if copied.returncode != 0:
            raise SystemExit(f"scp failed: {copied.stderr}")
        scp_s = time.monotonic() - began
        session = site.sudo(f"python3 - {shlex.quote(args.to)} /tmp/{bundle.name} /tmp/bench-keys.json {digest} "
                            f"{checkpoint} 8080", script=RAW_STEPS)
        return scp_s, time.monotonic() - began, session

    (scp_s, wall, session), health = polled(site, work)
    try:
        out = json.loads(session.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        out = {"unparsed": session.stdout[-1500:], "stderr": session.stderr[-1500:]}
    steps = [{"step": "scp the bundle and the trusted keys (one connection)", "s": round(scp_s, 3)},
             *out.get("steps", [])]
    total = sum(s["s"] for s in steps)
    return {"ok": session.returncode == 0 and "failed" not in out, "rc": session.returncode,
            "checkpoint": checkpoint, "steps": steps, "steps_total_s": round(total, 2),
            "wall_s": round(wall, 2), "session_s": out.get("session_s"), "poller": health,
            "site_downtime_s": out.get("downtime_s"), "error": None if session.returncode == 0 else out}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help=f"rounds (1..{MAX_ROUNDS}; default 3)")
    parser.add_argument("--max-minutes", type=float, default=45.0, help="no round starts past this (default 45)")
    parser.add_argument("--site", default="site1")
    parser.add_argument("--inventory", type=Path, default=HOME / "lab" / "inventory" / "hosts.yml")
    parser.add_argument("--releases", type=Path, default=HOME / "bench-upgrade-wave" / "releases")
    parser.add_argument("--trusted-keys", type=Path, default=HOME / "trusted-keys")
    parser.add_argument("--from", dest="from_version", default="1.2")
    parser.add_argument("--to", default="1.3")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if not 1 <= args.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds must be 1..{MAX_ROUNDS}")
    if "lpse-test" in str(args.inventory):
        parser.error("never the lpse-test lab")
    return args


def main() -> int:
    args = parse()
    site = Site(args.inventory, args.site)
    if site_version(site) != args.from_version:
        raise SystemExit(f"{site.name} runs {site_version(site)!r}, not {args.from_version}: see the set-up above")
    began, rounds, stopped = time.monotonic(), [], None
    for index in range(1, args.rounds + 1):
        spent = time.monotonic() - began
        per_round = spent / len(rounds) if rounds else 0
        if spent + per_round > args.max_minutes * 60:
            stopped = f"wall-clock cap: {spent:.0f} s spent, a round takes about {per_round:.0f} s"
            break
        entry: dict = {"round": index}
        print(f"round {index}: CLI wave", file=sys.stderr)
        reset_target(site, args.to)
        entry["cli"] = cli_wave(site, args)
        print(f"  cli {entry['cli']['wall_s']} s, down {entry['cli']['poller']['downtime_s']} s; rollback",
              file=sys.stderr)
        entry["cli_rollback"] = rollback(site)
        if site_version(site) != args.from_version:
            entry["stopped"] = "the site is not back on the starting version after the CLI round"
            rounds.append(entry)
            break
        print(f"round {index}: raw steps", file=sys.stderr)
        reset_target(site, args.to)
        entry["raw"] = raw_steps(site, args, index)
        print(f"  raw {entry['raw']['steps_total_s']} s, down {entry['raw']['poller']['downtime_s']} s; rollback",
              file=sys.stderr)
        entry["raw_rollback"] = rollback(site)
        if entry["cli"]["ok"] and entry["raw"]["ok"]:
            raw_total = entry["raw"]["steps_total_s"]
            entry["overhead"] = round((entry["cli"]["wall_s"] - raw_total) / raw_total, 3)
            entry["overhead_vs_raw_wall"] = round((entry["cli"]["wall_s"] - entry["raw"]["wall_s"])
                                                  / entry["raw"]["wall_s"], 3)
            playbook = entry["cli"]["breakdown"].get("parts", {}).get("upgrade_playbook_s")
            entry["playbook_overhead"] = round((playbook - raw_total) / raw_total, 3) if playbook else None
        rounds.append(entry)
        if site_version(site) != args.from_version:
            entry["stopped"] = "the site is not back on the starting version after the raw round"
            break
    write(args, rounds, stopped, time.monotonic() - began)
    return 0


def projection(cpu_per_site: float | None, wave_wall_s: float | None,
               basis: str = "the CPU of a whole one-site command for every site: an upper bound (in a wave of "
                            "many sites the command's fixed costs are paid once; bench/upgrade_fleet_cpu.py "
                            "measures the marginal CPU of a site)") -> dict | None:
    """What a 600-site rollout with `upgrade run`'s default waves would cost the control node: a PROJECTION."""
    if cpu_per_site is None:
        return None
    rest = FLEET - DEFAULT_CANARY
    per_wave = max(1, round(FLEET * DEFAULT_WAVE_SHARE))
    waves = 1 + -(-rest // per_wave)
    busiest = min(per_wave, rest)
    return {
        "label": "projection from measured figures, not a measurement of 600 sites",
        "basis": basis,
        "sites": FLEET, "waves": waves, "canary": DEFAULT_CANARY, "sites_per_wave": per_wave,
        "forks": DEFAULT_FORKS,
        "cpu_per_site_s": cpu_per_site,
        "cpu_per_wave_s (busiest wave)": round(cpu_per_site * busiest, 1),
        "cpu_total_s": round(cpu_per_site * FLEET, 1),
        "cpu_total_h": round(cpu_per_site * FLEET / 3600, 2),
        "cores_busy_during_a_wave (forks sites at once, each for one wave's wall time)": (
            round(cpu_per_site * DEFAULT_FORKS / wave_wall_s, 2) if wave_wall_s else None),
    }


def write(args: argparse.Namespace, rounds: list[dict], stopped: str | None, took: float) -> None:
    ok = [r for r in rounds if r.get("overhead") is not None]

    def pick(path: str) -> list:
        values = []
        for entry in ok:
            value = entry
            for key in path.split("."):
                value = value.get(key) if isinstance(value, dict) else None
            values.append(value)
        return values

    step_names = [s["step"] for s in ok[0]["raw"]["steps"]] if ok else []
    figures = {
        "cli_downtime_s": summary(pick("cli.poller.downtime_s")),
        "cli_record_downtime_s": summary(pick("cli.record_downtime_s")),
        "raw_downtime_s": summary(pick("raw.poller.downtime_s")),
        "raw_site_downtime_s (stop to healthy, on the site)": summary(pick("raw.site_downtime_s")),
        "cli_rollback_downtime_s": summary(pick("cli_rollback.poller.downtime_s") + pick(
            "raw_rollback.poller.downtime_s")),
        "rollback_wall_s": summary(pick("cli_rollback.wall_s") + pick("raw_rollback.wall_s")),
        "cli_wall_s": summary(pick("cli.wall_s")),
        "cli_cpu_s (one site, one hop, whole lpse-ops process tree)": summary(pick("cli.cpu_s")),
        "rollback_cpu_s": summary(pick("cli_rollback.cpu_s") + pick("raw_rollback.cpu_s")),
        "cli_upgrade_playbook_s": summary(pick("cli.breakdown.parts.upgrade_playbook_s")),
        "cli_fixed_s (wall - upgrade playbook)": summary(pick("cli.breakdown.fixed_s")),
        "cli_plan_site_state_playbook_s": summary(pick("cli.breakdown.parts.plan_site_state_playbook_s")),
        "raw_steps_total_s": summary(pick("raw.steps_total_s")),
        "raw_wall_s": summary(pick("raw.wall_s")),
        "overhead_ratio": summary(pick("overhead")),
        "overhead_ratio_vs_raw_wall": summary(pick("overhead_vs_raw_wall")),
        "playbook_only_overhead_ratio": summary(pick("playbook_overhead")),
        "upgrade_playbook_tasks_ran": summary(pick("cli.breakdown.upgrade_tasks.tasks_ran")),
        "raw_steps_s": {name: summary([s["s"] for r in ok for s in r["raw"]["steps"] if s["step"] == name])
                        for name in step_names},
    }
    down = figures["cli_downtime_s"]["max"]
    over = figures["overhead_ratio"]["median"]
    cpu = figures["cli_cpu_s (one site, one hop, whole lpse-ops process tree)"]["median"]
    result = {
        "benchmark": "upgrade_wave",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
                    "note": "2 cores shared with other work; lab containers on this machine"},
        "settings": {"site": args.site, "from": args.from_version, "to": args.to, "rounds": args.rounds,
                     "rounds_done": len(rounds), "max_minutes": args.max_minutes, "poll_interval_s": POLL_INTERVAL_S,
                     "cli": f"lpse-ops upgrade run --to {args.to} --limit {args.site} --bake 0 --min-requests 0 "
                            "--no-notice --yes --json", "rollback": f"lpse-ops upgrade rollback --site {args.site}"},
        "targets": {"downtime_s_max": TARGET_DOWNTIME_S, "overhead_ratio_median_max": TARGET_OVERHEAD,
                    "cpu_per_site_s_max": TARGET_CPU_PER_SITE_S},
        "verdict": {
            "downtime_ok": down is not None and down <= TARGET_DOWNTIME_S,
            "downtime_worst_s": down,
            "overhead_ok": over is not None and over <= TARGET_OVERHEAD,
            "overhead_median": over,
            "overhead_worst": figures["overhead_ratio"]["max"],
            "cpu_ok": cpu is not None and cpu <= TARGET_CPU_PER_SITE_S,
            "cpu_per_site_median_s": cpu,
        },
        "figures": figures,
        "projection_600_sites": projection(cpu, figures["cli_wall_s"]["median"]),
        "cpu_note": ("CPU is getrusage(RUSAGE_CHILDREN) around each lpse-ops command: the CLI, ansible-playbook, its "
                     "forks and the ssh clients they waited for. An OpenSSH ControlPersist master that outlives "
                     "the command is not counted; it only relays the encrypted stream of the session."),
        "stopped": stopped,
        "took_s": round(took, 1),
        "rounds": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"verdict": result["verdict"], "figures": {k: v for k, v in figures.items()
                                                                 if k != "raw_steps_s"}}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
