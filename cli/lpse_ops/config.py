"""Where lpse-ops keeps its files, and who is running it.

Everything is overridable from the environment so that CI, AWX and operators can relocate it:
``LPSE_OPS_HOME`` (state, artifacts, lab files), ``LPSE_OPS_STATE_URL`` (a SQLAlchemy URL for a
shared PostgreSQL store), ``LPSE_OPS_ACTOR`` (the engineer's name recorded in the audit log), all read
through :mod:`lpse_ops.settings` (``docs/settings.md``).
"""

from __future__ import annotations

import getpass
import os
import socket
from pathlib import Path

from lpse_ops.settings import current as current_settings

PROJECT_DIR = Path(__file__).resolve().parents[2]
"""The repository root: playbooks/, roles/ and inventory.example/ live here (an AWX project)."""


def home() -> Path:
    """Return the lpse-ops data folder (created on demand, 0700: it holds the state store, keys and
    runner artifacts), outside git. An existing folder keeps its mode."""
    path = current_settings().home or Path.home() / ".local/share/lpse-ops"
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
    return path


def trusted_keys() -> Path:
    """Return the folder of trusted release keys: ``LPSE_OPS_TRUSTED_KEYS``, else ``<home>/trusted-keys``."""
    return Path(current_settings().trusted_keys or home() / "trusted-keys")


def state_url() -> str:
    """Return the state store URL: ``LPSE_OPS_STATE_URL`` or an SQLite file in :func:`home`."""
    return current_settings().state_url or f"sqlite:///{home() / 'state.db'}"


def actor() -> str:
    """Return who is acting, as recorded in runs and the audit log."""
    name = current_settings().actor
    if name:
        return name
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"
