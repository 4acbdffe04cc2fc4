"""Docker engine backend: builds argv tuples for the ``docker`` client and runs them with shell=False."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class DockerError(Exception):
    """A docker command failed; the message says what to do."""


@dataclass(frozen=True)
class Completed:
    """The outcome of one docker command."""

    returncode: int
    stdout: str
    stderr: str


def docker_binary() -> str:
    """Return the docker client path, or raise DockerError saying how to install it."""
    path = shutil.which("docker")
    if not path:
        raise DockerError(
            "the docker client is not installed: run `bash scripts/setup.sh` (installs docker.io) "
            "or `apt-get install docker.io`"
        )
    return path


def run(*args: str, check: bool = True, input_bytes: bytes | None = None, timeout: float = 600) -> Completed:
    """Run ``docker ARGS`` and return its output; raise DockerError on failure when *check*."""
    argv = (docker_binary(), *args)
    proc = subprocess.run(argv, input=input_bytes, capture_output=True, timeout=timeout, check=False)
    done = Completed(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))
    if check and done.returncode != 0:
        raise DockerError(f"`docker {' '.join(args[:3])} ...` failed: {done.stderr.strip() or done.stdout.strip()}")
    return done


def engine_running() -> bool:
    """Return True when a Docker engine answers on the default socket."""
    try:
        return run("info", "--format", "{{.ServerVersion}}", check=False, timeout=20).returncode == 0
    except (DockerError, subprocess.TimeoutExpired):
        return False


def ensure_engine(log_path: Path, wait_s: float = 60) -> str:
    """Make sure a Docker engine runs, starting ``dockerd`` ourselves when there is no systemd.

    Returns a short description of what was done. Raises DockerError with the next step when the
    engine is missing or will not start.
    """
    docker_binary()
    if engine_running():
        return "docker engine already running"
    dockerd = shutil.which("dockerd") or ("/usr/sbin/dockerd" if Path("/usr/sbin/dockerd").exists() else None)
    if not dockerd:
        raise DockerError(
            "no Docker engine is running and dockerd is not installed: run `bash scripts/setup.sh` "
            "(or `apt-get install docker.io`), then retry"
        )
    if os.geteuid() != 0:
        raise DockerError("the Docker engine is not running and starting it needs root: run `sudo dockerd &`")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            (dockerd,), stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if engine_running():
            return f"started dockerd (log: {log_path})"
        time.sleep(1)
    raise DockerError(f"dockerd did not come up within {wait_s:.0f}s: read {log_path} for the reason")


def image_exists(tag: str) -> bool:
    """Return True when the image *tag* is present locally."""
    return run("image", "inspect", tag, check=False).returncode == 0


def containers(label: str) -> list[dict]:
    """Return ``docker ps -a`` rows (as dicts) for containers carrying *label* (``key=value``)."""
    done = run("ps", "-a", "--filter", f"label={label}", "--format", "{{json .}}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def inspect(name: str) -> dict | None:
    """Return ``docker inspect`` of one object, or None when it does not exist."""
    done = run("inspect", name, check=False)
    if done.returncode != 0:
        return None
    data = json.loads(done.stdout)
    return data[0] if data else None


def exec_in(container: str, *argv: str, check: bool = True, user: str | None = None,
            input_bytes: bytes | None = None, timeout: float = 600) -> Completed:
    """Run *argv* inside *container* (``docker exec``)."""
    args: list[str] = ["exec"]
    if input_bytes is not None:
        args.append("-i")
    if user:
        args += ["--user", user]
    return run(*args, container, *argv, check=check, input_bytes=input_bytes, timeout=timeout)


def write_file(container: str, path: str, content: bytes, mode: str = "0644", owner: str = "root:root") -> None:
    """Write *content* to *path* inside *container* with the given mode and owner."""
    script = f'umask 077; mkdir -p "$(dirname {path})"; cat > {path}; chmod {mode} {path}; chown {owner} {path}'
    exec_in(container, "sh", "-c", script, input_bytes=content)
