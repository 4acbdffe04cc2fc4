"""Root shell commands on a site over OpenSSH, as Ansible reaches it (the drill's shell), and the documents'
consistency check run through it: argv and script builders, and the parser of what the check prints.
"""

from __future__ import annotations

import shlex
import subprocess
from typing import Any


class SiteShell:
    """Root shell commands on one site through OpenSSH with the inventory's connection settings, over one
    multiplexed connection (ControlMaster) kept for the drill: one handshake, not one per command."""

    def __init__(self, host: str, hostvars: dict[str, Any]) -> None:
        import tempfile

        from lpse_ops.site_facts import site_facts

        self.host = host
        self.facts = site_facts(hostvars)  # where the database and documents live on this site (not the lab's)
        self.control_dir = tempfile.mkdtemp(prefix="lpse-drill-ssh-")
        self.argv = ssh_argv(hostvars, f"{self.control_dir}/c")

    def run(self, script: str, timeout: float = 300.0, check: bool = True) -> str:
        """Run *script* with bash as root (sudo -n) and return its stdout; raise RuntimeError if it fails."""
        try:
            done = subprocess.run([*self.argv, f"sudo -n bash -c {shlex.quote(script)}"], capture_output=True,
                                  text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as error:
            raise RuntimeError(f"on {self.host}: no answer within {timeout:.0f} s") from error
        if check and done.returncode != 0:
            raise RuntimeError(f"on {self.host}: exit {done.returncode}: {(done.stderr or done.stdout).strip()[-400:]}")
        return done.stdout

    def sql(self, query: str, timeout: float = 120.0) -> str:
        return self.run(f"runuser -u postgres -- psql -d {shlex.quote(self.facts.db_name)} -AtX -v ON_ERROR_STOP=1 "
                        f"-c {shlex.quote(query)}", timeout).strip()

    def close(self) -> None:
        import shutil

        subprocess.run([*self.argv[:-1], "-O", "exit", self.argv[-1]], capture_output=True, timeout=30,
                       check=False)
        shutil.rmtree(self.control_dir, ignore_errors=True)


def ssh_argv(hostvars: dict[str, Any], control_path: str) -> list[str]:
    """The ``ssh`` argv (without the remote command) that reaches a host as Ansible would (pure)."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "ServerAliveInterval=15",
            "-o", "ControlMaster=auto", "-o", f"ControlPath={control_path}", "-o", "ControlPersist=300"]
    if hostvars.get("ansible_port"):
        argv += ["-p", str(hostvars["ansible_port"])]
    if hostvars.get("ansible_ssh_private_key_file"):
        argv += ["-i", str(hostvars["ansible_ssh_private_key_file"])]
    argv += shlex.split(f"{hostvars.get('ansible_ssh_common_args', '')} {hostvars.get('ansible_ssh_extra_args', '')}")
    address = str(hostvars.get("ansible_host") or "localhost")
    user = hostvars.get("ansible_user")
    return [*argv, f"{user}@{address}" if user else address]


def consistency_script(docs_dir: str, db_name: str) -> str:
    """Print every stored_path the database references whose file is missing or differs, then the count."""
    docs, db = shlex.quote(docs_dir), shlex.quote(db_name)
    return (f"cd {docs} && runuser -u postgres -- psql -d {db} -AtX -F ' ' "  # noqa: S608 - site facts, quoted
            "-c \"SELECT sha256, stored_path FROM documents\" | awk '{print $1 \"  \" $2}' "
            "| sha256sum --check --quiet 2>/dev/null | sed -n 's/: FAILED.*$//p'; "
            f"echo \"referenced $(runuser -u postgres -- psql -d {db} -AtX -c 'SELECT count(*) FROM documents')\"")


def consistency(shell: SiteShell) -> dict[str, Any]:
    """Every document the site's database references, checked against its sha256 (the restore's own rule)."""
    out = shell.run(consistency_script(shell.facts.spse_docs_dir, shell.facts.db_name), timeout=1800)
    lines = [line for line in out.splitlines() if line.strip()]
    referenced = next((int(line.split()[1]) for line in lines if line.startswith("referenced ")), None)
    bad = [line.strip() for line in lines if not line.startswith("referenced ")]
    return {"referenced": referenced, "not_matching": bad, "not_matching_count": len(bad)}
