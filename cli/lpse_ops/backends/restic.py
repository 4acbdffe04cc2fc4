"""Pure parsers for restic output (``restic snapshots --json``).

They live in the site tool (``lpse_ops.site.restic``), which runs them on the hosts; the control
machine parses the same JSON with the same functions.
"""

from __future__ import annotations

from lpse_ops.site.restic import Snapshot, parse_snapshots, parse_time, snapshot_at

__all__ = ["Snapshot", "parse_snapshots", "parse_time", "snapshot_at"]
