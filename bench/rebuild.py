"""RTO and RPO of the two rebuilds from the offsite copy (issue 9; clauses 10.2, 10.4): a server lost,
and ransomware (site files encrypted, local repositories deleted, the offsite copy attacked with the site's
own S3 keys).

Runs against a lab that is already up (``LPSE_OPS_HOME``, ``LPSE_OPS_LAB_NAME``; never ``lpse-test`` nor
``lpse-lab``) with SPSE installed on ``--site`` and its backups set up and running (a full backup, the
5-minute documents timer). Each scenario:

1. a **workload** inside the site: one tender row every 2 s (SQL) and one tender with a document every
   20 s (through nginx), for ``--write-seconds``;
2. the **fault**, for real. *server-lost*: ``docker rm -f`` of the site's container, then a bare Debian
   container started with the same name and ports (``lab.start_host`` + ``provision_access``: SSH only),
   and its new SSH host key put in place of the old one (the runbook's Diagnosis). *ransomware*: every
   document and every PostgreSQL data file under ``base/`` overwritten by its ``openssl enc`` ciphertext,
   ``/var/lib/pgbackrest`` and the local restic repository deleted, then with the site's own S3 keys: a
   delete of locked versions (refused: counted), new garbage versions of ``backup.info``/``archive.info``
   and restic's ``config``, and a delete marker on every current object of the site's prefixes;
3. the scenario's **runbook steps, in order, with the real CLI** (``runbooks/server-lost.md``,
   ``runbooks/ransomware.md``; placeholders filled as an operator would, ``--yes`` for the restore's
   confirmation), each timed, with its exit code; a ``continue`` step goes on when it fails;
4. **verified**: ``/health`` ok through nginx and every document the database references present with
   its sha256. **RTO** = fault to that verified moment (the rest of the runbook, backups set up again, a
   fresh full backup and the verifications, is timed apart). **RPO** = the fault's time minus the newest
   recovered workload row (database) and the newest recovered document whose file matches.

Writes ``bench/results/rebuild.json`` (each scenario's steps, RTO, RPO, targets, the machine's load).
Usage: ``.venv/bin/python bench/rebuild.py --bundle B --trusted-keys DIR [--scenario server-lost]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "cli"))
CLI = str(ROOT / ".venv" / "bin" / "lpse-ops")
TARGETS = {"server-lost": {"rto_s": 600, "rpo_db_s": 60, "rpo_documents_s": 300},
           "ransomware": {"rto_s": 2700, "rpo_db_s": 60, "rpo_documents_s": 300}}
WRITER = ("echo $$ > /run/lpse-bench-writer.pid; i=0; while true; do i=$((i+1)); "
          "runuser -u postgres -- psql -d spse -qAtX -c \"INSERT INTO tenders "
          "(code, title, agency) VALUES ('RPO-' || (extract(epoch from clock_timestamp()) * 1000)::bigint, "
          "'rpo', 'bench')\" >/dev/null 2>&1; sleep 2; done")
UPLOADER = ("echo $$ > /run/lpse-bench-uploader.pid; i=0; while true; do i=$((i+1)); "
            "t=$(curl -sk -X POST https://127.0.0.1/tenders -H "
            "'Content-Type: application/json' -d \"{\\\"code\\\":\\\"DOCRPO-$(date +%s%N)\\\",\\\"title\\\":\\\"d\\\","
            "\\\"agency\\\":\\\"bench\\\"}\" | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"id\"])'); "
            "head -c 4096 /dev/urandom > /tmp/rpo-doc; curl -sk -X POST \"https://127.0.0.1/tenders/$t/documents?"
            "name=docrpo-$i.pdf\" --data-binary @/tmp/rpo-doc -o /dev/null; sleep 20; done")
ENCRYPT = r"""
set -e
enc() { openssl enc -aes-256-cbc -pbkdf2 -pass pass:ransom -in "$1" -out "$1.locked" && mv "$1.locked" "$1"; }
find /var/lib/spse/documents -type f | while read -r f; do enc "$f"; done
find /var/lib/postgresql/15/main/base -type f -name '[0-9]*' | while read -r f; do enc "$f"; done
echo 'Your files are encrypted' > /var/lib/spse/documents/README-RANSOM.txt
rm -rf /var/lib/pgbackrest/* /var/lib/lpse-backup/restic
"""
NEWEST_SQL = ("SELECT coalesce((SELECT max(created_at) FROM tenders WHERE code LIKE 'RPO-%'), 'epoch'), "
              "coalesce((SELECT max(created_at) FROM documents), 'epoch'), (SELECT count(*) FROM documents)")


def container(lab: str, site: str) -> str:
    return f"{lab}-{site}"


def on_site(lab: str, site: str, script: str, check: bool = True, detach: bool = False) -> str:
    """Run *script* as root in the site's container (the operator's or the attacker's shell)."""
    done = subprocess.run(["docker", "exec", *(["-d"] if detach else []), container(lab, site), "bash", "-c", script],
                          capture_output=True, text=True, timeout=900, check=False)
    if check and done.returncode:
        raise RuntimeError(f"on {site}: {script[:80]}...: {done.stderr or done.stdout}")
    return done.stdout


def cli(steps: list[dict], step_id: str, *args: str, policy: str = "stop") -> dict:
    """Run one runbook step's ``lpse-ops`` command; record its id, command, exit code and seconds."""
    began = time.monotonic()
    done = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=3600, check=False)
    entry = {"id": step_id, "command": "lpse-ops " + " ".join(args), "rc": done.returncode,
             "seconds": round(time.monotonic() - began, 1), "on_failure": policy}
    if done.returncode:
        entry["tail"] = (done.stderr + done.stdout)[-600:]
    steps.append(entry)
    print(f"  {step_id}: rc={done.returncode} in {entry['seconds']} s", flush=True)
    if done.returncode and policy == "stop":
        raise StepFailed(entry)
    return {"entry": entry, "stdout": done.stdout}


class StepFailed(Exception):
    """A runbook step whose policy is stop failed."""


def health(port: int) -> dict:
    import ssl
    import urllib.request

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/health", context=context, timeout=5) as answer:  # noqa: S310
            return json.loads(answer.read())
    except (OSError, ValueError) as error:
        return {"status": "unreachable", "reason": str(error)}


def documents_not_matching(lab: str, site: str) -> list[str]:
    out = on_site(lab, site, "cd /var/lib/spse/documents && runuser -u postgres -- psql -d spse -AtX -c "
                  "\"SELECT sha256 || ' ' || stored_path FROM documents\" | while read sum path; do "
                  "[ \"$(sha256sum \"$path\" 2>/dev/null | cut -c1-64)\" = \"$sum\" ] || echo \"$path\"; done")
    return [line for line in out.splitlines() if line.strip()]


def newest(lab: str, site: str) -> tuple[datetime, datetime, int]:
    """The newest workload row, the newest document row (UTC) and how many documents the database lists."""
    out = on_site(lab, site, "runuser -u postgres -- psql -d spse -AtX -F '|' -c "
                  f"\"SET TimeZone = 'UTC'; {NEWEST_SQL}\"").strip().splitlines()[-1]
    rows, docs, count = out.split("|")
    return _utc(rows), _utc(docs), int(count)


def _utc(text: str) -> datetime:
    text = text.strip()
    if text == "epoch":
        return datetime(1970, 1, 1, tzinfo=UTC)
    value = datetime.fromisoformat(text + ":00" if text.endswith("+00") else text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def workload(lab: str, site: str, seconds: float) -> None:
    """Start the row writer and the document uploader inside the site; let them run *seconds*."""
    on_site(lab, site, WRITER, detach=True)
    on_site(lab, site, UPLOADER, detach=True)
    time.sleep(seconds)  # the workload's duration, not a wait for a state


def stop_workload(lab: str, site: str) -> None:
    """Stop the workload's two loops by the process ids they wrote (the attack has broken the database anyway)."""
    on_site(lab, site, "for f in /run/lpse-bench-writer.pid /run/lpse-bench-uploader.pid; do "
                       "[ -f $f ] && kill \"$(cat $f)\"; rm -f $f; done; true", check=False)


def replace_with_bare_host(state: dict, site: str) -> float:
    """The server is lost: remove its container, start a bare one with the same name and ports; return the loss time."""
    from lpse_ops.lab import lab as lab_actions

    host = next(lab_actions.HostSpec(**h) for h in state["hosts"] if h["name"] == site)
    plan = lab_actions.LabPlan(state["name"], state["port_base"], [])
    subprocess.run(["docker", "rm", "-f", plan.container(host)], check=True, capture_output=True)
    lost = time.time()
    lab_actions.start_host(plan, host, state["image"])
    lab_actions.provision_access(plan, host, (lab_actions.lab_dir() / "id_ed25519.pub").read_text())
    # the runbook's Diagnosis: the new host's key replaces the old one in the inventory's known_hosts
    subprocess.run(["ssh-keygen", "-R", f"[127.0.0.1]:{host.ssh_port}", "-f",
                    str(lab_actions.lab_dir() / "known_hosts")], capture_output=True, check=False)
    if not lab_actions.ssh_ok(host, wait_s=90):
        raise RuntimeError(f"the bare {site} does not answer SSH")
    return lost


def attack_offsite(site_code: str) -> dict:
    """With the site's own S3 keys: try to destroy locked versions, then overwrite and delete what it can."""
    from botocore.exceptions import ClientError

    from lpse_ops.lab import lab as lab_actions

    settings = json.loads((lab_actions.lab_dir() / "s3-credentials.json").read_text())
    keys = settings["credentials"][f"site-{site_code}"]
    client = lab_actions.s3_client(settings["endpoint_control"], settings["ca_cert"], keys)
    bucket, report = settings["bucket"], {"versions_delete_refused": 0, "versions_deleted": 0,
                                          "overwritten": 0, "delete_markers": 0}
    for prefix in (f"pgbackrest/{site_code}/", f"restic/{site_code}/"):
        versions = client.list_object_versions(Bucket=bucket, Prefix=prefix).get("Versions", [])[:20]
        for version in versions:
            try:
                client.delete_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
                report["versions_deleted"] += 1
            except ClientError:
                report["versions_delete_refused"] += 1
    for key in (f"pgbackrest/{site_code}/backup/spse/backup.info", f"pgbackrest/{site_code}/archive/spse/archive.info",
                f"restic/{site_code}/config"):
        client.put_object(Bucket=bucket, Key=key, Body=b"encrypted by ransomware")
        report["overwritten"] += 1
    for prefix in (f"pgbackrest/{site_code}/", f"restic/{site_code}/"):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=item["Key"])
                report["delete_markers"] += 1
    return report


def server_lost(state: dict, site: str, port: int, bundle: str, write_seconds: float) -> dict:
    lab, steps = state["name"], []
    workload(lab, site, write_seconds)
    lost = replace_with_bare_host(state, site)
    print(f"server lost at {datetime.fromtimestamp(lost, UTC).isoformat()}", flush=True)
    result = {"scenario": "server-lost", "lost_at": datetime.fromtimestamp(lost, UTC).isoformat(), "steps": steps}
    try:
        cli(steps, "probe-site", "fleet", "status", "--limit", site, "--timeout", "30", policy="continue")
        cli(steps, "check-locks", "lock", "list", policy="continue")
        cli(steps, "check-inventory", "inventory", "validate", "--for", "install")
        cli(steps, "preflight", "preflight", "--limit", site)
        cli(steps, "install-spse", "install", bundle, "--limit", site)
        cli(steps, "setup-backups", "backup", "setup", "--limit", site, policy="continue")
        restored = cli(steps, "restore-from-offsite", "backup", "restore", "--limit", site, "--from", "offsite",
                       "--target-time", "latest", "--yes", "--json")
        result["restore"] = _restore_summary(restored["stdout"], site)
        result.update(_verified(lab, site, port, lost, result["restore"]))
        cli(steps, "setup-backups-again", "backup", "setup", "--limit", site)
        cli(steps, "fresh-full-backup", "backup", "run", "--limit", site, "--type", "full", policy="continue")
        cli(steps, "site-healthy", "fleet", "status", "--limit", site, policy="continue")
        cli(steps, "verify-offsite", "backup", "verify", "--limit", site, "--repo", "2")
        cli(steps, "backups-current", "backup", "status", "--limit", site, policy="continue")
        result["runbook_done_s"] = round(time.time() - lost, 1)
    except StepFailed as failed:
        result["failed_step"] = failed.args[0]["id"]
    return result


def ransomware(state: dict, site: str, site_code: str, port: int, write_seconds: float) -> dict:
    lab, steps = state["name"], []
    workload(lab, site, write_seconds)
    as_of = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    attacked = time.time()
    on_site(lab, site, ENCRYPT)
    stop_workload(lab, site)
    offsite_attack = attack_offsite(site_code)
    print(f"attack at {datetime.fromtimestamp(attacked, UTC).isoformat()}: {offsite_attack}", flush=True)
    result = {"scenario": "ransomware", "attacked_at": datetime.fromtimestamp(attacked, UTC).isoformat(),
              "offsite_as_of": as_of.isoformat(), "offsite_attack": offsite_attack, "steps": steps}
    try:
        cli(steps, "probe-site", "fleet", "status", "--limit", site, policy="continue")
        cli(steps, "backup-health", "backup", "status", "--limit", site, policy="continue")
        cli(steps, "check-locks", "lock", "list", policy="continue")
        cli(steps, "setup-backups", "backup", "setup", "--limit", site, policy="continue")
        restored = cli(steps, "restore-offsite-as-of", "backup", "restore", "--limit", site, "--from", "offsite",
                       "--offsite-as-of", as_of.isoformat(), "--target-time", "latest", "--yes", "--json")
        result["restore"] = _restore_summary(restored["stdout"], site)
        result.update(_verified(lab, site, port, attacked, result["restore"]))
        cli(steps, "offsite-put-back", "backup", "offsite-put-back", "--limit", site, "--as-of", as_of.isoformat(),
            "--yes")
        cli(steps, "setup-backups-again", "backup", "setup", "--limit", site)
        cli(steps, "fresh-full-backup", "backup", "run", "--limit", site, "--type", "full")
        cli(steps, "site-healthy", "fleet", "status", "--limit", site, policy="continue")
        cli(steps, "verify-local", "backup", "verify", "--limit", site, "--repo", "1")
        cli(steps, "verify-offsite", "backup", "verify", "--limit", site, "--repo", "2")
        cli(steps, "audit-log-intact", "audit-log", "verify", policy="continue")
        result["runbook_done_s"] = round(time.time() - attacked, 1)
    except StepFailed as failed:
        result["failed_step"] = failed.args[0]["id"]
    return result


def _restore_summary(stdout: str, site: str) -> dict:
    output = (json.loads(stdout) if stdout.strip().startswith("{") else {}).get("outputs", {}).get(site, {})
    return {key: output.get(key) for key in ("ok", "code", "error", "recovery_point", "restic_snapshot", "documents",
                                              "timeline_followed", "live_cluster", "duration_s", "offsite_view")}


def _verified(lab: str, site: str, port: int, fault: float, restore: dict) -> dict:
    """The site serves with its data: /health ok and every referenced document present with its sha256.

    Database RPO: the fault minus the newest workload row recovered (rows every 2 s). Documents RPO: the fault
    minus the restored snapshot's time (every document uploaded before it is in it; the newest document row
    recovered is kept beside it, but says little when none was uploaded for a while).
    """
    answer = health(port)
    mismatched = documents_not_matching(lab, site)
    verified_at = time.time()
    rows, docs, count = newest(lab, site)
    fault_at = datetime.fromtimestamp(fault, UTC)
    return {"health": answer.get("status"), "documents_not_matching": mismatched, "documents_listed": count,
            "verified": answer.get("status") == "ok" and not mismatched,
            "rto_s": round(verified_at - fault, 1),
            "rpo_db_s": round((fault_at - rows).total_seconds(), 1),
            "rpo_documents_s": round((fault_at - _utc((restore.get("restic_snapshot") or {}).get("time") or "epoch")
                                      ).total_seconds(), 1),
            "newest_row": rows.isoformat(), "newest_document": docs.isoformat()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=["server-lost", "ransomware", "both"], default="both")
    parser.add_argument("--site", default="site1")
    parser.add_argument("--bundle", help="the signed bundle of the release the site runs (server-lost)")
    parser.add_argument("--trusted-keys", help="LPSE_OPS_TRUSTED_KEYS for the install")
    parser.add_argument("--write-seconds", type=float, default=90.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "rebuild.json"))
    args = parser.parse_args()
    from lpse_ops.lab import lab as lab_actions

    state = lab_actions.load_state()
    if not state or state["name"] in ("lpse-test", "lpse-lab"):
        parser.error("run against your own lab (LPSE_OPS_HOME, LPSE_OPS_LAB_NAME), never lpse-test or lpse-lab")
    if args.trusted_keys:
        os.environ["LPSE_OPS_TRUSTED_KEYS"] = args.trusted_keys
    host = next(h for h in state["hosts"] if h["name"] == args.site)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    for scenario in (["server-lost", "ransomware"] if args.scenario == "both" else [args.scenario]):
        print(f"== {scenario}", flush=True)
        if scenario == "server-lost":
            if not args.bundle:
                parser.error("server-lost needs --bundle")
            found = server_lost(state, args.site, host["https_port"], args.bundle, args.write_seconds)
        else:
            found = ransomware(state, args.site, host["site_code"], host["https_port"], args.write_seconds)
        target = TARGETS[scenario]
        found["targets"] = target
        found["met"] = {key: found.get(key) is not None and found[key] <= limit for key, limit in
                        (("rto_s", target["rto_s"]), ("rpo_db_s", target["rpo_db_s"]),
                         ("rpo_documents_s", target["rpo_documents_s"]))}
        found["machine"] = {"cpus": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 1),
                            "python": platform.python_version(), "at": datetime.now(UTC).isoformat()}
        results[scenario] = found
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps({k: found.get(k) for k in ("rto_s", "rpo_db_s", "rpo_documents_s", "verified", "met",
                                                      "failed_step", "runbook_done_s")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
