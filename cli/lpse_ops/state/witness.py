"""The audit-log witness: the chain's head hash, written to an S3 Object-Lock bucket as operations happen.

The hash chain and the head anchor (:mod:`lpse_ops.state.audit`) catch an edited entry, a deleted
tail and dropped triggers, but not a chain rewritten whole on the control machine (every entry
recomputed with valid hashes, a new anchor written). The witness does: after every audit write
commits, the new head ``{seq, hash}`` is written as one object
``audit-witness/<store>/<seq:012d>-<hash>.json`` into a versioned bucket whose default retention is
COMPLIANCE. The object's key *is* the record (its body repeats it for people), and no one, the
witness identity and the bucket's admin included, can delete or shorten a locked version before its
retention ends. ``audit-log verify --witness`` lists every version under the store's prefix (a delete
marker hides nothing from a version listing) and names the first witnessed seq whose hash the chain
no longer has. Because each head hash commits to every entry before it, one object per write covers
every entry up to that head.

A witness that cannot be reached never blocks or loses an operation: the audit entry is already
committed when the PUT is tried (with short timeouts, once), a failure is recorded in the
``audit_witness_progress`` table (the lag, the error) and this process stops trying for
:data:`BACKOFF_S`; the next write, in this process or another, writes the then-current head, which
catches up on everything before it.

The store's prefix is derived from the store URL (without password), never from anything inside
the database or the anchor file, which a rewrite would control.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from lpse_ops import config
from lpse_ops.backends import s3
from lpse_ops.settings import current as current_settings
from lpse_ops.state.models import AuditWitnessProgress
from lpse_ops.state.times import iso_utc

if TYPE_CHECKING:
    from lpse_ops.state.store import StateStore

ROOT = "audit-witness/"
KEY_RE = re.compile(r"(?:^|/)(?P<seq>[0-9]{12})-(?P<hash>[0-9a-f]{64})\.json$")
PUT_TIMEOUT_S = 5.0
"""Connect and read timeout of one witness PUT: an operation never waits longer for its witness."""
BACKOFF_S = 60.0
"""After a failed PUT, this process records the lag without trying again for this long."""
OFF_WORDS = ("off", "none", "0", "false", "no")


class WitnessError(Exception):
    """The witness is configured badly or cannot be read; the message says what to do."""


@dataclass(frozen=True)
class WitnessTarget:
    """Where the witness objects go, and the identity that may put, get and list there only."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str = field(repr=False)
    ca_cert: str | None = None
    source: str = "settings"

    @property
    def name(self) -> str:
        """The target as recorded in the progress table: ``endpoint/bucket``."""
        return f"{self.endpoint.rstrip('/')}/{self.bucket}"

    def public(self) -> dict[str, Any]:
        """Return the target without its secret (for reports and JSON)."""
        return {"endpoint": self.endpoint, "bucket": self.bucket, "source": self.source}


def target() -> WitnessTarget | None:
    """Return the configured witness (``LPSE_OPS_WITNESS_*``, else the lab's), or None when there is none.

    Raises WitnessError when ``LPSE_OPS_WITNESS_ENDPOINT`` is set but a required setting is missing.
    """
    env = current_settings()
    if env.witness_endpoint:
        if env.witness_endpoint.strip().lower() in OFF_WORDS:
            return None
        missing = [name for name, value in (("LPSE_OPS_WITNESS_BUCKET", env.witness_bucket),
                                            ("LPSE_OPS_WITNESS_ACCESS_KEY", env.witness_access_key),
                                            ("LPSE_OPS_WITNESS_SECRET_KEY", env.witness_secret_key)) if not value]
        if missing:
            raise WitnessError(f"LPSE_OPS_WITNESS_ENDPOINT is set but {', '.join(missing)} "
                               f"{'is' if len(missing) == 1 else 'are'} not (docs/settings.md)")
        return WitnessTarget(env.witness_endpoint, env.witness_bucket or "", env.witness_access_key or "",
                             env.witness_secret_key or "", str(env.witness_ca) if env.witness_ca else None)
    path = config.home() / "lab" / "s3-credentials.json"
    try:
        lab = json.loads(path.read_text())
        creds = lab["credentials"]["witness"]
        return WitnessTarget(lab["endpoint_control"], lab["witness_bucket"], creds["access_key"],
                             creds["secret_key"], lab.get("ca_cert"), source="lab")
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no lab, or a lab from before the witness: no witness


def store_prefix(store_identity: str) -> str:
    """Return the key prefix of one store's witness objects (a digest of its URL without password)."""
    return f"{ROOT}{hashlib.sha256(store_identity.encode('utf-8')).hexdigest()[:16]}/"


def object_key(prefix: str, seq: int, hash_: str) -> str:
    """Return the key of the witness object for head *seq* with *hash_*."""
    return f"{prefix}{seq:012d}-{hash_}.json"


def parse_key(key: str) -> tuple[int, str] | None:
    """Return ``(seq, hash)`` from a witness object key, or None when it is not one."""
    found = KEY_RE.search(key)
    return (int(found["seq"]), found["hash"]) if found else None


def document(store_identity: str, seq: int, hash_: str) -> bytes:
    """Return the body of a witness object (for people: the key is the record)."""
    return (json.dumps({"store": store_identity, "seq": seq, "hash": hash_,
                        "witnessed_at": datetime.now(UTC).isoformat(timespec="seconds")},
                       sort_keys=True) + "\n").encode("utf-8")


_clients: dict[WitnessTarget, Any] = {}
_backoff: dict[str, float] = {}


def client(where: WitnessTarget):
    """Return a boto3 S3 client for *where* (cached per process), for listing and reading the witness."""
    found = _clients.get(where)
    if found is None:
        found = _clients[where] = s3.client(where.endpoint, where.ca_cert, where.access_key, where.secret_key)
    return found


def _is_memory(store: StateStore) -> bool:
    return store.url.get_backend_name() == "sqlite" and store.url.database in (None, "", ":memory:")


def put_head(where: WitnessTarget, store_identity: str, seq: int, hash_: str) -> dict[str, Any]:
    """Write one witness object for head *seq*; return its key and version id. Raises ``s3.PutError``.

    One signed PUT (no boto3 client: it would cost a CPU third of a second per lpse-ops process).
    """
    key = object_key(store_prefix(store_identity), seq, hash_)
    version = s3.signed_put(where.endpoint, where.ca_cert, where.access_key, where.secret_key, where.bucket, key,
                            document(store_identity, seq, hash_), "application/json", timeout=PUT_TIMEOUT_S)
    return {"key": key, "version_id": version}


def after_append(store: StateStore, seq: int, hash_: str) -> None:
    """Witness head *seq* of *store* after its transaction committed; record progress or lag. Never raises.

    Called by ``StateStore`` after every audit write. No witness configured (or an in-memory
    store): nothing happens.
    """
    try:
        if _is_memory(store):
            return
        where = target()
        if where is None:
            return
    except WitnessError as error:
        _record(store, "(misconfigured)", None, None, str(error))
        return
    waiting = _backoff.get(where.name)
    if waiting is not None and time.monotonic() < waiting:
        return  # failed moments ago in this process: the lag (head - witnessed_seq) grows, the next try catches up
    try:
        put_head(where, store.identity, seq, hash_)
    except (s3.PutError, OSError, ValueError) as error:
        _backoff[where.name] = time.monotonic() + BACKOFF_S
        _record(store, where.name, None, None, f"{type(error).__name__}: {error}")
        return
    _backoff.pop(where.name, None)
    _record(store, where.name, seq, hash_, None)


def _record(store: StateStore, target_name: str, seq: int | None, hash_: str | None, error: str | None) -> None:
    """Move the target's progress forward (a success) or count a failure; never raises."""
    now = datetime.now(UTC)
    try:
        with store._write() as session:
            row = session.get(AuditWitnessProgress, target_name)
            if row is None:
                row = AuditWitnessProgress(target=target_name, failures=0)
                session.add(row)
            row.last_attempt_at = now
            if seq is not None:
                if row.witnessed_seq is None or seq > row.witnessed_seq:
                    row.witnessed_seq, row.witnessed_hash, row.witnessed_at = seq, hash_, now
                row.last_error, row.failures = None, 0
            else:
                row.last_error = (error or "unknown error")[:2000]
                row.failures = (row.failures or 0) + 1
    except Exception:  # noqa: BLE001, S110 - bookkeeping must never fail the operation it follows
        pass


def progress(store: StateStore) -> list[dict[str, Any]]:
    """Return every witness target's progress row, with ``lag`` against the chain's head."""
    from lpse_ops.state.models import AuditEntry

    with store._read() as session:
        head = session.scalar(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1)) or 0
        rows = list(session.scalars(select(AuditWitnessProgress).order_by(AuditWitnessProgress.target)))
        return [{"target": row.target, "witnessed_seq": row.witnessed_seq, "head_seq": head,
                 "lag": head - (row.witnessed_seq or 0),
                 "witnessed_at": _iso(row.witnessed_at), "last_attempt_at": _iso(row.last_attempt_at),
                 "last_error": row.last_error, "failures": row.failures} for row in rows]


_iso = iso_utc


# -- reading the witness ------------------------------------------------------------------------


@dataclass(frozen=True)
class WitnessObject:
    """One locked version in the witness bucket: the head it records and when it was written."""

    seq: int
    hash: str
    key: str
    version_id: str
    last_modified: str
    hidden: bool = False
    """A delete marker stands over this key (someone tried to delete it); the version is still there."""

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "key": self.key, "version_id": self.version_id,
                "last_modified": self.last_modified, "hidden": self.hidden}


def list_objects(where: WitnessTarget, store_identity: str) -> list[WitnessObject]:
    """Return every witness version of one store, by seq then time (delete markers do not hide any).

    Raises WitnessError when the bucket cannot be listed.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    prefix = store_prefix(store_identity)
    found: list[WitnessObject] = []
    markers: set[str] = set()
    try:
        for page in client(where).get_paginator("list_object_versions").paginate(Bucket=where.bucket, Prefix=prefix):
            for marker in page.get("DeleteMarkers", []) or []:
                if marker.get("IsLatest"):
                    markers.add(marker["Key"])
            for item in page.get("Versions", []) or []:
                parsed = parse_key(item["Key"])
                if parsed:
                    found.append(WitnessObject(parsed[0], parsed[1], item["Key"], item["VersionId"],
                                               item["LastModified"].astimezone(UTC).isoformat(timespec="seconds")))
    except (BotoCoreError, ClientError, OSError) as error:
        raise WitnessError(f"cannot list the witness bucket {where.name}: {error}") from error
    found = [WitnessObject(o.seq, o.hash, o.key, o.version_id, o.last_modified, o.key in markers) for o in found]
    return sorted(found, key=lambda o: (o.seq, o.last_modified, o.version_id))


@dataclass
class WitnessCheck:
    """The chain compared with every witnessed head."""

    ok: bool
    witnessed: int
    head_seq: int | None
    witnessed_seq: int | None
    lag: int
    first_disagreeing_seq: int | None = None
    last_agreeing_seq: int | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    target: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "witnessed": self.witnessed, "head_seq": self.head_seq,
                "witnessed_seq": self.witnessed_seq, "lag": self.lag,
                "first_disagreeing_seq": self.first_disagreeing_seq, "last_agreeing_seq": self.last_agreeing_seq,
                "problems": list(self.problems), "warnings": list(self.warnings), "target": dict(self.target)}


def compare(chain: Iterable[Mapping[str, Any]], objects: Iterable[WitnessObject]) -> WitnessCheck:
    """Compare *chain* (audit entries with ``seq`` and ``hash``) with the witnessed heads; pure.

    Every witnessed head must be in the chain with the same hash. The first that is not names where a
    rewrite begins: the entries after the last agreeing witnessed seq, up to it, were changed.
    """
    hashes = {int(entry["seq"]): entry["hash"] for entry in chain}
    head = max(hashes) if hashes else None
    witnessed = list(objects)
    problems: list[str] = []
    warnings: list[str] = []
    first_bad: int | None = None
    last_good: int | None = None
    seen: set[tuple[int, str]] = set()
    for item in witnessed:
        if (item.seq, item.hash) in seen:
            continue
        seen.add((item.seq, item.hash))
        have = hashes.get(item.seq)
        if have == item.hash:
            if first_bad is None:
                last_good = item.seq
            continue
        since = f"after entry {last_good}" if last_good is not None else "from the first entry"
        if have is None:
            where = "is missing from the chain" if head is not None and item.seq <= head else (
                f"is beyond the chain's end ({head or 'empty'}): the tail was deleted")
            problems.append(f"entry {item.seq}: witnessed with hash {item.hash[:12]} at {item.last_modified}, "
                            f"but {where}")
        else:
            problems.append(f"entry {item.seq}: the chain's hash {have[:12]} differs from the hash {item.hash[:12]} "
                            f"witnessed at {item.last_modified}: the chain was rewritten {since}, "
                            f"at or before entry {item.seq}")
        if first_bad is None:
            first_bad = item.seq
    hidden = sorted({item.seq for item in witnessed if item.hidden})
    if hidden:
        warnings.append(f"{len(hidden)} witness object(s) carry a delete marker (first: entry {hidden[0]}): someone "
                        "tried to delete them; their locked versions are still there and were compared")
    top = max((item.seq for item in witnessed if hashes.get(item.seq) == item.hash), default=None)
    lag = (head or 0) - (top or 0)
    if head is not None and lag and not problems:
        warnings.append(f"the witness is {lag} entr{'y' if lag == 1 else 'ies'} behind the chain "
                        f"(witnessed up to {top or 'nothing'}, head {head}): entries after it are not yet witnessed")
    return WitnessCheck(ok=not problems, witnessed=len(witnessed), head_seq=head, witnessed_seq=top, lag=lag,
                        first_disagreeing_seq=first_bad, last_agreeing_seq=last_good, problems=problems,
                        warnings=warnings)


def check(store: StateStore, where: WitnessTarget | None = None) -> WitnessCheck:
    """List the witness bucket and compare every witnessed head with *store*'s chain.

    Raises WitnessError when no witness is configured or the bucket cannot be read.
    """
    where = where or target()
    if where is None:
        raise WitnessError("no audit-log witness is configured: set LPSE_OPS_WITNESS_ENDPOINT, "
                           "LPSE_OPS_WITNESS_BUCKET, LPSE_OPS_WITNESS_ACCESS_KEY and LPSE_OPS_WITNESS_SECRET_KEY "
                           "(docs/settings.md), or bring the lab up")
    objects = list_objects(where, store.identity)
    result = compare(({"seq": e["seq"], "hash": e["hash"]} for e in store.audit_entries()), objects)
    result.target = {**where.public(), "prefix": store_prefix(store.identity)}
    if result.head_seq is not None and not objects:
        result.warnings.append(f"the witness holds no head of this store under {result.target['prefix']}: "
                               "nothing in the chain can be checked against it (was the store's URL changed?)")
    return result
