"""Live per-host progress for fleet operations: a rich live table on a TTY, plain lines otherwise."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.live import Live
from rich.table import Table

from lpse_ops import terminal
from lpse_ops.runner_events import PlayTracker

STATUS_STYLE = {"ok": "green", "changed": "yellow", "failed": "red", "unreachable": "red"}


def host_table(tracker: PlayTracker, title: str, extra: dict[str, dict[str, str]] | None = None) -> Table:
    """Return a table of hosts: status, counts, and the current task or last failure."""
    table = Table(title=title)
    for column in ("host", "status", "ok", "changed", "failed", "detail"):
        table.add_column(column, overflow="fold")
    for name in sorted(tracker.hosts):
        state = tracker.hosts[name]
        style = STATUS_STYLE.get(state.status, "")
        detail = (extra or {}).get(name, {}).get("detail") or (
            state.messages[-1] if state.messages else ("" if tracker.finished else state.task))
        table.add_row(name, f"[{style}]{state.status}[/{style}]" if style else state.status,
                      str(state.ok), str(state.changed), str(state.failed + state.unreachable), detail)
    return table


class HostProgress:
    """Context manager fed with runner events; shows live progress on stderr."""

    def __init__(self, tracker: PlayTracker, title: str, enabled: bool = True) -> None:
        self.tracker = tracker
        self.title = title
        self.live: Live | None = None
        self.enabled = enabled
        self._announced: set[tuple[str, str]] = set()

    def __enter__(self) -> HostProgress:
        if self.enabled and terminal.is_tty():
            self.live = Live(host_table(self.tracker, self.title), console=terminal.err, refresh_per_second=4,
                             transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.__exit__(None, None, None)

    def event(self, event: dict) -> None:
        """Feed one runner event to the tracker and refresh the display."""
        host = self.tracker.feed(event)
        if self.live:
            self.live.update(host_table(self.tracker, self.title))
            return
        if not self.enabled or not host:
            return
        kind = event.get("event")
        task = (event.get("event_data") or {}).get("task", "")
        if kind == "runner_on_failed" and not (event.get("event_data") or {}).get("ignore_errors"):
            terminal.info(f"  {host}: FAILED {self.tracker.hosts[host].messages[-1]}")
        elif kind == "runner_on_unreachable":
            terminal.info(f"  {host}: UNREACHABLE")
        elif kind == "runner_on_ok" and (host, task) not in self._announced:
            self._announced.add((host, task))
            changed = (event.get("event_data") or {}).get("res", {}).get("changed")
            terminal.info(f"  {host}: {'changed' if changed else 'ok'}: {task}")


def live(enabled: bool = True):
    """Return the progress factory fleet actions take (``OperationContext.progress``): a live table on a
    TTY, plain lines otherwise; None (no display) when not *enabled*, e.g. with ``--json``."""
    if not enabled:
        return None

    @contextmanager
    def factory(tracker: PlayTracker, title: str) -> Iterator[Callable[[dict], None]]:
        with HostProgress(tracker, title) as display:
            yield display.event

    return factory
