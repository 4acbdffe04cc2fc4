"""The disaster runbooks: every one in runbooks/ lints clean against the real CLI, and each lint rule fires."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lpse_ops import runbooks
from lpse_ops.main import main

RUNBOOK_DIR = Path(__file__).resolve().parents[2] / "runbooks"
SCENARIOS = ("database-corrupted", "server-lost", "ransomware", "documents-lost", "failed-upgrade", "rows-deleted")
BASE = RUNBOOK_DIR / "rows-deleted.md"


def test_runbooks_every_scenario_present():
    assert sorted(path.stem for path in runbooks.runbook_paths()) == sorted(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_runbook_lints_clean(scenario: str):
    path = RUNBOOK_DIR / f"{scenario}.md"
    assert runbooks.lint(path) == []
    book = runbooks.read(path)
    assert [name for name, _ in book.sections] == list(runbooks.SECTIONS)
    assert any(step.section == "Recovery" for step in book.steps)
    assert book.front_matter["last_drill"] is None


def test_runbook_recovery_actions_match_scenarios():
    actions = {scenario: {step.action for step in runbooks.read(RUNBOOK_DIR / f"{scenario}.md").steps
                          if step.section == "Recovery"} for scenario in SCENARIOS}
    assert "upgrade.rollback" in actions["failed-upgrade"]
    assert {"install", "backup.restore", "backup.setup"} <= actions["server-lost"]
    commands = [step.command for step in runbooks.read(RUNBOOK_DIR / "ransomware.md").steps]
    assert any("--from offsite" in command and "--offsite-as-of {offsite_as_of}" in command for command in commands)
    commands = [step.command for step in runbooks.read(RUNBOOK_DIR / "rows-deleted.md").steps]
    assert "lpse-ops backup restore --limit {site} --target-time {target_time}" in commands


def _broken(tmp_path: Path, old: str, new: str, name: str = "rows-deleted.md") -> Path:
    text = BASE.read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def _rules(path: Path) -> list[str]:
    return [problem.rule for problem in runbooks.lint(path)]


def test_lint_unchanged_copy_is_clean(tmp_path: Path):
    assert _rules(_broken(tmp_path, "## Meaning", "## Meaning")) == []


def test_lint_missing_section_reported(tmp_path: Path):
    path = _broken(tmp_path, "## Impact\n", "")
    problems = runbooks.lint(path)
    assert [(problem.rule, problem.message) for problem in problems] == [
        ("section-missing", "section ## Impact is missing")]


def test_lint_sections_out_of_order_reported(tmp_path: Path):
    text = BASE.read_text(encoding="utf-8")
    meaning_start, impact_start = text.index("## Meaning"), text.index("## Impact")
    diagnosis_start = text.index("## Diagnosis")
    swapped = (text[:meaning_start] + text[impact_start:diagnosis_start] + text[meaning_start:impact_start]
               + text[diagnosis_start:])
    path = tmp_path / "rows-deleted.md"
    path.write_text(swapped, encoding="utf-8")
    assert _rules(path) == ["section-order"]


def test_lint_unknown_action_reported(tmp_path: Path):
    path = _broken(tmp_path, "action=backup.restore", "action=backup.resurrect")
    problems = runbooks.lint(path)
    assert [problem.rule for problem in problems] == ["action-unknown"]
    assert "backup.resurrect" in problems[0].message and "restore" in problems[0].message


def test_lint_lab_action_forbidden(tmp_path: Path):
    path = _broken(tmp_path, "```step id=check-locks action=lock.list on_failure=continue\nlpse-ops lock list",
                   "```step id=check-locks action=lab.status on_failure=continue\nlpse-ops lab status")
    assert _rules(path) == ["action-forbidden"]


def test_lint_command_with_unknown_option_reported(tmp_path: Path):
    path = _broken(tmp_path, "--target-time {target_time}", "--target-time {target_time} --force-it")
    problems = runbooks.lint(path)
    assert [problem.rule for problem in problems] == ["command-unparsable"]
    assert "--force-it" in problems[0].message


def test_lint_command_missing_required_option_reported(tmp_path: Path):
    path = _broken(tmp_path, "lpse-ops backup restore --limit {site} --target-time {target_time}",
                   "lpse-ops backup restore --limit {site}")
    problems = runbooks.lint(path)
    assert [problem.rule for problem in problems] == ["command-unparsable"]
    assert "--target-time" in problems[0].message


def test_lint_command_not_matching_action_reported(tmp_path: Path):
    path = _broken(tmp_path, "lpse-ops backup restore --limit", "lpse-ops backup verify --limit")
    assert "command-mismatch" in _rules(path)


def test_lint_duplicate_step_id_reported(tmp_path: Path):
    path = _broken(tmp_path, "id=fresh-full-backup", "id=restore-before-mistake")
    problems = runbooks.lint(path)
    assert [problem.rule for problem in problems] == ["step-id-duplicate"]


def test_lint_step_without_failure_policy_reported(tmp_path: Path):
    path = _broken(tmp_path, "action=backup.restore on_failure=stop", "action=backup.restore")
    assert _rules(path) == ["step-attribute-missing"]


def test_lint_bad_failure_policy_reported(tmp_path: Path):
    path = _broken(tmp_path, "action=backup.restore on_failure=stop", "action=backup.restore on_failure=retry")
    assert _rules(path) == ["step-attribute-invalid"]


@pytest.mark.parametrize(("old", "new"), [
    ("rto_target_minutes: 30", "rto_target_minutes: thirty"),
    ("rpo_target_seconds: 60", "rpo_target_seconds: true"),
    ("last_drill: null", "last_drill: sometimes"),
    ('clauses: ["10.2", "10.3", "10.4", "6.1.4.1", "7.2"]', "clauses: [10.2, 10.4]"),
    ("owner: lkpp-infra-oncall", "owner: [a, b]"),
])
def test_lint_front_matter_wrong_type_reported(tmp_path: Path, old: str, new: str):
    problems = runbooks.lint(_broken(tmp_path, old, new))
    assert problems and {problem.rule for problem in problems} == {"front-matter-type"}


def test_lint_front_matter_missing_and_unknown_keys_reported(tmp_path: Path):
    path = _broken(tmp_path, "owner: lkpp-infra-oncall\n", "pager: lkpp-infra-oncall\n")
    assert sorted(_rules(path)) == ["front-matter-key-missing", "front-matter-key-unknown"]


def test_lint_unknown_clause_reported(tmp_path: Path):
    assert _rules(_broken(tmp_path, '"6.1.4.1"', '"99.9"')) == ["clause-unknown"]


def test_lint_no_front_matter_reported(tmp_path: Path):
    text = BASE.read_text(encoding="utf-8")
    path = tmp_path / "rows-deleted.md"
    path.write_text(text[text.index("# Rows deleted"):], encoding="utf-8")
    assert _rules(path) == ["front-matter-missing"]


def test_lint_scenario_not_file_name_reported(tmp_path: Path):
    assert _rules(_broken(tmp_path, "## Meaning", "## Meaning", name="other.md")) == ["scenario-mismatch"]


def test_lint_unknown_placeholder_reported(tmp_path: Path):
    path = _broken(tmp_path, "--target-time {target_time}", "--target-time {when}")
    problems = runbooks.lint(path)
    assert [problem.rule for problem in problems] == ["placeholder-unknown"]
    assert "{when}" in problems[0].message


def test_lint_plain_block_in_recovery_reported(tmp_path: Path):
    path = _broken(tmp_path, "## Recovery\n", "## Recovery\n\n```bash\nrm -rf /var/lib/postgresql\n```\n")
    assert _rules(path) == ["block-not-step"]


def test_lint_hard_coded_yes_reported(tmp_path: Path):
    path = _broken(tmp_path, "--target-time {target_time}\n", "--target-time {target_time} --yes\n")
    assert _rules(path) == ["command-has-yes"]


def test_parse_heading_inside_code_block_not_a_section():
    text = BASE.read_text(encoding="utf-8").replace("```bash\n", "```bash\n## Recovery\n", 1)
    book = runbooks.parse(text)
    assert [name for name, _ in book.sections] == list(runbooks.SECTIONS)


def test_parse_continued_command_line_joined():
    book = runbooks.parse("## Recovery\n```step id=a action=lock.list on_failure=stop\nlpse-ops \\\n  lock list\n```\n")
    assert book.steps[0].command == "lpse-ops lock list"
    assert book.steps[0].line == 2


def test_cli_runbook_lint_clean_exits_zero():
    result = CliRunner().invoke(main, ["runbook", "lint", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["problems"] == [] and len(data["runbooks"]) == len(SCENARIOS)


def test_cli_runbook_lint_lists_every_problem_exits_one(tmp_path: Path):
    bad = _broken(tmp_path, "action=backup.restore", "action=backup.resurrect")
    (tmp_path / "second").mkdir()
    worse = _broken(tmp_path / "second", "## Impact\n", "")
    result = CliRunner().invoke(main, ["runbook", "lint", str(bad), str(worse)])
    assert result.exit_code == 1, result.output
    assert f"{bad}:" in result.output and "action-unknown" in result.output
    assert f"{worse}:" in result.output and "section-missing" in result.output


def test_cli_runbook_show_numbers_steps():
    result = CliRunner().invoke(main, ["runbook", "show", "ransomware", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [step["number"] for step in data["steps"]] == list(range(1, len(data["steps"]) + 1))
    assert data["problems"] == []
    assert any(step["action"] == "backup.restore" and "--offsite-as-of" in step["command"] for step in data["steps"])


def test_cli_runbook_show_unknown_name_exits_one():
    result = CliRunner().invoke(main, ["runbook", "show", "volcano"])
    assert result.exit_code == 1
    assert "no runbook 'volcano'" in result.output
