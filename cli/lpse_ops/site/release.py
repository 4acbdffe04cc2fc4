"""A release's unpack on the site: ``lpse-backup release-unpack`` (the bundle's chain of custody).

:func:`unpack` first checks the file's sha256 against the one the control node verified, reads it with
the control node's own strict reader (:mod:`lpse_ops.site.bundle_reader`) while it writes each signed
folder and file into a fresh root-only folder (by descriptor, nothing followed), then compares the tree
on disk with the signed manifest (types, modes, owners, sizes, sha256, nothing else: :func:`compare_tree`)
before it renames the folder into place. The audit's ``spse-release-integrity`` uses the same comparison
against the signed manifest kept in ``<base>/manifests/``. Standard library only.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from lpse_ops.site.bundle_reader import (
    CHUNK,
    MAX_MANIFEST_BYTES,
    BundleRefused,
    Listing,
    OnFile,
    Read,
    SignatureCheck,
    key_id,
    listing,
    openssl_check,
    raw_public_key,
    read,
    unsafe_relative_path,
)
from lpse_ops.site.errors import Failure

_SHA256_HEX = frozenset("0123456789abcdef")

__all__ = ["BundleRefused", "Difference", "compare_tree", "kept_listing", "manifest_paths", "trusted_keys", "unpack"]


def file_sha256(path: str) -> str:
    """sha256 of the regular file at *path*, opened without following a link."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise BundleRefused(f"{path} is not a regular file")
        digest = hashlib.sha256()
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
        return digest.hexdigest()


@dataclass(frozen=True)
class Difference:
    """One way a tree on disk differs from its signed manifest: *kind* missing | extra | modified."""

    kind: str
    path: str
    text: str


def compare_tree(root: str, signed: Listing) -> list[Difference]:
    """Every way the tree at *root* differs from the signed listing (nothing followed; empty when equal)."""
    found: list[Difference] = []
    seen_dirs: set[str] = set()
    seen_files: set[str] = set()
    pending = [("", root)]
    while pending:
        prefix, folder = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                relative = prefix + entry.name
                info = entry.stat(follow_symlinks=False)
                mode = stat.S_IMODE(info.st_mode)
                if info.st_uid != 0 or info.st_gid != 0:
                    found.append(Difference("modified", relative, f"owner {info.st_uid}:{info.st_gid}, not root: "
                                                                  f"{relative}"))
                if stat.S_ISDIR(info.st_mode):
                    seen_dirs.add(relative)
                    if relative not in signed.directories:
                        found.append(Difference("extra", relative, f"folder not in manifest: {relative}"))
                    elif mode != signed.directories[relative]:
                        listed = signed.directories[relative]
                        found.append(Difference("modified", relative,
                                                f"mode mismatch: {relative}/ ({mode:o}, manifest {listed:o})"))
                    pending.append((relative + "/", entry.path))
                    continue
                seen_files.add(relative)
                if relative not in signed.files:
                    found.append(Difference("extra", relative, f"not in manifest: {relative}"))
                    continue
                if not stat.S_ISREG(info.st_mode):
                    found.append(Difference("modified", relative, f"not a regular file: {relative}"))
                    continue
                sha256, size, listed_mode = signed.files[relative]
                if mode != listed_mode:
                    found.append(Difference("modified", relative,
                                            f"mode mismatch: {relative} ({mode:o}, manifest {listed_mode:o})"))
                if info.st_size != size:
                    found.append(Difference("modified", relative,
                                            f"size mismatch: {relative} ({info.st_size}, manifest {size})"))
                elif file_sha256(entry.path) != sha256:
                    found.append(Difference("modified", relative, f"sha256 mismatch: {relative}"))
    found += [Difference("missing", path, f"missing: {path}/") for path in sorted(set(signed.directories) - seen_dirs)]
    found += [Difference("missing", path, f"missing: {path}") for path in sorted(set(signed.files) - seen_files)]
    return sorted(found, key=lambda difference: difference.text)


def kept_listing(base: str, version: str) -> Listing:
    """The signed listing of a release as its unpack kept it (``<base>/manifests/<version>.json``, root-owned)."""
    path = manifest_paths(base, version)[0]
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(descriptor, "rb") as handle:
        data = json.loads(handle.read(MAX_MANIFEST_BYTES + 1).decode("utf-8"))
    return listing(data)


def _writer(staging_fd: int) -> tuple[Callable[[str, int], None], OnFile]:
    """Directory and file writers under the root-only staging folder *staging_fd* (descriptors, no links)."""

    def parent_fd(relative: str) -> tuple[int, str]:
        *folders, name = relative.split("/")
        descriptor = os.dup(staging_fd)
        for folder in folders:
            following = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=descriptor)
            os.close(descriptor)
            descriptor = following
        return descriptor, name

    def on_directory(relative: str, mode: int) -> None:
        descriptor, name = parent_fd(relative)
        try:
            os.mkdir(name, 0o700, dir_fd=descriptor)
            created = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=descriptor)
            try:
                os.fchown(created, 0, 0)
                os.fchmod(created, mode)
            finally:
                os.close(created)
        finally:
            os.close(descriptor)

    def on_file(relative: str, mode: int, source: IO[bytes]) -> None:
        descriptor, name = parent_fd(relative)
        try:
            created = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                              dir_fd=descriptor)
            with os.fdopen(created, "wb") as target:
                shutil.copyfileobj(source, target, CHUNK)
                os.fchown(target.fileno(), 0, 0)
                os.fchmod(target.fileno(), mode)
        finally:
            os.close(descriptor)

    return on_directory, on_file


def trusted_keys(texts: list[str]) -> dict[str, bytes]:
    """Key id -> raw key for each public key text; a key that cannot be read is refused, naming it."""
    keys = {}
    for index, text in enumerate(texts):
        try:
            raw = raw_public_key(text)
        except (ValueError, binascii.Error) as error:
            raise Failure("bad_trusted_key", f"trusted key {index + 1} is not an Ed25519 public key ({error}): pass "
                          "the release public keys (OpenSSH or PEM) the control node trusts", step="keys") from None
        keys[key_id(raw)] = raw
    if not keys:
        raise Failure("bad_trusted_key", "no trusted release key was given: pass spse_trusted_keys", step="keys")
    return keys


def unpack(bundle: str, sha256: str, version: str, base: str, keys: dict[str, bytes], check: bool = False) -> dict:
    """Unpack the bundle at *bundle* into ``<base>/releases/<version>`` after checking every link of its custody.

    The file must hash to *sha256* (what the control node verified), its manifest must be signed by one of
    *keys* and name *version*, and every member must pass :func:`read`; the tree written is then compared
    with the signed manifest before it is renamed into place. A release folder already there is never
    rewritten: it is compared with the signed manifest instead (a difference fails). The signed manifest
    and its signature are kept in ``<base>/manifests/`` for later audits. *check*: change nothing.
    """
    releases = os.path.join(base, "releases")
    target = os.path.join(releases, version)
    present = os.path.isdir(target) and not os.path.islink(target)
    result: dict[str, Any] = {"action": "release-unpack", "ok": False, "version": version, "release_dir": target,
                              "check_mode": check, "release_present": present, "unpacked": False}
    try:
        actual = file_sha256(bundle)
    except FileNotFoundError:
        if check:
            return {**result, "ok": True, "note": "the bundle is not on the site yet (check mode: it would be copied)"}
        raise Failure("bundle_missing", f"{bundle} is not on the site: copy the bundle first", step="sha256") from None
    except (OSError, BundleRefused) as error:
        raise Failure("bundle_unreadable", f"cannot read {bundle}: {error}", step="sha256") from None
    if actual != sha256:
        if check:
            return {**result, "ok": True, "note": "the site holds another file under the bundle's name "
                                                  "(check mode: the verified bundle would replace it)"}
        raise Failure("bundle_sha256_mismatch",
                      f"{bundle} hashes to {actual}, not {sha256}, the sha256 the control node verified: the bytes "
                      "changed after verification (tampered, or a different file): nothing was unpacked; verify the "
                      "bundle again and rerun", step="sha256")
    work = tempfile.mkdtemp(prefix="lpse-release-")  # root-only (0700) in /tmp, for OpenSSL's inputs
    staging = None
    try:
        check_signature = openssl_check(keys, work)
        if present or check:
            found = _read_or_refuse(bundle, check_signature)
            _same_bytes(found, bundle, sha256)
            _same_version(found, version)
            problems = [difference.text for difference in compare_tree(target, found.listing)] if present else []
            if problems:
                raise Failure("release_differs",
                              f"{target} does not match the signed manifest of {bundle}: " + "; ".join(problems[:20])
                              + (f" (and {len(problems) - 20} more)" if len(problems) > 20 else "")
                              + ". A release folder is never rewritten in place: ship a new version, or (if the "
                              "release is not current) remove the folder and run again.", step="compare",
                              detail=json.dumps(problems[:200]))
            kept = False if check else _keep_manifest(base, version, found)
            return {**result, "ok": True, "files": len(found.listing.files), "manifest_kept": kept,
                    "sha256": found.sha256}
        staging = os.path.join(releases, f".{version}.unpacking-{secrets.token_hex(8)}")
        os.mkdir(staging, 0o700)
        staging_fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            on_directory, on_file = _writer(staging_fd)
            found = _read_or_refuse(bundle, check_signature, on_directory, on_file)
        finally:
            os.close(staging_fd)
        _same_bytes(found, bundle, sha256)
        _same_version(found, version)
        os.chmod(staging, 0o755)  # noqa: S103 (a release folder, root-owned, like /usr/lib)
        problems = [difference.text for difference in compare_tree(staging, found.listing)]
        if problems:
            raise Failure("release_differs",
                          f"the unpacked tree differs from the signed manifest: {'; '.join(problems[:20])}",
                          step="compare", detail=json.dumps(problems[:200]))
        os.rename(staging, target)
        staging = None
        _keep_manifest(base, version, found)
        return {**result, "ok": True, "unpacked": True, "release_present": True, "files": len(found.listing.files),
                "manifest_kept": True, "sha256": found.sha256}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if staging:
            shutil.rmtree(staging, ignore_errors=True)


def _read_or_refuse(bundle: str, check_signature: SignatureCheck, on_directory=None, on_file=None) -> Read:
    descriptor = os.open(bundle, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(descriptor, "rb") as handle:
        try:
            return read(handle, check_signature, on_directory, on_file)
        except BundleRefused as error:
            raise Failure("bundle_refused", f"{bundle} refused, nothing was unpacked: {error}",
                          step="read") from None


def _same_bytes(found: Read, bundle: str, sha256: str) -> None:
    """The bytes read (and unpacked) must be the verified ones: the file is opened again after its first hash,
    so another file put at the name in between is refused here (its tree is still only in the staging folder)."""
    if found.sha256 != sha256:
        raise Failure("bundle_sha256_mismatch",
                      f"{bundle} changed while it was read: the bytes read hash to {found.sha256}, not {sha256}, the "
                      "sha256 the control node verified: nothing was unpacked; verify the bundle again and rerun",
                      step="read")


def _same_version(found: Read, version: str) -> None:
    if found.manifest.get("version") != version:
        raise Failure("bundle_version", f"the bundle holds SPSE {found.manifest.get('version')!r}, not {version}",
                      step="read")


def manifest_paths(base: str, version: str) -> tuple[str, str]:
    """Where the site keeps a release's signed manifest and its signature."""
    folder = os.path.join(base, "manifests")
    return os.path.join(folder, f"{version}.json"), os.path.join(folder, f"{version}.sig")


def _keep_manifest(base: str, version: str, found: Read) -> bool:
    """Write the signed manifest and signature into ``<base>/manifests`` (root, 0644); True when written."""
    folder = os.path.join(base, "manifests")
    os.makedirs(folder, mode=0o755, exist_ok=True)
    written = False
    for path, content in zip(manifest_paths(base, version), (found.manifest_bytes, found.signature), strict=True):
        with contextlib.suppress(OSError), open(path, "rb") as handle:
            if handle.read() == content:
                continue
        temporary = f"{path}.{secrets.token_hex(4)}.tmp"
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "wb") as handle:
            handle.write(content)
        os.replace(temporary, path)
        written = True
    return written


def main(_settings, args) -> dict:
    """``lpse-backup release-unpack``: the trusted keys come on standard input as ``{"trusted_keys": [...]}``."""
    import sys

    try:
        given = json.loads(sys.stdin.read() or "{}")
    except ValueError as error:
        raise Failure("bad_trusted_key", f"standard input is not JSON ({error}): give {{\"trusted_keys\": [...]}}",
                      step="keys") from None
    texts = given.get("trusted_keys") if isinstance(given, dict) else None
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise Failure("bad_trusted_key", "standard input must be {\"trusted_keys\": [\"ssh-ed25519 ...\", ...]}",
                      step="keys")
    if len(args.sha256 or "") != 64 or not set(args.sha256) <= _SHA256_HEX:
        raise Failure("bad_input", "--sha256 must be 64 lowercase hex characters", step="start")
    if unsafe_relative_path(args.version) or "/" in args.version:
        raise Failure("bad_input", f"--version {args.version!r} is not a plain version", step="start")
    return unpack(args.bundle, args.sha256, args.version, args.base, trusted_keys(texts), check=args.check)


def add_parser(sub) -> None:
    """Add ``release-unpack`` to the site tool's subparsers."""
    unpacking = sub.add_parser("release-unpack", help="check a bundle's sha256 and signature, unpack it with the "
                                                      "reader that verified it, compare the tree with the manifest")
    unpacking.add_argument("--bundle", required=True, help="the bundle on the site")
    unpacking.add_argument("--sha256", required=True, help="the sha256 the control node verified")
    unpacking.add_argument("--version", required=True, help="the release it must hold")
    unpacking.add_argument("--base", required=True, help="SPSE's base directory (releases/, manifests/)")
    unpacking.add_argument("--check", action="store_true", help="change nothing: say what would be done")

