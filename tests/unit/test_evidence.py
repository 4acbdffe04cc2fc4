"""Evidence bundles and the audit-log witness, host-free: every kind of tampering is named by verify, the
period is read in the site's zone, and an unreachable witness never blocks or loses an audit write."""

from __future__ import annotations

import io
import json
import socket
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from lpse_ops.actions import evidence, evidence_format, evidence_verify
from lpse_ops.commands.audit import audit_log
from lpse_ops.commands.evidence import evidence_group
from lpse_ops.state import StateStore, audit, witness
from lpse_ops.state import evidence as records

SITE, OTHER = "site1", "site2"


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    private, public, _key_id = evidence.keygen(tmp_path / "keys", "evidence")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "evidence.pub").write_bytes(public.read_bytes())
    return {"private": private, "trusted": trusted}


@pytest.fixture
def filled(lpse_home: Path) -> None:
    """A store with runs (one with a step), a verification, a probe and entries for two sites."""
    with StateStore.open() as store:
        parent = store.start_run("upgrade.rollout", {"to": "1.1"}, [SITE, OTHER])
        step = store.start_run("upgrade.wave", {"wave": 1}, [OTHER], parent_id=parent)
        store.finish_run(step, "ok", {OTHER: {"changed": 1}})
        store.finish_run(parent, "ok", {SITE: {"changed": 2}, OTHER: {"changed": 1}})
        other = store.start_run("backup.run", {"limit": OTHER}, [OTHER])
        store.finish_run(other, "ok", {OTHER: {}})
        store.record_verification(SITE, True, run_id=parent, backup_label="20261128-010000F")
        store.record_probe(SITE, {"reachable": True, "fault_codes": [], "facts": {"disk": 40}})
        store.acquire_sites([SITE], "backup.restore")
        store.release_sites([SITE])


def _today(zone: str = "UTC") -> str:
    from zoneinfo import ZoneInfo

    return datetime.now(ZoneInfo(zone)).date().isoformat()


def _export(tmp_path: Path, keys: dict[str, Path], name: str = "bundle.tar") -> Path:
    """Export site1's evidence from 1 January to today (in Jayapura) with the unit store."""
    today = _today("Asia/Jayapura")
    since, until, period = evidence.parse_period(f"{today[:4]}-01-01", today, "Asia/Jayapura")
    return evidence.export(evidence.ExportRequest(SITE, since, until, tmp_path / name, keys["private"], period)).path


def _members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def _rewrite(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _flip(path: Path, needle: bytes, offset: int = 0) -> None:
    data = bytearray(path.read_bytes())
    where = data.find(needle)
    assert where >= 0, needle
    data[where + offset] ^= 0x01
    path.write_bytes(bytes(data))


# -- period --------------------------------------------------------------------------------------


def test_parse_period_dates_are_whole_days_in_the_sites_zone() -> None:
    since, until, period = evidence.parse_period("2026-11-01", "2026-11-30", "Asia/Jayapura")
    assert since.astimezone(UTC) == datetime(2026, 10, 31, 15, 0, tzinfo=UTC)
    assert until.astimezone(UTC) == datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # 1 December 00:00 WIT, excluded
    assert period == {"from": "2026-11-01", "to": "2026-11-30", "timezone": "Asia/Jayapura"}
    since, until, _ = evidence.parse_period("2026-11-01T08:00+08:00", "2026-11-01T09:00", "Asia/Jakarta")
    assert since.astimezone(UTC) == datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
    assert until.astimezone(UTC) == datetime(2026, 11, 1, 2, 0, 0, 1, tzinfo=UTC)


@pytest.mark.parametrize("start, end, zone, reason", [
    ("2026-11-30", "2026-11-01", "Asia/Jakarta", "--to 2026-11-01 is before --from 2026-11-30: swap them"),
    ("30/11/2026", "2026-11-30", "Asia/Jakarta", "--from '30/11/2026' is neither a date"),
    ("2026-11-01", "2026-11-30", "Asia/Bandung", "unknown time zone 'Asia/Bandung'"),
])
def test_parse_period_bad_bound_is_refused_with_its_name(start: str, end: str, zone: str, reason: str) -> None:
    with pytest.raises(evidence_format.EvidenceError) as caught:
        evidence.parse_period(start, end, zone)
    assert reason in str(caught.value)


def test_audit_for_site_period_follows_the_zone_not_utc(lpse_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 16:30 UTC on 28 November is 01:30 on 29 November in Jayapura (WIT, UTC+9).
    monkeypatch.setattr(audit, "utc_timestamp", lambda: "2026-11-28T16:30:00.000000+00:00")
    with StateStore.open() as store:
        store.audit_append("lock.acquire", {"sites": [SITE]})
        store.audit_append("lock.acquire", {"sites": [OTHER]})
        wit = evidence.parse_period("2026-11-29", "2026-11-29", "Asia/Jayapura")
        utc = evidence.parse_period("2026-11-29", "2026-11-29", "UTC")
        assert [e["seq"] for e in records.audit_for_site(store, SITE, wit[0], wit[1])] == [1]
        assert records.audit_for_site(store, SITE, utc[0], utc[1]) == []


@pytest.mark.parametrize("detail, expected", [
    ({"host": SITE}, True), ({"hosts": [OTHER, SITE]}, True), ({"sites": [SITE]}, True),
    ({"args": {"limit": f"{OTHER},{SITE}"}}, True), ({"locks": [{"site": SITE}]}, True),
    ({"hosts": [OTHER]}, False), ({"note": SITE}, False), ({"hosts": ["site10"]}, False),
])
def test_mentions_finds_the_site_under_site_keys_only(detail: dict, expected: bool) -> None:
    assert records.mentions(detail, SITE) is expected


# -- export and verify ---------------------------------------------------------------------------


def test_export_holds_the_sites_records_and_verifies_intact(tmp_path: Path, keys, filled) -> None:
    path = _export(tmp_path, keys)
    names = [name for name, _ in _members(path)]
    assert names[:2] == ["manifest.json", "manifest.sig"]
    data = dict(_members(path))
    runs = json.loads(data["records/runs.json"])
    # site1's rollout and its wave step (which ran on site2 only), not site2's own backup run; the export itself
    assert [(run["operation"], run["parent_id"] is not None) for run in runs] == [
        ("upgrade.rollout", False), ("upgrade.wave", True), ("evidence.export", False)]
    assert runs[0]["host_results"][SITE]["changed"] == 2
    assert len(json.loads(data["records/restore-verifications.json"])) == 1
    assert json.loads(data["records/fleet-probes.json"])[0]["facts"] == {"disk": 40}
    site_entries = [json.loads(line) for line in data[evidence_format.SITE_ENTRIES].splitlines()]
    assert {e["operation"] for e in site_entries} >= {"run.start", "run.finish", "backup.verified", "lock.acquire",
                                                     "lock.release"}
    segment = [json.loads(line) for line in data[evidence_format.SEGMENT].splitlines()]
    assert [e["seq"] for e in segment] == list(range(site_entries[0]["seq"], site_entries[-1]["seq"] + 1))
    assert "backup.run" in {e["detail"].get("operation") for e in segment}  # site2's entries keep the chain whole
    manifest = json.loads(data["manifest.json"])
    assert manifest["witness"] == {"configured": False, "objects_in_segment": 0}
    report = evidence_verify.verify(path, keys["trusted"])
    assert report.ok, report.as_dict()
    assert report.audit_entries == len(site_entries) and report.files == len(manifest["files"])
    result = CliRunner().invoke(evidence_group, ["verify", str(path), "--trusted-keys", str(keys["trusted"])])
    assert result.exit_code == 0, result.output
    assert "evidence intact" in result.output


def _findings(path: Path, keys) -> list[tuple[str, str | None, int | None]]:
    return [(f.kind, f.file, f.seq) for f in evidence_verify.verify(path, keys["trusted"]).findings]


def test_verify_names_one_altered_byte_in_a_record_file(tmp_path: Path, keys, filled) -> None:
    path = _export(tmp_path, keys)
    _flip(path, b'"backup_label": "20261128-010000F"', 20)
    assert _findings(path, keys) == [("altered", "records/restore-verifications.json", None)]
    result = CliRunner().invoke(evidence_group, ["verify", str(path), "--trusted-keys", str(keys["trusted"]),
                                                 "--json"])
    assert result.exit_code == 1, result.output
    assert json.loads(result.output)["findings"][0]["file"] == "records/restore-verifications.json"


def test_verify_names_the_altered_audit_entry_by_seq(tmp_path: Path, keys, filled) -> None:
    path = _export(tmp_path, keys)
    site_entries = [json.loads(line) for line in dict(_members(path))[evidence_format.SITE_ENTRIES].splitlines()]
    target = next(e for e in site_entries if e["operation"] == "lock.release")
    members = [(name, data.replace(b'"operation":"lock.release"', b'"operation":"lock.renewed"'))
               if name == evidence_format.SITE_ENTRIES else (name, data) for name, data in _members(path)]
    _rewrite(path, members)
    findings = _findings(path, keys)
    assert ("altered", evidence_format.SITE_ENTRIES, None) in findings
    assert ("entry", evidence_format.SITE_ENTRIES, target["seq"]) in findings
    assert ("entry", None, target["seq"]) in findings  # the two files disagree on that entry
    assert all(seq in (None, target["seq"]) for _, _, seq in findings)


def test_verify_names_a_recomputed_entry_that_breaks_the_link(tmp_path: Path, keys, filled) -> None:
    """An entry rewritten with a valid hash of its own still breaks the next entry's prev_hash."""
    path = _export(tmp_path, keys)
    data = dict(_members(path))
    segment = [json.loads(line) for line in data[evidence_format.SEGMENT].splitlines()]
    victim = segment[1]
    victim["detail"] = {**victim["detail"], "result": "failed"}
    victim["hash"] = audit.entry_hash(**{key: victim[key] for key in audit.HASHED_FIELDS})
    data[evidence_format.SEGMENT] = "".join(audit.canonical_json(e) + "\n" for e in segment).encode()
    _rewrite(path, list(data.items()))
    findings = _findings(path, keys)
    assert ("link", evidence_format.SEGMENT, victim["seq"] + 1) in findings
    assert ("entry", evidence_format.SEGMENT, victim["seq"]) not in findings  # its own hash is valid


def test_verify_names_a_bad_signature(tmp_path: Path, keys, filled) -> None:
    path = _export(tmp_path, keys)
    data = dict(_members(path))
    manifest = json.loads(data["manifest.json"])
    manifest["site"] = OTHER
    data["manifest.json"] = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    _rewrite(path, list(data.items()))
    assert _findings(path, keys) == [("signature", "manifest.json", None)]


def test_verify_names_a_missing_and_an_added_file(tmp_path: Path, keys, filled) -> None:
    path = _export(tmp_path, keys)
    members = [(n, d) for n, d in _members(path) if n != "records/fleet-probes.json"]
    members.append(("records/extra.json", b"[]\n"))
    _rewrite(path, members)
    assert sorted(_findings(path, keys)) == [("added", "records/extra.json", None),
                                             ("missing", "records/fleet-probes.json", None)]


def test_verify_refuses_a_key_that_is_not_trusted(tmp_path: Path, keys, filled) -> None:
    path = _export(tmp_path, keys)
    _, other_public, _ = evidence.keygen(tmp_path / "other", "someone")
    untrusted = tmp_path / "untrusted"
    untrusted.mkdir()
    (untrusted / "someone.pub").write_bytes(other_public.read_bytes())
    report = evidence_verify.verify(path, untrusted)
    assert [f.kind for f in report.findings] == ["untrusted_key"]
    assert "not among the trusted keys" in report.findings[0].message


def test_verify_names_an_entry_that_disagrees_with_its_witnessed_head(tmp_path: Path, keys, filled) -> None:
    path = _export(tmp_path, keys)
    data = dict(_members(path))
    segment = [json.loads(line) for line in data[evidence_format.SEGMENT].splitlines()]
    head = segment[-1]
    data[evidence_format.WITNESS_OBJECTS] = json.dumps([{"seq": head["seq"], "hash": "f" * 64}]).encode()
    _rewrite(path, list(data.items()))
    findings = _findings(path, keys)
    assert ("witness", evidence_format.SEGMENT, head["seq"]) in findings
    assert ("altered", evidence_format.WITNESS_OBJECTS, None) in findings


def test_export_of_a_site_without_records_warns_about_the_site_name(tmp_path: Path, keys, filled) -> None:
    year = datetime.now(UTC).year
    since, until, period = evidence.parse_period(f"{year - 1}-12-31", f"{year + 1}-01-01", "Asia/Makassar")
    result = evidence.export(evidence.ExportRequest("lab01", since, until, tmp_path / "x.tar", keys["private"], period))
    assert any("holds nothing about lab01 in the period but this export: check --site" in w for w in result.warnings)
    assert json.loads(dict(_members(result.path))["records/runs.json"])[0]["operation"] == "evidence.export"


def test_export_refuses_an_existing_file_and_a_missing_key(tmp_path: Path, keys, filled) -> None:
    path = _export(tmp_path, keys)
    runner = CliRunner()
    result = runner.invoke(evidence_group, ["export", "--site", SITE, "--from", "2026-11-01", "--to", "2026-11-30",
                                            "--out", str(path), "--key", str(keys["private"])])
    assert result.exit_code == 1 and "already exists: evidence is never overwritten" in result.output
    result = runner.invoke(evidence_group, ["export", "--site", SITE, "--from", "2026-11-01", "--to", "2026-11-30",
                                            "--out", str(tmp_path / "new.tar"), "--key", str(tmp_path / "nokey")])
    assert result.exit_code == 1 and "cannot read private key" in result.output, result.output
    assert not (tmp_path / "new.tar").exists()


def test_export_with_an_encrypted_key_needs_its_own_passphrase(tmp_path: Path, monkeypatch, filled) -> None:
    monkeypatch.setenv("LPSE_OPS_EVIDENCE_KEY_PASSPHRASE", "rahasia-bukti")
    private, _public, _ = evidence.keygen(tmp_path / "enc", "evidence")
    assert b"ENCRYPTED" in private.read_bytes()
    monkeypatch.delenv("LPSE_OPS_EVIDENCE_KEY_PASSPHRASE")
    monkeypatch.setenv("LPSE_OPS_BUNDLE_KEY_PASSPHRASE", "rahasia-bukti")  # the release key's does not count
    since, until, period = evidence.parse_period("2026-11-01", "2026-11-30")
    with pytest.raises(evidence_format.EvidenceError, match="set LPSE_OPS_EVIDENCE_KEY_PASSPHRASE to its passphrase"):
        evidence.export(evidence.ExportRequest(SITE, since, until, tmp_path / "x.tar", private, period))


# -- witness -------------------------------------------------------------------------------------


def _obj(seq: int, hash_: str, hidden: bool = False) -> witness.WitnessObject:
    return witness.WitnessObject(seq, hash_, f"audit-witness/x/{seq:012d}-{hash_}.json", f"v{seq}",
                                 f"2026-11-28T0{seq % 10}:00:00+00:00", hidden)


def _chain(count: int, salt: str = "") -> list[dict]:
    rows, prev = [], audit.GENESIS_HASH
    for seq in range(1, count + 1):
        digest = audit.entry_hash(seq, f"2026-11-28T00:00:0{seq % 10}+00:00", "ops", "test", {"n": seq, "s": salt},
                                  prev)
        rows.append({"seq": seq, "hash": digest})
        prev = digest
    return rows


def test_witness_key_round_trip() -> None:
    prefix = witness.store_prefix("sqlite:////srv/state.db")
    key = witness.object_key(prefix, 42, "a" * 64)
    assert key == f"{prefix}000000000042-{'a' * 64}.json" and prefix.startswith("audit-witness/")
    assert witness.parse_key(key) == (42, "a" * 64)
    assert witness.parse_key(f"{prefix}notes.txt") is None


def test_witness_compare_names_the_first_seq_of_a_whole_rewrite() -> None:
    original, rewritten = _chain(9), _chain(9)
    rewritten = original[:4] + _chain(9, salt="forged")[4:]  # entries 5.. recomputed with valid hashes
    objects = [_obj(row["seq"], row["hash"]) for row in original if row["seq"] in (2, 4, 6, 8)]
    check = witness.compare(rewritten, objects)
    assert not check.ok and check.first_disagreeing_seq == 6 and check.last_agreeing_seq == 4
    assert "rewritten after entry 4, at or before entry 6" in check.problems[0]
    assert witness.compare(original, objects).ok


def test_witness_compare_catches_a_deleted_tail_and_reports_lag_and_delete_markers() -> None:
    chain = _chain(10)
    check = witness.compare(chain[:6], [_obj(5, chain[4]["hash"]), _obj(8, chain[7]["hash"])])
    assert check.first_disagreeing_seq == 8 and "beyond the chain's end (6): the tail was deleted" in check.problems[0]
    check = witness.compare(chain, [_obj(7, chain[6]["hash"], hidden=True)])
    assert check.ok and check.lag == 3 and check.witnessed_seq == 7
    assert any("delete marker" in warning for warning in check.warnings)
    assert any("3 entries behind" in warning for warning in check.warnings)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_witness_never_blocks_an_audit_write_and_records_the_lag(lpse_home, monkeypatch) -> None:
    monkeypatch.setenv("LPSE_OPS_WITNESS_ENDPOINT", f"https://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("LPSE_OPS_WITNESS_BUCKET", "lpse-audit-witness")
    monkeypatch.setenv("LPSE_OPS_WITNESS_ACCESS_KEY", "WITNESS")
    monkeypatch.setenv("LPSE_OPS_WITNESS_SECRET_KEY", "not-a-secret")
    witness._backoff.clear()
    with StateStore.open() as store:
        for number in range(3):
            store.audit_append("test.step", {"n": number})
        assert store.audit_count() == 3 and store.audit_verify().ok
        (row,) = witness.progress(store)
        assert row["witnessed_seq"] is None and row["lag"] == 3 and row["failures"] == 1  # then backing off
        assert "Could not connect" in row["last_error"] or "Connection" in row["last_error"], row
    result = CliRunner().invoke(audit_log, ["verify"])
    assert result.exit_code == 0, result.output
    assert "is 3 entries behind (witnessed up to nothing of 3)" in result.output
    result = CliRunner().invoke(audit_log, ["verify", "--witness"])
    assert result.exit_code == 1 and "cannot list the witness bucket" in result.output, result.output
    witness._backoff.clear()


def test_half_configured_witness_is_named_and_the_write_still_happens(lpse_home, monkeypatch) -> None:
    monkeypatch.setenv("LPSE_OPS_WITNESS_ENDPOINT", "https://127.0.0.1:1")
    with StateStore.open() as store:
        store.audit_append("test.step", {})
        assert store.audit_count() == 1
        (row,) = witness.progress(store)
        assert row["target"] == "(misconfigured)" and row["last_error"].startswith(
            "LPSE_OPS_WITNESS_ENDPOINT is set but LPSE_OPS_WITNESS_BUCKET, LPSE_OPS_WITNESS_ACCESS_KEY, "
            "LPSE_OPS_WITNESS_SECRET_KEY are not")


def test_no_witness_configured_means_no_progress_rows(lpse_home) -> None:
    with StateStore.open() as store:
        store.audit_append("test.step", {})
        assert witness.target() is None and witness.progress(store) == []


def test_verify_against_the_witness_without_witness_settings_says_what_to_set(tmp_path: Path, keys, filled) -> None:
    path = _export(tmp_path, keys)
    result = CliRunner().invoke(evidence_group, ["verify", str(path), "--trusted-keys", str(keys["trusted"]),
                                                 "--witness"])
    assert result.exit_code == 1, result.output
    assert "--witness needs the witness settings (LPSE_OPS_WITNESS_*" in result.output


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("member", [evidence_format.MANIFEST, evidence_format.WITNESS_OBJECTS, evidence_format.SEGMENT])
def test_verify_refuses_deeply_nested_json_with_a_finding_not_a_crash(tmp_path: Path, keys, filled,
                                                                      member: str) -> None:
    """``[[[[...]]]]`` 100,000 deep used to raise RecursionError out of verify (no report at all)."""
    path = _export(tmp_path, keys)
    deep = DEEP if member != evidence_format.SEGMENT else DEEP + b"\n"
    _rewrite(path, [(name, deep if name == member else data) for name, data in _members(path)])
    report = evidence_verify.verify(path, keys["trusted"])
    assert not report.ok
    nested = [f for f in report.findings if "nested more than 64 levels deep" in f.message]
    assert nested and nested[0].file == member, [f.as_dict() for f in report.findings]


def test_verify_streams_members_and_refuses_a_bundle_over_the_total_cap(tmp_path: Path, keys, filled,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each member used to be read whole into memory, with no cap on their total."""
    path = _export(tmp_path, keys)
    members = _members(path)
    total = sum(len(data) for _, data in members)
    monkeypatch.setattr(evidence_verify, "MAX_TOTAL_BYTES", total - 1)
    report = evidence_verify.verify(path, keys["trusted"])
    assert not report.ok
    capped = [f for f in report.findings if f.kind == "unreadable" and "larger than any evidence bundle" in f.message]
    assert capped, [f.as_dict() for f in report.findings]
    monkeypatch.setattr(evidence_verify, "MAX_TOTAL_BYTES", total)
    assert evidence_verify.verify(path, keys["trusted"]).ok
    reads = []
    real_read = tarfile.ExFileObject.read

    def counted(self, size=-1):
        reads.append(size)
        return real_read(self, size)
    monkeypatch.setattr(tarfile.ExFileObject, "read", counted)
    assert evidence_verify.verify(path, keys["trusted"]).ok
    assert reads and all(0 < size <= evidence_verify.READ_BLOCK for size in reads), reads  # never read(-1): streamed
