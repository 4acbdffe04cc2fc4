"""The offsite store seen by the control machine's admin identity: views of a site's repositories as
they stood at a chosen time, planned before anything is written and removed after the restore.

Settings come from ``LPSE_OPS_S3_ENDPOINT``, ``LPSE_OPS_S3_BUCKET``, ``LPSE_OPS_S3_VIEWS_BUCKET``,
``LPSE_OPS_S3_HOST_ENDPOINT``, ``LPSE_OPS_S3_CA``, ``LPSE_OPS_S3_ACCESS_KEY`` and
``LPSE_OPS_S3_SECRET_KEY`` (read through :mod:`lpse_ops.settings`); without them, from the lab's
generated ``lab/s3-credentials.json``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from lpse_ops import config
from lpse_ops.actions.operation import OperationRefused, parent_run
from lpse_ops.backends import s3
from lpse_ops.settings import current as current_settings

ENGINES = ("pgbackrest", "restic")


@dataclass(frozen=True)
class OffsiteSettings:
    """Where the offsite store is and the admin identity that may read every version."""

    endpoint_control: str
    endpoint_hosts: str
    bucket: str
    views_bucket: str
    ca_cert: str | None
    access_key: str
    secret_key: str

    def client(self):
        return s3.client(self.endpoint_control, self.ca_cert, self.access_key, self.secret_key)


def settings() -> OffsiteSettings:
    """Return the offsite settings (environment first, else the lab's); raise OperationRefused if none."""
    env = current_settings()
    if env.s3_endpoint:
        missing = [name for name, value in (("LPSE_OPS_S3_BUCKET", env.s3_bucket),
                                            ("LPSE_OPS_S3_ACCESS_KEY", env.s3_access_key),
                                            ("LPSE_OPS_S3_SECRET_KEY", env.s3_secret_key)) if not value]
        if missing:
            raise OperationRefused(f"LPSE_OPS_S3_ENDPOINT is set but {', '.join(missing)} is not")
        return OffsiteSettings(env.s3_endpoint, env.s3_host_endpoint or env.s3_endpoint, env.s3_bucket or "",
                               env.s3_views_bucket, str(env.s3_ca) if env.s3_ca else None, env.s3_access_key or "",
                               env.s3_secret_key or "")
    path = config.home() / "lab" / "s3-credentials.json"
    if not path.exists():
        raise OperationRefused("no offsite S3 settings: set LPSE_OPS_S3_ENDPOINT, LPSE_OPS_S3_BUCKET, "
                               "LPSE_OPS_S3_VIEWS_BUCKET, LPSE_OPS_S3_CA, LPSE_OPS_S3_ACCESS_KEY and "
                               "LPSE_OPS_S3_SECRET_KEY")
    lab = json.loads(path.read_text())
    admin = lab["credentials"]["admin"]
    return OffsiteSettings(lab["endpoint_control"], lab["endpoint_hosts"], lab["bucket"],
                           lab.get("views_bucket", "lpse-restore-views"), lab["ca_cert"],
                           admin["access_key"], admin["secret_key"])


@dataclass(frozen=True)
class ViewRequest:
    """A site's offsite repositories as they stood at *when*."""

    site_code: str
    when: datetime


@dataclass
class OffsiteView:
    """A planned (then copied) view: what it holds, where it goes, and the site tool's restore arguments."""

    request: ViewRequest
    plan: s3.ViewPlan
    prefix: str
    views_bucket: str
    endpoint_hosts: str
    copied: int = 0
    removed: int | None = None

    @property
    def restore_args(self) -> list[str]:
        code, endpoint = self.request.site_code, self.endpoint_hosts.rstrip("/")
        return ["--repo", "2", "--repo2-bucket", self.views_bucket,
                "--repo2-path", f"/{self.prefix}/pgbackrest/{code}",
                "--restic-repo", f"s3:{endpoint}/{self.views_bucket}/{self.prefix}/restic/{code}"]

    def as_dict(self) -> dict:
        return {"site_code": self.request.site_code, "as_of": self.request.when.isoformat(),
                "views_bucket": self.views_bucket, "prefix": self.prefix,
                "objects": {engine: self.plan.count(f"{engine}/{self.request.site_code}/") for engine in ENGINES},
                "bytes": self.plan.size(), "newest_object": (self.plan.newest() or self.request.when).isoformat(),
                "copied": self.copied, "removed": self.removed}


def plan_view(request: ViewRequest) -> OffsiteView:
    """Read what the site's offsite repositories held at the time; write nothing.

    Raises OperationRefused when either repository was empty then.
    """
    conf = settings()
    prefixes = [f"{engine}/{request.site_code}/" for engine in ENGINES]
    plan = s3.plan_view(conf.client(), conf.bucket, prefixes, request.when)
    empty = [engine for engine, prefix in zip(ENGINES, prefixes, strict=True) if not plan.count(prefix)]
    if empty:
        raise OperationRefused(f"the offsite bucket held no {' and no '.join(empty)} repository for "
                               f"{request.site_code} at {request.when.isoformat()}: choose a later --offsite-as-of")
    prefix = f"{request.site_code}/{request.when.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"
    return OffsiteView(request, plan, prefix, conf.views_bucket, conf.endpoint_hosts)


def copy_view(view: OffsiteView, progress: Callable[[int, int], None] | None = None) -> OffsiteView:
    """Copy the planned versions into the (unlocked) views bucket, under the site's own prefix."""
    view.copied = s3.copy_view(settings().client(), view.plan, view.views_bucket, view.prefix, progress)
    return view


def remove_view(view: OffsiteView) -> OffsiteView:
    """Delete the view's copies (the views bucket has no Object Lock, so nothing stays behind)."""
    view.removed = s3.remove_view(settings().client(), view.views_bucket, view.prefix)
    return view



@dataclass
class PutBackPlan:
    """What putting a site's offsite repositories back as of a time would write: nothing is written yet."""

    request: ViewRequest
    copy_forward: list[tuple[str, str]]  # (key, version id current then) where the current version differs
    hide: list[str]  # keys that did not exist then

    def as_dict(self) -> dict:
        return {"site_code": self.request.site_code, "as_of": self.request.when.isoformat(),
                "copy_forward": len(self.copy_forward), "hide": len(self.hide)}


def plan_put_back(request: ViewRequest) -> PutBackPlan:
    """Read (admin identity, nothing written) how the site's offsite repositories differ from their state at
    *request.when*. After an attack with the site's own keys (garbage versions, delete markers) they are
    unusable for new backups although every locked version is still there.

    Raises OperationRefused when the repositories held nothing then.
    """
    conf = settings()
    client = conf.client()
    copy_forward: list[tuple[str, str]] = []
    hide: list[str] = []
    for engine in ENGINES:
        versions = s3.list_versions(client, conf.bucket, f"{engine}/{request.site_code}/")
        then = s3.state_as_of(versions, request.when)
        if not then:
            raise OperationRefused(f"the offsite bucket held no {engine} repository for {request.site_code} at "
                                   f"{request.when.isoformat()}: choose a later --as-of")
        now = s3.state_as_of(versions, max(v.modified for v in versions))
        copy_forward += [(key, version.version_id) for key, version in sorted(then.items())
                         if key not in now or now[key].version_id != version.version_id]
        hide += sorted(set(now) - set(then))
    return PutBackPlan(request, copy_forward, hide)


def put_back(plan: PutBackPlan, host: str, progress: Callable[[int, int], None] | None = None) -> dict:
    """Copy each planned version forward (a new current version, the same bytes) and hide the keys that did not
    exist then (a delete marker); nothing locked is touched. Recorded as run ``backup.offsite-put-back`` (and in
    the audit log). Returns the plan's counts, what was done and the run id; raises the S3 client's error."""
    from lpse_ops.state import StateStore

    conf = settings()
    client = conf.client()
    with StateStore.open(config.state_url()) as store:
        run_id = store.start_run("backup.offsite-put-back", plan.as_dict(), [host], parent_id=parent_run())
        try:
            for done, (key, version_id) in enumerate(plan.copy_forward, start=1):
                client.copy_object(Bucket=conf.bucket, Key=key,
                                   CopySource={"Bucket": conf.bucket, "Key": key, "VersionId": version_id})
                if progress:
                    progress(done, len(plan.copy_forward))
            for key in plan.hide:
                client.delete_object(Bucket=conf.bucket, Key=key)
        except Exception as error:
            store.finish_run(run_id, "failed", {host: {"status": "failed", "failed": 1}},
                             summary={"error": str(error)[-300:]})
            raise
        result = {**plan.as_dict(), "copied_forward": len(plan.copy_forward), "hidden": len(plan.hide),
                  "run_id": run_id}
        store.finish_run(run_id, "ok", {host: {"status": "changed"}}, summary=result)
    return result
