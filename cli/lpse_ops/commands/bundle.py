"""``lpse-ops bundle``: make signing keys, build, verify and show SPSE release bundles."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from lpse_ops import bundle as bundles
from lpse_ops import reference, terminal
from lpse_ops.commands._options import app_settings


def _table(title: str, data: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    migrations = data["migrations"]
    table.add_row("version", data["version"])
    table.add_row("min_upgrade_from", data["min_upgrade_from"])
    table.add_row("key id", data["key_id"])
    table.add_row("files", f"{data['files']} ({data['payload_bytes']} bytes)")
    table.add_row(
        "migrations",
        f"{len(migrations)} (schema {data['schema_version']}): {', '.join(migrations)}" if migrations else "none",
    )
    if data.get("sha256"):
        table.add_row("sha256", data["sha256"])
    return table


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


@click.group(name="bundle")
def bundle() -> None:
    """Build, sign and verify SPSE release bundles (spse-<version>.tar.gz)."""


@bundle.command(name="keygen")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for NAME.key (private, 0600) and NAME.pub (OpenSSH public key).")
@click.option("--name", default="lpse-release", show_default=True, help="Base name of the key files.")
def keygen_command(out_dir: Path, name: str) -> None:
    """Make an ed25519 release signing key pair (encrypted if LPSE_OPS_BUNDLE_KEY_PASSPHRASE is set)."""
    if not name or "/" in name or name.startswith("."):
        raise terminal.fail(f"invalid --name {name!r}: use a plain file name like lpse-release")
    private_path, public_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    try:
        identifier = bundles.keygen(private_path, public_path, name)
    except bundles.BundleError as error:
        raise terminal.fail(str(error)) from error
    terminal.info(f"private key: {private_path} (keep it offline; never copy it to sites or control nodes)")
    terminal.info(f"public key:  {public_path} (copy it into each trusted keys directory)")
    terminal.out.print(f"key id {identifier}")


@bundle.command(name="build")
@click.argument("source_dir", type=click.Path(path_type=Path))
@click.option("--key", "key_path", required=True, type=click.Path(path_type=Path),
              help="Private signing key (PEM PKCS8 ed25519); passphrase from LPSE_OPS_BUNDLE_KEY_PASSPHRASE.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write spse-<version>.tar.gz into.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def build_command(source_dir: Path, key_path: Path, out_dir: Path, as_json: bool) -> None:
    """Build and sign a bundle from SOURCE_DIR (release.yml + payload/)."""
    try:
        target = bundles.build(source_dir, key_path, out_dir)
        data = bundles.show(target)
    except bundles.BundleError as error:
        raise terminal.fail(str(error)) from error
    _report_built(target, data, as_json)


def _report_built(target: Path, data: dict[str, Any], as_json: bool) -> None:
    """Print what was built: the manifest summary, the tarball's path and its sha256."""
    data["bundle"] = str(target)
    data["sha256"] = _sha256(target)
    if as_json:
        terminal.emit_json(data)
        return
    terminal.print_table(_table(f"built {target.name}", data))
    terminal.out.print(f"{target}  sha256 {data['sha256']}")


@bundle.command(name="reference")
@click.option("--version", "version", default=None,
              help="Reference SPSE version to build (1.0, 1.1 or 1.2); with --bad, the bad release's version "
                   "(default 1.2.1, 1.2.2 or 1.2.3).")
@click.option("--bad", "bad", default=None, type=click.Choice(reference.BAD_KINDS),
              help="Build a BAD release instead, for testing upgrades (docs/release-bundle.md).")
@click.option("--key", "key_path", required=True, type=click.Path(path_type=Path),
              help="Private signing key (PEM PKCS8 ed25519).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write spse-<version>.tar.gz into.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def reference_command(version: str | None, bad: str | None, key_path: Path, out_dir: Path, as_json: bool) -> None:
    """Compile the reference SPSE (tests/fixtures/spse) and build it into a signed bundle.

    LKPP's real SPSE releases come as bundles; this small real service stands in for them in the
    lab, the demo and the tests. --bad KIND builds one of its deliberately broken releases
    (a migration that fails after committing half its work, a degraded /health, 500s on part of the
    traffic), validly signed, to test that upgrades catch and roll them back.
    """
    if bad is None and version is None:
        raise click.UsageError("give --version (1.0, 1.1 or 1.2) or --bad KIND")
    what = f"bad reference SPSE {bad}" if bad else f"reference SPSE {version}"
    try:
        if bad:
            target = reference.build_bad_release(bad, key_path, out_dir, version)
        else:
            target = reference.build_reference_bundle(version, key_path, out_dir)
        data = bundles.show(target)
    except (bundles.BundleError, RuntimeError, KeyError, ValueError) as error:
        raise terminal.fail(f"cannot build {what}: {error}") from error
    _report_built(target, data, as_json)


@bundle.command(name="verify")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(path_type=Path))
@click.option("--trusted-keys", "trusted_keys", type=click.Path(path_type=Path), default=None,
              help=f"Folder of trusted *.pub keys (default: ${bundles.TRUSTED_KEYS_ENV}).")
@click.option("--json", "as_json", is_flag=True, help="Print the verified manifest summary as JSON.")
def verify_command(bundle_path: Path, trusted_keys: Path | None, as_json: bool) -> None:
    """Verify BUNDLE's signature and every payload file; exit 1 if anything is wrong."""
    if trusted_keys is None:
        configured = app_settings().trusted_keys
        if not configured:
            raise terminal.fail(
                f"no trusted keys directory: pass --trusted-keys DIR or set {bundles.TRUSTED_KEYS_ENV}"
            )
        trusted_keys = configured
    try:
        manifest, sha256 = bundles.verify_digest(bundle_path, trusted_keys)
    except bundles.BundleError as error:
        raise terminal.fail(str(error)) from error
    data = bundles.summary(manifest)
    data["bundle"] = str(bundle_path)
    data["verified"] = True
    data["sha256"] = sha256  # of the bytes verified: what a site must receive (spse_bundle_sha256)
    if as_json:
        terminal.emit_json(data)
        return
    terminal.info(f"signature by key {manifest.key_id}, {len(manifest.directories)} folder(s) and "
                  f"{len(manifest.files)} payload file(s) verified")
    terminal.print_table(_table(f"verified {bundle_path.name}", data))


@bundle.command(name="show")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest summary as JSON.")
def show_command(bundle_path: Path, as_json: bool) -> None:
    """Show BUNDLE's manifest summary WITHOUT verifying it (use `verify` before installing)."""
    try:
        data = bundles.show(bundle_path)
    except bundles.BundleError as error:
        raise terminal.fail(str(error)) from error
    if as_json:
        terminal.emit_json(data)
        return
    terminal.warn("not verified: run `lpse-ops bundle verify` before trusting this bundle")
    terminal.print_table(_table(f"{bundle_path.name} (unverified)", data))
