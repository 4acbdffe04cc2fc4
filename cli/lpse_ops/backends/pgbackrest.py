"""Pure parsers for pgBackRest output (``pgbackrest info --output=json``).

They live in the site tool (``lpse_ops.site.pgbackrest``), which runs them on the hosts; the control
machine parses the same JSON with the same functions.
"""

from __future__ import annotations

from lpse_ops.site.pgbackrest import BackupSet, StanzaInfo, latest_backup, parse_info, repo_usable

__all__ = ["BackupSet", "StanzaInfo", "latest_backup", "parse_info", "repo_usable"]
