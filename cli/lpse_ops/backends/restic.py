"""Pure parsers for restic output (``restic snapshots --json``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Snapshot:
    """One restic snapshot."""

    id: str
    short_id: str
    time: datetime
    hostname: str
    paths: tuple[str, ...]
    tags: tuple[str, ...]

    def as_dict(self) -> dict:
        return {"engine": "restic", "id": self.id, "short_id": self.short_id, "time": self.time.isoformat(),
                "hostname": self.hostname, "paths": list(self.paths), "tags": list(self.tags)}


def parse_time(value: str) -> datetime:
    """Parse restic's RFC 3339 time with nanoseconds (Python keeps microseconds)."""
    match = re.match(r"^(.*?T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", value.strip())
    if not match:
        raise ValueError(f"not a restic time: {value!r}")
    base, fraction, zone = match.groups()
    micro = (fraction or ".0")[1:7].ljust(6, "0")
    return datetime.fromisoformat(f"{base}.{micro}{'+00:00' if zone == 'Z' else zone}")


def parse_snapshots(data: list[dict] | None) -> list[Snapshot]:
    """Parse the JSON list printed by ``restic snapshots --json``, oldest first."""
    snapshots = [Snapshot(id=item["id"], short_id=item.get("short_id", item["id"][:8]),
                          time=parse_time(item["time"]), hostname=item.get("hostname", ""),
                          paths=tuple(item.get("paths") or ()), tags=tuple(item.get("tags") or ()))
                 for item in data or []]
    return sorted(snapshots, key=lambda s: s.time)


def snapshot_at(snapshots: list[Snapshot], when: datetime) -> Snapshot | None:
    """Return the newest snapshot taken at or before *when*, or None."""
    candidates = [s for s in snapshots if s.time <= when]
    return candidates[-1] if candidates else None
