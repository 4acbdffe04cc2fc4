"""Build the lab's Debian 12 base image with debootstrap, cached by a content hash of its recipe."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from lpse_ops.backends import docker

SUITE = "bookworm"
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "sudo", "iproute2",
    "ca-certificates", "acl", "procps", "curl", "gnupg",
)
# Files laid over the debootstrapped tree. Host keys are made at first boot, per container.
OVERLAY: dict[str, str] = {
    "etc/systemd/system/ssh.service.d/keygen.conf": (
        "[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n"
    ),
    "etc/ssh/sshd_config.d/lpse-lab.conf": (
        "PasswordAuthentication no\nPermitRootLogin no\nKbdInteractiveAuthentication no\nUseDNS no\n"
    ),
    "etc/sudoers.d/lpse-admin": "lpse-admin ALL=(ALL:ALL) NOPASSWD: ALL\n",
    "etc/apt/apt.conf.d/99lpse-lab": 'APT::Install-Recommends "false";\nAcquire::Retries "3";\n',
}
# Downloaded into the image like the roles' packages, for the lab's own services: Debian's pebble, the ACME CA
# the offsite host runs (lab.setup_acme_ca), installed there only.
LAB_DOWNLOADS = ("pebble",)
RECIPE_VERSION = 2
IMAGE_REPOSITORY = "lpse-ops-base"


def role_packages(roles_dir: Path | None = None) -> list[str]:
    """Every Debian package a role installs (its ``__<role>_packages`` in ``vars/main.yml``), sorted.

    The image carries them downloaded, not installed: a role's ``apt`` task still installs each one for real
    (dpkg, maintainer scripts), without the download; the apt lists come with them, so a host brought up
    within the hour does not fetch them again (the roles' ``cache_valid_time``). ``{{ postgresql_version }}``
    is the site facts' default PostgreSQL version.
    """
    import yaml

    from lpse_ops.config import PROJECT_DIR

    roles = roles_dir or PROJECT_DIR / "roles"
    facts = yaml.safe_load((roles / "site" / "defaults" / "main.yml").read_text())
    names: set[str] = set()
    for vars_file in sorted(roles.glob("*/vars/main.yml")):
        listed = (yaml.safe_load(vars_file.read_text()) or {}).get(f"__{vars_file.parent.parent.name}_packages")
        for name in listed or []:
            names.add(str(name).replace("{{ postgresql_version }}", str(facts["site_pg_version"])))
    unresolved = sorted(name for name in names if "{" in name)
    if unresolved:
        raise RuntimeError(f"role packages with a template the lab image cannot resolve: {', '.join(unresolved)}")
    return sorted(names)


def recipe() -> dict:
    """Return everything that decides the image's content; its hash names the image."""
    return {"version": RECIPE_VERSION, "suite": SUITE, "variant": "minbase",
            "packages": list(PACKAGES), "overlay": OVERLAY,
            "downloaded": role_packages() + list(LAB_DOWNLOADS)}


def image_tag() -> str:
    """Return ``lpse-ops-base:<hash12>`` for the current recipe."""
    digest = hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()
    return f"{IMAGE_REPOSITORY}:{digest[:12]}"


def debian_sources(sources_dir: Path = Path("/etc/apt")) -> tuple[str, str]:
    """Return (mirror URL, deb822 sources text) from this machine's own apt configuration.

    The lab uses the same Debian mirror as the control machine, so nothing is hard-coded here.
    ``LPSE_OPS_DEBIAN_MIRROR`` overrides the mirror. Raises RuntimeError when none is found.
    """
    override = os.environ.get("LPSE_OPS_DEBIAN_MIRROR")
    listing = sources_dir / "sources.list.d"
    candidates = sorted(listing.glob("*.sources")) if listing.is_dir() else []
    for path in candidates:
        text = path.read_text(errors="replace")
        blocks = [b for b in re.split(r"\n\s*\n", text) if re.search(r"^URIs:", b, re.M)]
        debian = [b for b in blocks if re.search(r"^Suites:.*\bbookworm\b", b, re.M)]
        if debian:
            uris = re.findall(r"^URIs:\s*(\S+)", debian[0], re.M)
            mirror = override or uris[0]
            return mirror, "\n\n".join(debian) + "\n"
    legacy = sources_dir / "sources.list"
    if legacy.exists():
        match = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", legacy.read_text(), re.M)
        if match:
            mirror = override or match.group(1)
            return mirror, f"deb {mirror} bookworm main\n"
    if override:
        return override, f"deb {override} bookworm main\n"
    raise RuntimeError(
        "no Debian bookworm mirror found in /etc/apt: set LPSE_OPS_DEBIAN_MIRROR to your mirror's URL"
    )


def build(cache_dir: Path, progress: Callable[[str], None]) -> tuple[str, bool]:
    """Make sure the base image exists; return (tag, built_now).

    Two labs coming up at once (CI's two test streams) build it once: the second waits on a lock shared by
    every process of this machine, then finds the image. Raises RuntimeError with the next step when
    debootstrap is missing or fails.
    """
    tag = image_tag()
    if docker.image_exists(tag):
        return tag, False
    with open(Path(tempfile.gettempdir()) / "lpse-ops-lab-image.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if docker.image_exists(tag):
            return tag, False
        return _build(cache_dir, tag, progress), True


def _download_role_packages(rootfs: Path, log: Path) -> None:
    """Fetch the apt lists and every role package's .deb (with what it depends on) into *rootfs*'s apt cache."""
    resolv = rootfs / "etc/resolv.conf"
    link = os.readlink(resolv) if resolv.is_symlink() else None  # put back as it was, a link stays a link
    kept = resolv.read_bytes() if link is None and resolv.is_file() else None
    resolv.unlink(missing_ok=True)
    shutil.copyfile("/etc/resolv.conf", resolv)  # the chroot resolves the mirror's name as this machine does
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    try:
        with open(log, "ab") as handle:
            for argv in (("apt-get", "update"),
                         ("apt-get", "install", "--download-only", "--yes", "--no-install-recommends",
                          *role_packages(), *LAB_DOWNLOADS)):
                done = subprocess.run(("chroot", str(rootfs), *argv), stdout=handle, stderr=subprocess.STDOUT,
                                      env=env, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"{' '.join(argv[:2])} in the image failed (exit {done.returncode}): read {log}")
    finally:
        resolv.unlink(missing_ok=True)
        if link is not None:
            resolv.symlink_to(link)
        elif kept is not None:
            resolv.write_bytes(kept)
    shutil.rmtree(rootfs / "var/cache/apt/archives/partial", ignore_errors=True)
    (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)


def _build(cache_dir: Path, tag: str, progress: Callable[[str], None]) -> str:
    """Build image *tag* with debootstrap and import it; return the tag."""
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).exists():
        raise RuntimeError("debootstrap is not installed: run `bash scripts/setup.sh` or `apt-get install debootstrap`")
    if os.geteuid() != 0:
        raise RuntimeError("building the lab image with debootstrap needs root")
    mirror, sources = debian_sources()
    work = cache_dir / f"build-{tag.split(':')[1]}"
    if work.exists():
        shutil.rmtree(work)
    rootfs = work / "rootfs"
    rootfs.mkdir(parents=True)
    log = work.parent / f"debootstrap-{tag.split(':')[1]}.log"
    progress(f"building the base image {tag} with debootstrap (about a minute; log: {log})")
    with open(log, "wb") as handle:
        proc = subprocess.run(
            (debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs), mirror),
            stdout=handle, stderr=subprocess.STDOUT, check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"debootstrap failed (exit {proc.returncode}): read {log}")
    for relative, content in OVERLAY.items():
        target = rootfs / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    (rootfs / "etc/sudoers.d/lpse-admin").chmod(0o440)
    sources_file = rootfs / "etc/apt/sources.list.d/debian.sources"
    sources_file.write_text(sources)
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "etc/machine-id").write_text("")
    progress("downloading the roles' packages into the image (apt-get --download-only: installed by the roles)")
    _download_role_packages(rootfs, log)
    progress("importing the base image into the Docker engine")
    archive = work / "rootfs.tar"
    subprocess.run(("tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(archive), "."), check=True)
    docker.run("import", "--change", 'CMD ["/lib/systemd/systemd"]',
               "--message", json.dumps(recipe(), sort_keys=True)[:200], str(archive), tag, timeout=900)
    shutil.rmtree(work, ignore_errors=True)
    return tag
