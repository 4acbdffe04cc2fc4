"""``lpse-backup list``: every backup set and snapshot, the engines' own JSON."""

from __future__ import annotations

from lpse_ops.site import engine
from lpse_ops.site.errors import Failure
from lpse_ops.site.settings import Settings


def main(settings: Settings, _args) -> dict:
    """Return ``pgbackrest info`` and ``restic snapshots`` (both repositories) as raw JSON.

    A restic repository that cannot be read is ``null`` with its code in ``codes``; the result then
    fails with every message in ``error``.
    """
    result = {"action": "list", "ok": True, "site_code": settings.site_code,
              "pgbackrest": engine.pgbackrest_info(settings), "restic": {}}
    errors, codes = [], {}
    for name in ("local", "offsite"):
        try:
            result["restic"][name] = engine.restic_raw_snapshots(settings, name)
        except Failure as failure:
            result["restic"][name] = None
            errors.append(f"restic {name}: {failure.message}")
            codes[name] = failure.code
    if errors:
        result.update(ok=False, error="; ".join(errors), code=next(iter(codes.values())), step="restic snapshots",
                      codes=codes)
    return result
