"""The audit-log witness and evidence bundles against the lab's real SeaweedFS with Object Lock (issue 11
item 4; clauses 6.2.19, 13.3, 13.4).

A chain rewritten whole (every entry recomputed with a valid hash, a new head anchor) passes every check
the control machine can make alone, and is caught by the heads locked in the witness bucket; nobody can
delete a witnessed head; an evidence bundle with one altered byte is named by verify. The rewrite is done
on a store of this module's own, so the lab's shared store stays intact for the tests after it."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError

from tests.lab.labkit import SITE, run_cli


@pytest.fixture(scope="module")
def s3(lab):
    from lpse_ops.lab import lab as lab_actions

    settings = json.loads((lab_actions.lab_dir() / "s3-credentials.json").read_text())
    if "witness" not in settings["credentials"]:
        pytest.fail("this lab was brought up before the audit-log witness existed: `lpse-ops lab down` and up again")

    def client(name: str):
        return lab_actions.s3_client(settings["endpoint_control"], settings["ca_cert"], settings["credentials"][name])

    return {"witness": client("witness"), "admin": client("admin"), "bucket": settings["witness_bucket"],
            "views": settings["views_bucket"]}


@pytest.fixture
def own_store(s3, tmp_path: Path):
    """A state store of this test's own (SQLite in tmp), witnessed into the lab's bucket."""
    from lpse_ops.state import StateStore, witness

    witness._backoff.clear()
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore.open(url, head_path=tmp_path / "audit-head.json")
    yield store
    store.close()


def _rewrite_whole_chain(store, forged_seq: int) -> None:
    """Act as an intruder with the database and the anchor file: change one entry, recompute every hash
    from it on (all valid), and write a matching anchor."""
    from lpse_ops.state import audit

    entries = store.audit_entries()
    engine = sa.create_engine(store.url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_update")
        connection.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_delete")
        connection.exec_driver_sql("DELETE FROM audit_log")
        prev = audit.GENESIS_HASH
        for entry in entries:
            detail = dict(entry["detail"])
            if entry["seq"] == forged_seq:
                detail["result"] = "ok"  # what the intruder wants the record to say
            digest = audit.entry_hash(entry["seq"], entry["ts"], entry["actor"], entry["operation"], detail, prev)
            connection.execute(sa.text("INSERT INTO audit_log (seq, ts, actor, operation, detail, prev_hash, hash) "
                                       "VALUES (:seq, :ts, :actor, :operation, :detail, :prev, :hash)"),
                               {"seq": entry["seq"], "ts": entry["ts"], "actor": entry["actor"],
                                "operation": entry["operation"], "detail": json.dumps(detail), "prev": prev,
                                "hash": digest})
            prev = digest
    engine.dispose()
    store.head_path.unlink()
    audit.write_anchor(store.head_path, entries[-1]["seq"], prev, store=store.identity)


def test_full_chain_rewrite_passes_the_chain_checks_and_is_caught_by_the_witness(own_store):
    for number in range(1, 7):
        own_store.audit_append("backup.run", {"hosts": [SITE], "n": number,
                                              "result": "failed" if number == 3 else "ok"})
    url, head = own_store.url.render_as_string(hide_password=False), str(own_store.head_path)
    verify = ("audit-log", "verify", "--witness", "--state-url", url, "--head-path", head, "--json")
    from lpse_ops.state import witness

    before = witness.check(own_store)  # in-process: the CLI is run once, below, where it matters
    assert before.ok and before.witnessed_seq == 6 and before.lag == 0, before.as_dict()

    _rewrite_whole_chain(own_store, forged_seq=3)
    assert own_store.audit_verify().ok  # the chain and the new anchor agree: alone, the control machine is fooled
    code, report, output = run_cli(*verify)
    assert code == 1, output
    assert report["chain_ok"] is True and report["ok"] is False
    assert report["witness"]["first_disagreeing_seq"] == 3 and report["witness"]["last_agreeing_seq"] == 2, report
    assert "the chain was rewritten after entry 2, at or before entry 3" in report["witness"]["problems"][0]


def test_witness_catches_up_after_an_outage_without_losing_an_entry(own_store, monkeypatch):
    from lpse_ops.state import witness

    own_store.audit_append("lock.acquire", {"sites": [SITE]})
    with monkeypatch.context() as outage:  # the witness endpoint unreachable (nothing listens on port 1)
        lab_target = witness.target()
        for name, value in (("ENDPOINT", "https://127.0.0.1:1"), ("BUCKET", lab_target.bucket),
                            ("ACCESS_KEY", lab_target.access_key), ("SECRET_KEY", lab_target.secret_key)):
            outage.setenv(f"LPSE_OPS_WITNESS_{name}", value)
        for number in range(3):
            own_store.audit_append("backup.run", {"hosts": [SITE], "n": number})
        rows = {row["target"]: row for row in witness.progress(own_store)}
        assert rows["https://127.0.0.1:1/lpse-audit-witness"]["lag"] == 4 and own_store.audit_count() == 4
    witness._backoff.clear()
    check = witness.check(own_store)
    assert check.ok and check.witnessed_seq == 1 and check.lag == 3, check.as_dict()
    own_store.audit_append("lock.release", {"sites": [SITE]})  # the next write catches up: its head covers 2-4
    check = witness.check(own_store)
    assert check.ok and check.witnessed_seq == 5 and check.lag == 0, check.as_dict()
    lab_row = next(row for row in witness.progress(own_store) if row["target"] == lab_target.name)
    assert lab_row["lag"] == 0 and lab_row["last_error"] is None


def test_a_witnessed_head_cannot_be_deleted_by_anyone(own_store, s3):
    from lpse_ops.state import witness

    own_store.audit_append("lock.acquire", {"sites": [SITE]})
    (item,) = witness.list_objects(witness.target(), own_store.identity)
    bucket, key, version = s3["bucket"], item.key, item.version_id
    head = s3["admin"].head_object(Bucket=bucket, Key=key, VersionId=version)
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"] > datetime.now(UTC)
    # A plain delete only stacks a delete marker, and the witness identity may remove that marker again by its
    # version id: the very call that is refused below for the head's own version. Same identity, bucket, key
    # and call; the only difference is the COMPLIANCE retention on the version. (SeaweedFS answers a refused
    # delete of a retained version with a bare 403 AccessDenied, no lock-specific code.)
    marker = s3["witness"].delete_object(Bucket=bucket, Key=key)
    assert marker["DeleteMarker"] is True
    gone = s3["witness"].delete_object(Bucket=bucket, Key=key, VersionId=marker["VersionId"])
    assert gone["ResponseMetadata"]["HTTPStatusCode"] == 204
    for who in ("witness", "admin"):
        with pytest.raises(ClientError) as caught:
            s3[who].delete_object(Bucket=bucket, Key=key, VersionId=version)
        answer = caught.value.response
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 403 and answer["Error"]["Code"] == "AccessDenied", who
        with pytest.raises(ClientError) as caught:
            s3[who].put_object_retention(Bucket=bucket, Key=key, VersionId=version, Retention={
                "Mode": "GOVERNANCE", "RetainUntilDate": datetime(2000, 1, 1, tzinfo=UTC)})
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 403), who
    assert s3["admin"].get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read()
    # A delete marker left standing hides nothing from the check, which says someone tried.
    s3["witness"].delete_object(Bucket=bucket, Key=key)
    check = witness.check(own_store)
    assert check.ok and check.witnessed_seq == 1 and any("delete marker" in w for w in check.warnings), check.as_dict()


def test_evidence_export_of_the_lab_store_verifies_and_one_altered_byte_is_named(s3, tmp_path):
    from lpse_ops.actions import evidence, evidence_verify

    keys = tmp_path / "keys"
    evidence.keygen(keys, "evidence")  # in-process: the CLI's keygen is covered by the unit tests
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "evidence.pub").write_bytes((keys / "evidence.pub").read_bytes())
    year = datetime.now(UTC).year
    out = tmp_path / "bukti-site1.tar"
    code, report, output = run_cli("evidence", "export", "--site", SITE, "--from", f"{year}-01-01",
                                   "--to", f"{year}-12-31", "--tz", "Asia/Makassar", "--out", str(out),
                                   "--key", str(keys / "evidence.key"), "--json")
    assert code == 0, output
    assert report["audit"]["site_entries"] >= 1 and report["witness"]["configured"] is True
    assert report["witness"]["covering_seq"] is not None and report["witness"]["check_at_export"]["ok"], report
    intact = evidence_verify.verify(out, trusted, against_witness=True)  # in-process; the CLI verifies the altered copy
    assert intact.ok and intact.witness_objects >= 1, intact.as_dict()

    with tarfile.open(out) as tar:  # one byte inside the newest site entry: this export's own run.start
        member = tar.getmember("audit/site-entries.jsonl")
        lines = tar.extractfile(member).read().splitlines(keepends=True)
    victim = json.loads(lines[-1])
    offset = member.offset_data + sum(map(len, lines[:-1])) + lines[-1].index(b'"actor":"') + len(b'"actor":"')
    data = bytearray(out.read_bytes())
    data[offset] ^= 0x20  # the actor's first letter changes case: still valid JSON, still the same length
    altered = tmp_path / "bukti-site1-altered.tar"
    altered.write_bytes(bytes(data))
    code, verdict, output = run_cli("evidence", "verify", str(altered), "--trusted-keys", str(trusted), "--json")
    assert code == 1 and not verdict["ok"], output
    named = {(f["kind"], f["file"], f["seq"]) for f in verdict["findings"]}
    assert ("altered", "audit/site-entries.jsonl", None) in named, verdict
    assert ("entry", "audit/site-entries.jsonl", victim["seq"]) in named, verdict
    assert {seq for _, _, seq in named if seq is not None} == {victim["seq"]}, verdict


def test_a_witness_object_made_up_by_the_signing_key_holder_is_caught_against_the_bucket(s3, tmp_path):
    """Whoever holds the evidence key can re-sign a bundle; the bucket still says which heads were witnessed."""
    import base64

    from lpse_ops import bundle
    from lpse_ops.actions import evidence, evidence_verify

    evidence.keygen(tmp_path / "keys", "evidence")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "evidence.pub").write_bytes((tmp_path / "keys" / "evidence.pub").read_bytes())
    year = datetime.now(UTC).year
    since, until, period = evidence.parse_period(f"{year}-01-01", f"{year}-12-31", "Asia/Jayapura")
    out = evidence.export(evidence.ExportRequest(SITE, since, until, tmp_path / "b.tar", tmp_path / "keys" /
                                                 "evidence.key", period)).path
    with tarfile.open(out) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    objects = json.loads(members["witness/objects.json"])
    forged = dict(objects[-1], version_id="0" * 32)  # a head "witnessed" in a version the bucket never had
    members["witness/objects.json"] = json.dumps([*objects[:-1], forged]).encode()
    manifest = json.loads(members["manifest.json"])
    manifest["files"] = [{**entry, "sha256": hashlib.sha256(members[entry["path"]]).hexdigest(),
                          "size": len(members[entry["path"]])} for entry in manifest["files"]]
    members["manifest.json"] = bundle.manifest_bytes(manifest)
    key = bundle.load_private_key(tmp_path / "keys" / "evidence.key", passphrase_env=evidence.PASSPHRASE_ENV)
    members["manifest.sig"] = base64.b64encode(key.sign(members["manifest.json"])) + b"\n"
    resigned = tmp_path / "resigned.tar"
    with tarfile.open(resigned, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert evidence_verify.verify(resigned, trusted).ok  # signed by a trusted key: offline, nothing to see
    report = evidence_verify.verify(resigned, trusted, against_witness=True)
    assert [(f.kind, f.seq) for f in report.findings] == [("witness", forged["seq"])], report.as_dict()
    assert "no such object version" in report.findings[0].message
