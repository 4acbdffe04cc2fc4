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
from lpse_ops.actions.operation import OperationRefused
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
