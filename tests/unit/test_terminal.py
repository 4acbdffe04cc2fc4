"""Output a person can use anywhere: tables never cut an id or a time off a terminal, a warning prints once."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console
from rich.table import Table

from lpse_ops import terminal
from lpse_ops.commands import backup as backup_command
from lpse_ops.commands.runs import runs
from lpse_ops.state import StateStore

LABEL = "20261124-120000F_20261124-130000I"
SNAPSHOT = "4f1c2d3e4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0"
TIME = "2026-11-24T13:00:00"


def backups_table() -> Table:
    table = Table(title="backups")
    for column in ("host", "engine", "repo", "id", "type", "time", "size"):
        table.add_column(column)
    table.add_row("lpse-kabupaten-lebong-01", "pgbackrest", "2", LABEL, "incr", TIME, "12.3 MB")
    table.add_row("lpse-kabupaten-lebong-01", "restic", "2", SNAPSHOT, "files", TIME, "")
    return table


def non_tty(width: int = 80) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=width, force_terminal=False, soft_wrap=True), buffer


def test_print_table_non_tty_80_columns_keeps_every_id_and_time_whole():
    console, buffer = non_tty(80)

    terminal.print_table(backups_table(), console)

    text = buffer.getvalue()
    assert LABEL in text and SNAPSHOT in text and TIME in text
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) > 80  # wider than COLUMNS: nothing cut


def test_print_table_non_tty_narrow_table_keeps_console_width():
    console, buffer = non_tty(80)
    table = Table(title="t")
    table.add_column("id")
    table.add_row("1")

    terminal.print_table(table, console)

    assert "1" in buffer.getvalue() and max(len(line) for line in buffer.getvalue().splitlines()) <= 80


def test_print_table_terminal_folds_instead_of_ellipsis():
    buffer = io.StringIO()
    console = Console(file=buffer, width=60, force_terminal=True, color_system=None)

    terminal.print_table(backups_table(), console)

    text = buffer.getvalue()
    assert "…" not in text
    id_cells = "".join(line.split("│")[4].strip() for line in text.splitlines() if line.count("│") == 8)
    assert LABEL in id_cells and SNAPSHOT in id_cells  # folded over lines, never hidden


def test_warn_prints_the_same_warning_once(monkeypatch: pytest.MonkeyPatch):
    console, buffer = non_tty(200)
    monkeypatch.setattr(terminal, "err", console)
    monkeypatch.setattr(terminal, "_warned", set())

    terminal.warn("no head anchor")
    terminal.warn("no head anchor")
    terminal.warn("another")

    assert buffer.getvalue().count("no head anchor") == 1 and buffer.getvalue().count("another") == 1


def test_runs_list_piped_at_80_columns_shows_whole_times():
    store = StateStore.open()
    try:
        for number in range(3):
            run_id = store.start_run(f"backup.verify-repository-{number}", {}, ["lpse-kabupaten-lebong-01"])
            store.finish_run(run_id, "ok")
    finally:
        store.close()

    result = CliRunner().invoke(runs, ["list"], env={"COLUMNS": "80"})

    assert result.exit_code == 0, result.output
    for number in range(3):
        assert f"backup.verify-repository-{number}" in result.output
    assert "…" not in result.output
    started = [line for line in result.output.splitlines() if "backup.verify" in line]
    assert all(any(len(word) == 5 and word[2] == ":" for word in line.split()) for line in started)


def test_backup_list_piped_at_80_columns_shows_whole_ids_and_each_error_once(monkeypatch: pytest.MonkeyPatch,
                                                                             tmp_path: Path):
    rows = [{"host": "lpse-kabupaten-lebong-01", "engine": "pgbackrest", "repo": 1, "id": LABEL, "type": "incr",
             "time": TIME + "+07:00", "size": 12_300_000},
            {"host": "lpse-kabupaten-lebong-01", "engine": "restic", "repo": 2, "id": SNAPSHOT, "type": "files",
             "time": TIME + "+07:00"}]
    outputs = {"site1": {}, "site2": {"error": "site2 unreachable: ssh timed out"}}
    result = type("R", (), {"run_id": 7, "exit_code": 4})()
    monkeypatch.setattr(backup_command.actions, "execute", lambda ctx, action, args: (result, outputs))
    monkeypatch.setattr(backup_command.actions, "catalogue", lambda found: rows)
    monkeypatch.setattr(terminal, "_warned", set())
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("sites: {}\n")

    done = CliRunner().invoke(backup_command.backup, ["list", "-i", str(inventory)], env={"COLUMNS": "80"})

    assert done.exit_code == 4, done.output
    assert LABEL in done.output and SNAPSHOT in done.output and TIME in done.output
    assert done.output.count("site2 unreachable: ssh timed out") == 1


def test_cli_piped_prints_no_python_warnings(tmp_path: Path):
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "80", "LPSE_OPS_HOME": str(tmp_path), "PYTHONWARNINGS": "default"}
    cli = str(Path(sys.executable).with_name("lpse-ops"))
    done = subprocess.run([cli, "runs", "list"], capture_output=True, text=True,
                          env=env, check=False, timeout=120)

    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr


def test_runs_show_prints_args_summary_and_host_detail_as_text_not_python_reprs():
    with StateStore.open() as store:
        parent = store.start_run("upgrade.rollout", {"target": "1.2"}, ["site1"])
        run_id = store.start_run("install", {"version": "1.3", "check": False, "limit": None,
                                             "extra": {"bundle": "spse-1.3.tar.gz", "keys": ["/k/a", "/k/b"]}},
                                 ["site1", "site2"], parent_id=parent)
        store.finish_run(run_id, "failed", {
            "site1": {"status": "changed", "changed": 5, "ok": 117, "skipped": 11, "messages": []},
            "site2": {"status": "failed", "failed": 1, "messages": ["migrate: exit 3"]}},
            summary={"failed_step": "migrate", "counts": {"ok": 1, "failed": 1},
                     "output_tail": "line one\nline two"})

    result = CliRunner().invoke(runs, ["show", str(run_id)], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    assert "{'" not in result.output and "['" not in result.output and "None" not in result.output, result.output
    lines = [line.rstrip() for line in result.output.splitlines()]
    assert "    version: 1.3" in lines and "    check: no" in lines, result.output
    assert "    extra:" in lines and "      bundle: spse-1.3.tar.gz" in lines and "      keys: /k/a, /k/b" in lines
    assert "limit" not in result.output  # an empty value is left out
    assert "    counts:" in lines and "      ok: 1" in lines
    assert "    output_tail:" in lines and "      | line two" in lines
    assert f"  parent:    run {parent}" in result.output
    site1 = next(line for line in lines if line.lstrip("│ ").startswith("site1"))
    assert "ok=117, skipped=11" in site1 and "messages" not in site1, site1
    site2 = next(line for line in lines if line.lstrip("│ ").startswith("site2"))
    assert "messages=[migrate: exit 3]" in site2, site2


def test_inline_and_detail_lines_render_nested_data_without_reprs():
    assert terminal.inline({"ok": 117, "skipped": 11, "messages": []}) == "ok=117, skipped=11"
    assert terminal.inline({"a": {"b": 1, "c": None}, "d": [1, "x"], "e": True}) == "a=(b=1), d=[1, x], e=yes"
    assert terminal.inline({}) == "-" and terminal.inline(None) == "-"
    assert terminal.detail_lines({"only": None}) == ["    -"]
