"""``lpse-ops runbook``: lint the disaster runbooks and show their steps (runbooks/README.md)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from lpse_ops import runbooks, terminal


@click.group(name="runbook")
def runbook() -> None:
    """Check and show the disaster runbooks of runbooks/ (clause 10.2)."""


@runbook.command(name="lint")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print only JSON on stdout.")
@click.pass_context
def lint_command(ctx: click.Context, paths: tuple[Path, ...], as_json: bool) -> None:
    """Check runbooks (files or folders; default every runbook in runbooks/): front matter, sections, and that
    every step names a real lpse-ops command whose command line parses. Nothing is run.

    Exit codes: 0 every runbook is clean; 1 a problem was found (every one is listed).
    """
    files = runbooks.runbook_paths(paths)
    if not files:
        raise terminal.fail("no runbook found (runbooks are *.md files other than README.md)")
    problems = [problem for path in files for problem in runbooks.lint(path, root=ctx.find_root().command)]
    if as_json:
        terminal.emit_json({"runbooks": [str(path) for path in files],
                            "problems": runbooks.problems_as_dicts(problems)})
        ctx.exit(1 if problems else 0)
    for problem in problems:
        click.echo(str(problem))
    if problems:
        raise terminal.fail(f"{len(problems)} problem(s) in {len({problem.path for problem in problems})} of "
                            f"{len(files)} runbook(s)")
    terminal.info(f"{len(files)} runbook(s) clean")


@runbook.command(name="show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print only JSON on stdout.")
@click.pass_context
def show_command(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show runbook NAME (a scenario, e.g. server-lost, or a file): its targets and its steps, numbered, with
    their commands. Nothing is run.
    """
    try:
        path = runbooks.find(name)
    except FileNotFoundError as error:
        raise terminal.fail(str(error)) from error
    book = runbooks.read(path)
    problems = runbooks.check(book, root=ctx.find_root().command, expected_scenario=path.stem)
    front = book.front_matter or {}
    if as_json:
        terminal.emit_json({"path": str(path), "title": book.title, "front_matter": front,
                            "steps": [dict(step.as_dict(), number=number)
                                      for number, step in enumerate(book.steps, start=1)],
                            "problems": runbooks.problems_as_dicts(problems)})
        return
    terminal.out.print(f"[bold]{escape(book.title or path.stem)}[/bold]  ({path})", highlight=False)
    for key in runbooks.FRONT_MATTER:
        if key in front:
            value = "none recorded" if key == "last_drill" and front[key] is None else front[key]
            terminal.out.print(f"  {key}: {escape(str(value))}", highlight=False)
    table = Table(title="steps")
    for column in ("#", "section", "id", "action", "on failure", "command"):
        table.add_column(column, no_wrap=column in ("#", "id", "action"))
    for number, step in enumerate(book.steps, start=1):
        table.add_row(str(number), step.section or "-", escape(step.id or "?"), escape(step.action or "?"),
                      escape(step.on_failure or "?"), escape(step.command))
    terminal.print_table(table)
    terminal.info("placeholders: " + "; ".join(f"{{{key}}} {meaning}"
                                               for key, (meaning, _) in runbooks.PLACEHOLDERS.items()))
    if problems:
        terminal.warn(f"{path.name} has {len(problems)} lint problem(s): lpse-ops runbook lint {path}")
