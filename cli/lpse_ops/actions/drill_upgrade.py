"""The failed-upgrade drill's fault (issue 9; runbooks/failed-upgrade.md), plugged into ``lpse-ops drill run``
(:mod:`lpse_ops.actions.drill`).

The fault is a real upgrade of the site to a release that breaks: ``lpse-ops upgrade run --to VERSION
--limit SITE`` with the drill's ``--releases`` folder (in the lab, a bad reference release from ``lpse-ops
bundle reference --bad migration-fails-halfway``), run as a child of the drill (``LPSE_OPS_PARENT_RUN``: it
works under the drill's site lock and is recorded under it), without notices (a drill is not a maintenance
window). The upgrade's own rescue is the first half of the recovery; the runbook is the rest.

The moments: the **fault** (RTO's start) is the moment the upgrade run starts: from then on the site holds
writes. The RPO is measured against every write the site acknowledged **until the upgrade returned**: a
write acknowledged during the upgrade and then lost with the database's rollback to the checkpoint is a
loss (the target is 0: writes are held before the checkpoint). Verification adds one check to the drill's:
the site serves the version it ran before the upgrade (``verify-version``).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCENARIO = "failed-upgrade"
DESCRIPTION = ("a real upgrade to a release that breaks (--to, --releases: in the lab `lpse-ops bundle reference "
               "--bad migration-fails-halfway`); the upgrade's own rollback, then the runbook")
UPGRADE_TIMEOUT_S = 3600.0
FAILED_OUTCOMES = ("rolled_back", "rollback_failed", "failed_before_change")


@dataclass(frozen=True)
class UpgradeFault:
    """What the drill needs to break the site with an upgrade."""

    to_version: str
    releases: Path
    trusted_keys: Path | None = None


@dataclass
class Injected:
    """The upgrade as it ran: its rollout id, the site's outcome and record, when it started and returned."""

    started_at: datetime
    returned_at: datetime
    rollout: int
    outcome: str
    record: dict[str, Any]
    exit_code: int

    def describe(self) -> str:
        return (f"upgrade to a breaking release: rollout {self.rollout}, outcome {self.outcome}, failed step "
                f"{self.record.get('failed_step')}: {str(self.record.get('reason') or '')[:200]}")


def refusal(fault: UpgradeFault | None) -> str | None:
    """Why the drill cannot break the site with *fault*, or None (pure but for the folder's existence)."""
    if fault is None or not fault.to_version:
        return ("a failed-upgrade drill needs --to VERSION and --releases DIR: a folder with the release that breaks "
                "and those on the way to it (in the lab: spse-1.1.tar.gz and what `lpse-ops bundle reference --bad "
                "migration-fails-halfway --out DIR` builds, 1.2.1)")
    if not fault.releases.is_dir() or not any(fault.releases.glob("spse-*.tar.gz")):
        return f"--releases {fault.releases}: no folder of signed bundles (spse-*.tar.gz)"
    return None


def upgrade_argv(site: str, inventory: Path, fault: UpgradeFault) -> list[str]:
    """The upgrade the drill runs as its fault (pure)."""
    argv = ["upgrade", "run", "--to", fault.to_version, "--releases", str(fault.releases), "--limit", site,
            "-i", str(inventory), "--canary", "1", "--wave-size", "100%", "--no-notice", "--yes", "--json"]
    if fault.trusted_keys is not None:
        argv += ["--trusted-keys", str(fault.trusted_keys)]
    return argv


def site_outcome(report: dict[str, Any], site: str) -> tuple[str, dict[str, Any]]:
    """The site's outcome and record in an ``upgrade run --json`` report (pure)."""
    for wave in report.get("waves") or []:
        for entry in wave.get("sites") or []:
            if entry.get("host") == site:
                return str(entry.get("outcome")), dict(entry.get("record") or {})
    return "not_started", {}


def inject(site: str, inventory: Path, fault: UpgradeFault, parent_run: int, cli: list[str]) -> Injected:
    """Run the breaking upgrade; raise RuntimeError when it did not break the site the way a drill needs."""
    env = dict(os.environ, LPSE_OPS_PARENT_RUN=str(parent_run), LPSE_OPS_INVENTORY=str(inventory))
    started = datetime.now(UTC)
    try:
        done = subprocess.run([*cli, *upgrade_argv(site, inventory, fault)], capture_output=True, text=True,
                              env=env, stdin=subprocess.DEVNULL, timeout=UPGRADE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"the upgrade did not return within {UPGRADE_TIMEOUT_S:.0f} s") from error
    returned = datetime.now(UTC)
    try:
        report = json.loads(done.stdout or "{}")
    except ValueError:
        report = {}
    if done.returncode == 0:
        raise RuntimeError(f"the upgrade to {fault.to_version} succeeded: that release does not break, so this is "
                           "no failed-upgrade drill (roll the site back by hand: lpse-ops upgrade rollback)")
    if not report.get("run_id"):
        raise RuntimeError(f"the upgrade was refused (exit {done.returncode}), the site untouched: "
                           f"{(done.stderr or done.stdout).strip()[-600:]}")
    outcome, record = site_outcome(report, site)
    if outcome not in FAILED_OUTCOMES:
        raise RuntimeError(f"the upgrade ended with {site} {outcome} (exit {done.returncode}), not a failed upgrade")
    return Injected(started, returned, int(report["run_id"]), outcome, record, done.returncode)


def decide(injected: Injected | None):
    """The drill's answer to an ``on_failure=ask`` step, as the runbook tells the operator to answer.

    ``rollback-upgrade`` is refused ("nothing to roll back to") when the upgrade's own rescue already rolled
    the site back: the runbook says to continue then. Any other failure stops the drill.
    """

    def answer(step: Any, outcome: Any) -> bool:
        return (injected is not None and injected.outcome == "rolled_back" and step.id == "rollback-upgrade"
                and "nothing to roll back to" in (outcome.output_tail or ""))

    return answer
