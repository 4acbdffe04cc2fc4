"""Disaster runbooks (``runbooks/*.md``, clause 10.2): the parser and the lint.

A runbook is Markdown with YAML front matter, five fixed ``##`` sections (Meaning, Impact, Diagnosis,
Recovery, Verification) and executable steps: fenced blocks whose info string is
``step id=ID action=GROUP.COMMAND on_failure=stop|continue|ask`` and whose body is one ``lpse-ops ...``
command line with ``{placeholder}`` fields. The format and every lint rule: ``runbooks/README.md``.

:func:`parse` is pure (text in, :class:`Runbook` out). :func:`lint` also checks each step against the real
click command tree (given, or ``lpse_ops.main.main``): the action must name a command, and the command line,
its placeholders filled with sample values, must parse with click. Nothing is ever run.
"""

from __future__ import annotations

import datetime
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

from lpse_ops import config

SECTIONS: tuple[str, ...] = ("Meaning", "Impact", "Diagnosis", "Recovery", "Verification")
"""The ``##`` sections every runbook has, in this order, and no others."""
STEP_SECTIONS: frozenset[str] = frozenset({"Diagnosis", "Recovery", "Verification"})
"""Sections where step blocks may appear (Recovery and Verification hold only step blocks)."""
ONLY_STEPS_SECTIONS: frozenset[str] = frozenset({"Recovery", "Verification"})
FAILURE_POLICIES: tuple[str, ...] = ("stop", "continue", "ask")
STEP_ATTRIBUTES: tuple[str, ...] = ("id", "action", "on_failure")
FORBIDDEN_GROUPS: frozenset[str] = frozenset({"lab", "runbook"})
"""A runbook runs on a real site: never the lab's commands, never another runbook."""

PLACEHOLDERS: dict[str, tuple[str, str]] = {
    "site": ("the site's inventory host name", "site1"),
    "target_time": ("the point in time to recover to, ISO 8601 in UTC", "2026-11-24T09:29:00Z"),
    "offsite_as_of": ("the offsite repositories as they stood at this time (before the attack), ISO 8601 UTC",
                      "2026-11-24T09:30:00Z"),
    "bundle": ("the signed release bundle of the version the site ran", "spse-1.0.tar.gz"),
    "rollout": ("the rollout id (lpse-ops upgrade status)", "7"),
}
"""Every placeholder a step may use: name -> (meaning, sample value the lint parses with)."""

CLAUSES: frozenset[str] = frozenset({
    "6.1.2", "6.2.1", "13.1", "6.1.3", "6.1.4.1", "6.1.4.2", "6.1.4.3", "6.1.4.4", "6.1.9", "6.1.10",
    "6.2.2", "6.2.18", "6.2.6", "6.2.15", "6.2.7", "6.2.13", "6.2.16", "6.2.17", "6.2.19", "6.2.20",
    "7.1", "7.2", "7.2.2", "7.6", "7.7", "8.1.1", "8.1.2", "8.1.3", "10.2", "10.3", "10.4", "13.2", "13.3", "13.4",
})
"""The clause numbers of the service agreement (``sla-duties.md``) a runbook may cite."""

FRONT_MATTER: dict[str, str] = {
    "scenario": "str",
    "owner": "str",
    "rto_target_minutes": "int",
    "rpo_target_seconds": "int",
    "rpo_documents_target_seconds": "int",
    "clauses": "list",
    "last_drill": "date",
}
"""Front-matter keys, all required, with their types (``date``: a YAML date or timestamp, or null)."""

_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_HEADING = re.compile(r"^(?P<level>#{1,6})\s+(?P<title>.+?)\s*#*\s*$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_STEP_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class Problem:
    """One lint finding: the file, the 1-based line (0 when the whole file), a rule code and what is wrong."""

    path: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.message}"


@dataclass
class Step:
    """One executable block: its attributes, its command line (continuations joined) and where it is."""

    section: str | None
    line: int
    attributes: dict[str, str]
    command: str
    command_lines: int
    attribute_errors: list[str] = field(default_factory=list)

    @property
    def id(self) -> str | None:
        return self.attributes.get("id")

    @property
    def action(self) -> str | None:
        return self.attributes.get("action")

    @property
    def on_failure(self) -> str | None:
        return self.attributes.get("on_failure")

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "action": self.action, "on_failure": self.on_failure, "section": self.section,
                "line": self.line, "command": self.command}


@dataclass
class Block:
    """A fenced block that is not a step (its info string), for the rule that Recovery holds steps only."""

    section: str | None
    line: int
    info: str


@dataclass
class Runbook:
    """A parsed runbook: front matter (None when absent or not YAML), sections with their lines, steps."""

    path: str
    front_matter: dict[str, Any] | None
    front_matter_error: str | None
    sections: list[tuple[str, int]]
    steps: list[Step]
    blocks: list[Block]
    title: str | None = None


def parse(text: str, path: str = "<runbook>") -> Runbook:
    """Parse runbook *text* (pure). Never raises for a malformed runbook: :func:`check` reports what is wrong."""
    lines = text.splitlines()
    front: dict[str, Any] | None = None
    front_error: str | None = None
    start = 0
    if lines and lines[0].strip() == "---":
        end = next((index for index in range(1, len(lines)) if lines[index].strip() in ("---", "...")), None)
        if end is None:
            front_error = "front matter opened with --- but never closed"
        else:
            start = end + 1
            try:
                loaded = yaml.safe_load("\n".join(lines[1:end]))
            except yaml.YAMLError as error:
                front_error = f"front matter is not YAML: {error}"
            else:
                if isinstance(loaded, dict):
                    front = loaded
                else:
                    front_error = "front matter is not a mapping of keys to values"
    else:
        front_error = "no front matter: the file must start with a --- line"

    sections: list[tuple[str, int]] = []
    steps: list[Step] = []
    blocks: list[Block] = []
    title: str | None = None
    section: str | None = None
    index = start
    while index < len(lines):
        line = lines[index]
        fence = _FENCE.match(line)
        if fence:
            marker, info = fence.group("fence"), fence.group("info").strip()
            body: list[str] = []
            index += 1
            while index < len(lines) and not (lines[index].strip().startswith(marker)
                                              and lines[index].strip().strip(marker[0]) == ""):
                body.append(lines[index])
                index += 1
            opened_at = index - len(body)  # 1-based line of the opening fence
            if info.split(maxsplit=1)[:1] == ["step"]:
                steps.append(_step(section, opened_at, info, body))
            else:
                blocks.append(Block(section, opened_at, info))
            index += 1
            continue
        heading = _HEADING.match(line)
        if heading:
            level = len(heading.group("level"))
            if level == 1 and title is None:
                title = heading.group("title")
            elif level == 2:
                section = heading.group("title")
                sections.append((section, index + 1))
        index += 1
    return Runbook(path, front, front_error, sections, steps, blocks, title)


def _step(section: str | None, line: int, info: str, body: list[str]) -> Step:
    attributes: dict[str, str] = {}
    errors: list[str] = []
    try:
        tokens = shlex.split(info)[1:]
    except ValueError as error:
        tokens = []
        errors.append(f"unreadable attributes ({error})")
    for token in tokens:
        name, equals, value = token.partition("=")
        if not equals:
            errors.append(f"attribute {token!r} is not name=value")
        elif name in attributes:
            errors.append(f"attribute {name} given twice")
        else:
            attributes[name] = value
    joined: list[str] = []
    logical = 0
    pending = ""
    for raw in body:
        text = raw.strip()
        if not text and not pending:
            continue
        if text.endswith("\\"):
            pending += text[:-1].strip() + " "
            continue
        joined.append((pending + text).strip())
        pending = ""
        logical += 1
    if pending:
        joined.append(pending.strip())
        logical += 1
    return Step(section, line, attributes, "\n".join(joined), logical, errors)


def read(path: Path) -> Runbook:
    """Parse the runbook file at *path*."""
    return parse(path.read_text(encoding="utf-8"), str(path))


def runbook_dir() -> Path:
    """The project's ``runbooks/`` folder."""
    return config.PROJECT_DIR / "runbooks"


def runbook_paths(paths: list[Path] | tuple[Path, ...] = ()) -> list[Path]:
    """The runbook files named by *paths* (files, or folders: their ``*.md`` but README.md); default all."""
    found: list[Path] = []
    for path in paths or (runbook_dir(),):
        if path.is_dir():
            found.extend(sorted(item for item in path.glob("*.md") if item.name != "README.md"))
        else:
            found.append(path)
    return found


def find(name: str) -> Path:
    """The runbook called *name* (a scenario, e.g. ``server-lost``, or a path); raise FileNotFoundError."""
    as_path = Path(name)
    if as_path.suffix == ".md" and as_path.is_file():
        return as_path
    candidate = runbook_dir() / f"{name.removesuffix('.md')}.md"
    if candidate.is_file():
        return candidate
    known = ", ".join(path.stem for path in runbook_paths())
    raise FileNotFoundError(f"no runbook {name!r} (known: {known})")


def lint(path: Path, root: click.Group | None = None) -> list[Problem]:
    """Every problem of the runbook at *path*, against the click tree *root* (default: lpse-ops itself)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        return [Problem(str(path), 0, "unreadable", f"cannot read the runbook: {error}")]
    return check(parse(text, str(path)), root, expected_scenario=path.stem)


def check(runbook: Runbook, root: click.Group | None = None, expected_scenario: str | None = None) -> list[Problem]:
    """Every problem of a parsed *runbook* (front matter, sections, steps, commands), in file order."""
    if root is None:
        from lpse_ops.main import main as root  # the real command tree; imported late (main imports commands)
    problems = _check_front_matter(runbook, expected_scenario) + _check_sections(runbook)
    problems += _check_steps(runbook, root)
    return sorted(problems, key=lambda problem: problem.line)


def _check_front_matter(runbook: Runbook, expected_scenario: str | None) -> list[Problem]:
    def problem(rule: str, message: str) -> Problem:
        return Problem(runbook.path, 1, rule, message)

    if runbook.front_matter is None:
        return [problem("front-matter-missing", runbook.front_matter_error or "no front matter")]
    front = runbook.front_matter
    found: list[Problem] = []
    for key in FRONT_MATTER:
        if key not in front:
            found.append(problem("front-matter-key-missing", f"front matter lacks {key!r}"))
    for key in front:
        if key not in FRONT_MATTER:
            found.append(problem("front-matter-key-unknown",
                                 f"unknown front-matter key {key!r} (known: {', '.join(FRONT_MATTER)})"))
    for key, kind in FRONT_MATTER.items():
        if key not in front:
            continue
        value = front[key]
        if kind == "str" and not (isinstance(value, str) and value.strip()):
            found.append(problem("front-matter-type", f"{key} must be a non-empty string, not {value!r}"))
        elif kind == "int" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            found.append(problem("front-matter-type", f"{key} must be a whole number >= 0, not {value!r}"))
        elif kind == "date" and value is not None and not isinstance(value, datetime.date):
            found.append(problem("front-matter-type",
                                 f"{key} must be null or a date/time (YYYY-MM-DD or ISO 8601), not {value!r}"))
        elif kind == "list":
            if not isinstance(value, list) or not value:
                found.append(problem("front-matter-type", f"{key} must be a non-empty list, not {value!r}"))
                continue
            for clause in value:
                if not isinstance(clause, str):
                    found.append(problem("front-matter-type",
                                         f"clause {clause!r} must be a quoted string (\"10.2\"): YAML reads 10.10 "
                                         "as the number 10.1"))
                elif clause not in CLAUSES:
                    found.append(problem("clause-unknown", f"clause {clause!r} is not in sla-duties.md"))
    scenario = front.get("scenario")
    if expected_scenario and isinstance(scenario, str) and scenario != expected_scenario:
        found.append(problem("scenario-mismatch",
                             f"scenario {scenario!r} differs from the file name ({expected_scenario}.md)"))
    return found


def _check_sections(runbook: Runbook) -> list[Problem]:
    found: list[Problem] = []
    seen: dict[str, int] = {}
    for name, line in runbook.sections:
        if name not in SECTIONS:
            found.append(Problem(runbook.path, line, "section-unknown",
                                 f"section {name!r} is not one of {', '.join(SECTIONS)} (use ### inside one)"))
        elif name in seen:
            found.append(Problem(runbook.path, line, "section-duplicate", f"section {name!r} appears twice"))
        else:
            seen[name] = line
    for name in SECTIONS:
        if name not in seen:
            found.append(Problem(runbook.path, 0, "section-missing", f"section ## {name} is missing"))
    present = [name for name, _ in sorted(seen.items(), key=lambda item: item[1])]
    expected = [name for name in SECTIONS if name in seen]
    if present != expected:
        found.append(Problem(runbook.path, seen[present[0]] if present else 0, "section-order",
                             f"sections are in the order {', '.join(present)}; they must be "
                             f"{', '.join(expected)}"))
    for section in ONLY_STEPS_SECTIONS:
        if section in seen and not any(step.section == section for step in runbook.steps):
            found.append(Problem(runbook.path, seen[section], "section-without-steps",
                                 f"section {section} has no step block"))
    for block in runbook.blocks:
        if block.section in ONLY_STEPS_SECTIONS:
            found.append(Problem(runbook.path, block.line, "block-not-step",
                                 f"a code block in {block.section} ({block.info or 'no info string'}) is not a "
                                 "step: write ```step id=... action=... on_failure=...``` or move it to Diagnosis"))
    return found


def _check_steps(runbook: Runbook, root: click.Group) -> list[Problem]:
    found: list[Problem] = []
    ids: dict[str, int] = {}
    for step in runbook.steps:
        def problem(rule: str, message: str, step: Step = step) -> None:
            found.append(Problem(runbook.path, step.line, rule, f"step {step.id or '?'}: {message}"))

        if step.section not in STEP_SECTIONS:
            problem("step-misplaced", f"a step in {step.section or 'no section'}; steps belong in "
                                      f"{', '.join(sorted(STEP_SECTIONS))}")
        for error in step.attribute_errors:
            problem("step-attribute-invalid", error)
        for name in STEP_ATTRIBUTES:
            if not step.attributes.get(name):
                problem("step-attribute-missing", f"no {name}=")
        for name in step.attributes:
            if name not in STEP_ATTRIBUTES:
                problem("step-attribute-unknown", f"unknown attribute {name!r} (known: {', '.join(STEP_ATTRIBUTES)})")
        if step.id:
            if not _STEP_ID.match(step.id):
                problem("step-attribute-invalid", "id must be lower-case letters, digits and hyphens")
            if step.id in ids:
                problem("step-id-duplicate", f"id {step.id!r} is already used by the step on line {ids[step.id]}")
            else:
                ids[step.id] = step.line
        if step.on_failure and step.on_failure not in FAILURE_POLICIES:
            problem("step-attribute-invalid",
                    f"on_failure={step.on_failure} is not one of {'|'.join(FAILURE_POLICIES)}")
        command = _resolve_action(step.action, root, problem) if step.action else None
        for message in _command_problems(step, command):
            problem(*message)
    return found


def subcommands(command: click.Command) -> dict[str, click.Command]:
    """A group's subcommands by name through click's own API (a lazy group imports them here); {} for a command."""
    if not isinstance(command, click.Group):
        return {}
    ctx = click.Context(command)
    found = {name: command.get_command(ctx, name) for name in command.list_commands(ctx)}
    return {name: child for name, child in found.items() if child is not None}


def _resolve_action(action: str, root: click.Group, problem: Any) -> tuple[list[str], list[click.Command]] | None:
    parts = action.split(".")
    if parts[0] in FORBIDDEN_GROUPS:
        problem("action-forbidden", f"action {action}: {parts[0]} commands are not for a real site's runbook")
        return None
    command: click.Command = root
    chain: list[click.Command] = [root]
    for depth, part in enumerate(parts):
        children = subcommands(command)
        if part not in children:
            where = "lpse-ops " + " ".join(parts[:depth]) if depth else "lpse-ops"
            known = ", ".join(sorted(children)) or "none: it is a command, not a group"
            problem("action-unknown", f"action {action} is not a command: {where} has no {part!r} (known: {known})")
            return None
        command = children[part]
        chain.append(command)
    if isinstance(command, click.Group):
        problem("action-unknown", f"action {action} is a group, not a command: "
                                  f"name one of {', '.join(sorted(subcommands(command)))}")
        return None
    return parts, chain


def _command_problems(step: Step, resolved: tuple[list[str], list[click.Command]] | None) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if not step.command:
        return [("command-missing", "the block holds no command line")]
    if step.command_lines > 1:
        return [("command-unparsable", "a step holds one command line (join long ones with a trailing \\)")]
    unknown = sorted({name for name in _PLACEHOLDER.findall(step.command) if name not in PLACEHOLDERS})
    for name in unknown:
        found.append(("placeholder-unknown",
                      f"placeholder {{{name}}} is not one of {', '.join('{' + key + '}' for key in PLACEHOLDERS)}"))
    if unknown:
        return found
    filled = _PLACEHOLDER.sub(lambda match: PLACEHOLDERS[match.group(1)][1], step.command)
    try:
        tokens = shlex.split(filled)
    except ValueError as error:
        return [("command-unparsable", f"cannot split the command line: {error}")]
    if not tokens or tokens[0] != "lpse-ops":
        return [("command-unparsable", "the command line must start with lpse-ops")]
    if "--yes" in tokens:
        found.append(("command-has-yes", "--yes is the runner's to add (asked per step in an incident, given in a "
                                         "drill); a runbook never skips the confirmation itself"))
    if resolved is None:
        return found
    parts, chain = resolved
    if tokens[1:1 + len(parts)] != parts:
        found.append(("command-mismatch", f"action {'.'.join(parts)} runs `lpse-ops {' '.join(parts)}`, but the "
                                          f"command line is `{' '.join(step.command.split()[:1 + len(parts)])}`"))
        return found
    # The groups' contexts are built without parsing (nothing runs, not even main's settings check); the
    # command's own context parses the arguments exactly as `lpse-ops ...` would, callbacks and types included.
    root, *groups, command = chain
    parent = click.Context(root, info_name="lpse-ops", **root.context_settings)
    for part, group in zip(parts[:-1], groups, strict=True):
        parent = click.Context(group, parent=parent, info_name=part, **group.context_settings)
    try:
        command.make_context(parts[-1], tokens[1 + len(parts):], parent=parent, resilient_parsing=False)
    except click.exceptions.Exit:
        found.append(("command-unparsable", "the command line asks for --help or --version instead of acting"))
    except click.ClickException as error:
        found.append(("command-unparsable", f"click refuses `{step.command}`: {error.format_message()}"))
    return found


def problems_as_dicts(problems: list[Problem]) -> list[dict[str, Any]]:
    """The *problems* as JSON-ready dictionaries."""
    return [asdict(problem) for problem in problems]


def placeholders_of(step: Step) -> list[str]:
    """The placeholder names *step*'s command line uses, in order of first use."""
    return list(dict.fromkeys(_PLACEHOLDER.findall(step.command)))


def fill(command: str, values: dict[str, str]) -> str:
    """*command* with each ``{name}`` replaced by ``values[name]`` (shell-quoted); KeyError names a missing one."""
    return _PLACEHOLDER.sub(lambda match: shlex.quote(str(values[match.group(1)])), command)


def takes_option(action: str, option: str, root: click.Group | None = None) -> bool:
    """Whether the command *action* (``backup.restore``) has the option *option* (``--yes``)."""
    if root is None:
        from lpse_ops.main import main as root
    command: click.Command = root
    for part in action.split("."):
        children = subcommands(command)
        if part not in children:
            return False
        command = children[part]
    return any(option in getattr(param, "opts", ()) for param in command.params)
