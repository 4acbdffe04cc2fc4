"""Static checks of the result-record contract (docs/result-records.md).

Every playbook emits one typed record per host through ``set_stats`` (``lpse_result``) from an
``always`` section, so the record arrives even when a task fails; its header comment documents the
record; and no Python code picks a result out of a task by its display name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOKS = sorted((ROOT / "playbooks").glob("*.yml"))
SECTIONS = ("pre_tasks", "tasks", "post_tasks", "handlers")
RECORD = re.compile(r"^\{\{\s*\{\s*inventory_hostname\s*:\s*(\w+)\s*\}\s*\}\}$")


def tasks_in(tasks: list[dict] | None, section: str) -> Iterator[tuple[dict, str]]:
    """Yield every task with the name of the section holding it (``always`` inside a block), recursively."""
    for task in tasks or []:
        yield task, section
        for inner in ("block", "rescue", "always"):
            yield from tasks_in(task.get(inner), inner if inner != "block" else section)


def emitters(play: dict) -> list[tuple[dict, str]]:
    found = []
    for section in SECTIONS:
        for task, where in tasks_in(play.get(section), section):
            module = task.get("ansible.builtin.set_stats") or task.get("set_stats")
            if isinstance(module, dict) and "lpse_result" in (module.get("data") or {}):
                found.append((task, where))
    return found


def test_playbooks_found() -> None:
    assert len(PLAYBOOKS) >= 5, PLAYBOOKS


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda path: path.name)
def test_playbook_emits_typed_record_per_host_from_always(playbook: Path) -> None:
    plays = yaml.safe_load(playbook.read_text())
    for play in plays:
        found = emitters(play)
        assert len(found) == 1, f"{playbook.name}, play {play.get('name')!r}: {len(found)} lpse_result emitters"
        [(task, section)] = found
        assert section == "always", f"{playbook.name}: the record must be emitted from an always: section"
        module = task.get("ansible.builtin.set_stats") or task["set_stats"]
        assert module.get("per_host") is False and module.get("aggregate") is True, module
        match = RECORD.match(str(module["data"]["lpse_result"]).strip())
        assert match, f"{playbook.name}: lpse_result must be {{{{ {{inventory_hostname: <record var>}} }}}}"
        record = (task.get("vars") or {}).get(match.group(1))
        assert record is not None, f"{playbook.name}: the record {match.group(1)} is not defined on the task"
        if isinstance(record, dict):
            kind, schema = record.get("kind"), record.get("schema")
        else:  # a template: {{ {'kind': ..., 'schema': 1, ...} | combine(...) }}
            kind = (re.search(r"'kind':\s*'(\w+)'", record) or [None, None])[1]
            schema = 1 if re.search(r"'schema':\s*1\b", record) else None
        assert kind and schema == 1, f"{playbook.name}: record without a kind and schema 1: {record!r}"
        header = playbook.read_text().split("\n- name:", 1)[0]
        assert "Result record" in header and f"kind: {kind}" in header, (
            f"{playbook.name}: the header comment must document the {kind} record's fields")


PYTHON = sorted((ROOT / "cli" / "lpse_ops").rglob("*.py"))
BY_TASK_NAME = re.compile(r"\.captured\b|\bcapture\s*=|^[A-Z_]*TASK\s*=\s*[\"']", re.MULTILINE)


def test_no_python_reads_a_result_by_task_name() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{text[:match.start()].count(chr(10)) + 1}: {match.group(0)}"
                 for path in PYTHON for text in [path.read_text()] for match in BY_TASK_NAME.finditer(text)]
    assert offenders == [], "results must come from result records (tracker.records), not task names"
