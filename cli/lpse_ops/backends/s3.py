"""The offsite S3 store: point-in-time views of a versioned, Object-Locked bucket.

pgBackRest and restic overwrite and delete some of their own files. In a versioned bucket with
Object Lock (COMPLIANCE), an overwrite adds a version and a delete only adds a delete marker, while
every locked version stays. A *view as of T* is, for every key under a site's prefixes, the version
that was current at T. ``plan_view`` computes it from the version listing alone (nothing is written);
``copy_view`` then copies those versions into a separate bucket WITHOUT Object Lock, so both engines
can restore from the repository exactly as it stood at T, and ``remove_view`` deletes the copy once
the restore is over: no restore leaves locked objects behind, whether it goes ahead or not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime


def client(endpoint: str, ca_cert: str | None, access_key: str, secret_key: str):
    """Return a boto3 S3 client (path-style addressing, TLS checked against *ca_cert*, short retries)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", verify=ca_cert or True,
                        aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                                      connect_timeout=5, read_timeout=30))


@dataclass(frozen=True)
class Version:
    """One entry of ``ListObjectVersions``: an object version or a delete marker."""

    key: str
    version_id: str
    modified: datetime
    delete_marker: bool
    size: int = 0


def list_versions(client, bucket: str, prefix: str) -> list[Version]:
    """Return every version and delete marker under *prefix* (paginated)."""
    found: list[Version] = []
    paginator = client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Versions", []) or []:
            found.append(Version(item["Key"], item["VersionId"], item["LastModified"], False, int(item.get("Size", 0))))
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


@dataclass(frozen=True)
class ViewPlan:
    """What a view as of *when* would hold, per source prefix, before anything is copied."""

    bucket: str
    when: datetime
    objects: dict[str, dict[str, Version]]  # source prefix -> key -> version current at *when*

    def count(self, prefix: str | None = None) -> int:
        return sum(len(state) for name, state in self.objects.items() if prefix in (None, name))

    def size(self) -> int:
        return sum(version.size for state in self.objects.values() for version in state.values())

    def newest(self) -> datetime | None:
        return max((v.modified for state in self.objects.values() for v in state.values()), default=None)


def plan_view(client, bucket: str, prefixes: list[str], when: datetime) -> ViewPlan:
    """Return what each of *prefixes* held at *when* (reads the version listing only)."""
    return ViewPlan(bucket, when, {prefix: state_as_of(list_versions(client, bucket, prefix), when)
                                   for prefix in prefixes})


def copy_view(client, plan: ViewPlan, target_bucket: str, view_prefix: str,
              progress: Callable[[int, int], None] | None = None) -> int:
    """Copy every version of *plan* to ``target_bucket/view_prefix/<key>``; return the number copied."""
    items = sorted((key, version) for state in plan.objects.values() for key, version in state.items())
    for done, (key, version) in enumerate(items, start=1):
        client.copy_object(Bucket=target_bucket, Key=view_prefix.rstrip("/") + "/" + key,
                           CopySource={"Bucket": plan.bucket, "Key": key, "VersionId": version.version_id})
        if progress:
            progress(done, len(items))
    return len(items)


def remove_view(client, bucket: str, view_prefix: str) -> int:
    """Delete every object (and version) under *view_prefix* of *bucket*; return how many were deleted."""
    versions = list_versions(client, bucket, view_prefix.rstrip("/") + "/")
    for start in range(0, len(versions), 1000):
        batch = versions[start:start + 1000]
        client.delete_objects(Bucket=bucket, Delete={"Quiet": True, "Objects": [
            {"Key": v.key, "VersionId": v.version_id} for v in batch]})
    return len(versions)


# --- one signed PUT, cheap enough for every audit write (the audit-log witness) ---------------------


class PutError(Exception):
    """A signed PUT was refused or failed; ``status`` is the HTTP status (None when no answer came)."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def signed_put(endpoint: str, ca_cert: str | None, access_key: str, secret_key: str, bucket: str, key: str,
               body: bytes, content_type: str = "application/octet-stream", timeout: float = 5.0) -> str | None:
    """PUT *body* at ``bucket/key`` (path-style) and return the version id; raise PutError otherwise.

    Signed by botocore's own SigV4 signer and sent over one ``http.client`` connection: a fraction of the
    CPU of creating a boto3 client (which loads the whole S3 service model), for a caller that writes one
    small object per process, such as the witness after an audit write.
    """
    import http.client
    import ssl
    from urllib.parse import quote, urlsplit

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    base = urlsplit(endpoint)
    path = f"{base.path.rstrip('/')}/{quote(bucket)}/{quote(key)}"
    request = AWSRequest(method="PUT", url=f"{base.scheme}://{base.netloc}{path}", data=body,
                         headers={"Content-Type": content_type})
    S3SigV4Auth(Credentials(access_key, secret_key), "s3", "us-east-1").add_auth(request)
    prepared = request.prepare()
    if base.scheme == "https":
        context = ssl.create_default_context(cafile=ca_cert) if ca_cert else ssl.create_default_context()
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(base.hostname, base.port, timeout=timeout,
                                                                             context=context)
    else:
        connection = http.client.HTTPConnection(base.hostname, base.port, timeout=timeout)
    try:
        connection.request("PUT", path, body=body, headers=dict(prepared.headers.items()))
        answer = connection.getresponse()
        text = answer.read(4096).decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException) as error:
        raise PutError(f"PUT {bucket}/{key} at {endpoint} failed: {error}") from error
    finally:
        connection.close()
    if not 200 <= answer.status < 300:
        code = text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in text else None
        raise PutError(f"PUT {bucket}/{key} at {endpoint} refused: HTTP {answer.status} {code or ''}".rstrip(),
                       answer.status, code)
    return answer.getheader("x-amz-version-id")
