"""The offsite S3 store: Object Lock checks and point-in-time views of a versioned bucket.

pgBackRest and restic overwrite and delete some of their own files. In a versioned bucket with
Object Lock (COMPLIANCE), an overwrite adds a version and a delete only adds a delete marker, while
every locked version stays. A *view as of T* copies, for every key under a prefix, the version that
was current at T into ``views/<id>/...`` of the same bucket, so both engines can restore from the
repository exactly as it stood at T, whatever happened to it afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Version:
    """One entry of ``ListObjectVersions``: an object version or a delete marker."""

    key: str
    version_id: str
    modified: datetime
    delete_marker: bool


def list_versions(client, bucket: str, prefix: str) -> list[Version]:
    """Return every version and delete marker under *prefix* (paginated)."""
    found: list[Version] = []
    paginator = client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Versions", []) or []:
            found.append(Version(item["Key"], item["VersionId"], item["LastModified"], False))
        for item in page.get("DeleteMarkers", []) or []:
            found.append(Version(item["Key"], item["VersionId"], item["LastModified"], True))
    return found


def state_as_of(versions: list[Version], when: datetime) -> dict[str, Version]:
    """Return, per key, the version current at *when* (keys deleted or not yet written are absent).

    Pure: given the bucket's version listing, decide what the repository looked like at *when*.
    """
    latest: dict[str, Version] = {}
    for version in versions:
        if version.modified > when:
            continue
        current = latest.get(version.key)
        if current is None or version.modified >= current.modified:
            latest[version.key] = version
    return {key: version for key, version in latest.items() if not version.delete_marker}


def build_view(client, bucket: str, prefix: str, when: datetime, view_prefix: str,
               progress: Callable[[int, int], None] | None = None) -> int:
    """Copy the state of *prefix* at *when* under *view_prefix*; return the number of objects copied."""
    state = state_as_of(list_versions(client, bucket, prefix), when)
    for done, (key, version) in enumerate(sorted(state.items()), start=1):
        target = view_prefix.rstrip("/") + "/" + key
        client.copy_object(Bucket=bucket, Key=target,
                           CopySource={"Bucket": bucket, "Key": key, "VersionId": version.version_id})
        if progress:
            progress(done, len(state))
    return len(state)
