"""``lpse-ops evidence``: signed, tamper-evident evidence bundles of one site over a period (clauses 6.2.19,
13.3, 13.4), and their verification (docs/evidence.md)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from lpse_ops import terminal
from lpse_ops.actions import evidence, evidence_format, evidence_verify
from lpse_ops.commands.runs import state_url_option
from lpse_ops.state import StateError


@click.group(name="evidence")
def evidence_group() -> None:
    """Export and verify signed evidence bundles (audit-log slice, runs, verifications, probes, ...)."""


@evidence_group.command(name="keygen")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for NAME.key (private, 0600) and NAME.pub [default: <LPSE_OPS_HOME>/evidence-keys].")
@click.option("--name", default="evidence", show_default=True, help="Base name of the key files.")
def keygen_command(out_dir: Path | None, name: str) -> None:
    """Make an ed25519 evidence signing key pair (encrypted if LPSE_OPS_EVIDENCE_KEY_PASSPHRASE is set)."""
    if not name or "/" in name or name.startswith("."):
        raise terminal.fail(f"invalid --name {name!r}: use a plain file name like evidence")
    out_dir = out_dir or evidence.default_key_path().parent
    try:
        private_path, public_path, key_id = evidence.keygen(out_dir, name)
    except evidence_format.EvidenceError as error:
        raise terminal.fail(str(error)) from error
    terminal.info(f"private key: {private_path} (0600; only the machine that exports evidence needs it)")
    terminal.info(f"public key:  {public_path} (give it to whoever verifies bundles: --trusted-keys)")
    terminal.out.print(f"key id {key_id}", highlight=False)


@evidence_group.command(name="export")
@click.option("--site", required=True, help="The site (its inventory host name, e.g. site1).")
@click.option("--from", "start", required=True, metavar="DATE",
              help="First day (2026-11-01) or time (2026-11-01T08:00+07:00) of the period, included.")
@click.option("--to", "end", required=True, metavar="DATE", help="Last day or time of the period, included.")
@click.option("--tz", "zone", default=evidence.DEFAULT_ZONE, show_default=True,
              help="Time zone of dates and of times without an offset (the site's: Asia/Makassar, Asia/Jayapura...).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Bundle file to write (a tar; never overwritten).")
@click.option("--key", "key_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Evidence signing key [default: $LPSE_OPS_EVIDENCE_KEY, else <LPSE_OPS_HOME>/evidence-keys/"
                   "evidence.key]; passphrase from LPSE_OPS_EVIDENCE_KEY_PASSPHRASE.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@state_url_option
def export_command(site: str, start: str, end: str, zone: str, out: Path, key_path: Path | None, as_json: bool,
                   state_url: str | None) -> None:
    """Write one site's signed evidence for a period: audit-log slice, runs, verifications, probes, ..."""
    try:
        since, until, period = evidence.parse_period(start, end, zone)
        request = evidence.ExportRequest(site=site, since=since, until=until, out=out,
                                         key_path=key_path or evidence.default_key_path(), period=period,
                                         state_url=state_url, progress=None if as_json else terminal.info)
        result = evidence.export(request)
    except (evidence_format.EvidenceError, StateError) as error:
        raise terminal.fail(str(error)) from error
    if as_json:
        terminal.emit_json(result.as_dict())
        return
    for warning in result.warnings:
        terminal.warn(warning)
    data = result.as_dict()
    table = Table(title=f"evidence {site}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("file", str(result.path))
    table.add_row("sha256", result.sha256)
    table.add_row("period", f"{start} .. {end} ({zone}) = {since.isoformat()} .. {until.isoformat()} (end excluded)")
    table.add_row("signed by", f"key {data['key_id']}")
    audit_part = data["audit"]
    table.add_row("audit entries", f"{audit_part['site_entries']} of the site; segment "
                  f"{audit_part['segment_first_seq'] or '-'}..{audit_part['segment_last_seq'] or '-'}")
    witness_part = data["witness"]
    table.add_row("witness", f"{witness_part.get('objects_in_segment', 0)} witnessed head(s) in the segment, covering "
                  f"entry {witness_part.get('covering_seq') or '-'}" if witness_part.get("configured")
                  else "not configured")
    for path, count in data["records"].items():
        table.add_row(path, "not in this store" if count is None else str(count))
    table.add_row("run", str(result.run_id))
    terminal.print_table(table)


@evidence_group.command(name="verify")
@click.argument("bundle_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--trusted-keys", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of trusted evidence public keys (*.pub).")
@click.option("--witness", "against_witness", is_flag=True,
              help="Also look up every witness object the bundle lists in the witness bucket (LPSE_OPS_WITNESS_*).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
def verify_command(bundle_file: Path, trusted_keys: Path, against_witness: bool, as_json: bool) -> None:
    """Check a bundle's signature, every file's sha256, every audit entry and witnessed head; exit 1 if anything
    is off, naming the file, the audit entry (seq) or the signature."""
    if not bundle_file.is_file():
        raise terminal.fail(f"{bundle_file} does not exist or is not a file")
    try:
        report = evidence_verify.verify(bundle_file, trusted_keys, against_witness=against_witness)
    except evidence_format.EvidenceError as error:
        raise terminal.fail(str(error)) from error
    if as_json:
        terminal.emit_json(report.as_dict())
    elif report.ok:
        terminal.out.print(f"evidence intact: {bundle_file} ({report.site}, {report.period.get('from')} .. "
                           f"{report.period.get('to')}), signed by key {report.signed_by}, {report.files} files, "
                           f"{report.audit_entries} audit entries of the site, {report.witness_objects} witnessed "
                           f"head(s) agree{' and are in the witness bucket' if against_witness else ''}",
                           highlight=False)
    else:
        terminal.err.print(f"[red]evidence NOT intact[/red]: {bundle_file}: {len(report.findings)} finding(s)",
                           highlight=False)
        for finding in report.findings:
            terminal.err.print(f"  - {finding.kind}: {finding.message}", highlight=False, markup=False)
    if not report.ok:
        raise SystemExit(1)
