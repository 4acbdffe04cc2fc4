"""The verification manifest: every table's row count and checksum, taken with a named restore point.

Written at backup time to ``<state_dir>/manifests/<label>.json`` (and carried offsite by restic);
``verify`` compares a restored database against it.
"""

from __future__ import annotations

import json
import os

from lpse_ops.site import pgbackrest, postgres
from lpse_ops.site.clock import iso, now_utc, parse_time
from lpse_ops.site.errors import Failure
from lpse_ops.site.settings import Settings

FORMAT = 2  # 2: checksums taken with postgres.PINNED settings


def directory(settings: Settings) -> str:
    return os.path.join(settings.state_dir, "manifests")


def restore_point_sql(restore_point: str) -> str:
    """SQL naming a restore point inside the checksum transaction, then switching WAL after it."""
    return f"SELECT 'RP', pg_create_restore_point('{restore_point}')::text, clock_timestamp()::text;\n"


def take(settings: Settings, label: str, labels: dict[str, str], backup_type: str) -> dict:
    """Checksum every table under SHARE locks, name a restore point, switch WAL; return the manifest (unsaved)."""
    restore_point = f"lpse-{label}"
    sql = (postgres.checksum_session(restore_point_sql(restore_point))
           + "SELECT 'W', pg_walfile_name(pg_switch_wal());\n")
    lines = postgres.psql(settings, sql, step="manifest", timeout=3600)
    rp_line = _tagged(lines, "RP")
    if not rp_line:
        raise Failure("restore_point_failed", "could not create the restore point: is PostgreSQL up?", step="manifest")
    wal_line = _tagged(lines, "W")
    return {"format": FORMAT, "site_code": settings.site_code, "database": settings.database,
            "label": label, "backup_labels": labels, "backup_type": backup_type,
            "restore_point": restore_point, "restore_point_lsn": rp_line[1],
            "restore_point_time": iso(parse_time(rp_line[2])), "wal_file": wal_line[1] if wal_line else None,
            "checksum_settings": {name: value.strip("'") for name, value in postgres.PINNED},
            "created_at": iso(now_utc()),
            "tables": postgres.table_checksums(lines)}


def _tagged(lines: list[str], tag: str) -> list[str] | None:
    return next((line.split("\t") for line in lines if line.startswith(tag + "\t")), None)


def save(manifest: dict, where: str) -> str:
    """Write *manifest* atomically to ``<where>/<label>.json``; return the path."""
    if not pgbackrest.LABEL.fullmatch(str(manifest["label"])):  # a file name: never a path of someone's choosing
        raise ValueError(f"{manifest['label']!r} is not a pgBackRest backup label")
    os.makedirs(where, mode=0o750, exist_ok=True)
    path = os.path.join(where, f"{manifest['label']}.json")
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)
    return path


def find(where: str, label: str) -> dict | None:
    """Return the manifest in *where* whose label, or one of whose backup labels, is *label* (with "path")."""
    if not os.path.isdir(where):
        return None
    direct = os.path.join(where, f"{label}.json")
    candidates = ([direct] if os.path.exists(direct) else []) + [
        os.path.join(where, name) for name in sorted(os.listdir(where)) if name.endswith(".json")]
    for path in candidates:
        data = read_json(path)
        if data and (data.get("label") == label or label in (data.get("backup_labels") or {}).values()):
            return {**data, "path": path}
    return None


def read_json(path: str) -> dict | None:
    """Return the JSON object in *path*, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: str, data: dict) -> None:
    """Write *data* to *path* atomically (a temporary file, then rename)."""
    os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
    os.replace(path + ".tmp", path)
