"""A bundle's chain of custody: the strict reader both sides use, and the site's unpack (issue 22, item 3).

The site half runs here for real (root, OpenSSL, a temporary base folder): the same code that
``lpse-backup release-unpack`` runs on a site.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from lpse_ops import bundle as b
from lpse_ops.site import release as r
from lpse_ops.site.errors import Failure
from tests.unit.test_bundle import Release, edit_manifest, entry, make_source, member, private_key, rejected, tampered


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    root = tmp_path_factory.mktemp("custody")
    key_id = b.keygen(root / "keys" / "release.key", root / "keys" / "release.pub", "test release key")
    trusted = root / "trusted"
    trusted.mkdir()
    (trusted / "release.pub").write_bytes((root / "keys" / "release.pub").read_bytes())
    source = make_source(root)
    return Release(root, source, root / "keys" / "release.key", trusted, key_id,
                   b.build(source, root / "keys" / "release.key", root / "out"))


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the site's unpack sets owners: it runs as root")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def keys_of(release: Release) -> dict[str, bytes]:
    return r.trusted_keys(b.trusted_key_texts(release.trusted))


# ------------------------------------------------------------------ what the reader refuses


def test_a_member_hidden_after_the_end_of_the_archive_is_refused(release: Release, tmp_path: Path) -> None:
    raw = gzip.decompress(release.bundle.read_bytes())
    hidden = io.BytesIO()
    with tarfile.open(fileobj=hidden, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("payload/lib/ext")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc"
        tar.addfile(info)
    crafted = tmp_path / "spse-1.1.tar.gz"
    crafted.write_bytes(gzip.compress(raw + hidden.getvalue()))
    # GNU tar, told to read past zero blocks (as some unpackers do), finds the link our reader never sees
    listing = subprocess.run(["tar", "--list", "--ignore-zeros", "--gzip", "--file", str(crafted)],
                             capture_output=True, text=True, check=True).stdout.split()
    assert "payload/lib/ext" in listing
    assert "data follows the end of the archive" in rejected(crafted, release)


def test_a_folder_the_manifest_does_not_sign_is_refused(release: Release, tmp_path: Path) -> None:
    path = tampered(release, tmp_path, lambda ms: ms.append(entry("payload/ext", kind=tarfile.DIRTYPE)))
    assert "payload/ext: a folder not listed in the manifest (added after signing)" in rejected(path, release)


def test_a_world_writable_folder_is_refused(release: Release, tmp_path: Path) -> None:
    def widen(members: list) -> None:
        member(members, "payload/lib")[0].mode = 0o777

    assert "payload/lib: mode 0777 differs from the manifest's 0755" in rejected(tampered(release, tmp_path, widen),
                                                                                 release)


def test_a_pax_header_a_bundle_never_has_is_refused(release: Release, tmp_path: Path) -> None:
    def add_header(members: list) -> None:
        member(members, "payload/lib/spse.jar")[0].pax_headers = {"linkpath": "/etc/shadow"}

    assert "PAX header(s) ['linkpath']" in rejected(tampered(release, tmp_path, add_header), release)


def test_a_member_not_owned_by_root_is_refused(release: Release, tmp_path: Path) -> None:
    def chown(members: list) -> None:
        member(members, "payload/bin/start.sh")[0].uid = 1000

    assert "owned by 1000:0, not root" in rejected(tampered(release, tmp_path, chown), release)


def test_the_manifest_must_come_first(release: Release, tmp_path: Path) -> None:
    def move(members: list) -> None:
        members.append(members.pop(0))

    assert "no manifest.json as its first entry (found 'manifest.sig')" in rejected(
        tampered(release, tmp_path, move), release)


def test_a_format_1_bundle_is_refused_with_how_to_rebuild(release: Release, tmp_path: Path) -> None:
    def old(data: dict) -> None:
        data["format"] = 1
        del data["directories"]

    key = private_key(release.key)
    text = rejected(tampered(release, tmp_path, lambda ms: edit_manifest(ms, key, old)), release)
    assert "format 1: this lpse-ops reads format 2" in text and "lpse-ops bundle build" in text


def test_verify_returns_the_sha256_of_the_bytes_it_read(release: Release) -> None:
    manifest, digest = b.verify_digest(release.bundle, release.trusted)
    assert manifest.version == "1.1" and digest == sha256(release.bundle)


def test_the_site_reads_the_same_key_id_from_the_openssh_line(release: Release) -> None:
    assert list(keys_of(release)) == [release.key_id]


# ------------------------------------------------------------------ the site's unpack


@pytest.fixture
def base(tmp_path: Path) -> Path:
    folder = tmp_path / "spse"
    (folder / "releases").mkdir(parents=True)
    return folder


@needs_root
def test_unpack_writes_exactly_the_signed_tree_and_keeps_the_signed_manifest(release: Release, base: Path) -> None:
    done = r.unpack(str(release.bundle), sha256(release.bundle), "1.1", str(base), keys_of(release))
    assert done["ok"] and done["unpacked"] and done["files"] == 4
    target = base / "releases" / "1.1"
    assert (target / "lib" / "spse.jar").read_bytes() == (release.source / "payload" / "lib" / "spse.jar").read_bytes()
    assert oct((target / "bin" / "start.sh").stat().st_mode & 0o777) == "0o755"
    assert (target / "empty").is_dir() and oct((target / "lib").stat().st_mode & 0o777) == "0o755"
    assert os.listdir(base / "releases") == ["1.1"]  # no staging folder left
    with tarfile.open(release.bundle) as tar:
        assert (base / "manifests" / "1.1.json").read_bytes() == tar.extractfile("manifest.json").read()
    again = r.unpack(str(release.bundle), sha256(release.bundle), "1.1", str(base), keys_of(release))
    assert again["ok"] and not again["unpacked"] and not again["manifest_kept"]


@needs_root
def test_bytes_changed_after_verification_are_never_unpacked(release: Release, base: Path, tmp_path: Path) -> None:
    verified = sha256(release.bundle)
    swapped = tampered(release, tmp_path, lambda ms: ms.append(entry("payload/lib/extra.jar", b"x")))
    with pytest.raises(Failure) as caught:
        r.unpack(str(swapped), verified, "1.1", str(base), keys_of(release))
    assert caught.value.code == "bundle_sha256_mismatch"
    assert f"not {verified}, the sha256 the control node verified" in caught.value.message
    assert os.listdir(base / "releases") == []


@needs_root
def test_a_bundle_whose_payload_fails_midway_leaves_nothing_behind(release: Release, base: Path,
                                                                  tmp_path: Path) -> None:
    def corrupt(members: list) -> None:
        jar = member(members, "payload/lib/spse.jar")
        jar[1] = b"X" + jar[1][1:]

    bad = tampered(release, tmp_path, corrupt)
    with pytest.raises(Failure) as caught:
        r.unpack(str(bad), sha256(bad), "1.1", str(base), keys_of(release))
    assert caught.value.code == "bundle_refused" and "payload/lib/spse.jar: sha256 mismatch" in caught.value.message
    assert os.listdir(base / "releases") == [] and not (base / "manifests").exists()


@needs_root
def test_the_site_checks_the_signature_itself(release: Release, base: Path, tmp_path: Path) -> None:
    def alter(members: list) -> None:
        raw = member(members, "manifest.json")[1]
        member(members, "manifest.json")[1] = raw.replace(b'"health_path": "/health"', b'"health_path": "/healtx"')

    forged = tampered(release, tmp_path, alter)
    with pytest.raises(Failure) as caught:
        r.unpack(str(forged), sha256(forged), "1.1", str(base), keys_of(release))
    assert "signature does not match" in caught.value.message
    other = tmp_path / "other"
    b.keygen(other / "o.key", other / "o.pub", "someone else")
    with pytest.raises(Failure) as caught:
        r.unpack(str(release.bundle), sha256(release.bundle), "1.1", str(base),
                 r.trusted_keys([(other / "o.pub").read_text()]))
    assert f"signed by key '{release.key_id}', which is not among the trusted keys" in caught.value.message
    assert os.listdir(base / "releases") == []


@needs_root
def test_a_release_changed_on_disk_fails_against_the_signed_manifest(release: Release, base: Path) -> None:
    digest = sha256(release.bundle)
    r.unpack(str(release.bundle), digest, "1.1", str(base), keys_of(release))
    target = base / "releases" / "1.1"
    (target / "lib" / "spse.jar").write_bytes(b"X" + (target / "lib" / "spse.jar").read_bytes()[1:])
    (target / "lib" / "planted.jar").write_bytes(b"x")
    (target / "migrations").chmod(0o777)
    (target / "bin" / "start.sh").unlink()
    with pytest.raises(Failure) as caught:
        r.unpack(str(release.bundle), digest, "1.1", str(base), keys_of(release))
    assert caught.value.code == "release_differs"
    problems = json.loads(caught.value.detail)  # the same comparison the audit's spse-release-integrity uses
    assert problems == ["missing: bin/start.sh", "mode mismatch: migrations/ (777, manifest 755)",
                        "not in manifest: lib/planted.jar", "sha256 mismatch: lib/spse.jar"]


@needs_root
def test_check_mode_changes_nothing(release: Release, base: Path) -> None:
    done = r.unpack(str(release.bundle), sha256(release.bundle), "1.1", str(base), keys_of(release), check=True)
    assert done["ok"] and not done["unpacked"] and not done["release_present"]
    assert os.listdir(base / "releases") == [] and not (base / "manifests").exists()
