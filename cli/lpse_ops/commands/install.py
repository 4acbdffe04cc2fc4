"""``lpse-ops install``: put sites from bare host to serving SPSE from a signed release bundle."""

from __future__ import annotations

from pathlib import Path

import click

from lpse_ops import config, terminal
from lpse_ops.actions import operation
from lpse_ops.commands._options import (
    app_settings,
    inventory_option,
    json_option,
    limit_option,
    render,
    require_inventory,
    run_operation,
)

HEALTH_TASK = "Check SPSE health through nginx"


def trusted_keys_default() -> str:
    """Return ``LPSE_OPS_TRUSTED_KEYS``, else ``<home>/trusted-keys``."""
    return str(app_settings().trusted_keys or config.home() / "trusted-keys")


def verified_bundle(bundle_path: Path, trusted_keys: Path):
    """Verify the bundle's signature and every file; return its manifest or raise ClickException."""
    from lpse_ops.bundle import BundleError, verify

    try:
        return verify(bundle_path, trusted_keys)
    except BundleError as error:
        raise terminal.fail(f"bundle {bundle_path} refused, no host was touched: {error}") from error


def health_by_host(result: operation.OperationResult) -> dict[str, dict]:
    """Return each host's health JSON as reported through nginx by the install playbook."""
    health: dict[str, dict] = {}
    for host, state in result.tracker.hosts.items():
        answer = state.captured.get(HEALTH_TASK) or {}
        body = answer.get("json") if isinstance(answer, dict) else None
        if isinstance(body, dict):
            health[host] = body
    return health


@click.command(name="install")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(path_type=Path, dir_okay=False))
@inventory_option
@limit_option
@click.option("--trusted-keys", type=click.Path(path_type=Path, file_okay=False), default=trusted_keys_default,
              show_default="$LPSE_OPS_TRUSTED_KEYS or ~/.local/share/lpse-ops/trusted-keys",
              help="Folder of trusted release public keys (*.pub).")
@click.option("--check", is_flag=True, help="Dry run: Ansible check mode, nothing changes on the hosts.")
@click.option("--forks", default=10, show_default=True, help="Hosts worked on at once.")
@json_option
def install(bundle_path: Path, inventory_path: Path | None, limit: str | None, trusted_keys: Path, check: bool,
            forks: int, as_json: bool) -> None:
    """Install SPSE from a signed BUNDLE on the sites (pre-flight, PostgreSQL, SPSE, nginx with TLS).

    For a bare site, or one that already runs this version (a re-run changes nothing); a site that
    runs another version is refused before anything changes on it (use `lpse-ops upgrade`). Each
    site is locked in the state store for the whole install.

    Exit codes: 0 every host serves the release; 1 refused before touching any host (bad inventory,
    bundle or options, or a site locked by another run); 3 a host failed, or runs another version;
    4 a host was unreachable.
    """
    inventory_path = require_inventory(inventory_path)
    if not bundle_path.exists():
        raise terminal.fail(f"bundle {bundle_path} does not exist: build one with `lpse-ops bundle build`")
    manifest = verified_bundle(bundle_path, trusted_keys)
    if not as_json:
        terminal.info(f"bundle verified: SPSE {manifest.version} signed by key {manifest.key_id}")
    ctx = operation.OperationContext(
        operation="install", playbook="install.yml", inventory=inventory_path, limit=limit,
        extravars={"spse_bundle": str(bundle_path.resolve()), "spse_version": manifest.version},
        capture=(HEALTH_TASK,), check=check, forks=forks, show_progress=not as_json, lock_sites=True,
        record_args={"bundle": str(bundle_path.resolve()), "version": manifest.version, "key_id": manifest.key_id},
    )
    result = run_operation(ctx)
    health = health_by_host(result)
    if as_json:
        terminal.emit_json({**result.as_dict(), "version": manifest.version, "health": health})
    else:
        render(result, f"install SPSE {manifest.version}",
               {h: f"serving {b.get('version')} (schema {b.get('schema_version')}, {b.get('status')})"
                for h, b in health.items()})
    raise SystemExit(result.exit_code)
