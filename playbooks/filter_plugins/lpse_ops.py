"""Filters for the playbooks (Ansible loads this folder beside them; AWX does the same).

``lpse_ops_record``: the one JSON object the site tool (lpse-backup) prints, out of a registered command
result, so a playbook reads each phase's record one way: ``{{ result | default({}) | lpse_ops_record }}``.
"""

from __future__ import annotations

import json


def lpse_ops_record(result, default=None) -> dict:
    """The site tool's record from *result*'s stdout; *default* (``{}``) when it printed none."""
    text = str(result.get("stdout") or "").strip() if isinstance(result, dict) else ""
    if text.startswith("{"):
        try:
            found = json.loads(text)
        except ValueError:
            found = None
        if isinstance(found, dict):
            return found
    return {} if default is None else dict(default)


class FilterModule:
    """The playbooks' filters."""

    def filters(self) -> dict:
        return {"lpse_ops_record": lpse_ops_record}
