"""The tamper-evident audit trail (service agreement clauses 13.3 and 13.4).

Each entry's ``hash`` is the SHA-256 of a canonical JSON document (sorted keys, no whitespace) of
``{seq, ts, actor, operation, detail, prev_hash}``; ``prev_hash`` is the previous entry's hash and
the first entry's is 64 zeros. Editing, deleting, reordering or replacing an entry breaks the chain;
deleting the *tail* is caught by the head anchor, a small ``{seq, hash}`` file kept outside the
database and rewritten atomically after every append.

This module is pure logic (hashing, verification, the anchor file); the database side lives in
:mod:`lpse_ops.state.store`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first entry."""

HASHED_FIELDS = ("seq", "ts", "actor", "operation", "detail", "prev_hash")


def canonical_json(data: Any) -> str:
    """Return *data* as canonical JSON: sorted keys, no whitespace, ASCII only, no NaN."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def normalize_detail(detail: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return *detail* as it will read back from a JSON column (so its hash can be recomputed).

    Non-JSON values (paths, datetimes, ...) become strings; integer keys become string keys.
    """
    return json.loads(json.dumps(dict(detail or {}), default=str, allow_nan=False))


def entry_hash(seq: int, ts: str, actor: str, operation: str, detail: Mapping[str, Any], prev_hash: str) -> str:
    """Return the SHA-256 hex digest that chains one audit entry."""
    document = {"seq": seq, "ts": ts, "actor": actor, "operation": operation, "detail": detail,
                "prev_hash": prev_hash}
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


def utc_timestamp() -> str:
    """Return the current UTC time as the ISO 8601 string stored (and hashed) in ``ts``."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass
class AuditVerifyResult:
    """The outcome of walking the audit chain and comparing it with the head anchor."""

    ok: bool
    entries: int
    problems: list[str] = field(default_factory=list)
    head_seq: int | None = None
    head_hash: str | None = None
    anchor_seq: int | None = None
    anchor_path: str | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-ready dict."""
        return {"ok": self.ok, "entries": self.entries, "problems": list(self.problems),
                "head_seq": self.head_seq, "head_hash": self.head_hash, "anchor_seq": self.anchor_seq,
                "anchor_path": self.anchor_path, "warnings": list(self.warnings)}


@dataclass(frozen=True)
class HeadAnchor:
    """The last ``{seq, hash}`` this machine appended to a store, kept outside the database."""

    seq: int
    hash: str
    store: str | None = None


def _missing(first: int, last: int) -> str:
    return f"entry {first} missing" if first == last else f"entries {first}-{last} missing"


def verify_chain(entries: Iterable[Mapping[str, Any]], anchor: HeadAnchor | None = None,
                 store: str | None = None, anchor_path: str | None = None) -> AuditVerifyResult:
    """Walk *entries* (ordered by ``seq``) and report every break in the chain, precisely.

    *anchor* is the head anchor read from outside the database (``None`` when there is none);
    *store* is the identity of the store being checked, compared with the anchor's.
    """
    rows = list(entries)
    problems: list[str] = []
    warnings: list[str] = []
    by_hash = {row["hash"]: row["seq"] for row in rows}
    by_seq = {row["seq"]: row for row in rows}
    previous: Mapping[str, Any] | None = None
    for row in rows:
        seq = row["seq"]
        expected = 1 if previous is None else previous["seq"] + 1
        gap = seq != expected
        if gap:
            if previous is None:
                problems.append(f"{_missing(1, seq - 1)}: chain starts at {seq} (deleted)")
            else:
                problems.append(f"{_missing(expected, seq - 1)}: sequence jumps from {previous['seq']} to {seq}"
                                f" (deleted)")
        recomputed = entry_hash(seq, row["ts"], row["actor"], row["operation"], row["detail"], row["prev_hash"])
        if recomputed != row["hash"]:
            message = f"entry {seq}: hash does not match its content (edited)"
            # Content moved from another position still hashes correctly under its original seq: try
            # the position its prev_hash points after, then the neighbourhood (swaps are local).
            origin = by_hash.get(row["prev_hash"], 0 if row["prev_hash"] == GENESIS_HASH else None)
            candidates = ([origin + 1] if origin is not None else []) + list(range(max(1, seq - 16), seq + 17))
            for candidate in candidates:
                if candidate != seq and entry_hash(candidate, row["ts"], row["actor"], row["operation"],
                                                   row["detail"], row["prev_hash"]) == row["hash"]:
                    message = (f"entry {seq}: hash does not match its content, which was written as entry "
                               f"{candidate} (reordered)")
                    break
            problems.append(message)
        if previous is None and not gap and row["prev_hash"] != GENESIS_HASH:
            problems.append(f"entry {seq}: prev_hash is not the genesis value (replaced)")
        elif previous is not None and not gap and row["prev_hash"] != previous["hash"]:
            problems.append(f"entry {seq}: prev_hash does not match entry {previous['seq']} (reordered or replaced)")
        previous = row

    head_seq = previous["seq"] if previous else None
    head_hash = previous["hash"] if previous else None
    if anchor is None:
        if rows:
            warnings.append("no head anchor" + (f" at {anchor_path}" if anchor_path else "")
                            + ": deletion of the newest entries cannot be detected from this machine")
    elif store is not None and anchor.store is not None and anchor.store != store:
        problems.append(f"head anchor {anchor_path or ''} belongs to store {anchor.store}, not {store}")
    elif head_seq is None or anchor.seq > head_seq:
        if head_seq is None:
            problems.append(f"chain is empty but the head anchor says {anchor.seq} (deleted)")
        else:
            problems.append(f"chain ends at {head_seq} but the head anchor says {anchor.seq} (tail deleted)")
    elif anchor.seq in by_seq and by_seq[anchor.seq]["hash"] != anchor.hash:
        problems.append(f"entry {anchor.seq}: hash differs from the head anchor (replaced)")
    # an anchor.seq missing from a longer chain is already reported as a gap above
    return AuditVerifyResult(ok=not problems, entries=len(rows), problems=problems, head_seq=head_seq,
                             head_hash=head_hash, anchor_seq=anchor.seq if anchor else None,
                             anchor_path=anchor_path, warnings=warnings)


def read_anchor(path: Path) -> HeadAnchor | None:
    """Return the head anchor in *path*, or ``None`` when there is none.

    Raises ``ValueError`` when the file exists but is not a valid anchor.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        return HeadAnchor(seq=int(data["seq"]), hash=str(data["hash"]), store=data.get("store"))
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"head anchor {path} is not valid: {error}") from error


@contextlib.contextmanager
def _locked(path: Path):
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_anchor(path: Path, seq: int, hash_: str, store: str | None = None) -> None:
    """Atomically record ``{seq, hash}`` in *path*, never moving an anchor of the same store backwards.

    Several processes may append concurrently and finish in any order; a file lock plus the
    "only forward" rule keeps the anchor at the newest entry.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        try:
            current = read_anchor(path)
        except ValueError:
            current = None
        if current is not None and current.store == store and current.seq >= seq:
            return
        document = {"seq": seq, "hash": hash_, "store": store, "updated_at": utc_timestamp()}
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
