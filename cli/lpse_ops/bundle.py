"""The SPSE release bundle: build, sign, verify and show ``spse-<version>.tar.gz``.

A bundle is a gzip tar holding exactly ``manifest.json``, ``manifest.sig`` and ``payload/``, in that
order. ``manifest.json`` lists every payload directory and file with its mode and owner (files with
their sha256 and size), the ordered database migrations and how to run the release; ``manifest.sig`` is
the base64 ed25519 signature over the exact bytes of ``manifest.json``. See docs/release-bundle.md.

:func:`verify` reads the tar as a stream (never extracting to disk) with the strict reader the site
unpacks with (:mod:`lpse_ops.site.bundle_reader`), and raises :class:`BundleError` with a message that says
what is wrong and what to do.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import dataclasses
import gzip
import hashlib
import io
import json
import os
import re
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import jsonschema
import yaml
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lpse_ops import jsonlimits
from lpse_ops.settings import current as current_settings
from lpse_ops.site import bundle_reader as reader

FORMAT = reader.FORMAT
PRODUCT = "spse"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
PAYLOAD_DIR = "payload"
RELEASE_FILE = "release.yml"
PASSPHRASE_ENV = "LPSE_OPS_BUNDLE_KEY_PASSPHRASE"  # noqa: S105 - the name of a variable, not a secret
TRUSTED_KEYS_ENV = "LPSE_OPS_TRUSTED_KEYS"

_CHUNK = 1024 * 1024
_MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_MAX_SIGNATURE_BYTES = 4096
_VERSION_RE = re.compile(r"^(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8})){0,7}$")
_VERSION_PATTERN = _VERSION_RE.pattern
_MIGRATION_ID = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
_CREATED_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_REDO = "do not install it: download the bundle again from LKPP or rebuild it with `lpse-ops bundle build`"

MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "SPSE release bundle manifest (format 1)",
    "type": "object",
    "additionalProperties": False,
    "required": ["format", "product", "version", "min_upgrade_from", "created", "key_id", "directories", "files",
                 "migrations", "run"],
    "properties": {
        "format": {"const": FORMAT},
        "product": {"const": PRODUCT},
        "version": {"type": "string", "pattern": _VERSION_PATTERN},
        "min_upgrade_from": {"type": "string", "pattern": _VERSION_PATTERN},
        "created": {"type": "string", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"},
        "key_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
        "directories": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["path", "mode", "owner", "group"],
                "properties": {
                    "path": {"type": "string", "minLength": 1, "maxLength": 4096},
                    "mode": {"type": "string", "pattern": "^0[0-7]{3}$"},
                    "owner": {"const": reader.OWNER},
                    "group": {"const": reader.OWNER},
                },
            },
        },
        "files": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["path", "sha256", "size", "mode", "owner", "group"],
                "properties": {
                    "path": {"type": "string", "minLength": 1, "maxLength": 4096},
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "size": {"type": "integer", "minimum": 0},
                    "mode": {"type": "string", "pattern": "^0[0-7]{3}$"},
                    "owner": {"const": reader.OWNER},
                    "group": {"const": reader.OWNER},
                },
            },
        },
        "migrations": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["id", "path", "schema_version", "sha256"],
                "properties": {
                    "id": {"type": "string", "pattern": f"^{_MIGRATION_ID}$"},
                    "path": {"type": "string", "minLength": 1},
                    "schema_version": {"type": "integer", "minimum": 1},
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                },
            },
        },
        "documents_first": {
            "type": "object",
            "additionalProperties": False,
            "required": ["query"],
            "properties": {"query": {"type": "string", "minLength": 1, "maxLength": 8000}},
        },
        "run": {
            "type": "object",
            "additionalProperties": False,
            "required": ["jar", "health_path"],
            "properties": {
                "jar": {"type": "string", "minLength": 1},
                "health_path": {"type": "string", "pattern": "^/[^\\s]*$"},
            },
        },
    },
}
"""JSON Schema (draft 2020-12) of ``manifest.json``; :func:`validate_manifest` adds the semantic checks."""


class BundleError(Exception):
    """A bundle, release source or key is unusable; the message says what is wrong and what to do."""


# --------------------------------------------------------------------------------------------- versions


def parse_version(value: str) -> tuple[int, ...]:
    """Parse a dotted-integer version ("1.0", "2.3.4") into a tuple; raise ValueError if it is not one."""
    if not isinstance(value, str) or not _VERSION_RE.fullmatch(value):
        raise ValueError(
            f"invalid version {value!r}: use dotted integers without leading zeros, like \"1.0\" or \"2.3.4\""
        )
    return tuple(int(part) for part in value.split("."))


def version_key(value: str) -> tuple[int, ...]:
    """The one ordering of SPSE versions: a sortable key, trailing zeros dropped ("1.0" and "1.0.0" are equal).

    Raises ValueError for anything but dotted integers (:func:`parse_version`).
    """
    parts = list(parse_version(value))
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def compare_versions(a: str, b: str) -> int:
    """Return -1, 0 or 1 as version *a* is older than, equal to or newer than *b* ("1.0" == "1.0.0")."""
    left, right = version_key(a), version_key(b)
    return (left > right) - (left < right)


def display_order(value: str | None) -> tuple:
    """Sort key for any version text a site reports: versions by :func:`version_key`, then other text by text."""
    try:
        return (0, version_key(str(value)), "")
    except ValueError:
        return (1, (), str(value or ""))


# --------------------------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class FileEntry:
    """One payload file: *path* is relative to ``payload/``; unpacked owned by *owner*:*group*."""

    path: str
    sha256: str
    size: int
    mode: str
    owner: str = reader.OWNER
    group: str = reader.OWNER


@dataclass(frozen=True)
class DirectoryEntry:
    """One payload directory: *path* is relative to ``payload/``."""

    path: str
    mode: str
    owner: str = reader.OWNER
    group: str = reader.OWNER


@dataclass(frozen=True)
class Migration:
    """One database migration, applied in manifest order; *path* is a payload file."""

    id: str
    path: str
    schema_version: int
    sha256: str


@dataclass(frozen=True)
class RunSpec:
    """How the release runs: the jar (a payload path) and the HTTP health path."""

    jar: str
    health_path: str


@dataclass(frozen=True)
class Manifest:
    """A validated ``manifest.json``."""

    format: int
    product: str
    version: str
    min_upgrade_from: str
    created: str
    key_id: str
    directories: tuple[DirectoryEntry, ...]
    files: tuple[FileEntry, ...]
    migrations: tuple[Migration, ...]
    run: RunSpec
    documents_first: dict[str, str] | None = None
    """Optional: ``{"query": SQL}`` returning document ids, open tenders' first: what a serve-first restore
    brings back before SPSE opens (docs/release-bundle.md; site/restore_first.py runs it read-only)."""

    def files_by_path(self) -> dict[str, FileEntry]:
        """Return the payload files keyed by their path relative to ``payload/``."""
        return {entry.path: entry for entry in self.files}

    @property
    def schema_version(self) -> int:
        """The database schema version after all migrations (0 when there are none)."""
        return self.migrations[-1].schema_version if self.migrations else 0

    @property
    def payload_size(self) -> int:
        """Total bytes of the payload files."""
        return sum(entry.size for entry in self.files)

    def to_dict(self) -> dict[str, Any]:
        """Return the manifest as the JSON-ready dict written to ``manifest.json``."""
        data = asdict(self)
        data["directories"] = [asdict(entry) for entry in self.directories]
        data["files"] = [asdict(entry) for entry in self.files]
        data["migrations"] = [asdict(migration) for migration in self.migrations]
        if data["documents_first"] is None:
            del data["documents_first"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Build a Manifest from a dict already checked by :func:`validate_manifest`."""
        return cls(
            format=data["format"],
            product=data["product"],
            version=data["version"],
            min_upgrade_from=data["min_upgrade_from"],
            created=data["created"],
            key_id=data["key_id"],
            directories=tuple(DirectoryEntry(**entry) for entry in data["directories"]),
            files=tuple(FileEntry(**entry) for entry in data["files"]),
            migrations=tuple(Migration(**migration) for migration in data["migrations"]),
            run=RunSpec(**data["run"]),
            documents_first=data.get("documents_first"),
        )


def _malformed(detail: str) -> BundleError:
    return BundleError(f"manifest.json is malformed: {detail}; {_REDO}")


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """Yield (location, text) for every string key and value in a parsed JSON document."""
    if isinstance(value, str):
        yield where or "(top level)", value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield where or "(top level)", key
            yield from _strings(item, f"{where}/{key}" if where else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{where}/{index}")


def validate_manifest(data: Any) -> Manifest:
    """Check *data* (parsed ``manifest.json``) against :data:`MANIFEST_SCHEMA` and the semantic rules."""
    validator = jsonschema.Draft202012Validator(MANIFEST_SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda error: (list(error.absolute_path), error.message))
    if errors:
        error = errors[0]
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        raise _malformed(f"{where}: {error.message}")
    for where, text in _strings(data, ""):
        if any(ord(char) < 0x20 or ord(char) == 0x7F for char in text):
            raise _malformed(f"{where}: control character in {text!r}")
    try:
        parse_version(data["version"])
        parse_version(data["min_upgrade_from"])
        datetime.strptime(data["created"], _CREATED_FORMAT)
    except ValueError as error:
        raise _malformed(str(error)) from None
    if compare_versions(data["min_upgrade_from"], data["version"]) > 0:
        raise _malformed(f"min_upgrade_from {data['min_upgrade_from']} is newer than version {data['version']}")
    for kind in ("directories", "files"):
        paths = [entry["path"] for entry in data[kind]]
        for path in paths:
            reason = reader.unsafe_relative_path(path)
            if reason:
                raise _malformed(f"{kind} path {path!r} {reason}")
        if len(set(paths)) != len(paths):
            duplicate = next(path for path in paths if paths.count(path) > 1)
            raise _malformed(f"{kind} entry {duplicate} is listed twice")
        if paths != sorted(paths):
            raise _malformed(f"{kind} are not sorted by path")
    try:
        reader.listing(data)  # what the site relies on: every folder listed, before what it holds
    except reader.BundleRefused as error:
        raise _malformed(str(error)) from None
    by_path = {entry["path"]: entry for entry in data["files"]}
    ids: set[str] = set()
    previous = 0
    for migration in data["migrations"]:
        if migration["id"] in ids:
            raise _malformed(f"migration id {migration['id']} is listed twice")
        ids.add(migration["id"])
        if migration["schema_version"] <= previous:
            raise _malformed(
                f"migration {migration['id']}: schema_version {migration['schema_version']} "
                f"is not greater than the previous one ({previous})"
            )
        previous = migration["schema_version"]
        entry = by_path.get(migration["path"])
        if entry is None:
            raise _malformed(f"migration {migration['id']}: path {migration['path']} is not in files")
        if entry["sha256"] != migration["sha256"]:
            raise _malformed(f"migration {migration['id']}: sha256 differs from the files entry of {migration['path']}")
    if data["run"]["jar"] not in by_path:
        raise _malformed(f"run.jar {data['run']['jar']} is not in files")
    return Manifest.from_dict(data)


def _reject_float(text: str) -> Any:
    raise ValueError(f"non-integer number {text}")


def _reject_constant(text: str) -> Any:
    raise ValueError(f"invalid number {text}")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _load_manifest_json(raw: bytes) -> Any:
    """Parse manifest.json strictly (no floats, constants or duplicate keys; at most jsonlimits.MAX_DEPTH
    levels: it is read before its signature can be checked); raise BundleError (malformed) otherwise."""
    try:
        return jsonlimits.loads(
            raw.decode("utf-8"),
            parse_float=_reject_float,
            parse_constant=_reject_constant,
            object_pairs_hook=_no_duplicate_keys,
        )
    except jsonlimits.TooDeep as error:
        raise _malformed(str(error)) from None
    except (UnicodeDecodeError, ValueError) as error:  # JSONDecodeError is a ValueError
        raise _malformed(f"not valid UTF-8 JSON ({error})") from None


def manifest_bytes(data: dict[str, Any]) -> bytes:
    """Serialise a manifest dict exactly as the builder writes it (UTF-8, keys sorted, newline-terminated)."""
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


# --------------------------------------------------------------------------------------------- keys


def key_id(public_key: Ed25519PublicKey) -> str:
    """Return the key id: the first 16 hex characters of sha256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load an ed25519 public key from an OpenSSH ``ssh-ed25519 AAAA... comment`` line or a PEM file."""
    path = Path(path)
    fix = f"replace it with an ed25519 public key (OpenSSH or PEM) or remove it from {path.parent}"
    try:
        data = path.read_bytes()
    except OSError as error:
        raise BundleError(f"cannot read public key {path}: {error.strerror}; {fix}") from None
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_public_key(data)
        else:
            lines = [line.strip() for line in data.splitlines() if line.strip() and not line.startswith(b"#")]
            if len(lines) != 1:
                raise ValueError("expected exactly one key line")
            key = serialization.load_ssh_public_key(lines[0])
    except (ValueError, UnsupportedAlgorithm) as error:
        raise BundleError(f"public key {path} is not readable ({error}); {fix}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"public key {path} is not an ed25519 key; {fix}")
    return key


def load_trusted_keys(trusted_keys_dir: Path) -> dict[str, Ed25519PublicKey]:
    """Load every ``*.pub`` in *trusted_keys_dir*, keyed by key id."""
    directory = Path(trusted_keys_dir)
    if not directory.is_dir():
        raise BundleError(
            f"trusted keys directory {directory} does not exist: create it and copy LKPP's release public key "
            f"(*.pub) into it, or pass --trusted-keys / set {TRUSTED_KEYS_ENV}"
        )
    keys: dict[str, Ed25519PublicKey] = {}
    for path in sorted(directory.glob("*.pub")):
        if path.is_file():
            key = load_public_key(path)
            keys[key_id(key)] = key
    return keys


def _passphrase(env: str = PASSPHRASE_ENV) -> bytes | None:
    """Return the passphrase in setting *env* (the release key's by default; the evidence key has its own)."""
    settings = current_settings()
    value = next((getattr(settings, spec.name) for spec in dataclasses.fields(settings) if spec.metadata["env"] == env),
                 None)
    return value.encode("utf-8") if value else None


def load_private_key(path: Path, passphrase_env: str = PASSPHRASE_ENV) -> Ed25519PrivateKey:
    """Load a PEM PKCS8 ed25519 private key, decrypting it with the passphrase in *passphrase_env* if set."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise BundleError(
            f"cannot read private key {path}: {error.strerror}; pass the signing key with --key"
        ) from None
    passphrase = _passphrase(passphrase_env)
    try:
        try:
            key = serialization.load_pem_private_key(data, password=passphrase)
        except TypeError as error:
            if passphrase is None:
                raise BundleError(
                    f"private key {path} is encrypted: set {passphrase_env} to its passphrase"
                ) from error
            key = serialization.load_pem_private_key(data, password=None)  # passphrase set but key not encrypted
    except (ValueError, UnsupportedAlgorithm) as error:
        hint = (f"check {passphrase_env}" if passphrase
                else "use a PEM PKCS8 ed25519 key made by `lpse-ops bundle keygen`")
        raise BundleError(f"cannot load private key {path} ({error}); {hint}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"private key {path} is not an ed25519 key: make one with `lpse-ops bundle keygen`")
    return key


def keygen(private_path: Path, public_path: Path, comment: str, passphrase_env: str = PASSPHRASE_ENV) -> str:
    """Write a new ed25519 key pair and return its key id.

    The private key is PEM PKCS8 with mode 0600 (encrypted when ``LPSE_OPS_BUNDLE_KEY_PASSPHRASE`` is
    set); the public key is one OpenSSH line ``ssh-ed25519 AAAA... comment``. Existing files are never
    overwritten.
    """
    private_path, public_path = Path(private_path), Path(public_path)
    if any(char in comment for char in "\r\n"):
        raise BundleError("the key comment must be a single line: choose another --name")
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise BundleError(f"{path} already exists: choose another --name or --out-dir (keys are never overwritten)")
    key = Ed25519PrivateKey.generate()
    passphrase = _passphrase(passphrase_env)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public_line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private_pem)
    os.chmod(private_path, 0o600)  # in case the umask or filesystem widened it
    suffix = f" {comment}" if comment else ""
    with open(public_path, "x", encoding="ascii") as handle:
        handle.write(public_line.decode("ascii") + suffix + "\n")
    return key_id(key.public_key())


# --------------------------------------------------------------------------------------------- build


def _release_error(source: Path, detail: str) -> BundleError:
    return BundleError(f"{source / RELEASE_FILE}: {detail}")


def _load_release(source: Path) -> dict[str, Any]:
    path = source / RELEASE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(
            f"{path} not found: a release source directory holds release.yml and payload/ (see docs/release-bundle.md)"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise BundleError(f"cannot read {path} ({error}): make it a readable UTF-8 file") from None
    try:
        release = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise _release_error(source, f"invalid YAML ({error}); fix the syntax") from None
    if not isinstance(release, dict):
        raise _release_error(source, "must be a mapping with version, min_upgrade_from, migrations and run")
    allowed = {"version", "min_upgrade_from", "migrations", "run", "documents_first"}
    unknown = sorted(str(key) for key in release if key not in allowed)
    if unknown:
        raise _release_error(source, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    for key in ("version", "min_upgrade_from", "run"):
        if key not in release:
            raise _release_error(source, f"missing required key {key!r}")
    for key in ("version", "min_upgrade_from"):
        value = release[key]
        if not isinstance(value, str):
            raise _release_error(
                source, f"{key} must be a quoted string like \"1.0\" (YAML reads an unquoted {value!r} as a number)"
            )
        try:
            parse_version(value)
        except ValueError as error:
            raise _release_error(source, f"{key}: {error}") from None
    if compare_versions(release["min_upgrade_from"], release["version"]) > 0:
        raise _release_error(
            source, f"min_upgrade_from {release['min_upgrade_from']} is newer than version {release['version']}"
        )
    migrations = release.get("migrations") or []
    if not isinstance(migrations, list):
        raise _release_error(source, "migrations must be a list of {id, path, schema_version}")
    for index, migration in enumerate(migrations):
        if not isinstance(migration, dict) or set(migration) != {"id", "path", "schema_version"}:
            raise _release_error(source, f"migrations[{index}] must have exactly the keys id, path and schema_version")
        if not isinstance(migration["id"], str) or not re.fullmatch(_MIGRATION_ID, migration["id"]):
            raise _release_error(source, f"migrations[{index}].id must be a name like 0001_initial")
        if not isinstance(migration["path"], str) or reader.unsafe_relative_path(migration["path"]):
            raise _release_error(source, f"migrations[{index}].path must be a relative path inside payload/")
        version = migration["schema_version"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise _release_error(source, f"migrations[{index}].schema_version must be a positive integer")
    first = release.get("documents_first")
    if first is not None and (not isinstance(first, dict) or set(first) != {"query"}
                              or not isinstance(first["query"], str) or not first["query"].strip()):
        raise _release_error(source, "documents_first must have exactly the key query: SQL returning document ids, "
                                     "the ones to bring back first after a server is lost")
    run = release["run"]
    if not isinstance(run, dict) or set(run) != {"jar", "health_path"}:
        raise _release_error(source, "run must have exactly the keys jar and health_path")
    if not isinstance(run["jar"], str) or reader.unsafe_relative_path(run["jar"]):
        raise _release_error(source, "run.jar must be a relative path inside payload/, like lib/spse.jar")
    if not isinstance(run["health_path"], str) or not re.fullmatch(r"/\S*", run["health_path"]):
        raise _release_error(source, "run.health_path must be an URL path starting with /, like /health")
    release["migrations"] = migrations
    return release


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _scan_payload(payload: Path) -> tuple[list[str], list[tuple[str, Path, int]]]:
    """Return (directories, files) under *payload* as sorted relative POSIX paths; files carry mtime."""
    directories: list[str] = []
    files: list[tuple[str, Path, int]] = []

    def walk(directory: Path, prefix: str) -> None:
        with os.scandir(directory) as entries:
            for entry in sorted(entries, key=lambda item: item.name):
                relative = f"{prefix}{entry.name}"
                try:
                    relative.encode("utf-8")
                except UnicodeEncodeError:
                    raise BundleError(f"payload/{relative!r}: file name is not valid UTF-8; rename it") from None
                if reader.unsafe_relative_path(relative):
                    raise BundleError(f"payload/{relative!r}: unsupported file name; rename it")
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(info.st_mode):
                    raise BundleError(
                        f"payload/{relative} is a symlink: bundles carry regular files only; replace it with the file"
                    )
                if stat.S_ISDIR(info.st_mode):
                    directories.append(relative)
                    walk(Path(entry.path), relative + "/")
                elif stat.S_ISREG(info.st_mode):
                    files.append((relative, Path(entry.path), int(info.st_mtime)))
                else:
                    raise BundleError(f"payload/{relative} is not a regular file or directory: remove it")

    walk(payload, "")
    return sorted(directories), sorted(files)


def _created(source: Path, files: list[tuple[str, Path, int]]) -> datetime:
    """The build time recorded in the manifest and the tar: SOURCE_DATE_EPOCH, else the newest input mtime."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            seconds = int(epoch)
        except ValueError:
            raise BundleError(f"SOURCE_DATE_EPOCH={epoch!r} is not an integer: unset it or fix it") from None
    else:
        seconds = max([int((source / RELEASE_FILE).stat().st_mtime)] + [mtime for _, _, mtime in files])
    return datetime.fromtimestamp(max(seconds, 0), UTC)


def _tarinfo(name: str, *, directory: bool, size: int, mode: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.size = 0 if directory else size
    info.mode = mode
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build(source_dir: Path, private_key_path: Path, out_dir: Path) -> Path:
    """Build and sign ``<out_dir>/spse-<version>.tar.gz`` from *source_dir* (release.yml + payload/).

    The output is deterministic: the same source tree (and SOURCE_DATE_EPOCH, if set) gives the same
    bytes. File modes are normalised to 0755 (any execute bit) or 0644.
    """
    source = Path(source_dir)
    if not source.is_dir():
        raise BundleError(
            f"release source {source} is not a directory: pass the folder holding release.yml and payload/"
        )
    release = _load_release(source)
    payload = source / PAYLOAD_DIR
    if not payload.is_dir() or payload.is_symlink():
        raise BundleError(f"{payload} is not a directory: put the release files under {payload}/")
    key = load_private_key(Path(private_key_path))
    directories, files = _scan_payload(payload)

    owner = {"owner": reader.OWNER, "group": reader.OWNER}
    entries = []
    for relative, path, _ in files:
        sha256, size = _hash_file(path)
        mode = "0755" if path.stat().st_mode & 0o111 else "0644"
        entries.append({"path": relative, "sha256": sha256, "size": size, "mode": mode, **owner})
    by_path = {entry["path"]: entry for entry in entries}

    migrations = []
    previous = 0
    for migration in release["migrations"]:
        if migration["path"] not in by_path:
            raise _release_error(source, f"migration {migration['id']}: payload/{migration['path']} does not exist")
        if migration["schema_version"] <= previous:
            raise _release_error(
                source,
                f"migration {migration['id']}: schema_version {migration['schema_version']} must be greater than "
                f"the previous one ({previous}); list migrations in the order they apply",
            )
        previous = migration["schema_version"]
        migrations.append({**migration, "sha256": by_path[migration["path"]]["sha256"]})
    if len({migration["id"] for migration in migrations}) != len(migrations):
        raise _release_error(source, "migration ids must be unique")
    if release["run"]["jar"] not in by_path:
        raise _release_error(source, f"run.jar: payload/{release['run']['jar']} does not exist")

    created = _created(source, files)
    public_key = key.public_key()
    data = {
        "format": FORMAT,
        "product": PRODUCT,
        "version": release["version"],
        "min_upgrade_from": release["min_upgrade_from"],
        "created": created.strftime(_CREATED_FORMAT),
        "key_id": key_id(public_key),
        "directories": [{"path": relative, "mode": "0755", **owner} for relative in directories],
        "files": entries,
        "migrations": migrations,
        "run": {"jar": release["run"]["jar"], "health_path": release["run"]["health_path"]},
        **({"documents_first": {"query": release["documents_first"]["query"]}} if release.get("documents_first")
           else {}),
    }
    validate_manifest(copy.deepcopy(data))
    raw_manifest = manifest_bytes(data)
    signature = base64.b64encode(key.sign(raw_manifest)) + b"\n"

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"spse-{release['version']}.tar.gz"
    mtime = int(created.timestamp())
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=out)
    try:
        with (
            os.fdopen(descriptor, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=mtime) as compressed,
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for name, content in ((MANIFEST_NAME, raw_manifest), (SIGNATURE_NAME, signature)):
                tar.addfile(_tarinfo(name, directory=False, size=len(content), mode=0o644, mtime=mtime),
                            io.BytesIO(content))
            tar.addfile(_tarinfo(PAYLOAD_DIR, directory=True, size=0, mode=0o755, mtime=mtime))
            members = [(relative, None) for relative in directories] + [(relative, path) for relative, path, _ in files]
            for relative, path in sorted(members, key=lambda item: item[0]):
                name = f"{PAYLOAD_DIR}/{relative}"
                if path is None:
                    tar.addfile(_tarinfo(name, directory=True, size=0, mode=0o755, mtime=mtime))
                    continue
                entry = by_path[relative]
                info = _tarinfo(name, directory=False, size=entry["size"], mode=int(entry["mode"], 8), mtime=mtime)
                with open(path, "rb") as handle:
                    hashing = reader.HashingStream(handle)  # so the build sees the file did not change
                    try:
                        tar.addfile(info, hashing)
                    except OSError as error:  # tarfile raises "unexpected end of data" if the file shrank
                        raise BundleError(
                            f"payload/{relative} changed during the build ({error}): build again"
                        ) from None
                    if hashing.digest.hexdigest() != entry["sha256"] or handle.read(1):
                        raise BundleError(f"payload/{relative} changed during the build: build again")
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _verify_with_keys(target, {data["key_id"]: public_key}, "(the build's own key)")
    return target


class _ManifestRead(Exception):
    def __init__(self, raw: bytes) -> None:
        super().__init__("manifest read")
        self.raw = raw


# --------------------------------------------------------------------------------------------- reading


def _open_bundle(bundle_path: Path) -> IO[bytes]:
    path = Path(bundle_path)
    unreadable = f"cannot read bundle {path}"
    try:
        return open(path, "rb")  # noqa: SIM115 (the caller closes it)
    except FileNotFoundError:
        raise BundleError(f"{unreadable}: no such file; check the path") from None
    except IsADirectoryError:
        raise BundleError(f"{unreadable}: it is a directory; pass the spse-<version>.tar.gz file") from None
    except PermissionError:
        raise BundleError(f"{unreadable}: permission denied; fix its permissions or run as its owner") from None
    except OSError as error:
        raise BundleError(f"{unreadable}: {error.strerror}") from None


def _read(bundle_path: Path, check_signature: reader.SignatureCheck) -> reader.Read:
    """Read the bundle with the site's strict reader; its refusals become BundleError."""
    with _open_bundle(bundle_path) as handle:
        try:
            return reader.read(handle, check_signature)
        except reader.BundleRefused as error:
            raise BundleError(f"{error}; {_REDO}") from None
        except OSError as error:
            raise BundleError(f"cannot read bundle {bundle_path}: {error}; {_REDO}") from None


def _signature_check(keys: dict[str, Ed25519PublicKey], keys_source: str) -> reader.SignatureCheck:
    """Check manifest.sig over manifest.json with *keys*; return the validated manifest's dict."""

    def check(raw_manifest: bytes, raw_signature: bytes) -> Any:
        try:
            signature = base64.b64decode(raw_signature.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise BundleError(f"manifest.sig is not valid base64: the signature is damaged; {_REDO}") from None
        if len(signature) != 64:
            raise BundleError(
                f"manifest.sig is not an ed25519 signature ({len(signature)} bytes, expected 64); {_REDO}")
        data = _load_manifest_json(raw_manifest)
        if not isinstance(data, dict):
            raise _malformed("top level is not a JSON object")
        claimed = data.get("key_id")
        if not isinstance(claimed, str) or not re.fullmatch(r"[0-9a-f]{16}", claimed):
            raise _malformed("key_id must be 16 lowercase hex characters")
        public_key = keys.get(claimed)
        if public_key is None:
            held = "" if keys else " (it holds no *.pub keys now)"
            raise BundleError(f"unknown key {claimed}: add its public key to {keys_source} if you trust it{held}")
        try:
            public_key.verify(signature, raw_manifest)
        except InvalidSignature:
            raise BundleError(
                f"signature does not match: the manifest was altered or signed by another key (key id {claimed}); "
                f"{_REDO}") from None
        if data.get("format") != FORMAT:
            raise _malformed(f"format {data.get('format')!r}: this lpse-ops reads format {FORMAT}, which also signs "
                             "every directory, mode and owner (rebuild the bundle with `lpse-ops bundle build`)")
        validate_manifest(data)
        return data

    return check


def _verify_with_keys(bundle_path: Path, keys: dict[str, Ed25519PublicKey], keys_source: str) -> tuple[Manifest, str]:
    found = _read(bundle_path, _signature_check(keys, keys_source))
    return Manifest.from_dict(found.manifest), found.sha256


def verify_digest(bundle_path: Path, trusted_keys_dir: Path) -> tuple[Manifest, str]:
    """Verify a bundle (:func:`verify`); return its manifest and the sha256 of the exact bytes verified.

    The sha256 is what the site checks before it unpacks (``lpse-backup release-unpack``), so the bytes
    the site unpacks are the bytes verified here, even if the file changes meanwhile.
    """
    keys = load_trusted_keys(Path(trusted_keys_dir))
    return _verify_with_keys(Path(bundle_path), keys, str(trusted_keys_dir))


def trusted_key_texts(trusted_keys_dir: Path) -> list[str]:
    """The text of every trusted ``*.pub`` (each readable as an ed25519 key), for the site's own check."""
    directory = Path(trusted_keys_dir)
    load_trusted_keys(directory)  # refuses a folder that is missing or holds an unreadable key
    return [path.read_text(encoding="ascii", errors="replace") for path in sorted(directory.glob("*.pub"))
            if path.is_file()]


def verify(bundle_path: Path, trusted_keys_dir: Path) -> Manifest:
    """Verify a bundle against the ``*.pub`` keys in *trusted_keys_dir* and return its manifest.

    Checks, in order (:func:`lpse_ops.site.bundle_reader.read`): a readable gzip tar starting with
    manifest.json and manifest.sig; the signature (base64, key id trusted, valid); the manifest
    (format 2, schema and semantics); then every payload member, as it streams: a regular file or
    directory owned by root, listed with its mode (files with size and sha256), none twice, none
    missing, none extra, no PAX feature a bundle never uses, nothing after the archive's end but
    zeros. Raises :class:`BundleError` otherwise.
    """
    return verify_digest(bundle_path, trusted_keys_dir)[0]


def summary(manifest: Manifest) -> dict[str, Any]:
    """Return a display summary of *manifest* (what ``show`` and ``verify --json`` print)."""
    return {
        "product": manifest.product,
        "version": manifest.version,
        "min_upgrade_from": manifest.min_upgrade_from,
        "created": manifest.created,
        "key_id": manifest.key_id,
        "directories": len(manifest.directories),
        "files": len(manifest.files),
        "payload_bytes": manifest.payload_size,
        "migrations": [migration.id for migration in manifest.migrations],
        "schema_version": manifest.schema_version,
        "run": asdict(manifest.run),
    }


def show(bundle_path: Path) -> dict[str, Any]:
    """Return a summary of the bundle's manifest WITHOUT checking the signature or payload (display only)."""
    def stop(raw_manifest: bytes, _signature: bytes) -> Any:
        raise _ManifestRead(raw_manifest)

    try:
        _read(Path(bundle_path), stop)
    except _ManifestRead as read:
        raw = read.raw
    else:  # pragma: no cover - the reader always calls the check before the payload
        raise BundleError(f"{bundle_path} has no manifest.json; {_REDO}")
    data = _load_manifest_json(raw)
    result = summary(validate_manifest(data))
    result["bundle"] = str(bundle_path)
    result["verified"] = False
    return result


__all__ = [
    "FORMAT",
    "MANIFEST_SCHEMA",
    "PASSPHRASE_ENV",
    "TRUSTED_KEYS_ENV",
    "BundleError",
    "DirectoryEntry",
    "FileEntry",
    "Manifest",
    "Migration",
    "RunSpec",
    "build",
    "compare_versions",
    "display_order",
    "version_key",
    "key_id",
    "keygen",
    "load_private_key",
    "load_public_key",
    "load_trusted_keys",
    "manifest_bytes",
    "parse_version",
    "show",
    "summary",
    "trusted_key_texts",
    "validate_manifest",
    "verify",
    "verify_digest",
]
