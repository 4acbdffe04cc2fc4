"""Drill faults of the two rebuilds from the offsite copy (issue 9; runbooks/ransomware.md and
runbooks/server-lost.md), plugged into ``lpse-ops drill run`` (:mod:`lpse_ops.actions.drill`).

*ransomware*, over the drill's SSH shell, as an attacker with root on the site: first, with the site's own
offsite keys (its ``restic.env``), every snapshot of the offsite restic repository forgotten and pruned
(the bucket's Object Lock keeps every version: the deletes only add delete markers); then every document
and every PostgreSQL data file under ``base/`` overwritten by its ``openssl enc`` ciphertext, a ransom
note, and the local repositories (pgBackRest repo1, the local restic repository) deleted. The runbook
restores from the offsite copy as it stood one second before the attack began (``{offsite_as_of}``).

*server-lost*, on a **lab** site only (a drill cannot replace a real server's hardware): the site's
container is removed and a bare Debian host started with its name and ports (SSH only), and its new
SSH host key replaces the old one in the lab's known_hosts (the runbook's Diagnosis). ``{bundle}``
is a signed bundle of the release the site ran (read from the site before it is destroyed, found where
the state store says installs and upgrades took their bundles).

Each ``inject`` returns (the fault's moment, the runbook's placeholder values, what was done).
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from lpse_ops import config
from lpse_ops.actions.operation import OperationRefused
from lpse_ops.site_facts import site_facts

DESCRIPTIONS: dict[str, str] = {
    "ransomware": "offsite snapshots forgotten and pruned with the site's own keys, documents and PostgreSQL data "
                  "files encrypted, local repositories deleted; restore from the offsite copy as of 1 s before",
    "server-lost": "lab only: the site's container destroyed and a bare host started in its place; rebuilt from "
                   "the offsite bucket and the inventory",
}

OFFSITE_ATTACK = r"""
set -e
set -a; . /etc/lpse-backup/restic.env; set +a
export RESTIC_PASSWORD_FILE=/etc/lpse-backup/restic.password RESTIC_CACHE_DIR=/tmp/attacker-cache
repo=$(python3 -c 'import json; print(json.load(open("/etc/lpse-backup/lpse-backup.json"))["restic_repos"]["offsite"])')
opts="--cacert /etc/lpse-backup/offsite-ca.crt -o s3.bucket-lookup=path"
ids=$(restic -r "$repo" $opts snapshots --json \
      | python3 -c 'import json, sys; print(" ".join(s["id"] for s in json.load(sys.stdin) or []))')
[ -z "$ids" ] || restic -r "$repo" $opts forget --prune $ids >/dev/null
echo "offsite snapshots forgotten: $(echo $ids | wc -w)"
"""
ENCRYPT = r"""
set -e
enc() { openssl enc -aes-256-cbc -pbkdf2 -pass pass:drill-ransom -in "$1" -out "$1.locked" && mv "$1.locked" "$1"; }
find "$docs" -type f | while read -r f; do enc "$f"; done
find "$pgdata/base" -type f -name '[0-9]*' | while read -r f; do enc "$f"; done
echo 'Your files are encrypted (an lpse-ops drill)' > "$docs/README-RANSOM.txt"
rm -rf /var/lib/pgbackrest/* /var/lib/lpse-backup/restic
echo "encrypted: $(find "$docs" -type f | wc -l) documents"
"""


class Shell(Protocol):
    """The drill's root shell on the site (``lpse_ops.backends.site_shell.SiteShell``)."""

    def run(self, script: str, timeout: float = 300.0, check: bool = True) -> str: ...


Injected = tuple[datetime, dict[str, str], str]


def ransomware(site: str, shell: Shell, hostvars: dict[str, Any]) -> Injected:
    """Attack the offsite copy with the site's keys, encrypt the site's files, delete its local repositories."""
    fault_at = datetime.now(UTC)
    attacked = shell.run(OFFSITE_ATTACK, timeout=900).strip()
    facts = site_facts(hostvars)  # this site's folders, not the lab's defaults
    where = f"docs={shlex.quote(facts.spse_docs_dir)}\npgdata={shlex.quote(facts.pg_data_dir)}\n"
    encrypted = shell.run(where + ENCRYPT, timeout=1800).strip()
    as_of = fault_at.replace(microsecond=0) - timedelta(seconds=1)
    return fault_at, {"offsite_as_of": as_of.strftime("%Y-%m-%dT%H:%M:%SZ")}, f"{attacked}; {encrypted}"


def server_lost(site: str, shell: Shell, hostvars: dict[str, Any]) -> Injected:
    """Replace a lab site's container by a bare host with the same name and ports."""
    if hostvars.get("lpse_environment") != "lab":
        raise OperationRefused(f"{site}: a server-lost drill replaces the host itself, which only the lab can do "
                               "(lpse_environment: lab); on a real site, rehearse runbooks/server-lost.md on a "
                               "spare host")
    bundle = bundle_of(site, running_version(shell, hostvars))
    from lpse_ops.lab import lab as lab_actions  # the lab only: gated above

    state = lab_actions.load_state() or {}
    spec = next((h for h in state.get("hosts", []) if h["name"] == site), None)
    if spec is None:
        raise OperationRefused(f"{site} is not a host of the lab {state.get('name')}")
    host = lab_actions.HostSpec(**spec)
    plan = lab_actions.LabPlan(state["name"], state["port_base"], [])
    subprocess.run(["docker", "rm", "-f", plan.container(host)], check=True, capture_output=True, timeout=300)
    fault_at = datetime.now(UTC)
    lab_actions.start_host(plan, host, state["image"])
    lab_actions.provision_access(plan, host, (lab_actions.lab_dir() / "id_ed25519.pub").read_text())
    subprocess.run(["ssh-keygen", "-R", f"[127.0.0.1]:{host.ssh_port}", "-f",
                    str(lab_actions.lab_dir() / "known_hosts")], capture_output=True, check=False, timeout=60)
    if not lab_actions.ssh_ok(host, wait_s=90):
        raise RuntimeError(f"the bare {site} does not answer SSH")
    if lab_actions.lab_link(state):  # the new host reaches the offsite copy over the same WAN link as the lost one
        lab_actions.set_wan(lab_actions.lab_link(state), only=[site])
    return fault_at, {"bundle": bundle}, f"container {plan.container(host)} destroyed; a bare host started in its place"


def running_version(shell: Shell, hostvars: dict[str, Any]) -> str:
    """The SPSE version the site runs: the release its ``current`` symlink points at."""
    base = str(hostvars.get("site_spse_base_dir") or "/opt/spse")
    target = shell.run(f"readlink -f {shlex.quote(base + '/current')}", timeout=60).strip()
    version = target.rstrip("/").rsplit("/", 1)[-1]
    if not target or not version:
        raise OperationRefused(f"cannot tell which SPSE release the site runs ({base}/current): the drill would "
                               "not know which bundle to reinstall")
    return version


def bundle_of(site: str, version: str, trusted: Path | None = None) -> str:
    """A signed bundle of SPSE *version* known to this control node, for reinstalling *site*.

    Looked for where the state store says bundles were used: the bundles of successful installs, then the
    release folders of upgrade plans (newest first), then ``<home>/bundles``; each candidate verified
    against the trusted keys. The bundle of the last *install* is wrong for a site upgraded since: its
    restored database carries the newer schema, and the older release refuses it (CI found it).
    """
    from lpse_ops import bundle
    from lpse_ops.state import StateStore

    keys = trusted or config.trusted_keys()
    files: list[Path] = []
    folders: list[Path] = []
    store = StateStore.open(config.state_url())
    try:
        for record in store.list_runs(limit=500, operation="install"):
            args = record.get("args") or {}
            if record.get("result") == "ok" and args.get("bundle"):
                files.append(Path(str(args["bundle"])))
        for record in store.list_runs(limit=500, operation="upgrade.plan"):
            if (record.get("args") or {}).get("releases"):
                folders.append(Path(str(record["args"]["releases"])))
    finally:
        store.close()
    folders.append(config.home() / "bundles")
    for folder in folders:
        if folder.is_dir():
            files.extend(sorted(folder.glob(f"spse-{version}*.tar.gz")))
    seen: set[Path] = set()
    for path in files:
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        try:
            if bundle.verify(path, keys).version == version:
                return str(path)
        except bundle.BundleError:
            continue
    raise OperationRefused(f"{site} runs SPSE {version}, and no bundle of it signed by a key in {keys} is known "
                           "here (installs, upgrade plans' release folders, <home>/bundles): the drill cannot "
                           "reinstall the site")


INJECT: dict[str, Callable[[str, Shell, dict[str, Any]], Injected]] = {
    "ransomware": ransomware, "server-lost": server_lost}
