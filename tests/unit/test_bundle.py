"""The release-bundle contract: build, sign, verify (and every way verification must fail), show, keygen, CLI."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lpse_ops import bundle as b
from lpse_ops.commands.bundle import bundle as bundle_cli

FIXTURE_KEYS = Path(__file__).resolve().parents[1] / "fixtures" / "keys"

RELEASE_YML = """\
version: "1.1"
min_upgrade_from: "1.0"
migrations:
  - id: 0001_initial
    path: migrations/0001_initial.sql
    schema_version: 1
  - id: 0002_add_index
    path: migrations/0002_add_index.sql
    schema_version: 2
run:
  jar: lib/spse.jar
  health_path: /health
"""


def make_source(root: Path, release_yml: str = RELEASE_YML) -> Path:
    source = root / "src"
    (source / "payload" / "lib").mkdir(parents=True)
    (source / "payload" / "migrations").mkdir()
    (source / "payload" / "bin").mkdir()
    (source / "payload" / "empty").mkdir()
    (source / "release.yml").write_text(release_yml)
    (source / "payload" / "lib" / "spse.jar").write_bytes(b"PK\x03\x04 not really a jar " * 100)
    (source / "payload" / "migrations" / "0001_initial.sql").write_text("CREATE TABLE tender (id int);\n")
    (source / "payload" / "migrations" / "0002_add_index.sql").write_text("CREATE INDEX tender_id ON tender (id);\n")
    start = source / "payload" / "bin" / "start.sh"
    start.write_text("#!/bin/sh\nexec java -jar lib/spse.jar\n")
    start.chmod(0o750)
    return source


@dataclass
class Release:
    root: Path
    source: Path
    key: Path
    trusted: Path
    key_id: str
    bundle: Path


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    root = tmp_path_factory.mktemp("release")
    key_id = b.keygen(root / "keys" / "release.key", root / "keys" / "release.pub", "test release key")
    trusted = root / "trusted"
    trusted.mkdir()
    (trusted / "release.pub").write_bytes((root / "keys" / "release.pub").read_bytes())
    source = make_source(root)
    bundle = b.build(source, root / "keys" / "release.key", root / "out")
    return Release(root, source, root / "keys" / "release.key", trusted, key_id, bundle)


# ------------------------------------------------------------------ helpers to tamper with a bundle


Member = list[Any]  # [TarInfo, bytes | None]


def load(bundle: Path) -> list[Member]:
    members: list[Member] = []
    with tarfile.open(bundle, "r:gz") as tar:
        for info in tar.getmembers():
            handle = tar.extractfile(info) if info.isreg() else None
            members.append([info, handle.read() if handle else None])
    return members


def save(members: list[Member], path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(members: list[Member], name: str) -> Member:
    return next(item for item in members if item[0].name == name)


def entry(name: str, data: bytes | None = None, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o644
    info.linkname = linkname
    return [info, data]


def private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def resign(members: list[Member], key: Ed25519PrivateKey, raw: bytes) -> None:
    member(members, "manifest.json")[1] = raw
    member(members, "manifest.sig")[1] = base64.b64encode(key.sign(raw)) + b"\n"


def edit_manifest(members: list[Member], key: Ed25519PrivateKey, change: Any) -> None:
    data = json.loads(member(members, "manifest.json")[1])
    change(data)
    resign(members, key, b.manifest_bytes(data))


def tampered(release: Release, tmp_path: Path, change: Any) -> Path:
    members = load(release.bundle)
    change(members)
    return save(members, tmp_path / "spse-1.1.tar.gz")


def rejected(path: Path, release: Release) -> str:
    with pytest.raises(b.BundleError) as caught:
        b.verify(path, release.trusted)
    return str(caught.value)


# ------------------------------------------------------------------ versions


def test_parse_version_and_compare() -> None:
    assert b.parse_version("2.3.4") == (2, 3, 4)
    assert b.parse_version("0") == (0,)
    assert b.compare_versions("1.10", "1.9") == 1
    assert b.compare_versions("1.0", "1.1") == -1
    assert b.compare_versions("1.0", "1.0.0") == 0
    assert b.compare_versions("2.0", "1.99.99") == 1


@pytest.mark.parametrize("value", ["", "1.", ".1", "1..2", "v1.0", "1.0-rc1", "01.2", " 1.0", "1.0\n", 1.0, None])
def test_parse_version_rejects_non_dotted_integers(value: Any) -> None:
    with pytest.raises(ValueError, match="dotted integers"):
        b.parse_version(value)


# ------------------------------------------------------------------ build


def test_build_writes_contract_layout(release: Release) -> None:
    assert release.bundle.name == "spse-1.1.tar.gz"
    with tarfile.open(release.bundle, "r:gz") as tar:
        infos = tar.getmembers()
        names = [info.name for info in infos]
        raw = tar.extractfile("manifest.json").read()  # type: ignore[union-attr]
        signature = tar.extractfile("manifest.sig").read()  # type: ignore[union-attr]
    assert names[:3] == ["manifest.json", "manifest.sig", "payload"]
    assert {name.split("/")[0] for name in names} == {"manifest.json", "manifest.sig", "payload"}
    assert "payload/empty" in names
    assert all(info.uid == 0 and info.gid == 0 and info.uname == "" and info.gname == "" for info in infos)
    assert len({info.mtime for info in infos}) == 1
    assert all(info.isreg() or info.isdir() for info in infos)

    data = json.loads(raw)
    assert raw == b.manifest_bytes(data)  # keys sorted, as the builder writes it
    assert list(data) == sorted(data)
    assert data["format"] == 2 and data["product"] == "spse"
    assert data["version"] == "1.1" and data["min_upgrade_from"] == "1.0"
    assert data["key_id"] == release.key_id
    public = serialization.load_ssh_public_key((release.trusted / "release.pub").read_bytes())
    raw_public = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert data["key_id"] == hashlib.sha256(raw_public).hexdigest()[:16]
    paths = [item["path"] for item in data["files"]]
    assert paths == sorted(paths) == [
        "bin/start.sh", "lib/spse.jar", "migrations/0001_initial.sql", "migrations/0002_add_index.sql",
    ]
    files = {item["path"]: item for item in data["files"]}
    jar = (release.source / "payload" / "lib" / "spse.jar").read_bytes()
    assert files["lib/spse.jar"] == {
        "path": "lib/spse.jar", "sha256": hashlib.sha256(jar).hexdigest(), "size": len(jar), "mode": "0644",
        "owner": "root", "group": "root",
    }
    # every folder is signed too, with its mode and owner (the site creates exactly these)
    assert [(d["path"], d["mode"], d["owner"], d["group"]) for d in data["directories"]] == [
        (name, "0755", "root", "root") for name in ("bin", "empty", "lib", "migrations")]
    assert files["bin/start.sh"]["mode"] == "0755"  # modes normalised: any execute bit -> 0755
    assert [m["id"] for m in data["migrations"]] == ["0001_initial", "0002_add_index"]
    assert data["migrations"][1]["sha256"] == files["migrations/0002_add_index.sql"]["sha256"]
    assert data["run"] == {"jar": "lib/spse.jar", "health_path": "/health"}
    assert signature.count(b"\n") == 1 and len(base64.b64decode(signature)) == 64
    public.verify(base64.b64decode(signature), raw)  # type: ignore[union-attr]


def test_build_is_deterministic(release: Release, tmp_path: Path) -> None:
    again = b.build(release.source, release.key, tmp_path / "again")
    assert again.read_bytes() == release.bundle.read_bytes()
    assert hashlib.sha256(again.read_bytes()).hexdigest() == hashlib.sha256(release.bundle.read_bytes()).hexdigest()


def test_build_uses_source_date_epoch(release: Release, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    built = b.build(release.source, release.key, tmp_path)
    assert b.show(built)["created"] == "2023-11-14T22:13:20Z"
    with tarfile.open(built, "r:gz") as tar:
        assert {info.mtime for info in tar.getmembers()} == {1700000000}


@pytest.mark.parametrize(
    ("release_yml", "message"),
    [
        (RELEASE_YML.replace('"1.1"', "1.1"), 'version must be a quoted string like "1.0"'),
        (RELEASE_YML.replace('"1.1"', '"1.1-beta"'), "version: invalid version '1.1-beta'"),
        (RELEASE_YML.replace('min_upgrade_from: "1.0"', 'min_upgrade_from: "1.2"'),
         "min_upgrade_from 1.2 is newer than version 1.1"),
        (RELEASE_YML.replace("run:", "channel: stable\nrun:"), "unknown key(s) channel"),
        (RELEASE_YML.replace('version: "1.1"\n', ""), "missing required key 'version'"),
        (RELEASE_YML.replace("jar: lib/spse.jar", "jar: lib/other.jar"),
         "run.jar: payload/lib/other.jar does not exist"),
        (RELEASE_YML.replace("health_path: /health", "health_path: health"), "run.health_path must be an URL path"),
        (RELEASE_YML.replace("0002_add_index.sql", "0003_missing.sql"),
         "migration 0002_add_index: payload/migrations/0003_missing.sql does not exist"),
        (RELEASE_YML.replace("schema_version: 2", "schema_version: 1"),
         "schema_version 1 must be greater than the previous one (1)"),
        (RELEASE_YML.replace("path: migrations/0001_initial.sql", "path: ../etc/passwd"),
         "migrations[0].path must be a relative path inside payload/"),
        ("- just a list\n", "must be a mapping"),
        ("version: [unclosed\n", "invalid YAML"),
    ],
)
def test_build_rejects_bad_release_yml(release: Release, tmp_path: Path, release_yml: str, message: str) -> None:
    source = make_source(tmp_path, release_yml)
    with pytest.raises(b.BundleError) as caught:
        b.build(source, release.key, tmp_path / "out")
    assert message in str(caught.value)
    assert "release.yml" in str(caught.value)
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_build_rejects_missing_release_yml_and_payload(release: Release, tmp_path: Path) -> None:
    with pytest.raises(b.BundleError, match="release.yml not found"):
        b.build(tmp_path, release.key, tmp_path / "out")
    (tmp_path / "release.yml").write_text(RELEASE_YML)
    with pytest.raises(b.BundleError, match="put the release files under"):
        b.build(tmp_path, release.key, tmp_path / "out")
    with pytest.raises(b.BundleError, match="is not a directory"):
        b.build(tmp_path / "nope", release.key, tmp_path / "out")


def test_build_rejects_symlink_in_payload(release: Release, tmp_path: Path) -> None:
    source = make_source(tmp_path)
    (source / "payload" / "lib" / "link.jar").symlink_to("spse.jar")
    with pytest.raises(b.BundleError, match="payload/lib/link.jar is a symlink: bundles carry regular files only"):
        b.build(source, release.key, tmp_path / "out")


def test_build_rejects_unusable_private_keys(tmp_path: Path) -> None:
    source = make_source(tmp_path)
    with pytest.raises(b.BundleError, match="cannot read private key"):
        b.build(source, tmp_path / "missing.key", tmp_path / "out")
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key")
    with pytest.raises(b.BundleError, match="cannot load private key"):
        b.build(source, garbage, tmp_path / "out")


def test_encrypted_private_key_needs_passphrase(
    release: Release, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(b.PASSPHRASE_ENV, "correct horse")
    b.keygen(tmp_path / "enc.key", tmp_path / "enc.pub", "encrypted")
    assert b"ENCRYPTED" in (tmp_path / "enc.key").read_bytes()
    source = make_source(tmp_path)
    built = b.build(source, tmp_path / "enc.key", tmp_path / "out")
    assert b.show(built)["key_id"] == b.key_id(b.load_public_key(tmp_path / "enc.pub"))
    # an unencrypted key still loads while the passphrase is set
    b.build(source, release.key, tmp_path / "out2")
    monkeypatch.setenv(b.PASSPHRASE_ENV, "wrong")
    with pytest.raises(b.BundleError, match=f"check {b.PASSPHRASE_ENV}"):
        b.load_private_key(tmp_path / "enc.key")
    monkeypatch.delenv(b.PASSPHRASE_ENV)
    with pytest.raises(b.BundleError, match=f"is encrypted: set {b.PASSPHRASE_ENV}"):
        b.load_private_key(tmp_path / "enc.key")


# ------------------------------------------------------------------ keys


def test_keygen_writes_0600_private_and_openssh_public(tmp_path: Path) -> None:
    identifier = b.keygen(tmp_path / "k" / "site.key", tmp_path / "k" / "site.pub", "lkpp-release-2025")
    assert stat.S_IMODE((tmp_path / "k" / "site.key").stat().st_mode) == 0o600
    line = (tmp_path / "k" / "site.pub").read_text()
    assert line.startswith("ssh-ed25519 AAAA") and line.endswith(" lkpp-release-2025\n")
    assert b.key_id(b.load_public_key(tmp_path / "k" / "site.pub")) == identifier
    assert b.key_id(private_key(tmp_path / "k" / "site.key").public_key()) == identifier


def test_keygen_never_overwrites(tmp_path: Path) -> None:
    b.keygen(tmp_path / "a.key", tmp_path / "a.pub", "a")
    before = (tmp_path / "a.key").read_bytes()
    with pytest.raises(b.BundleError, match="already exists"):
        b.keygen(tmp_path / "a.key", tmp_path / "b.pub", "a")
    assert (tmp_path / "a.key").read_bytes() == before
    assert not (tmp_path / "b.pub").exists()


def test_fixture_public_keys_load_in_both_formats() -> None:
    openssh = b.load_public_key(FIXTURE_KEYS / "test-release.pub")
    pem = b.load_public_key(FIXTURE_KEYS / "test-release-pem.pub")
    assert b.key_id(openssh) == b.key_id(pem) == "737c5d6042848419"
    assert set(b.load_trusted_keys(FIXTURE_KEYS)) == {"737c5d6042848419"}
    assert not list(FIXTURE_KEYS.glob("*.key"))  # only public keys are committed


def test_verify_accepts_pem_trusted_key(release: Release, tmp_path: Path) -> None:
    public = b.load_public_key(release.trusted / "release.pub")
    (tmp_path / "lkpp.pub").write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert b.verify(release.bundle, tmp_path).key_id == release.key_id


def test_verify_rejects_bad_trusted_keys_dir(release: Release, tmp_path: Path) -> None:
    with pytest.raises(b.BundleError, match="trusted keys directory .* does not exist"):
        b.verify(release.bundle, tmp_path / "missing")
    (tmp_path / "broken.pub").write_text("ssh-ed25519 not-base64 x\n")
    with pytest.raises(b.BundleError, match="broken.pub is not readable .* or remove it from"):
        b.verify(release.bundle, tmp_path)


# ------------------------------------------------------------------ verify: accepted


def test_verify_accepts_good_bundle(release: Release, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_extraction(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("verify must never extract to disk")

    monkeypatch.setattr(tarfile.TarFile, "extract", no_extraction)
    monkeypatch.setattr(tarfile.TarFile, "extractall", no_extraction)
    manifest = b.verify(release.bundle, release.trusted)
    assert isinstance(manifest, b.Manifest)
    assert manifest.version == "1.1" and manifest.min_upgrade_from == "1.0" and manifest.format == 2
    assert manifest.key_id == release.key_id
    assert manifest.files_by_path()["lib/spse.jar"].mode == "0644"
    assert [m.schema_version for m in manifest.migrations] == [1, 2]
    assert manifest.schema_version == 2
    assert manifest.run == b.RunSpec(jar="lib/spse.jar", health_path="/health")
    assert manifest.to_dict() == json.loads(member(load(release.bundle), "manifest.json")[1])


def test_verify_accepts_first_release_with_equal_min_upgrade_from(release: Release, tmp_path: Path) -> None:
    source = make_source(tmp_path, RELEASE_YML.replace('"1.0"', '"1.1"'))
    assert b.verify(b.build(source, release.key, tmp_path / "out"), release.trusted).min_upgrade_from == "1.1"


# ------------------------------------------------------------------ verify: unreadable


def test_verify_not_gzip_rejected(release: Release, tmp_path: Path) -> None:
    path = tmp_path / "spse-1.1.tar.gz"
    path.write_bytes(b"this is not a bundle\n" * 20)
    assert "not a valid gzip tar" in rejected(path, release)


def test_verify_gzip_but_not_tar_rejected(release: Release, tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "spse-1.1.tar.gz"
    path.write_bytes(gzip.compress(b"\x01plain text, not tar" * 100))
    assert "not a valid gzip tar" in rejected(path, release)


def test_verify_truncated_bundle_rejected(release: Release, tmp_path: Path) -> None:
    path = tmp_path / "spse-1.1.tar.gz"
    data = release.bundle.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = rejected(path, release)
    assert "not a valid gzip tar" in message and "download the bundle again" in message


def test_verify_missing_bundle_file_rejected(release: Release, tmp_path: Path) -> None:
    assert "no such file" in rejected(tmp_path / "nope.tar.gz", release)
    assert "it is a directory" in rejected(tmp_path, release)


# ------------------------------------------------------------------ verify: unsafe members


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (entry("/etc/cron.d/evil", b"x"), "absolute path"),
        (entry("payload/../../evil", b"x"), "path contains '..'"),
        (entry("payload/lib/link.jar", kind=tarfile.SYMTYPE, linkname="/etc/shadow"), "a symlink"),
        (entry("payload/lib/hard.jar", kind=tarfile.LNKTYPE, linkname="payload/lib/spse.jar"), "a hardlink"),
        (entry("payload/dev/sda", kind=tarfile.BLKTYPE), "a device"),
        (entry("payload/dev/null", kind=tarfile.CHRTYPE), "a device"),
        (entry("payload/fifo", kind=tarfile.FIFOTYPE), "a FIFO"),
        (entry("payload/./lib/x", b"x"), "not normalised"),
        (entry("payload/lib/spse.jar", b"second copy"), "appears more than once"),
    ],
    ids=["absolute", "dotdot", "symlink", "hardlink", "block-device", "char-device", "fifo", "dot", "duplicate"],
)
def test_verify_unsafe_member_rejected(release: Release, tmp_path: Path, bad: Member, message: str) -> None:
    path = tampered(release, tmp_path, lambda members: members.append(bad))
    text = rejected(path, release)
    assert text.startswith(f"unsafe entry {bad[0].name!r} in the bundle")
    assert message in text and "do not install it" in text


def test_verify_unexpected_top_level_entry_rejected(release: Release, tmp_path: Path) -> None:
    path = tampered(release, tmp_path, lambda members: members.append(entry("install.sh", b"rm -rf /")))
    assert "unexpected entry 'install.sh'" in rejected(path, release)


# ------------------------------------------------------------------ verify: manifest and signature


def test_verify_missing_manifest_rejected(release: Release, tmp_path: Path) -> None:
    path = tampered(release, tmp_path, lambda ms: ms.remove(member(ms, "manifest.json")))
    assert "has no manifest.json" in rejected(path, release)


def test_verify_missing_signature_rejected(release: Release, tmp_path: Path) -> None:
    path = tampered(release, tmp_path, lambda ms: ms.remove(member(ms, "manifest.sig")))
    assert "has no manifest.sig after manifest.json" in rejected(path, release)


def test_verify_signature_not_base64_rejected(release: Release, tmp_path: Path) -> None:
    def change(members: list[Member]) -> None:
        member(members, "manifest.sig")[1] = b"!!! not base64 !!!\n"

    assert "manifest.sig is not valid base64" in rejected(tampered(release, tmp_path, change), release)


def test_verify_signature_wrong_length_rejected(release: Release, tmp_path: Path) -> None:
    def change(members: list[Member]) -> None:
        member(members, "manifest.sig")[1] = base64.b64encode(b"short") + b"\n"

    assert "not an ed25519 signature" in rejected(tampered(release, tmp_path, change), release)


def test_verify_unknown_key_rejected(release: Release, tmp_path: Path) -> None:
    other = tmp_path / "other"
    b.keygen(other / "o.key", other / "o.pub", "someone else")
    (other / "o.key").unlink()
    with pytest.raises(b.BundleError) as caught:
        b.verify(release.bundle, other)
    assert f"unknown key {release.key_id}: add its public key to {other} if you trust it" in str(caught.value)


def test_verify_unknown_key_in_empty_dir_rejected(release: Release, tmp_path: Path) -> None:
    with pytest.raises(b.BundleError, match=f"unknown key {release.key_id}: .* holds no \\*.pub keys"):
        b.verify(release.bundle, tmp_path)


def test_verify_altered_manifest_bad_signature_rejected(release: Release, tmp_path: Path) -> None:
    def change(members: list[Member]) -> None:
        data = json.loads(member(members, "manifest.json")[1])
        data["min_upgrade_from"] = "0.1"  # widen the upgrade path without re-signing
        member(members, "manifest.json")[1] = b.manifest_bytes(data)

    message = rejected(tampered(release, tmp_path, change), release)
    assert "signature does not match: the manifest was altered or signed by another key" in message


def test_verify_signed_by_other_key_claiming_trusted_id_rejected(release: Release, tmp_path: Path) -> None:
    intruder = Ed25519PrivateKey.generate()

    def change(members: list[Member]) -> None:
        raw = member(members, "manifest.json")[1].replace(b'"1.0"', b'"0.1"')
        resign(members, intruder, raw)  # key_id still names the trusted key

    message = rejected(tampered(release, tmp_path, change), release)
    assert "signature does not match: the manifest was altered or signed by another key" in message


def test_verify_invalid_json_manifest_rejected(release: Release, tmp_path: Path) -> None:
    key = private_key(release.key)
    path = tampered(release, tmp_path, lambda ms: resign(ms, key, b'{"format": 1, '))
    message = rejected(path, release)
    assert message.startswith("manifest.json is malformed: not valid UTF-8 JSON")


def _drop(field: str) -> Any:
    return lambda data: data.pop(field)


def _set(field: str, value: Any) -> Any:
    return lambda data: data.__setitem__(field, value)


def _unsorted(data: dict[str, Any]) -> None:
    data["files"].reverse()


def _not_increasing(data: dict[str, Any]) -> None:
    data["migrations"][1]["schema_version"] = 1


def _migration_not_in_files(data: dict[str, Any]) -> None:
    data["migrations"][0]["path"] = "migrations/0000_ghost.sql"


def _migration_sha_differs(data: dict[str, Any]) -> None:
    data["migrations"][0]["sha256"] = "0" * 64


def _extra_file_field(data: dict[str, Any]) -> None:
    data["files"][0]["uid"] = 0


def _unsafe_file_path(data: dict[str, Any]) -> None:
    data["files"].insert(0, {**data["files"][0], "path": "../escape"})


def _jar_not_in_files(data: dict[str, Any]) -> None:
    data["run"]["jar"] = "lib/missing.jar"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_drop("run"), "(top level): 'run' is a required property"),
        (_set("signed_by", "lkpp"), "Additional properties are not allowed ('signed_by' was unexpected)"),
        (_set("files", {"lib/spse.jar": {}}), "files: {'lib/spse.jar': {}} is not of type 'array'"),
        (_set("format", 1), "format 1: this lpse-ops reads format 2"),
        (_set("product", "sirup"), "product: 'spse' was expected"),
        (_set("version", "1.1-rc1"), "version: '1.1-rc1' does not match"),
        (_set("version", 11), "version: 11 is not of type 'string'"),
        (_set("created", "yesterday"), "created: 'yesterday' does not match"),
        (_set("min_upgrade_from", "1.2"), "min_upgrade_from 1.2 is newer than version 1.1"),
        (_not_increasing, "schema_version 1 is not greater than the previous one (1)"),
        (_migration_not_in_files, "migration 0001_initial: path migrations/0000_ghost.sql is not in files"),
        (_migration_sha_differs, "migration 0001_initial: sha256 differs from the files entry"),
        (_unsorted, "files are not sorted by path"),
        (_extra_file_field, "files/0: Additional properties are not allowed ('uid' was unexpected)"),
        (_unsafe_file_path, "files path '../escape' contains '..'"),
        (_jar_not_in_files, "run.jar lib/missing.jar is not in files"),
        (_set("size_float", 1.5), "non-integer number 1.5"),
        (lambda data: data["run"].__setitem__("health_path", "/health\n"), "run/health_path: control character"),
    ],
    ids=[
        "missing-field", "extra-field", "wrong-type", "format", "product", "bad-version", "version-number",
        "created", "min-upgrade-newer", "schema-not-increasing", "migration-not-in-files", "migration-sha",
        "unsorted", "extra-file-field", "unsafe-file-path", "jar-not-in-files", "float", "control-char",
    ],
)
def test_verify_malformed_manifest_rejected(release: Release, tmp_path: Path, change: Any, message: str) -> None:
    key = private_key(release.key)
    path = tampered(release, tmp_path, lambda members: edit_manifest(members, key, change))
    text = rejected(path, release)
    assert text.startswith("manifest.json is malformed: ")
    assert message in text
    assert "do not install it" in text


def test_verify_duplicate_json_key_rejected(release: Release, tmp_path: Path) -> None:
    key = private_key(release.key)

    def change(members: list[Member]) -> None:
        raw = member(members, "manifest.json")[1]
        resign(members, key, raw.replace(b'"version": "1.1"', b'"version": "1.1",\n  "version": "9.9"'))

    assert "duplicate key 'version'" in rejected(tampered(release, tmp_path, change), release)


# ------------------------------------------------------------------ verify: payload


def test_verify_tampered_payload_rejected(release: Release, tmp_path: Path) -> None:
    def change(members: list[Member]) -> None:
        jar = member(members, "payload/lib/spse.jar")
        jar[1] = b"X" + jar[1][1:]  # same size, different content

    message = rejected(tampered(release, tmp_path, change), release)
    assert message.startswith("payload/lib/spse.jar: sha256 mismatch (tampered or corrupt)")
    assert "do not install it" in message


def test_verify_payload_size_mismatch_rejected(release: Release, tmp_path: Path) -> None:
    def change(members: list[Member]) -> None:
        member(members, "payload/migrations/0001_initial.sql")[1] += b"DROP TABLE tender;\n"

    message = rejected(tampered(release, tmp_path, change), release)
    assert message.startswith("payload/migrations/0001_initial.sql: size mismatch")
    assert "(tampered or corrupt)" in message


def test_verify_unlisted_payload_file_rejected(release: Release, tmp_path: Path) -> None:
    path = tampered(release, tmp_path, lambda ms: ms.append(entry("payload/lib/backdoor.jar", b"evil")))
    assert "payload/lib/backdoor.jar: in the bundle but not listed in the manifest" in rejected(path, release)


def test_verify_listed_file_missing_rejected(release: Release, tmp_path: Path) -> None:
    path = tampered(release, tmp_path, lambda ms: ms.remove(member(ms, "payload/bin/start.sh")))
    assert "payload/bin/start.sh: listed in the manifest but missing from the bundle" in rejected(path, release)


def test_verify_payload_mode_change_rejected(release: Release, tmp_path: Path) -> None:
    def change(members: list[Member]) -> None:
        member(members, "payload/lib/spse.jar")[0].mode = 0o4755

    assert "payload/lib/spse.jar: mode 4755 differs from the manifest's 0644" in rejected(
        tampered(release, tmp_path, change), release
    )


# ------------------------------------------------------------------ show


def test_show_summarises_without_trust(release: Release, tmp_path: Path) -> None:
    intruder = Ed25519PrivateKey.generate()
    path = tampered(release, tmp_path, lambda ms: resign(ms, intruder, member(ms, "manifest.json")[1]))
    summary = b.show(path)
    assert summary["version"] == "1.1" and summary["verified"] is False
    assert summary["files"] == 4 and summary["migrations"] == ["0001_initial", "0002_add_index"]
    assert summary["schema_version"] == 2 and summary["key_id"] == release.key_id


def test_show_rejects_unsafe_and_malformed(release: Release, tmp_path: Path) -> None:
    path = tampered(release, tmp_path, lambda ms: ms.insert(0, entry("/abs", b"x")))
    with pytest.raises(b.BundleError, match="absolute path"):
        b.show(path)
    key = private_key(release.key)
    path = tampered(release, tmp_path, lambda ms: edit_manifest(ms, key, _drop("version")))
    with pytest.raises(b.BundleError, match="'version' is a required property"):
        b.show(path)


# ------------------------------------------------------------------ CLI


def assert_one_line_error(result: Any, needle: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], result.stderr
    assert result.stdout == ""


def test_cli_keygen_build_verify_show(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(bundle_cli, ["keygen", "--out-dir", str(tmp_path / "keys"), "--name", "lkpp"])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((tmp_path / "keys" / "lkpp.key").stat().st_mode) == 0o600
    assert (tmp_path / "keys" / "lkpp.pub").read_text().startswith("ssh-ed25519 ")
    identifier = b.key_id(b.load_public_key(tmp_path / "keys" / "lkpp.pub"))
    assert f"key id {identifier}" in result.stdout

    source = make_source(tmp_path)
    result = runner.invoke(
        bundle_cli, ["build", str(source), "--key", str(tmp_path / "keys" / "lkpp.key"), "--out", str(tmp_path / "out"),
                     "--json"],
    )
    assert result.exit_code == 0, result.output
    built = json.loads(result.stdout)
    bundle_path = tmp_path / "out" / "spse-1.1.tar.gz"
    assert built["bundle"] == str(bundle_path) and built["key_id"] == identifier
    assert built["sha256"] == hashlib.sha256(bundle_path.read_bytes()).hexdigest()

    result = runner.invoke(bundle_cli, ["verify", str(bundle_path), "--trusted-keys", str(tmp_path / "keys"), "--json"])
    assert result.exit_code == 0, result.output
    verified = json.loads(result.stdout)
    assert verified["verified"] is True and verified["version"] == "1.1" and verified["files"] == 4

    result = runner.invoke(bundle_cli, ["verify", str(bundle_path)], env={b.TRUSTED_KEYS_ENV: str(tmp_path / "keys")})
    assert result.exit_code == 0, result.output
    for text in ("1.1", "1.0", identifier, "0001_initial", "0002_add_index"):
        assert text in result.stdout

    result = runner.invoke(bundle_cli, ["show", str(bundle_path), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["verified"] is False
    result = runner.invoke(bundle_cli, ["show", str(bundle_path)])
    assert result.exit_code == 0 and "not verified" in result.stderr and identifier in result.stdout


def test_cli_verify_tampered_exits_1_with_one_line(release: Release, tmp_path: Path) -> None:
    def change(members: list[Member]) -> None:
        jar = member(members, "payload/lib/spse.jar")
        jar[1] = jar[1][::-1]

    path = tampered(release, tmp_path, change)
    for extra in ([], ["--json"]):
        result = CliRunner().invoke(bundle_cli, ["verify", str(path), "--trusted-keys", str(release.trusted), *extra])
        assert_one_line_error(result, "payload/lib/spse.jar: sha256 mismatch (tampered or corrupt)")


def test_cli_verify_unknown_key_and_no_trusted_dir(release: Release, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(bundle_cli, ["verify", str(release.bundle), "--trusted-keys", str(FIXTURE_KEYS)])
    assert_one_line_error(result, f"unknown key {release.key_id}: add its public key to {FIXTURE_KEYS} if you trust it")
    result = runner.invoke(bundle_cli, ["verify", str(release.bundle)], env={b.TRUSTED_KEYS_ENV: ""})
    assert_one_line_error(result, f"pass --trusted-keys DIR or set {b.TRUSTED_KEYS_ENV}")
    missing = str(tmp_path / "nope.tar.gz")
    result = runner.invoke(bundle_cli, ["verify", missing, "--trusted-keys", str(release.trusted)])
    assert_one_line_error(result, "no such file")


def test_cli_build_and_keygen_errors_exit_1(release: Release, tmp_path: Path) -> None:
    runner = CliRunner()
    source = make_source(tmp_path, RELEASE_YML.replace('"1.1"', "1.1"))
    result = runner.invoke(bundle_cli, ["build", str(source), "--key", str(release.key), "--out", str(tmp_path / "o")])
    assert_one_line_error(result, 'version must be a quoted string like "1.0"')
    result = runner.invoke(bundle_cli, ["keygen", "--out-dir", str(release.root / "keys"), "--name", "release"])
    assert_one_line_error(result, "already exists")
    result = runner.invoke(bundle_cli, ["show", str(release.source / "release.yml")])
    assert_one_line_error(result, "not a valid gzip tar")


def test_cli_is_registered_in_main() -> None:
    from lpse_ops.main import main

    result = CliRunner().invoke(main, ["bundle", "--help"])
    assert result.exit_code == 0
    for command in ("keygen", "build", "verify", "show"):
        assert command in result.output


def test_private_key_files_are_not_world_readable(release: Release) -> None:
    assert os.stat(release.key).st_mode & 0o077 == 0


@pytest.mark.parametrize("raw", [b"[" * 100_000 + b"]" * 100_000, b'{"a": ' * 100 + b"1" + b"}" * 100])
def test_verify_deeply_nested_manifest_refused_clearly(release: Release, tmp_path: Path, raw: bytes) -> None:
    """A bundle's manifest.json is parsed before its signature can be checked: 100,000 levels used to raise
    RecursionError (a crash), 100 levels a misleading complaint about key_id."""
    key = private_key(release.key)
    message = rejected(tampered(release, tmp_path, lambda ms: resign(ms, key, raw)), release)
    assert "manifest.json is malformed" in message and "nested more than 64 levels deep" in message, message
