"""Clauses 6.1.3 and 13.1: no secret reaches the run artifacts, the state store or the audit log.

Runs last in the lab session (the last of LATE_MODULES in conftest.py), after installs, backups, upgrades,
drills, hardening and access changes have run with the lab's real secrets.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def lab_secrets(home: Path) -> dict[str, str]:
    inventory = home / "lab" / "inventory"
    found = dict(yaml.safe_load((inventory / "group_vars" / "sites" / "secrets.yml").read_text()))
    for path in (inventory / "host_vars").glob("*/secrets.yml"):
        found.update({f"{path.parent.name}:{k}": v for k, v in yaml.safe_load(path.read_text()).items()})
    return {name: value for name, value in found.items() if "secret" in name or "pass" in name}


def test_no_secret_in_artifacts_state_or_audit_log(installed):
    home = Path(os.environ["LPSE_OPS_HOME"])
    secrets = lab_secrets(home)
    assert len(secrets) >= 3, secrets.keys()
    places = [p for p in (home / "runner").rglob("*") if p.is_file()] + [home / "state.db"]
    assert len(places) > 10
    leaks = [(name, str(place)) for place in places for name, value in secrets.items()
             if value.encode() in place.read_bytes()]
    assert not leaks, leaks


def test_no_secret_in_the_sites_journals_pgbackrest_logs_or_verification_records(backed_up):
    """Clause 6.1.3 on the site itself: after backups, verifies and restores have run."""
    from tests.lab.labkit import on_site

    secrets = lab_secrets(Path(os.environ["LPSE_OPS_HOME"]))
    dump = on_site("journalctl --no-pager -o cat; cat /var/log/pgbackrest/* 2>/dev/null; "
                   "cat /var/lib/lpse-backup/verify/*.json /var/lib/lpse-backup/manifests/*.json 2>/dev/null; "
                   "cat /var/log/postgresql/* 2>/dev/null")
    assert len(dump) > 10_000, "too little was read to prove anything"
    assert "pgbackrest" in dump and "verify" in dump
    leaks = [name for name, value in secrets.items() if value in dump]
    assert not leaks, leaks
