"""A bundle's chain of custody on the lab's real site (issue 22, item 3): the bytes a site unpacks are the
bytes the control node verified, unpacked by the reader that verified them, and the tree on disk is judged
against the signed manifest. The release step (roles/spse/tasks/release.yml) runs through plain
``ansible-playbook`` as install and upgrade run it. Site: site1 of the test lab."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.lab.labkit import container_of, on_site

PROJECT = Path(__file__).resolve().parents[2]
BASE = "/opt/spse"
PLAY = """\
- name: The release step of install and upgrade, alone
  hosts: site1
  become: true
  gather_facts: false
  tasks:
    - name: Unpack and check the release
      ansible.builtin.include_role:
        name: spse
        tasks_from: release
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def trusted_texts(release) -> list[str]:
    return [path.read_text() for path in sorted(release["trusted"].glob("*.pub"))]


def release_step(tmp_path: Path, bundle: Path, version: str, digest: str, keys: list[str]):
    """Run the spse role's release step on site1 with plain ansible-playbook; return the finished process."""
    from lpse_ops.lab import lab as lab_actions

    playbook = tmp_path / "release-step.yml"
    playbook.write_text(PLAY)
    extra = tmp_path / "release-vars.json"
    extra.write_text(json.dumps({"spse_bundle": str(bundle), "spse_version": version, "spse_bundle_sha256": digest,
                                 "spse_trusted_keys": keys}))
    # JSON results: a failure's message on one line, as AWX reads it
    env = {**os.environ, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(PROJECT / "roles"),
           "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(["ansible-playbook", "-i", str(lab_actions.inventory_path()), str(playbook),
                           "-e", f"@{extra}"], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=900,
                          check=False)


def site_state(version: str) -> dict:
    """What the release step may change: the bundle on the site, the release folders, the kept manifests."""
    return {"bundle": on_site(f"sha256sum {BASE}/bundles/spse-{version}.tar.gz || true").split(" ")[0],
            "releases": on_site(f"ls -A {BASE}/releases"), "manifests": on_site(f"ls -A {BASE}/manifests || true"),
            "etc": on_site("ls -la --time-style=+%s /etc | sha256sum")}


@pytest.fixture
def current(installed, release) -> str:
    version = on_site(f"basename $(readlink -f {BASE}/current)").strip()
    if version not in release["bundles"]:
        pytest.fail(f"site1 runs SPSE {version}, for which this test has no bundle (it needs 1.0 or 1.1)")
    return version


def test_a_signed_bundle_swapped_in_after_verification_never_reaches_the_site(release, current, tmp_path):
    """The control node verified bundle A (its sha256 goes to the site); the file is then replaced by B, a
    genuinely signed bundle of another release (a downgrade or side-grade by swapping files): refused."""
    genuine = release["bundles"][current]
    other = next(path for version, path in release["bundles"].items() if version != current)
    swapped = tmp_path / genuine.name
    swapped.write_bytes(other.read_bytes())
    before = site_state(current)
    done = release_step(tmp_path, swapped, current, sha256(genuine), trusted_texts(release))
    assert done.returncode != 0, done.stdout[-3000:]
    assert "failed to validate" in done.stdout, done.stdout[-3000:]  # the copy's sha256 check, on the site
    assert site_state(current) == before
    # the verified bytes themselves pass, and the live release matches its signed manifest: nothing changes
    again = release_step(tmp_path, genuine, current, sha256(genuine), trusted_texts(release))
    assert again.returncode == 0, again.stdout[-3000:]
    assert re.search(r"site1\s*:.*changed=0", again.stdout), again.stdout[-1500:]
    kept = on_site(f"cat {BASE}/manifests/{current}.json")
    with tarfile.open(genuine) as tar:
        assert kept == tar.extractfile("manifest.json").read().decode()


def test_a_bundle_gnu_tar_reads_differently_is_refused_before_anything_is_unpacked(release, current, tmp_path):
    """A signed bundle with a link ``payload/lib/ext -> /etc`` hidden after the end-of-archive blocks: GNU tar
    (asked to read past them) unpacks it; the site tool, reading as the control node does, refuses it."""
    bundle = release["bundles"]["1.1"]
    hidden = io.BytesIO()
    with tarfile.open(fileobj=hidden, mode="w", format=tarfile.PAX_FORMAT) as tar:
        link = tarfile.TarInfo("payload/lib/ext")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        tar.addfile(link)
    crafted = tmp_path / "crafted.tar.gz"
    crafted.write_bytes(gzip.compress(gzip.decompress(bundle.read_bytes()) + hidden.getvalue()))
    subprocess.run(["docker", "cp", str(crafted), f"{container_of('site1')}:/root/crafted.tar.gz"], check=True)
    assert "payload/lib/ext" in on_site("tar --list --ignore-zeros --gzip --file /root/crafted.tar.gz")
    before = site_state(current)
    done = subprocess.run(["docker", "exec", "-i", container_of("site1"), "timeout", "300", "lpse-backup",
                           "release-unpack", "--bundle", "/root/crafted.tar.gz", "--sha256", sha256(crafted),
                           "--version", "1.1", "--base", BASE],
                          input=json.dumps({"trusted_keys": trusted_texts(release)}), capture_output=True, text=True,
                          timeout=400, check=False)
    result = json.loads(done.stdout)
    assert not result["ok"] and result["code"] == "bundle_refused", result
    assert "data follows the end of the archive" in result["error"], result
    assert site_state(current) == before
    assert on_site(f"find {BASE}/releases -maxdepth 1 -name '.*unpacking*'") == ""
    assert on_site(f"find {BASE} -type l -name ext") == ""


def test_a_release_file_changed_on_the_site_fails_the_release_step_naming_it(release, current, tmp_path):
    genuine = release["bundles"][current]
    target = f"{BASE}/releases/{current}/VERSION"
    on_site(f"cp -a {target} /root/VERSION.orig && printf 'tampered\\n' >> {target}")
    try:
        done = release_step(tmp_path, genuine, current, sha256(genuine), trusted_texts(release))
        assert done.returncode != 0, done.stdout[-3000:]
        assert "does not match the signed manifest" in done.stdout and "size mismatch: VERSION" in done.stdout, \
            done.stdout[-3000:]
    finally:
        on_site(f"cp -a /root/VERSION.orig {target}")
    assert release_step(tmp_path, genuine, current, sha256(genuine), trusted_texts(release)).returncode == 0
