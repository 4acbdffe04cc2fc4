"""``lpse-ops drp``: the Disaster Recovery Plan (clause 10.2) in Bahasa Indonesia, compiled from the runbooks,
the inventory's contacts (clause 7.2) and the latest drill results."""

from __future__ import annotations

from pathlib import Path

import click

from lpse_ops import terminal
from lpse_ops.actions.drp import DrpRequest, render_drp
from lpse_ops.commands._options import inventory_option, json_option, refusal_as_error
from lpse_ops.commands.runs import state_url_option
from lpse_ops.reports.drp import FORMATS


@click.group(name="drp")
def drp() -> None:
    """The Disaster Recovery Plan (clause 10.2), in Bahasa Indonesia."""


@drp.command(name="render")
@click.option("--format", "output_format", type=click.Choice(FORMATS), default="md", show_default=True,
              help="md: Markdown; html: one self-contained HTML page.")
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the plan to this file instead of stdout.")
@click.option("--runbook", "runbook_paths", type=click.Path(path_type=Path, exists=True), multiple=True,
              help="Runbook files or folders [default: every runbook in runbooks/].")
@click.option("--zone", default="Asia/Jakarta", show_default=True, help="Zone the plan's issue date is written in.")
@inventory_option
@json_option
@state_url_option
def render_command(output_format: str, out_path: Path | None, runbook_paths: tuple[Path, ...], zone: str,
                   inventory_path: Path | None, as_json: bool, state_url: str | None) -> None:
    """Compile the plan: every scenario's RTO/RPO targets and steps (runbooks/), the contacts of every site
    (inventory, clause 7.2) and each scenario's latest drill per site ("belum pernah diuji" when none)."""
    request = DrpRequest(output_format=output_format, inventory=inventory_path, runbook_paths=list(runbook_paths),
                         state_url=state_url, zone=zone)
    if inventory_path is None:
        terminal.warn("no inventory (-i, LPSE_OPS_INVENTORY or a lab): the plan lists no site contacts")
    with refusal_as_error():
        result = render_drp(request)
    if out_path is not None:
        try:
            out_path.write_text(result.text, encoding="utf-8")
        except OSError as error:
            raise terminal.fail(f"cannot write {out_path}: {error.strerror or error}") from error
    if as_json:
        terminal.emit_json({**result.summary(), "out": str(out_path) if out_path else None,
                            **({} if out_path else {"text": result.text})})
        return
    if out_path is None:
        click.echo(result.text, nl=False)
    else:
        never = [name for name in result.scenarios if name not in result.drilled]
        terminal.info(f"DRP written to {out_path}: {len(result.scenarios)} scenario(s), "
                      f"{len(result.drilled)} drilled"
                      + (f", never drilled: {', '.join(never)}" if never else "")
                      + (f", {result.sites} site(s)" if result.sites is not None else ""))
    for note in result.notes:
        terminal.warn(note)
