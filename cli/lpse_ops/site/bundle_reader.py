"""The strict reader of a release bundle, the one both the control node and the site use.

The control node (``lpse_ops.bundle``) verifies a bundle with :func:`read`; the site tool unpacks it with
the same :func:`read` (``lpse-backup release-unpack``, :mod:`lpse_ops.site.release`), never with GNU tar,
so no archive can mean one thing where it is verified and another where it is unpacked. The reader
accepts only what ``lpse-ops bundle build`` writes and refuses everything else:

- members in this order: ``manifest.json``, ``manifest.sig``, ``payload/``, then ``payload/...``;
- the signature is checked (by the caller's ``check_signature``) as soon as both are read, before any
  payload byte is used;
- each payload member must be listed in the signed manifest with its type (file or directory), mode and
  owner (root); files with their size and sha256, hashed as they stream;
- only regular files (tar type ``0``) and directories (``5``): no links, devices, FIFOs, sparse or
  continued files; no global or unknown PAX headers; no member twice; no data after the end of the
  archive but zeros.

Standard library only (the site tool's zipapp); on the site the signature is checked by OpenSSL
(:func:`openssl_check`, Ed25519).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
PAYLOAD_DIR = "payload"
OWNER = "root"
FORMAT = 2
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_SIGNATURE_BYTES = 4096
CHUNK = 1024 * 1024
_TAIL_WINDOW = 4 * 1024 * 1024  # far more than the reads ahead of the tar reader (64 KiB + 10 KiB)
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE)
_ALLOWED_PAX = {"path"}
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MODE = re.compile(r"0[0-7]{3}")
# DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the 32 raw key bytes follow it.
_ED25519_SPKI = bytes.fromhex("302a300506032b6570032100")


class BundleRefused(Exception):
    """The archive is not one a bundle may be: the message names the member and why."""


# ---------------------------------------------------------------------------------------------- listing


def unsafe_relative_path(path: str) -> str | None:
    """Return why *path* is not a safe, normalised relative POSIX path, or None if it is."""
    if not path:
        return "is empty"
    if path.startswith("/"):
        return "is absolute"
    if "\\" in path or "\x00" in path or "\n" in path:
        return "contains a backslash, NUL or newline"
    parts = path.split("/")
    if ".." in parts:
        return "contains '..'"
    if "" in parts or "." in parts:
        return "is not normalised (empty or '.' component)"
    return None


@dataclass(frozen=True)
class Listing:
    """What the signed manifest says the payload holds: ``files`` path -> (sha256, size, mode), dirs -> mode."""

    files: dict[str, tuple[str, int, int]]
    directories: dict[str, int]


def listing(data: Any) -> Listing:
    """Check the parts of a parsed manifest the reader relies on; raise BundleRefused naming the first fault.

    The control node also validates the whole manifest against its JSON schema; this is what the site,
    with no schema library, checks before it trusts a path, a mode or an owner.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise BundleRefused(f"manifest format {found!r} is not {FORMAT}: format 2 lists every directory, mode and "
                            "owner; rebuild the bundle with this lpse-ops (`lpse-ops bundle build`)")
    files: dict[str, tuple[str, int, int]] = {}
    directories: dict[str, int] = {}
    for kind, entries in (("directories", data.get("directories")), ("files", data.get("files"))):
        if not isinstance(entries, list):
            raise BundleRefused(f"manifest {kind} is not a list")
        for entry in entries:
            if not isinstance(entry, dict):
                raise BundleRefused(f"manifest {kind} holds a non-object entry")
            path, mode = entry.get("path"), entry.get("mode")
            if not isinstance(path, str) or unsafe_relative_path(path):
                raise BundleRefused(f"manifest {kind} path {path!r} {unsafe_relative_path(str(path))}")
            if not isinstance(mode, str) or not _MODE.fullmatch(mode):
                raise BundleRefused(f"manifest {kind} {path}: mode {mode!r} is not 0NNN")
            if entry.get("owner") != OWNER or entry.get("group") != OWNER:
                raise BundleRefused(f"manifest {kind} {path}: owner and group must be {OWNER}")
            if path in files or path in directories:
                raise BundleRefused(f"manifest lists {path} twice")
            parent = path.rpartition("/")[0]
            if parent and parent not in directories:
                raise BundleRefused(f"manifest {kind} {path}: its folder {parent} is not listed before it")
            if kind == "directories":
                directories[path] = int(mode, 8)
                continue
            sha256, size = entry.get("sha256"), entry.get("size")
            if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
                raise BundleRefused(f"manifest files {path}: sha256 is not 64 hex characters")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BundleRefused(f"manifest files {path}: size is not a whole number of bytes")
            files[path] = (sha256, size, int(mode, 8))
    return Listing(files, directories)


# ---------------------------------------------------------------------------------------------- reading


class HashingStream(io.RawIOBase):
    """Pass a stream's bytes on, hashing them (sha256) on the way: the bundle file's own bytes, a member's."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.source.read(len(buffer))
        self.digest.update(data)
        buffer[:len(data)] = data
        return len(data)


class _Tail(io.RawIOBase):
    """The decompressed tar stream, keeping its last bytes so what follows the archive's end can be checked."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.kept = bytearray()
        self.kept_from = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.inner.read(len(buffer))
        buffer[:len(data)] = data
        self.kept += data
        if len(self.kept) > 2 * _TAIL_WINDOW:
            drop = len(self.kept) - _TAIL_WINDOW
            del self.kept[:drop]
            self.kept_from += drop
        return len(data)

    def rest_is_zeros(self, end: int) -> bool:
        """True when every byte from offset *end* to the end of the stream is a zero byte."""
        if end < self.kept_from:
            return False
        if any(self.kept[end - self.kept_from:]):
            return False
        while chunk := self.inner.read(CHUNK):
            if any(chunk):
                return False
        return True


@dataclass
class Read:
    """What :func:`read` found: the signed manifest, its signature, and the file's sha256."""

    manifest_bytes: bytes = b""
    signature: bytes = b""
    manifest: Any = None
    listing: Listing | None = None
    sha256: str = ""
    seen: set[str] = field(default_factory=set)


def _check_header(member: tarfile.TarInfo, index: int, global_pax: dict) -> str:
    """Check one member's header; return its name (refusing what a bundle never holds)."""
    name = member.name
    unsafe = f"unsafe entry {name!r} in the bundle"
    if global_pax:
        raise BundleRefused(f"the archive has a global PAX header ({sorted(global_pax)}), which a bundle never has")
    extra = sorted(set(member.pax_headers) - _ALLOWED_PAX)
    if extra:
        raise BundleRefused(f"{unsafe}: PAX header(s) {extra}, which a bundle never has")
    if name.startswith("/"):
        raise BundleRefused(f"{unsafe}: absolute path")
    if ".." in name.split("/"):
        raise BundleRefused(f"{unsafe}: path contains '..'")
    if member.type not in _REGULAR and member.type != tarfile.DIRTYPE:
        kind = ("a symlink" if member.issym() else "a hardlink" if member.islnk() else
                "a device" if member.ischr() or member.isblk() else "a FIFO" if member.isfifo() else
                f"an unsupported entry (tar type {member.type!r})")
        raise BundleRefused(f"{unsafe}: {kind} (bundles hold regular files and directories only)")
    reason = unsafe_relative_path(name)
    if reason:
        raise BundleRefused(f"{unsafe}: path {reason}")
    if member.uid != 0 or member.gid != 0:
        raise BundleRefused(f"{unsafe}: owned by {member.uid}:{member.gid}, not root (0:0)")
    if index == 0 and name != MANIFEST_NAME:
        raise BundleRefused(f"the bundle has no manifest.json as its first entry (found {name!r}): it is not an SPSE "
                            "release bundle or was damaged")
    if index == 1 and name != SIGNATURE_NAME:
        raise BundleRefused(f"the bundle has no manifest.sig after manifest.json (found {name!r}): it is unsigned "
                            "and cannot be trusted")
    if index < 2 and member.type not in _REGULAR:
        raise BundleRefused(f"{unsafe}: {name} must be a regular file")
    if index == 2 and (name != PAYLOAD_DIR or member.type != tarfile.DIRTYPE):
        raise BundleRefused(f"unexpected entry {name!r} in the bundle where the payload/ folder must be")
    if index > 2 and not name.startswith(PAYLOAD_DIR + "/"):
        raise BundleRefused(f"unexpected entry {name!r} in the bundle: a bundle holds only manifest.json, "
                            "manifest.sig and payload/")
    return name


def _small(handle: IO[bytes], limit: int, name: str) -> bytes:
    data = handle.read(limit + 1)
    if len(data) > limit:
        raise BundleRefused(f"{name} is larger than {limit} bytes, which no real bundle has")
    return data


SignatureCheck = Callable[[bytes, bytes], Any]
"""(manifest.json bytes, manifest.sig bytes) -> the parsed manifest; raises when the signature is not good."""
OnFile = Callable[[str, int, IO[bytes]], None]
"""(payload-relative path, mode, stream of its bytes): the stream must be read to its end."""


def read(handle: IO[bytes], check_signature: SignatureCheck, on_directory: Callable[[str, int], None] | None = None,
         on_file: OnFile | None = None) -> Read:
    """Read a bundle from *handle* (its raw gzip bytes) strictly; return what it holds.

    *check_signature* is called once manifest.json and manifest.sig are read, before any payload member;
    each payload member is then checked against the signed listing; *on_directory* and *on_file* (if
    given) receive them as they pass (a file's bytes are hashed on the way; a mismatch raises after
    *on_file* returns, so the caller discards what it wrote). Raises BundleRefused, or whatever
    *check_signature* raises.
    """
    tap = HashingStream(handle)
    result = Read()
    index = 0
    try:
        with gzip.GzipFile(fileobj=io.BufferedReader(tap, CHUNK), mode="rb") as unzipped:
            tail = _Tail(unzipped)
            with tarfile.open(fileobj=io.BufferedReader(tail, 64 * 1024), mode="r|") as tar:
                for member in tar:
                    name = _check_header(member, index, tar.pax_headers)
                    if name in result.seen:
                        raise BundleRefused(f"unsafe entry {name!r} in the bundle: appears more than once")
                    result.seen.add(name)
                    if index == 0:
                        result.manifest_bytes = _small(tar.extractfile(member), MAX_MANIFEST_BYTES, MANIFEST_NAME)
                    elif index == 1:
                        result.signature = _small(tar.extractfile(member), MAX_SIGNATURE_BYTES, SIGNATURE_NAME)
                        result.manifest = check_signature(result.manifest_bytes, result.signature)
                        result.listing = listing(result.manifest)
                    elif index > 2:
                        _payload_member(member, tar, result.listing, on_directory, on_file)
                    index += 1
                end = tar.offset
            if not tail.rest_is_zeros(end):
                raise BundleRefused("data follows the end of the archive, which a bundle never has")
        while tap.read(CHUNK):  # bytes gzip left unread still count in the file's sha256
            pass
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        detail = str(error) or type(error).__name__
        raise BundleRefused(f"not a valid gzip tar ({detail}): truncated, corrupt or not a bundle") from None
    if index < 2:
        raise BundleRefused(f"the bundle has no {'manifest.json' if index == 0 else 'manifest.sig'}: it is not a "
                            "signed SPSE release bundle or was damaged")
    if index < 3:
        raise BundleRefused("the bundle has no payload/ folder")
    assert result.listing is not None
    missing = sorted(f"{PAYLOAD_DIR}/{path}" for path in [*result.listing.directories, *result.listing.files]
                     if f"{PAYLOAD_DIR}/{path}" not in result.seen)
    if missing:
        raise BundleRefused(f"{missing[0]}: listed in the manifest but missing from the bundle"
                            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    result.sha256 = tap.digest.hexdigest()
    return result


def _payload_member(member: tarfile.TarInfo, tar: tarfile.TarFile, signed: Listing | None,
                    on_directory: Callable[[str, int], None] | None, on_file: OnFile | None) -> None:
    assert signed is not None
    relative = member.name[len(PAYLOAD_DIR) + 1:]
    name = member.name
    mode = member.mode & 0o7777
    if member.type == tarfile.DIRTYPE:
        if relative not in signed.directories:
            raise BundleRefused(f"{name}: a folder not listed in the manifest (added after signing)")
        if mode != signed.directories[relative]:
            listed = signed.directories[relative]
            raise BundleRefused(f"{name}: mode {mode:04o} differs from the manifest's {listed:04o}")
        if on_directory:
            on_directory(relative, mode)
        return
    if relative not in signed.files:
        raise BundleRefused(f"{name}: in the bundle but not listed in the manifest (added after signing)")
    sha256, size, listed_mode = signed.files[relative]
    if member.size != size:
        raise BundleRefused(f"{name}: size mismatch ({member.size} bytes, manifest says {size}) (tampered or corrupt)")
    if mode != listed_mode:
        raise BundleRefused(f"{name}: mode {mode:04o} differs from the manifest's {listed_mode:04o} (tampered)")
    source = tar.extractfile(member)
    assert source is not None
    hashing = HashingStream(source)
    if on_file:
        on_file(relative, mode, hashing)
    while hashing.read(CHUNK):
        pass
    if hashing.digest.hexdigest() != sha256:
        raise BundleRefused(f"{name}: sha256 mismatch (tampered or corrupt)")


# ---------------------------------------------------------------------------------------------- keys


def raw_public_key(text: str) -> bytes:
    """The 32 raw bytes of an Ed25519 public key given as an OpenSSH line or a PEM block; ValueError otherwise."""
    text = text.strip()
    if text.startswith("-----BEGIN PUBLIC KEY-----"):
        body = "".join(line for line in text.splitlines() if line and not line.startswith("-----"))
        der = base64.b64decode(body, validate=True)
        if len(der) != len(_ED25519_SPKI) + 32 or not der.startswith(_ED25519_SPKI):
            raise ValueError("not an Ed25519 public key")
        return der[len(_ED25519_SPKI):]
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(lines) != 1:
        raise ValueError("expected exactly one key line")
    fields = lines[0].split()
    if len(fields) < 2 or fields[0] != "ssh-ed25519":
        raise ValueError("not an ssh-ed25519 key line")
    blob = base64.b64decode(fields[1], validate=True)
    parts, offset = [], 0
    while offset < len(blob):
        length = int.from_bytes(blob[offset:offset + 4], "big")
        parts.append(blob[offset + 4:offset + 4 + length])
        offset += 4 + length
    if len(parts) != 2 or parts[0] != b"ssh-ed25519" or len(parts[1]) != 32:
        raise ValueError("malformed ssh-ed25519 key")
    return parts[1]


def key_id(raw: bytes) -> str:
    """The key id lpse-ops names a release key by: 16 hex characters of sha256 over its raw bytes."""
    return hashlib.sha256(raw).hexdigest()[:16]


def pem(raw: bytes) -> str:
    """An Ed25519 public key as the PEM block OpenSSL reads."""
    return ("-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(_ED25519_SPKI + raw).decode("ascii")
            + "\n-----END PUBLIC KEY-----\n")


def openssl_check(trusted: dict[str, bytes], work: str) -> SignatureCheck:
    """A signature check by OpenSSL (``pkeyutl -verify -rawin``) against *trusted* (key id -> raw key)."""
    from lpse_ops.site.proc import run

    def check(manifest_bytes: bytes, signature_text: bytes) -> Any:
        try:
            data = json.loads(manifest_bytes.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise BundleRefused(f"manifest.json is not UTF-8 JSON ({error})") from None
        claimed = data.get("key_id") if isinstance(data, dict) else None
        if claimed not in trusted:
            raise BundleRefused(f"manifest.json is signed by key {claimed!r}, which is not among the trusted keys "
                                f"({', '.join(sorted(trusted)) or 'none given'})")
        try:
            signature = base64.b64decode(signature_text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise BundleRefused("manifest.sig is not valid base64: the signature is damaged") from None
        paths = {"manifest": os.path.join(work, "manifest.json"), "sig": os.path.join(work, "manifest.sig.bin"),
                 "key": os.path.join(work, "key.pem")}
        key = pem(trusted[claimed]).encode()
        for name, content in (("manifest", manifest_bytes), ("sig", signature), ("key", key)):
            with open(paths[name], "wb") as handle:
                handle.write(content)
        done = run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", paths["key"], "-rawin",
                    "-in", paths["manifest"], "-sigfile", paths["sig"]], timeout=60, check=False, step="signature")
        if done.returncode != 0:
            raise BundleRefused(f"signature does not match: manifest.json was altered or signed by another key "
                                f"(key id {claimed}; openssl: {(done.stdout + done.stderr).strip()[-200:]})")
        return data

    return check
