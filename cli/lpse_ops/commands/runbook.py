"""``lpse-ops runbook``: lint the disaster runbooks and show their steps (runbooks/README.md)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from lpse_ops import runbooks, terminal
from lpse_ops.commands._options import inventory_option, json_option, refusal_as_error, require_inventory, yes_option


@click.group(name="runbook")
def runbook() -> None:
    """Check, show and run the disaster runbooks of runbooks/ (clause 10.2), step by step."""


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


def parse_sets(pairs: tuple[str, ...]) -> dict[str, str]:
    """``--set key=value`` options as a mapping; a pair without ``=`` is a usage error."""
    values: dict[str, str] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--set")
        values[key.strip()] = value
    return values


@runbook.command(name="run")
@click.argument("name")
@click.option("--site", required=True, help="The one site (inventory host name) the runbook is run on.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="A placeholder's value, e.g. --set target_time=2026-11-24T09:29:00Z (repeatable).")
@inventory_option
@yes_option("each step")
@json_option
def run_command(name: str, site: str, sets: tuple[str, ...], inventory_path: Path | None, yes: bool,
                as_json: bool) -> None:
    """Run runbook NAME on --site step by step: each step's command is shown with its placeholders filled and
    run (the real lpse-ops command) after you confirm it; on_failure decides what a failed step does.

    Refused before anything runs when the runbook does not lint clean or a placeholder has no value. The run
    holds the site's lock and is recorded (lpse-ops runs show ID: every step with its exit code, output tail
    and duration). --json needs --yes.

    Exit codes: 0 every step succeeded (or failed with on_failure=continue); 1 refused, or a step declined;
    3 a step failed and the runbook stopped there.
    """
    from lpse_ops.actions import runbook_run

    if as_json and not yes:
        raise terminal.fail("--json never prompts: add --yes (or LPSE_OPS_YES=1) to run every step without asking")
    request = runbook_run.RunbookRequest(
        name=name, site=site, inventory=require_inventory(inventory_path), values=parse_sets(sets), yes=yes,
        progress=None if as_json else terminal.info, output=None if as_json else _echo_output)
    with refusal_as_error():
        planned = runbook_run.plan(request)
        if not as_json:
            _show_plan(planned)
            request.confirm = _confirm_step
            request.decide = _decide_after_failure
        result = runbook_run.run(request, planned)
    if as_json:
        terminal.emit_json(result.as_dict())
    else:
        _show_result(result)
    raise SystemExit(result.exit_code)


def _echo_output(line: str) -> None:
    terminal.err.print(f"    {escape(line)}", highlight=False)


def _confirm_step(step) -> bool:
    return click.confirm(f"Run step {step.number} {step.id} ({step.section}): {step.command} ?", default=True,
                         err=True)


def _decide_after_failure(step, outcome) -> bool:
    return click.confirm(f"Step {step.id} failed (exit {outcome.exit_code}); its on_failure is ask. Go on with the "
                         "next step?", default=False, err=True)


def _show_plan(planned) -> None:
    targets = planned.targets
    terminal.info(f"{planned.title} on {planned.site} ({planned.path}); targets: RTO {targets['rto_s']} s, "
                  f"RPO database {targets['rpo_db_s']} s, documents {targets['rpo_docs_s']} s")
    for step in planned.steps:
        terminal.info(f"  {step.number}. [{step.section}] {step.id} (on failure: {step.on_failure}): {step.command}")


def _show_result(result) -> None:
    from lpse_ops.actions import runbook_run

    table = Table(title=f"runbook {result.plan.path.stem} on {result.plan.site}: {result.result} (run {result.run_id})")
    for column in ("#", "step", "status", "exit", "seconds", "decision"):
        table.add_column(column)
    for outcome in result.steps:
        style = {"ok": "green", "warning": "yellow"}.get(outcome.status, "red")
        table.add_row(str(outcome.step.number), escape(outcome.step.id), f"[{style}]{outcome.status}[/{style}]",
                      "-" if outcome.exit_code is None else str(outcome.exit_code), f"{outcome.duration_s:.1f}",
                      outcome.decision or "-")
    terminal.print_table(table)
    passed = ", ".join(f"{outcome.step.id} (exit {outcome.exit_code})" for outcome in result.continued_failures)
    if result.result in runbook_run.STOPPED_RESULTS:
        terminal.warn(f"stopped at step {result.failed_step}: lpse-ops runs show {result.run_id}")
    if passed:
        terminal.warn(f"failed and passed (on_failure=continue or answered to go on): {passed}")
