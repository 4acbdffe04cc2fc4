"""``lpse-ops install``: put sites from bare host to serving SPSE from a signed release bundle."""

from __future__ import annotations

from pathlib import Path

import click

from lpse_ops import config, progress, terminal
from lpse_ops.actions import install as installing
from lpse_ops.actions import records
from lpse_ops.commands._options import (
    app_settings,
    inventory_option,
    json_option,
    limit_option,
    refusal_as_error,
    render,
    require_inventory,
    warn_missing_records,
)

health_by_host = installing.health_by_host


def trusted_keys_default() -> str:
    """Return ``LPSE_OPS_TRUSTED_KEYS``, else ``<home>/trusted-keys``."""
    return str(app_settings().trusted_keys or config.trusted_keys())


def install_details(found: records.HostRecords) -> dict[str, str]:
    """Return the table's detail per host: what it serves, a passed dry run, or why it has no record.

    A host with a record that is neither gets no entry: the table then shows the run's failure messages.
    """
    details = dict(found.missing)
    for host, record in found.found.items():
        health = record.get("health") if isinstance(record.get("health"), dict) else None
        if health and record.get("serving"):
            details[host] = (f"serving {health.get('version')} (schema {health.get('schema_version')}, "
                             f"{health.get('status')})")
        elif record.get("check_mode") and record.get("complete"):
            details[host] = f"dry run of SPSE {record.get('version')} passed"
    return details


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
    request = installing.InstallRequest(bundle=bundle_path, inventory=require_inventory(inventory_path),
                                        trusted_keys=trusted_keys, limit=limit, check=check, forks=forks,
                                        progress=progress.live(not as_json))
    with refusal_as_error():
        verified = installing.verified_bundle(bundle_path, trusted_keys)
        manifest = verified.manifest
        if not as_json:
            terminal.info(f"bundle verified: SPSE {manifest.version} signed by key {manifest.key_id} "
                          f"(sha256 {verified.sha256})")
        outcome = installing.install(request, verified)
    result, found = outcome.result, outcome.found
    if as_json:
        terminal.emit_json({**result.as_dict(), "version": manifest.version, "health": outcome.health,
                            "records": found.found, "missing_records": found.missing})
    else:
        render(result, f"install SPSE {manifest.version}", install_details(found))
        warn_missing_records(result, found)
    raise SystemExit(result.exit_code)
