"""The site's settings: one frozen object, read once from /etc/lpse-backup/lpse-backup.json.

The role ``backup`` writes that file (``templates/lpse-backup.json.j2``). Every function that needs a
setting is given this object; nothing reads a global.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, fields
from types import MappingProxyType
from typing import Any

from lpse_ops.site.errors import SETUP_HINT, Failure

DEFAULT_PATH = "/etc/lpse-backup/lpse-backup.json"
MIB = 2**20


@dataclass(frozen=True)
class Settings:
    """What the role configured on this site (names as in lpse-backup.json)."""

    site_code: str
    stanza: str
    database: str
    pg_version: str
    pg_port: int
    pg_data: str
    pg_unit: str
    pgbackrest_repo1_path: str
    spool_path: str
    s3_endpoint: str
    s3_ca_file: str
    restic_repos: MappingProxyType
    restic_password_file: str
    restic_env_file: str
    restic_paths: tuple[str, ...]
    restic_keep: MappingProxyType
    docs_dir: str
    state_dir: str
    spse_unit: str
    health_url: str
    pgbackrest_repo2_path: str = ""
    restic_s3_options: tuple[str, ...] = ()
    scratch_port: int = 55432
    spool_alert_files: int = 64
    archive_wait_s: int = 180
    lock_wait_s: int = 3600
    min_free_bytes: int = 64 * MIB
    lock_path: str = "/run/lpse-backup.lock"

    @property
    def files_lock_path(self) -> str:
        """The documents runs' own lock: a long database backup never holds back the 5-minute snapshots."""
        return self.lock_path + ".files"

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Settings:
        """Build the settings from the parsed JSON; unknown keys are ignored (older or newer roles).

        Raises Failure(config_invalid) naming every required key that is missing.
        """
        known = {f.name: f for f in fields(cls)}
        required = [name for name, f in known.items() if f.default is MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise Failure("config_invalid", f"lpse-backup settings lack {', '.join(missing)}: {SETUP_HINT}",
                          step="config")
        values = {name: data[name] for name in known if name in data}
        for name in ("restic_repos", "restic_keep"):
            values[name] = MappingProxyType(dict(values[name]))
        for name in ("restic_paths", "restic_s3_options"):
            if name in values:
                values[name] = tuple(values[name])
        values["pg_version"] = str(values["pg_version"])
        return cls(**values)


def load(path: str = DEFAULT_PATH) -> Settings:
    """Read the settings file at *path*; raise Failure(config_missing | config_invalid) when unusable."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise Failure("config_missing", f"{path} is missing: {SETUP_HINT}", step="config") from None
    except (OSError, json.JSONDecodeError) as error:
        raise Failure("config_invalid", f"{path} cannot be read ({error}): {SETUP_HINT}", step="config") from None
    if not isinstance(data, dict):
        raise Failure("config_invalid", f"{path} is not a JSON object: {SETUP_HINT}", step="config")
    return Settings.from_mapping(data)
