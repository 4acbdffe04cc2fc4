"""Pure functions over ansible-runner events: per-host progress, failures and typed result records.

Given the event dicts that ``ansible_runner.run(event_handler=...)`` receives, :class:`PlayTracker`
keeps what the CLI shows and stores: each host's status, counts, current task and failure messages, and
the typed result records the playbooks emit.

A typed record: every playbook of this project ends by setting, per host, one ``lpse_result`` record
through ``ansible.builtin.set_stats`` (``per_host: false``, ``aggregate: true``, data
``{lpse_result: {<inventory_hostname>: {...}}}``). Ansible merges them into the play's custom stats,
which ansible-runner hands over in the ``playbook_on_stats`` event as ``artifact_data`` (and AWX keeps
as the job's artifacts; plain ``ansible-playbook`` prints them under CUSTOM STATS). The runner reads
results from there, never from a task's display name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

HOST_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}


@dataclass
class HostState:
    """One host's progress through a playbook."""

    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    task: str = ""
    messages: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        return "changed" if self.changed else "ok"

    def as_dict(self) -> dict:
        return {"status": self.status, "ok": self.ok, "changed": self.changed, "failed": self.failed,
                "unreachable": self.unreachable, "skipped": self.skipped, "messages": self.messages}


RESULT_KEY = "lpse_result"


def result_records(custom_stats: dict | None) -> dict[str, dict]:
    """Return the per-host typed result records from a play's custom stats (``{host: record}``)."""
    records = (custom_stats or {}).get(RESULT_KEY) or {}
    return {host: record for host, record in records.items() if isinstance(record, dict)}


def _message(result: dict) -> str:
    if result.get("_ansible_no_log") or result.get("censored"):
        return "output hidden (no_log)"
    for key in ("msg", "stderr", "reason"):
        value = result.get(key)
        if value:
            return value if isinstance(value, str) else str(value)
    return "task failed"


@dataclass
class PlayTracker:
    """Accumulates runner events: per-host counts and messages, and the play's typed result records."""

    hosts: dict[str, HostState] = field(default_factory=dict)
    finished: bool = False
    records: dict[str, dict] = field(default_factory=dict)

    def host(self, name: str) -> HostState:
        return self.hosts.setdefault(name, HostState())

    def feed(self, event: dict) -> str | None:
        """Update state from one runner event; return the affected host name, if any."""
        kind = event.get("event", "")
        data = event.get("event_data", {}) or {}
        if kind == "runner_on_start":
            state = self.host(data.get("host", "?"))
            state.task = data.get("task", "")
            return data.get("host")
        if kind == "playbook_on_stats":
            self._apply_stats(data)
            self.records.update(result_records(data.get("artifact_data")))
            self.finished = True
            return None
        if kind not in HOST_EVENTS:
            return None
        host = data.get("host", "?")
        state = self.host(host)
        result = data.get("res", {}) or {}
        task = data.get("task", "")
        outcome = HOST_EVENTS[kind]
        ignored = bool(data.get("ignore_errors"))
        if outcome == "ok":
            state.ok += 1
            if result.get("changed"):
                state.changed += 1
        elif outcome == "failed" and not ignored:
            state.failed += 1
            state.messages.append(f"{task}: {_message(result)}")
        elif outcome == "unreachable":
            state.unreachable += 1
            state.messages.append(f"unreachable: {_message(result)}")
        elif outcome == "skipped":
            state.skipped += 1
        return host

    def _apply_stats(self, data: dict) -> None:
        """Take the final counts from the play recap (it is authoritative)."""
        for key, attribute in (("ok", "ok"), ("changed", "changed"), ("failures", "failed"),
                               ("dark", "unreachable"), ("skipped", "skipped")):
            for host, count in (data.get(key) or {}).items():
                setattr(self.host(host), attribute, count)

    def summary(self) -> dict:
        """Return counts of hosts per status."""
        counts: dict[str, int] = {}
        for state in self.hosts.values():
            counts[state.status] = counts.get(state.status, 0) + 1
        return counts
