"""What a run's integrity-baseline refreshes were, read from its typed result records (clause 6.2.19).

The playbooks that change a site (install, upgrade, rollback, harden, access) end, on a site where the
change succeeded, by accepting what they touched into the AIDE baseline (``playbooks/tasks/
integrity_refresh.yml``) and put what the site tool reported in their record as ``integrity_baseline``.
:func:`refreshes` turns those into one summary per host, which the operation runner keeps with the run's
host results and writes to the audit log (who, which run, which paths): docs/audit.md.
"""

from __future__ import annotations

KINDS = ("added", "removed", "changed")
AUDIT_OPERATION = "integrity.refresh"


def summary(refresh: dict) -> dict:
    """Return one host's refresh as {ran, refreshed, paths: [accepted, sorted], left, limit, reason, error}.

    *refresh* is the record's ``integrity_baseline`` (the site tool's JSON object, or ``{ran: false,
    reason}`` when it did not run). ``paths`` lists every accepted path once, whatever its kind.
    """
    accepted = refresh.get("accepted") or {}
    paths = sorted({str(path) for kind in KINDS for path in accepted.get(kind) or []})
    return {"ran": bool(refresh.get("ran")), "refreshed": bool(refresh.get("refreshed")), "paths": paths,
            "accepted": {kind: sorted(accepted.get(kind) or []) for kind in KINDS},
            "left": sorted(refresh.get("left") or []), "limit": refresh.get("limit"),
            "reason": refresh.get("reason"), "error": refresh.get("error")}


def refreshes(records: dict[str, dict]) -> dict[str, dict]:
    """Return {host: summary} for every record in *records* ({host: record}) that carries a refresh."""
    return {host: summary(record["integrity_baseline"]) for host, record in sorted(records.items())
            if isinstance(record, dict) and isinstance(record.get("integrity_baseline"), dict)}


def audit_detail(run_id: int, operation: str, host: str, refresh: dict) -> dict | None:
    """Return the audit-log detail of one host's refresh, or None when there is nothing to log.

    Logged: a refresh that ran (accepting paths or none) and one that failed; not a site without AIDE or a
    check-mode run (``reason`` only).
    """
    if not (refresh["ran"] or refresh["error"]):
        return None
    return {"run_id": run_id, "operation": operation, "site": host, "refreshed": refresh["refreshed"],
            "paths": refresh["paths"], "left": refresh["left"], "limit": refresh["limit"],
            **({"error": refresh["error"]} if refresh["error"] else {})}
