"""The ``lpse-ops`` command: one click group per area, registered from ``lpse_ops.commands``."""

from __future__ import annotations

import importlib

import click

from lpse_ops import __version__, settings, terminal

# Each module defines a click command or group; a registry, not an if/elif chain. Name -> (module, attribute):
# a module is imported only when its command runs (or --help lists them), so `lpse-ops fleet status` does not
# pay for the state store's migrations, the reports' charts or the holidays calendar it never uses.
COMMANDS: dict[str, tuple[str, str]] = {
    "lab": ("lpse_ops.commands.lab", "lab"),
    "inventory": ("lpse_ops.commands.inventory", "inventory"),
    "bundle": ("lpse_ops.commands.bundle", "bundle"),
    "preflight": ("lpse_ops.commands.preflight", "preflight"),
    "install": ("lpse_ops.commands.install", "install"),
    "backup": ("lpse_ops.commands.backup", "backup"),
    "runs": ("lpse_ops.commands.runs", "runs"),
    "audit-log": ("lpse_ops.commands.audit", "audit_log"),
    "lock": ("lpse_ops.commands.lock", "lock"),
    "notice": ("lpse_ops.commands.notice", "notice"),
    "upgrade": ("lpse_ops.commands.upgrade", "upgrade"),
    "fleet": ("lpse_ops.commands.fleet", "fleet"),
    "runbook": ("lpse_ops.commands.runbook", "runbook"),
    "access": ("lpse_ops.commands.access", "access"),
    "harden": ("lpse_ops.commands.harden", "harden"),
    "audit": ("lpse_ops.commands.compliance", "audit"),
    "freeze": ("lpse_ops.commands.freeze", "freeze"),
    "unfreeze": ("lpse_ops.commands.freeze", "unfreeze"),
    "warn": ("lpse_ops.commands.freeze", "warn"),
    "report": ("lpse_ops.commands.report", "report"),
    "evidence": ("lpse_ops.commands.evidence", "evidence_group"),
    "drill": ("lpse_ops.commands.drill", "drill"),
    "incident": ("lpse_ops.commands.incident", "incident"),
    "drp": ("lpse_ops.commands.drp", "drp"),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported when asked for (click's lazy-loading pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module_name), attribute)
        if command.name != cmd_name:
            raise RuntimeError(f"{module_name}.{attribute} is named {command.name!r}, registered as {cmd_name!r}")
        self.add_command(command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lpse-ops")
def main() -> None:
    """Install, upgrade, back up, harden and recover SPSE across the LPSE fleet.

    Environment variables: docs/settings.md.
    """
    try:
        settings.current()
    except settings.SettingsError as error:
        raise terminal.fail(f"bad setting: {error} (see docs/settings.md)") from error
    for name, close in settings.unknown().items():
        terminal.warn(f"{name} is not an lpse-ops setting and is ignored"
                      + (f": did you mean {close}?" if close else " (see docs/settings.md)"))

