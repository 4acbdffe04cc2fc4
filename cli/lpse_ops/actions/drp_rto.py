"""The server-lost RTO as a function of a site's data and link (clause 10.2; issue 20), from measured rates.

A lost server is served again (``restore --serve-first``) after three things: what does not grow with the data
(a bare host, the install, the backup setup: ``fixed_s``), the database brought back over the link and replayed
(its bytes at the measured rate, never faster than the link), and the first documents (up to the site's
``site_restore_first_mb``) over the link. The other documents come back afterwards at the hydration's measured
share of the link. So, for a site with link L (``site_wan_mbit``), database D and documents F bytes:

    RTO to serving  = fixed_s + D / database_rate * max(1, L0 / L) + min(first, F) / (e * L)
    full hydration  = max(F - first, 0) / (e * L)

where L is in bytes per second, ``e`` (the efficiency) is the hydration's bytes per second over the link's, and
``database_rate`` the database's bytes (as PostgreSQL counts them: pgBackRest moves them compressed) restored and
replayed per second on the drill's link L0: a slower link slows it in proportion, a faster one is not assumed to
speed it up.
``fixed_s``, ``database_rate`` and ``e`` come from the newest server-lost drill that served first and recorded
them (:func:`rates_from_drill`); D and F from the site's newest probe (``lpse-backup status``: the last
database backup's size, the last full files snapshot's bytes). Pure but :func:`gather`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

FIRST_MB_DEFAULT = 1024
SCENARIO = "server-lost"


@dataclass(frozen=True)
class Rates:
    """What one server-lost drill measured, as the model's rates."""

    drill_id: int
    drilled_at: str | None
    site: str
    link_mbit: float
    fixed_s: float
    database_bytes_s: float
    efficiency: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Estimate:
    """One site's estimate, or why there is none (``missing``)."""

    host: str
    link_mbit: float | None
    database_bytes: int | None
    files_bytes: int | None
    first_bytes: int
    rto_serving_s: float | None = None
    hydration_s: float | None = None
    missing: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _link_bytes_s(mbit: float) -> float:
    return mbit * 1e6 / 8


def rates_from_drill(drill: dict[str, Any]) -> Rates | None:
    """The rates of a finished, successful server-lost drill that served first with a known link, else None."""
    figures = (drill.get("detail") or {}).get("hydration") or {}
    hydration = figures.get("hydration") or {}
    database = figures.get("database") or {}
    link = figures.get("link_mbit")
    if not (drill.get("ok") and link and hydration.get("state") == "done" and hydration.get("rate_bytes_s")
            and database.get("bytes") and database.get("restore_s") and figures.get("rto_serving_s")):
        return None
    efficiency = min(1.0, hydration["rate_bytes_s"] / _link_bytes_s(link))
    database_rate = database["bytes"] / database["restore_s"]
    first_s = (figures.get("first_bytes") or 0) / (efficiency * _link_bytes_s(link))
    fixed = max(0.0, figures["rto_serving_s"] - database["restore_s"] - first_s)
    return Rates(drill_id=int(drill["id"]), drilled_at=drill.get("finished_at"), site=str(drill.get("site")),
                 link_mbit=float(link), fixed_s=round(fixed, 1), database_bytes_s=round(database_rate),
                 efficiency=round(efficiency, 3))


def estimate(rates: Rates, host: str, link_mbit: float | None, database_bytes: int | None,
             files_bytes: int | None, first_mb: int = FIRST_MB_DEFAULT) -> Estimate:
    """The site's RTO to serving and full hydration time by the model (module docstring)."""
    first = first_mb << 20
    known = Estimate(host, link_mbit, database_bytes, files_bytes, first)
    missing = [name for name, value in (("site_wan_mbit", link_mbit), ("ukuran basis data", database_bytes),
                                        ("ukuran dokumen", files_bytes)) if not value]
    if missing:
        return Estimate(**{**known.as_dict(), "missing": ", ".join(missing)})
    link = rates.efficiency * _link_bytes_s(link_mbit)
    database_s = database_bytes / rates.database_bytes_s * max(1.0, rates.link_mbit / link_mbit)
    rto = rates.fixed_s + database_s + min(first, files_bytes) / link
    hydration = max(files_bytes - first, 0) / link
    return Estimate(**{**known.as_dict(), "rto_serving_s": round(rto, 1), "hydration_s": round(hydration, 1)})


def sizes_from_probe(probe: dict[str, Any] | None) -> tuple[int | None, int | None]:
    """(database bytes, files bytes) from a stored probe's facts (``lpse-backup status``), None where unknown."""
    backup = ((probe or {}).get("facts") or {}).get("backup") or {}
    last = ((((backup.get("pgbackrest") or {}).get("repos") or {}).get("1") or {}).get("last_backup") or {})
    return last.get("database_bytes"), (backup.get("files_size") or {}).get("bytes")


def newest_rates(drills: list[dict[str, Any]]) -> Rates | None:
    """The rates of the newest server-lost drill that has them."""
    for drill in sorted((d for d in drills if d.get("scenario") == SCENARIO), key=lambda d: d.get("finished_at") or "",
                        reverse=True):
        found = rates_from_drill(drill)
        if found is not None:
            return found
    return None


def gather(store: Any, drills: list[dict[str, Any]], hostvars: dict[str, dict[str, Any]]
           ) -> tuple[Rates | None, list[Estimate]]:
    """The newest rates and every site's estimate (sizes from its newest probe in *store*)."""
    rates = newest_rates(drills)
    if rates is None:
        return None, []
    estimates = []
    for host in sorted(hostvars):
        variables = hostvars[host]
        probes = store.list_probes(host, limit=1)
        database, files = sizes_from_probe(probes[0] if probes else None)
        link = variables.get("site_wan_mbit")
        estimates.append(estimate(rates, host, float(link) if link else None, database, files,
                                  int(variables.get("site_restore_first_mb") or FIRST_MB_DEFAULT)))
    return rates, estimates
