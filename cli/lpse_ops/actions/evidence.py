"""Evidence export and verification (clauses 6.2.19, 13.3, 13.4): one site's records over a period, as a
signed, tamper-evident tar that anyone holding the public key can check, offline.

The bundle (an uncompressed tar, so one damaged byte stays in one file) holds:

- ``manifest.json``: site, period, who exported it when, the signing key id, the store, and every
  other file with its sha256 and size; ``manifest.sig``: the base64 ed25519 signature over its bytes;
- ``audit/site-entries.jsonl``: the audit entries of the period that are about the site;
- ``audit/chain-segment.jsonl``: every entry from the first of those to the first witnessed head at
  or after the last of them (a chain can only be proven whole: each hash is recomputed and each link
  checked, and the witnessed heads pin the segment to what was written at the time);
- ``records/*.json``: runs (with host results and their steps by parent id), restore verifications,
  fleet probes, and, where the state store has them, compliance audits, drills and incidents;
- ``witness/objects.json``: the witness objects (key, version, time) whose heads fall in the segment;
- ``BACA-SAYA.txt``: what the bundle is and how to verify it, in Indonesian.

:func:`lpse_ops.actions.evidence_verify.verify` names what is off: a bad or untrusted signature, a file altered,
missing or added, an audit entry (by seq) whose hash no longer matches its content, a broken link, a witnessed
head the segment disagrees with. The bundle's layout (member names, manifest kind) is in
:mod:`lpse_ops.actions.evidence_format`.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lpse_ops import bundle, config
from lpse_ops.actions.evidence_format import (
    FORMAT,
    KIND,
    MANIFEST,
    README,
    SEGMENT,
    SIGNATURE,
    SITE_ENTRIES,
    WITNESS_OBJECTS,
    EvidenceError,
)
from lpse_ops.state import StateStore, audit, witness
from lpse_ops.state import evidence as records

PASSPHRASE_ENV = "LPSE_OPS_EVIDENCE_KEY_PASSPHRASE"  # noqa: S105 - the name of a variable, not a secret
OPERATION = "evidence.export"

# Other areas' records: (file, module, function); each function is (store, since, until) -> [dict with "site"].
OPTIONAL_RECORDS = (
    ("records/compliance-audits.json", "lpse_ops.state.audits", "list_audits"),
    ("records/drills.json", "lpse_ops.state.drills", "list_drills"),
    ("records/incidents.json", "lpse_ops.state.incidents", "list_incidents"),
)

Progress = Callable[[str], None]


def default_key_path() -> Path:
    """Return the evidence signing key's default path: ``LPSE_OPS_EVIDENCE_KEY`` or ``<home>/evidence-keys``."""
    from lpse_ops.settings import current

    return current().evidence_key or config.home() / "evidence-keys" / "evidence.key"


def keygen(out_dir: Path, name: str) -> tuple[Path, Path, str]:
    """Make an evidence signing key pair (encrypted with ``LPSE_OPS_EVIDENCE_KEY_PASSPHRASE`` if set).

    Returns (private path, public path, key id); raises EvidenceError if either file exists.
    """
    private_path, public_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    try:
        return private_path, public_path, bundle.keygen(private_path, public_path, f"{name} (evidence)",
                                                        passphrase_env=PASSPHRASE_ENV)
    except bundle.BundleError as error:
        raise EvidenceError(str(error)) from error


# -- export ------------------------------------------------------------------------------------

DEFAULT_ZONE = "Asia/Jakarta"


def parse_period(start: str, end: str, zone: str = DEFAULT_ZONE) -> tuple[datetime, datetime, dict[str, str]]:
    """Return ``(since, until, as given)`` for a period from *start* to *end*, both included.

    Each bound is a date (``2026-11-01``: the whole day in *zone*) or an ISO 8601 time (with an offset,
    or in *zone*). ``until`` is exclusive: the day after an end date, or just after an end time.
    Raises EvidenceError naming the bad bound.
    """
    from datetime import date, timedelta
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise EvidenceError(f"unknown time zone {zone!r}: use an IANA name such as Asia/Jakarta, Asia/Makassar, "
                            "Asia/Jayapura or UTC") from None

    def bound(text: str, name: str, is_end: bool) -> datetime:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            day = None
        if day is not None:
            moment = datetime(day.year, day.month, day.day, tzinfo=tz)
            return moment + timedelta(days=1) if is_end else moment
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise EvidenceError(f"{name} {text!r} is neither a date (2026-11-01) nor an ISO time "
                                "(2026-11-01T08:00+07:00)") from None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=tz)
        return moment + timedelta(microseconds=1) if is_end else moment

    since, until = bound(start, "--from", False), bound(end, "--to", True)
    if until <= since:
        raise EvidenceError(f"--to {end} is before --from {start}: swap them")
    return since, until, {"from": start, "to": end, "timezone": zone}


@dataclass
class ExportRequest:
    """One site's evidence over ``[since, until)`` (aware datetimes), written to *out*, signed with *key_path*.

    *period* is how the operator gave the period (dates and zone), kept in the manifest as given.
    """

    site: str
    since: datetime
    until: datetime
    out: Path
    key_path: Path
    period: dict[str, str] = field(default_factory=dict)
    state_url: str | None = None
    progress: Progress | None = None


@dataclass
class ExportResult:
    """What was written: the bundle, its sha256, the manifest, and the run that recorded the export."""

    path: Path
    sha256: str
    manifest: dict[str, Any]
    run_id: int | None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        files = self.manifest["files"]
        return {"path": str(self.path), "sha256": self.sha256, "run_id": self.run_id, "site": self.manifest["site"],
                "period": self.manifest["period"], "key_id": self.manifest["key_id"],
                "files": {entry["path"]: entry["size"] for entry in files}, "audit": self.manifest["audit"],
                "witness": self.manifest["witness"], "records": self.manifest["records"],
                "warnings": list(self.warnings)}


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False, default=str) + "\n").encode("utf-8")


def _jsonl_bytes(rows: list[Mapping[str, Any]]) -> bytes:
    return "".join(audit.canonical_json(dict(row)) + "\n" for row in rows).encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _optional_records(store: StateStore, site: str, since: datetime, until: datetime) -> dict[str, Any]:
    """Return {file: rows of *site*} for every other area whose state module exists, else {file: None}."""
    found: dict[str, Any] = {}
    for path, module_name, function in OPTIONAL_RECORDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            found[path] = None
            continue
        rows = getattr(module, function)(store, since, until)
        found[path] = [row for row in rows if row.get("site") == site]
    return found


def _witness_part(store: StateStore, site_entries: list[dict], warnings: list[str]) -> tuple[dict, list, int | None]:
    """Return (the manifest's witness summary, the witness objects of the segment, the covering seq)."""
    try:
        where = witness.target()
    except witness.WitnessError as error:
        warnings.append(str(error))
        return {"configured": False, "error": str(error)}, [], None
    if where is None:
        warnings.append("no audit-log witness is configured: the bundle's audit segment is signed but not "
                        "pinned to a witness (docs/evidence.md)")
        return {"configured": False}, [], None
    try:
        objects = witness.list_objects(where, store.identity)
    except witness.WitnessError as error:
        warnings.append(f"{error}: the bundle's audit segment is not pinned to the witness")
        return {"configured": True, **where.public(), "error": str(error)}, [], None
    last = site_entries[-1]["seq"] if site_entries else None
    chain = {entry["seq"]: entry["hash"] for entry in store.audit_entries()} if objects else {}
    covering = min((o.seq for o in objects if last is not None and o.seq >= last and chain.get(o.seq) == o.hash),
                   default=None)
    summary = {"configured": True, **where.public(), "prefix": witness.store_prefix(store.identity),
               "covering_seq": covering}
    check = witness.compare(({"seq": s, "hash": h} for s, h in chain.items()), objects)
    summary["check_at_export"] = {"ok": check.ok, "first_disagreeing_seq": check.first_disagreeing_seq,
                                  "problems": check.problems}
    if not check.ok:
        warnings.append(f"the audit log disagrees with its witness from entry {check.first_disagreeing_seq}: "
                        "the bundle records it (audit-log verify --witness)")
    if last is not None and covering is None:
        warnings.append(f"no witnessed head at or after entry {last} yet: the newest entries are not pinned")
    return summary, objects, covering


def _readme(manifest: Mapping[str, Any]) -> bytes:
    period = manifest["period"]
    text = f"""PAKET BUKTI (EVIDENCE) LPSE-OPS

Situs      : {manifest['site']}
Periode    : {period.get('from')} s.d. {period.get('to')} ({period.get('timezone')})
             = {period['since_utc']} s.d. {period['until_utc']} (UTC, batas akhir tidak termasuk)
Dibuat     : {manifest['created']} (UTC) oleh {manifest['created_by']}
Kunci      : ed25519, key id {manifest['key_id']}

Paket ini berisi catatan audit (hash berantai), catatan operasi (runs), verifikasi pemulihan,
hasil probe, serta audit kepatuhan, latihan (drill) dan insiden bila ada, untuk situs dan periode
di atas (Perjanjian Layanan pasal 6.2.19, 13.3 dan 13.4).

manifest.json mencatat sha256 setiap berkas; manifest.sig adalah tanda tangan ed25519 atas
manifest.json. Kepala rantai audit juga ditulis ke bucket S3 ber-Object Lock (COMPLIANCE) saat
operasi terjadi; objek saksi yang mencakup periode ini ada di {WITNESS_OBJECTS}.

Cara memeriksa (dengan kunci publik LKPP di folder KUNCI):
    lpse-ops evidence verify PAKET.tar --trusted-keys KUNCI
Hasil selain "intact" (kode keluar 1) menyebut berkas, nomor entri audit, atau tanda tangan
yang tidak sesuai.
"""
    return text.encode("utf-8")


def export(request: ExportRequest) -> ExportResult:
    """Collect, sign and write one site's evidence; record the export as a run with an audit entry.

    Raises EvidenceError before anything is written when the key cannot be loaded, the output exists
    or the period is empty or reversed.
    """
    say = request.progress or (lambda _message: None)
    if request.since.tzinfo is None or request.until.tzinfo is None:
        raise EvidenceError("the period's bounds must carry a time zone")
    if request.until <= request.since:
        raise EvidenceError(f"the period ends ({request.until.isoformat()}) before it starts "
                            f"({request.since.isoformat()}): swap --from and --to")
    out = Path(request.out)
    if out.exists() or out.is_symlink():
        raise EvidenceError(f"{out} already exists: evidence is never overwritten, choose another --out")
    if not out.parent.is_dir():
        raise EvidenceError(f"folder {out.parent} does not exist: create it or choose another --out")
    try:
        key = bundle.load_private_key(request.key_path, passphrase_env=PASSPHRASE_ENV)
    except bundle.BundleError as error:
        raise EvidenceError(f"{error} (make an evidence key with `lpse-ops evidence keygen`)") from error
    key_id = bundle.key_id(key.public_key())
    since, until = request.since.astimezone(UTC), request.until.astimezone(UTC)
    warnings: list[str] = []
    with StateStore.open(request.state_url) as store:
        args = {"site": request.site, "since": since.isoformat(), "until": until.isoformat(), "out": str(out),
                "key_id": key_id, **({"period": request.period} if request.period else {})}
        run_id = store.start_run(OPERATION, args, [request.site])
        try:
            say("reading the audit log")
            chain_check = store.audit_verify()
            if not chain_check.ok:
                warnings.append(f"the audit log is not intact ({len(chain_check.problems)} problem(s)): the bundle "
                                "records it (audit-log verify)")
            site_entries = records.audit_for_site(store, request.site, since, until)
            if not [e for e in site_entries if e["detail"].get("run_id") != run_id]:
                warnings.append(f"the audit log holds nothing about {request.site} in the period but this export: "
                                "check --site (an inventory host name, e.g. site1) and --from/--to/--tz")
            say("reading the witness")
            witness_summary, objects, covering = _witness_part(store, site_entries, warnings)
            first = site_entries[0]["seq"] if site_entries else None
            last = max(covering or 0, site_entries[-1]["seq"]) if site_entries else None
            segment = records.audit_range(store, first, last) if first is not None and last is not None else []
            in_segment = [o.as_dict() for o in objects if first is not None and last is not None
                          and first <= o.seq <= last]
            say("reading runs, verifications, probes and other records")
            files: dict[str, bytes] = {
                SITE_ENTRIES: _jsonl_bytes(site_entries),
                SEGMENT: _jsonl_bytes(segment),
                "records/runs.json": _json_bytes(records.runs_for_site(store, request.site, since, until)),
                "records/restore-verifications.json": _json_bytes(
                    records.verifications_for_site(store, request.site, since, until)),
                "records/fleet-probes.json": _json_bytes(records.probes_for_site(store, request.site, since, until)),
                WITNESS_OBJECTS: _json_bytes(in_segment),
            }
            counts: dict[str, int | None] = {}
            for path, rows in _optional_records(store, request.site, since, until).items():
                counts[path] = None if rows is None else len(rows)
                if rows is not None:
                    files[path] = _json_bytes(rows)
            for path in ("records/runs.json", "records/restore-verifications.json", "records/fleet-probes.json"):
                counts[path] = len(json.loads(files[path]))
            manifest: dict[str, Any] = {
                "format": FORMAT, "kind": KIND, "site": request.site,
                "period": {**request.period, "since_utc": since.isoformat(), "until_utc": until.isoformat()},
                "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "created_by": config.actor(),
                "key_id": key_id, "store": store.identity, "run_id": run_id,
                "audit": {"site_entries": len(site_entries), "segment_first_seq": first, "segment_last_seq": last,
                          "chain_ok_at_export": chain_check.ok, "chain_problems_at_export": chain_check.problems},
                "witness": {**witness_summary, "objects_in_segment": len(in_segment)},
                "records": {path: count for path, count in sorted(counts.items())},
            }
            files[README] = _readme(manifest)
            manifest["files"] = [{"path": path, "sha256": _sha256(data), "size": len(data)}
                                 for path, data in sorted(files.items())]
            manifest_data = bundle.manifest_bytes(manifest)
            signature = base64.b64encode(key.sign(manifest_data)) + b"\n"
            say(f"writing {out}")
            digest = _write_tar(out, [(MANIFEST, manifest_data), (SIGNATURE, signature),
                                      *sorted(files.items())])
        except BaseException as error:
            store.finish_run(run_id, "failed" if isinstance(error, Exception) else "aborted",
                             {request.site: {"status": "failed"}}, summary={"error": str(error)[:500]})
            raise
        store.finish_run(run_id, "ok", {request.site: {"status": "ok", "changed": 0}}, artifact_dir=str(out),
                         summary={"sha256": digest, "key_id": key_id, "site_entries": len(site_entries),
                                  "segment": [first, last], "witness_covering_seq": covering,
                                  "warnings": warnings})
    return ExportResult(out, digest, manifest, run_id, warnings)


def _write_tar(out: Path, members: list[tuple[str, bytes]]) -> str:
    """Write *members* as an uncompressed tar (mode 0600, atomically); return the file's sha256."""
    mtime = int(datetime.now(UTC).timestamp())
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            with tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size, info.mode, info.mtime = len(data), 0o644, mtime
                    info.uname = info.gname = "lpse-ops"
                    tar.addfile(info, io.BytesIO(data))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.link(tmp, out)  # fails if *out* appeared meanwhile: evidence is never overwritten
    finally:
        os.unlink(tmp)
    digest = hashlib.sha256()
    with open(out, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
