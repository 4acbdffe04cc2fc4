"""Verify an evidence bundle, offline: the signature against the trusted keys, every member against the
manifest, each audit entry's hash and link, and the witnessed heads (also, when asked, against the live
witness bucket). Every finding names what is off: a bad or untrusted signature, a file altered, missing or
added, an audit entry (by seq) whose hash no longer matches its content, a broken link, a witnessed head the
segment disagrees with.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature

from lpse_ops import bundle, jsonlimits
from lpse_ops.actions.evidence_format import (
    FORMAT,
    KIND,
    MANIFEST,
    SEGMENT,
    SIGNATURE,
    SITE_ENTRIES,
    WITNESS_OBJECTS,
    EvidenceError,
)
from lpse_ops.state import audit, witness

MAX_MEMBER_BYTES = 1024 * 1024 * 1024
MAX_TOTAL_BYTES = 4 * 1024 * 1024 * 1024
"""verify reads no more than this from one bundle, all members together (a year of a site is megabytes)."""
READ_BLOCK = 1024 * 1024
PARSED = frozenset({MANIFEST, SIGNATURE, SITE_ENTRIES, SEGMENT, WITNESS_OBJECTS})
"""The members verify parses, so holds in memory; every other one is only hashed as it streams by."""


@dataclass
class Finding:
    """One thing wrong with a bundle: its kind, the file and audit entry it concerns, and what is wrong."""

    kind: str  # unreadable signature untrusted_key missing added altered duplicate entry link witness manifest
    message: str
    file: str | None = None
    seq: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "file": self.file, "seq": self.seq, "message": self.message}


@dataclass
class VerifyReport:
    """The verdict on one bundle; ``ok`` only when nothing at all is off."""

    path: str
    findings: list[Finding] = field(default_factory=list)
    site: str | None = None
    period: dict[str, Any] = field(default_factory=dict)
    key_id: str | None = None
    signed_by: str | None = None
    files: int = 0
    audit_entries: int = 0
    witness_objects: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, kind: str, message: str, file: str | None = None, seq: int | None = None) -> None:
        self.findings.append(Finding(kind, message, file, seq))

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "path": self.path, "site": self.site, "period": self.period, "key_id": self.key_id,
                "signed_by": self.signed_by, "files": self.files, "audit_entries": self.audit_entries,
                "witness_objects": self.witness_objects, "findings": [f.as_dict() for f in self.findings]}


@dataclass(frozen=True)
class Member:
    """One regular member of a bundle as verify read it: its sha256 and size, and its bytes when verify
    parses it (``PARSED``); every other member is hashed as it streams by, never held in memory."""

    sha256: str
    size: int
    data: bytes | None = None


def _read_members(path: Path, report: VerifyReport) -> dict[str, Member]:
    """Read every regular member of the tar at *path*, in blocks; damage and odd members become findings.

    Each member is at most MAX_MEMBER_BYTES and all of them together at most MAX_TOTAL_BYTES (the sizes
    the tar headers declare, checked before a byte of the member is read): past that, the rest of the
    bundle is not read and the refusal is a finding.
    """
    members: dict[str, Member] = {}
    last = "the start"
    total = 0
    try:
        with tarfile.open(path, mode="r:") as tar:
            while True:
                try:
                    member = tar.next()
                except tarfile.TarError as error:
                    report.add("unreadable", f"the tar is damaged after {last} ({error}): later files cannot be read")
                    break
                if member is None:
                    break
                name = member.name
                if not member.isfile():
                    report.add("added", f"{name}: not a regular file (a bundle holds files only)", file=name)
                    continue
                if name.startswith("/") or ".." in Path(name).parts:
                    report.add("added", f"{name}: unsafe path", file=name)
                    continue
                if member.size > MAX_MEMBER_BYTES:
                    report.add("unreadable", f"{name}: {member.size} bytes is larger than any evidence file",
                               file=name)
                    continue
                total += member.size
                if total > MAX_TOTAL_BYTES:
                    report.add("unreadable", f"the files up to {name} hold more than {MAX_TOTAL_BYTES} bytes, larger "
                                             "than any evidence bundle: the rest of it was not read", file=name)
                    break
                read = _read_member(tar, member, keep=name in PARSED)
                if name in members:
                    report.add("duplicate", f"{name}: appears twice in the tar (added)", file=name)
                    continue
                members[name] = read
                last = name
    except (OSError, tarfile.TarError) as error:
        report.add("unreadable", f"{path} is not a readable tar ({error})")
    return members


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, keep: bool) -> Member:
    """Hash *member* in READ_BLOCK pieces; keep its bytes only when *keep*."""
    digest, size, kept = hashlib.sha256(), 0, bytearray() if keep else None
    handle = tar.extractfile(member)
    if handle is not None:
        with handle:
            while block := handle.read(READ_BLOCK):
                digest.update(block)
                size += len(block)
                if kept is not None:
                    kept += block
    return Member(digest.hexdigest(), size, bytes(kept) if kept is not None else None)


def _parse_jsonl(name: str, data: bytes, report: VerifyReport) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = jsonlimits.loads(line)
            rows.append({key: row[key] for key in (*audit.HASHED_FIELDS, "hash")})
        except (ValueError, KeyError, TypeError) as error:
            report.add("entry", f"{name} line {number}: not an audit entry ({error})", file=name)
    return rows


def _check_entries(name: str, rows: list[dict[str, Any]], report: VerifyReport, linked: bool) -> None:
    """Recompute every entry's hash; with *linked*, check each prev_hash against the entry before it."""
    previous: dict[str, Any] | None = None
    for row in rows:
        seq = row["seq"]
        try:
            recomputed = audit.entry_hash(seq, row["ts"], row["actor"], row["operation"], row["detail"],
                                          row["prev_hash"])
        except (TypeError, ValueError) as error:
            report.add("entry", f"audit entry {seq} in {name}: cannot be hashed ({error})", file=name, seq=seq)
            continue
        if recomputed != row["hash"]:
            report.add("entry", f"audit entry {seq} in {name}: its hash does not match its content (altered)",
                       file=name, seq=seq)
        if linked and previous is not None:
            if seq != previous["seq"] + 1:
                report.add("link", f"{name}: entries {previous['seq'] + 1}-{seq - 1} are missing (removed)",
                           file=name, seq=previous["seq"] + 1)
            elif row["prev_hash"] != previous["hash"]:
                report.add("link", f"audit entry {seq} in {name}: prev_hash does not match entry {previous['seq']} "
                                   "(replaced or reordered)", file=name, seq=seq)
        previous = row


def verify(path: Path, trusted_keys_dir: Path, against_witness: bool = False) -> VerifyReport:
    """Check a bundle against the trusted public keys in *trusted_keys_dir*; return every finding.

    *against_witness*: also look up every witness object the bundle lists in the witness bucket (the
    configured witness identity): each must be there, at that version, under COMPLIANCE retention, so
    not even the holder of the signing key can add a witnessed head of their own.
    Raises EvidenceError when the trusted keys (or, with *against_witness*, the witness) cannot be read.
    """
    try:
        trusted = bundle.load_trusted_keys(trusted_keys_dir)
    except bundle.BundleError as error:
        raise EvidenceError(str(error).replace("LKPP's release public key", "LKPP's evidence public key")) from error
    if not trusted:
        raise EvidenceError(f"no public key (*.pub) in {trusted_keys_dir}: copy LKPP's evidence public key into it")
    report = VerifyReport(str(path))
    members = _read_members(Path(path), report)
    kept = {name: member.data for name, member in members.items() if member.data is not None}
    manifest_data, signature = kept.get(MANIFEST), kept.get(SIGNATURE)
    if manifest_data is None:
        report.add("missing", f"{MANIFEST} is missing: nothing in the bundle can be checked", file=MANIFEST)
        return report
    try:
        manifest = jsonlimits.loads(manifest_data)
        listed = {entry["path"]: entry for entry in manifest["files"]}
        if manifest.get("kind") != KIND or manifest.get("format") != FORMAT:
            raise ValueError(f"not an lpse-ops evidence manifest (kind {manifest.get('kind')!r})")
    except (ValueError, KeyError, TypeError) as error:
        report.add("manifest", f"{MANIFEST} is not a valid evidence manifest ({error}): altered", file=MANIFEST)
        manifest, listed = {}, {}
    report.site, report.period, report.key_id = manifest.get("site"), manifest.get("period", {}), manifest.get("key_id")
    if signature is None:
        report.add("missing", f"{SIGNATURE} is missing: the manifest is not signed", file=SIGNATURE)
    else:
        key = trusted.get(str(report.key_id))
        if key is None:
            report.add("untrusted_key", f"signed with key {report.key_id}, which is not among the trusted keys in "
                                        f"{trusted_keys_dir}", file=SIGNATURE)
        else:
            try:
                key.verify(base64.b64decode(signature.strip(), validate=True), manifest_data)
                report.signed_by = report.key_id
            except (InvalidSignature, binascii.Error, ValueError):
                report.add("signature", f"bad signature: {MANIFEST} or {SIGNATURE} was altered after signing",
                           file=MANIFEST)
    for name, entry in sorted(listed.items()):
        found = members.get(name)
        if found is None:
            report.add("missing", f"{name}: listed in the manifest but missing from the bundle (removed)", file=name)
        elif found.sha256 != entry.get("sha256") or found.size != entry.get("size"):
            report.add("altered", f"{name}: its sha256 differs from the manifest's (altered)", file=name)
    for name in sorted(set(members) - set(listed) - {MANIFEST, SIGNATURE}):
        if listed:
            report.add("added", f"{name}: not listed in the manifest (added)", file=name)
    report.files = len([name for name in listed if name in members])
    _check_content(kept, manifest, report)
    if against_witness:
        _check_witness_bucket(kept, report)
    return report


def _check_witness_bucket(members: dict[str, bytes], report: VerifyReport) -> None:
    """Look up each listed witness object (key and version) in the live witness bucket."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        where = witness.target()
    except witness.WitnessError as error:
        raise EvidenceError(str(error)) from error
    if where is None:
        raise EvidenceError("--witness needs the witness settings (LPSE_OPS_WITNESS_*, docs/settings.md)")
    try:
        objects = jsonlimits.loads(members.get(WITNESS_OBJECTS, b"[]") or b"[]")
    except ValueError:
        return  # already reported
    s3_client = witness.client(where)
    for item in objects:
        key, version = str(item.get("key")), str(item.get("version_id"))
        seq = item.get("seq")
        if witness.parse_key(key) != (seq, item.get("hash")):
            report.add("witness", f"witness object {key}: its key does not record head {seq}", WITNESS_OBJECTS, seq)
            continue
        try:
            head = s3_client.head_object(Bucket=where.bucket, Key=key, VersionId=version)
        except ClientError as error:
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (400, 404):
                report.add("witness", f"witnessed head {seq}: no such object version in {where.name} ({key}, "
                                      f"version {version}): the bundle's witness objects were made up",
                           WITNESS_OBJECTS, seq)
                continue
            raise EvidenceError(f"cannot read the witness bucket {where.name}: {error}") from error
        except (BotoCoreError, OSError) as error:
            raise EvidenceError(f"cannot read the witness bucket {where.name}: {error}") from error
        if head.get("ObjectLockMode") != "COMPLIANCE":
            report.add("witness", f"witnessed head {seq}: the object version is not under COMPLIANCE retention "
                                  f"({head.get('ObjectLockMode')})", WITNESS_OBJECTS, seq)


def _check_content(members: dict[str, bytes], manifest: Mapping[str, Any], report: VerifyReport) -> None:
    """Name the audit entries (by seq) and witnessed heads that do not hold, whatever the hashes say."""
    segment = _parse_jsonl(SEGMENT, members.get(SEGMENT, b""), report)
    site_rows = _parse_jsonl(SITE_ENTRIES, members.get(SITE_ENTRIES, b""), report)
    report.audit_entries = len(site_rows)
    _check_entries(SEGMENT, segment, report, linked=True)
    _check_entries(SITE_ENTRIES, site_rows, report, linked=False)
    by_seq = {row["seq"]: row for row in segment}
    for row in site_rows:
        if segment and by_seq.get(row["seq"]) != row:
            report.add("entry", f"audit entry {row['seq']}: {SITE_ENTRIES} and {SEGMENT} disagree on it (one was "
                                "altered)", seq=row["seq"])
    audit_part = manifest.get("audit") or {}
    if segment and (segment[0]["seq"] != audit_part.get("segment_first_seq")
                    or segment[-1]["seq"] != audit_part.get("segment_last_seq")):
        report.add("link", f"{SEGMENT} runs from {segment[0]['seq']} to {segment[-1]['seq']}, the manifest says "
                           f"{audit_part.get('segment_first_seq')}-{audit_part.get('segment_last_seq')} (cut)",
                   file=SEGMENT)
    try:
        objects = jsonlimits.loads(members.get(WITNESS_OBJECTS, b"[]") or b"[]")
        heads = [(int(o["seq"]), str(o["hash"])) for o in objects]
    except (ValueError, KeyError, TypeError) as error:
        report.add("witness", f"{WITNESS_OBJECTS} is not a list of witness objects ({error})", file=WITNESS_OBJECTS)
        heads = []
    report.witness_objects = len(heads)
    for seq, hash_ in heads:
        have = by_seq.get(seq)
        if have is None:
            report.add("witness", f"witnessed head {seq} is not in {SEGMENT} (cut)", file=WITNESS_OBJECTS, seq=seq)
        elif have["hash"] != hash_:
            report.add("witness", f"audit entry {seq}: its hash differs from the witnessed head {hash_[:12]} "
                                  "(the chain was rewritten)", file=SEGMENT, seq=seq)
    covering = (manifest.get("witness") or {}).get("covering_seq")
    if covering is not None and covering not in {seq for seq, _ in heads}:
        report.add("witness", f"the manifest's covering witnessed head {covering} is not in {WITNESS_OBJECTS} "
                              "(removed)", file=WITNESS_OBJECTS, seq=covering)
