"""ansible-runner backend (AWX's engine): runs a playbook of this project and streams its events."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lpse_ops import config

ARTIFACTS_KEPT = 200


@dataclass
class PlaybookRun:
    """What ansible-runner reported: status, return code and the artifact folder."""

    ident: str
    status: str
    rc: int
    artifact_dir: str


def runner_dir() -> Path:
    """Return ansible-runner's private data folder (its artifacts/ holds one folder per run)."""
    path = config.home() / "runner"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_playbook(playbook: str, inventory: Path, on_event: Callable[[dict], None], *, limit: str | None = None,
                 extravars: dict | None = None, check: bool = False, forks: int = 10) -> PlaybookRun:
    """Run ``playbooks/<playbook>`` against *inventory*, calling *on_event* for every runner event.

    Secrets never travel in *extravars* (ansible-runner writes them to disk): they come from the
    inventory's vault files or the environment.
    """
    import ansible_runner

    ident = f"{Path(playbook).stem}-{uuid.uuid4().hex[:10]}"
    bin_dir = str(Path(sys.executable).parent)
    envvars = {
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ANSIBLE_CONFIG": str(config.PROJECT_DIR / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(config.PROJECT_DIR / "roles"),
        "ANSIBLE_FORCE_COLOR": "0",
    }
    vault_file = os.environ.get("LPSE_OPS_VAULT_PASSWORD_FILE")
    cmdline = ["--forks", str(forks)]
    if vault_file:
        cmdline += ["--vault-password-file", vault_file]
    if check:
        cmdline.append("--check")

    def handler(event: dict) -> bool:
        on_event(event)
        return True

    runner = ansible_runner.run(
        private_data_dir=str(runner_dir()), project_dir=str(config.PROJECT_DIR), ident=ident,
        playbook=str(config.PROJECT_DIR / "playbooks" / playbook), inventory=str(inventory.resolve()),
        limit=limit, extravars=extravars or {}, envvars=envvars, cmdline=" ".join(cmdline),
        rotate_artifacts=ARTIFACTS_KEPT, quiet=True, event_handler=handler,
    )
    return PlaybookRun(ident=ident, status=runner.status, rc=runner.rc, artifact_dir=str(runner.config.artifact_dir))
