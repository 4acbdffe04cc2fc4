"""The ``lpse-ops`` command: one click group per area, registered from ``lpse_ops.commands``."""

from __future__ import annotations

import importlib

import click

from lpse_ops import __version__, settings, terminal

# Each module defines a click command or group named in the tuple; a registry, not an if/elif chain.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("lpse_ops.commands.lab", "lab"),
    ("lpse_ops.commands.inventory", "inventory"),
    ("lpse_ops.commands.bundle", "bundle"),
    ("lpse_ops.commands.preflight", "preflight"),
    ("lpse_ops.commands.install", "install"),
    ("lpse_ops.commands.backup", "backup"),
    ("lpse_ops.commands.runs", "runs"),
    ("lpse_ops.commands.audit", "audit_log"),
    ("lpse_ops.commands.lock", "lock"),
    ("lpse_ops.commands.notice", "notice"),
    ("lpse_ops.commands.upgrade", "upgrade"),
    ("lpse_ops.commands.fleet", "fleet"),
    ("lpse_ops.commands.runbook", "runbook"),
    ("lpse_ops.commands.access", "access"),
    ("lpse_ops.commands.harden", "harden"), ("lpse_ops.commands.compliance", "audit"),
    ("lpse_ops.commands.freeze", "freeze"),
    ("lpse_ops.commands.freeze", "unfreeze"),
    ("lpse_ops.commands.freeze", "warn"),
    ("lpse_ops.commands.report", "report"),
    ("lpse_ops.commands.evidence", "evidence_group"),
    ("lpse_ops.commands.drill", "drill"),
    ("lpse_ops.commands.incident", "incident"),
    ("lpse_ops.commands.drp", "drp"),
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


for module_name, attribute in COMMANDS:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:  # a command area not built yet
        if error.name != module_name:
            raise
        continue
    main.add_command(getattr(module, attribute))
