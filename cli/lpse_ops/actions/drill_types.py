"""The record types of a DR drill: its scenarios, what a drill is asked for, what a finished drill returns, and
its refusal; plain data, no reading.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from lpse_ops.actions import drill_rebuild, drill_upgrade
from lpse_ops.actions.operation import OperationRefused


@dataclass(frozen=True)
class Scenario:
    """What a scenario breaks and how the drill fills its runbook."""

    name: str
    description: str


SCENARIOS: dict[str, Scenario] = {
    "rows-deleted": Scenario("rows-deleted", "DELETE of the marker tenders and their documents' rows via psql; "
                                             "point-in-time recovery to the second before the DELETE"),
    "documents-lost": Scenario("documents-lost", "rm -rf of the documents folder; database and documents back to "
                                                 "the last documents snapshot"),
    "database-corrupted": Scenario("database-corrupted", "PostgreSQL stopped and its data files overwritten; "
                                                         "point-in-time recovery to the last archived WAL"),
}


SCENARIOS.update({name: Scenario(name, text) for name, text in drill_rebuild.DESCRIPTIONS.items()})
SCENARIOS[drill_upgrade.SCENARIO] = Scenario(drill_upgrade.SCENARIO, drill_upgrade.DESCRIPTION)
SAME_VERSION = (drill_upgrade.SCENARIO, "server-lost")
"""Scenarios whose recovered site must serve the release it ran before the fault (check ``verify-version``):
a failed upgrade's rollback, and a rebuilt server (a reinstall of another release is no recovery)."""


class DrillRefused(OperationRefused):
    """The drill was refused before anything was touched; the message says why and what to do."""


@dataclass
class DrillRequest:
    """Which scenario to drill on which site."""

    scenario: str
    site: str
    inventory: Path
    target_time: datetime | None = None
    """Override the recovery point the drill would choose (e.g. before the oldest backup: a made-to-fail drill)."""
    upgrade: drill_upgrade.UpgradeFault | None = None
    """failed-upgrade only: the release that breaks the site (``--to``, ``--releases``, ``--trusted-keys``)."""
    marker_interval_s: float = 1.0
    warmup_markers: int = 10
    """Markers acknowledged before the fault is injected."""
    state_url: str | None = None
    progress: Callable[[str], None] | None = None
    step_output: Callable[[str], None] | None = None


@dataclass
class DrillResult:
    """A finished drill, as recorded (``state.drills`` keys) plus the runbook run and the markers."""

    drill: dict[str, Any]
    runbook: dict[str, Any] | None
    markers: dict[str, Any]
    last_drill_line: str

    @property
    def ok(self) -> bool:
        return bool(self.drill.get("ok"))

    def as_dict(self) -> dict[str, Any]:
        return {**self.drill, "runbook": self.runbook, "markers": self.markers,
                "last_drill_line": self.last_drill_line}
