"""A point-in-time restore of one site: plan (check, nothing written), then execute.

The command shows the plan and asks before :func:`execute`; a plan refuses (``OperationRefused``) before
anything changes: not exactly one site, the site locked by another run, an unknown site code, an offsite
view that cannot be read. With ``offsite_as_of``, :func:`execute` copies the offsite repositories as they
stood then into the unlocked views bucket, restores from that copy, and removes it whatever the outcome.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from lpse_ops.actions import backup, fleet, offsite, operation


@dataclass(frozen=True)
class RestoreRequest:
    """What to restore: *target* None is ``latest`` (the end of the archived WAL)."""

    ctx: backup.BackupContext
    limit: str
    target: datetime | None
    source: str = "local"
    offsite_as_of: datetime | None = None
    serve_first: bool = False
    """Open SPSE once the database and the first documents are back; hydrate the rest (site/restore_first.py)."""
    first_mb: int | None = None
    """With serve_first: MB brought back before SPSE opens (None: the site's ``site_restore_first_mb``, else 1024)."""


FIRST_MB_DEFAULT = 1024

@dataclass
class RestorePlan:
    """The one site, the site tool's arguments and, with an as-of time, the offsite view to copy first."""

    request: RestoreRequest
    host: str
    args: list[str]
    view: offsite.OffsiteView | None
    fleet: fleet.Fleet | None = None

    @property
    def target_text(self) -> str:
        """``latest`` or the target time, as recorded and shown."""
        return "latest" if self.request.target is None else self.request.target.isoformat()

    def describe(self) -> list[str]:
        """The plan in lines, for the operator to confirm."""
        target = "the end of the archived WAL" if self.request.target is None else self.target_text
        lines = [f"Restore {self.host} to {target} from {'offsite' if self.view else self.request.source}.",
                 "SPSE stops meanwhile; the current database and documents are moved aside, not deleted."]
        if self.request.serve_first:
            first = self.args[self.args.index("--first-mb") + 1]
            lines.append(f"Serve first: SPSE opens once the database and up to {first} MB of documents (the open "
                         "tenders' first) are back; the others come back in the background, each checked by sha256, "
                         "and answer 503 with Retry-After until then.")
        if self.view:
            plan = self.view.as_dict()
            lines.append(f"The offsite repositories as of {plan['as_of']}: {plan['objects']['pgbackrest']} pgBackRest "
                         f"and {plan['objects']['restic']} restic objects, {plan['bytes'] / 1e6:.1f} MB, newest "
                         f"{plan['newest_object']}; copied to {plan['views_bucket']}/{plan['prefix']} (no Object "
                         "Lock) and removed when the restore ends.")
        return lines


def one_site(ctx: backup.BackupContext, limit: str) -> fleet.Fleet:
    """The inventory read once (validated for backups), matching the one site *limit* names; refuse otherwise
    (restores and put-backs are per site). The fleet goes on to the run, which then reads nothing again."""
    try:
        read = fleet.read(ctx.inventory, limit=limit, validate_for="backup")
    except fleet.NoHostMatches:
        raise operation.OperationRefused("--limit must name exactly one site (it matches 0)") from None
    if len(read.hosts) != 1:
        raise operation.OperationRefused(
            f"--limit must name exactly one site (it matches {len(read.hosts)}: {', '.join(read.hosts)})")
    return read


def site_code(read: fleet.Fleet, host: str) -> str | None:
    """The site's code in the inventory (its prefix in the offsite buckets)."""
    return read.hostvars(host).get("site_code")


def plan(request: RestoreRequest) -> RestorePlan:
    """Check the request and read what it needs (the offsite view's objects); nothing is written."""
    ctx = request.ctx
    read = one_site(ctx, request.limit)
    host = read.hosts[0]
    target = "latest" if request.target is None else request.target.isoformat()
    as_of = request.offsite_as_of.isoformat() if request.offsite_as_of else None
    operation.refuse_if_locked("backup.restore", [host], {
        "inventory": str(ctx.inventory), "limit": request.limit, "action": "restore", "target_time": target,
        "source": request.source, "offsite_as_of": as_of}, state_url=ctx.state_url)
    args = ["--target-time", "latest" if request.target is None else request.target.strftime("%Y-%m-%d %H:%M:%S+00")]
    view = None
    if request.offsite_as_of:
        view = offsite.plan_view(offsite.ViewRequest(site_code(read, host), request.offsite_as_of))
    elif request.source == "offsite":
        args += ["--repo", "2"]
    if request.serve_first:
        first_mb = request.first_mb if request.first_mb is not None else int(
            read.hostvars(host).get("site_restore_first_mb") or FIRST_MB_DEFAULT)
        args += ["--serve-first", "--first-mb", str(first_mb)]
    return RestorePlan(request, host, args, view, read)


def hydration_note(output: dict) -> str:
    """``; N documents (M MB) coming back in the background`` after a serve-first restore that left some."""
    hydration = output.get("hydration") or {}
    if hydration.get("state") != "running":
        return ""
    return (f"; serving, {hydration.get('files')} documents ({(hydration.get('bytes') or 0) / 1e6:.0f} MB) coming "
            "back in the background (lpse-ops backup status)")


def execute(restore: RestorePlan) -> tuple[operation.OperationResult, dict[str, dict]]:
    """Run the planned restore on its site; return the run and the site tool's JSON per host.

    The offsite view, when planned, is copied first and removed afterwards, whatever the outcome; each
    host's output then names it (``offsite_view``).
    """
    args, view = list(restore.args), restore.view
    try:
        if view:
            offsite.copy_view(view)
            args += view.restore_args
        result, outputs = backup.execute(dataclasses.replace(restore.request.ctx, fleet=restore.fleet), "restore",
                                         args, record={
            "target_time": restore.target_text, "source": "offsite" if view else restore.request.source,
            "view": view.as_dict() if view else None, "serve_first": restore.request.serve_first})
    finally:
        if view and view.copied:
            offsite.remove_view(view)
    if view:
        for output in outputs.values():
            output["offsite_view"] = view.as_dict()
    return result, outputs
