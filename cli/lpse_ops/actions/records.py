"""Read the typed result record each host's playbook emitted, and say why a host has none.

Every playbook of this project ends, for every host it reaches, by emitting one record through
``ansible.builtin.set_stats`` (``lpse_result: {<host>: {"kind": ..., "schema": 1, ...}}``, see
``docs/result-records.md``); :class:`lpse_ops.runner_events.PlayTracker` collects them in
``records``. Callers read results only from there, never from a task picked out by its display name.

A host without a record of the expected kind and schema (unreachable, failed before the record was
emitted, or a playbook that no longer emits one) is listed in :attr:`HostRecords.missing` with the
reason, so a command reports it instead of silently leaving it out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lpse_ops.actions.operation import OperationResult

SCHEMA = 1
"""The record schema this CLI reads; a record with another schema is reported as missing."""


@dataclass
class HostRecords:
    """Each target host's record of one kind (``found``), or why it has none (``missing``: host -> reason)."""

    kind: str
    found: dict[str, dict] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def exit_code(self, code: int) -> int:
        """Return *code*, raised to 3 (a host failed) when it says success but a host has no record."""
        from lpse_ops.actions.operation import EXIT_HOSTS_FAILED, EXIT_OK

        return EXIT_HOSTS_FAILED if code == EXIT_OK and self.missing else code


def missing_reason(result: OperationResult, host: str) -> str:
    """Return why *host* has no result record, from what the run reported about it."""
    state = result.tracker.hosts.get(host)
    if state is None:
        return "no result record: the run reported nothing for this host"
    detail = "; ".join(state.messages)
    if state.unreachable:
        return f"no result record: unreachable ({detail or 'no answer over SSH'})"
    if state.failed:
        return f"no result record: failed before emitting it ({detail or 'no message'})"
    return "no result record: the playbook emitted none for this host"


def read(result: OperationResult, kind: str) -> HostRecords:
    """Return the records of *kind* of every host the run targeted or reported on.

    Given a finished operation; a record whose ``kind`` or ``schema`` differs counts as missing,
    with both named in the reason.
    """
    records = HostRecords(kind)
    hosts = sorted(set(result.hosts) | set(result.tracker.hosts) | set(result.tracker.records))
    for host in hosts:
        record = result.tracker.records.get(host)
        if record is None:
            records.missing[host] = missing_reason(result, host)
        elif record.get("kind") != kind or record.get("schema") != SCHEMA:
            records.missing[host] = (f"result record of kind {record.get('kind')!r} schema {record.get('schema')!r}, "
                                     f"expected kind {kind!r} schema {SCHEMA}")
        else:
            records.found[host] = record
    return records
