"""A site's S3 identity reaches its own data only (issue 7, item 4), against the lab's real SeaweedFS.

Every attempt below is made with site1's own keys and must be refused as an access denial (not a
missing key or a signature error, which would prove nothing); where the difference is a permission,
the admin key is shown to be allowed the same call, in a harmless form."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError

OWN, OTHER = "lab01", "lab02"


@pytest.fixture(scope="module")
def s3(backed_up):
    from lpse_ops.lab import lab as lab_actions

    settings = json.loads((lab_actions.lab_dir() / "s3-credentials.json").read_text())
    endpoint, ca_cert = settings["endpoint_control"], settings["ca_cert"]

    def client(name: str):
        return lab_actions.s3_client(endpoint, ca_cert, settings["credentials"][name])

    admin = client("admin")
    # site2 may have no backups yet: give its prefix an object of its own, written by the admin.
    admin.put_object(Bucket=settings["bucket"], Key=f"restic/{OTHER}/isolation-probe", Body=b"site2 data")
    return {"site": client(f"site-{OWN}"), "admin": admin, "bucket": settings["bucket"],
            "views": settings["views_bucket"]}


def denied(call) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    error = caught.value.response["Error"]
    status = caught.value.response["ResponseMetadata"]["HTTPStatusCode"]
    assert status == 403 and error["Code"] in ("AccessDenied", "403"), (error, status)
    return error["Code"]


def own_key(s3) -> str:
    listing = s3["site"].list_objects_v2(Bucket=s3["bucket"], Prefix=f"pgbackrest/{OWN}/")
    return listing["Contents"][0]["Key"]


def test_site_key_works_on_its_own_prefixes(s3):
    site, bucket = s3["site"], s3["bucket"]
    for prefix in (f"pgbackrest/{OWN}/", f"restic/{OWN}/"):
        assert site.list_objects_v2(Bucket=bucket, Prefix=prefix)["KeyCount"] > 0
    key = own_key(s3)
    assert site.head_object(Bucket=bucket, Key=key)["ObjectLockMode"] == "COMPLIANCE"


@pytest.mark.parametrize("what, call", [
    ("list the whole bucket", lambda s, b, v: s.list_objects_v2(Bucket=b)),
    ("list the engines' parent prefix", lambda s, b, v: s.list_objects_v2(Bucket=b, Prefix="restic/")),
    ("list another site", lambda s, b, v: s.list_objects_v2(Bucket=b, Prefix=f"restic/{OTHER}/")),
    ("list another site's versions", lambda s, b, v: s.list_object_versions(Bucket=b, Prefix=f"restic/{OTHER}/")),
    ("read another site's object", lambda s, b, v: s.get_object(Bucket=b, Key=f"restic/{OTHER}/isolation-probe")),
    ("write into another site", lambda s, b, v: s.put_object(Bucket=b, Key=f"restic/{OTHER}/evil", Body=b"x")),
    ("write outside any site", lambda s, b, v: s.put_object(Bucket=b, Key=f"{OTHER}/evil", Body=b"x")),
    ("write into views/", lambda s, b, v: s.put_object(Bucket=b, Key="views/evil", Body=b"x")),
    ("delete another site's object",
     lambda s, b, v: s.delete_object(Bucket=b, Key=f"restic/{OTHER}/isolation-probe")),
    ("write into the restore views", lambda s, b, v: s.put_object(Bucket=v, Key=f"{OWN}/evil", Body=b"x")),
    ("list another site's views", lambda s, b, v: s.list_objects_v2(Bucket=v, Prefix=f"{OTHER}/")),
])
def test_site_key_cannot_reach_other_sites_data(s3, what, call):
    denied(lambda: call(s3["site"], s3["bucket"], s3["views"]))


LIFECYCLE = {"Rules": [{"ID": "expire-everything", "Status": "Enabled", "Filter": {"Prefix": ""},
                        "Expiration": {"Days": 1}}]}
HARMLESS_LIFECYCLE = {"Rules": [{"ID": "isolation-probe", "Status": "Enabled",
                                 "Filter": {"Prefix": "zz-isolation-probe/"}, "Expiration": {"Days": 3650}}]}
CORS = {"CORSRules": [{"AllowedMethods": ["GET"], "AllowedOrigins": ["https://example.invalid"]}]}


@pytest.mark.parametrize("what, site_call, admin_call, undo", [
    ("lifecycle", lambda c, b: c.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration=LIFECYCLE),
     lambda c, b: c.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration=HARMLESS_LIFECYCLE),
     lambda c, b: c.delete_bucket_lifecycle(Bucket=b)),
    ("versioning", lambda c, b: c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Suspended"}),
     lambda c, b: c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"}), None),
    ("object lock", lambda c, b: c.put_object_lock_configuration(Bucket=b, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}}),
     lambda c, b: c.put_object_lock_configuration(
         Bucket=b, ObjectLockConfiguration=c.get_object_lock_configuration(Bucket=b)["ObjectLockConfiguration"]),
     None),
    ("policy", lambda c, b: c.put_bucket_policy(Bucket=b, Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:*",
                                                "Resource": [f"arn:aws:s3:::{b}/*"]}]})), None, None),
    ("cors", lambda c, b: c.put_bucket_cors(Bucket=b, CORSConfiguration=CORS),
     lambda c, b: c.put_bucket_cors(Bucket=b, CORSConfiguration=CORS), lambda c, b: c.delete_bucket_cors(Bucket=b)),
    ("acl", lambda c, b: c.put_bucket_acl(Bucket=b, ACL="public-read-write"),
     lambda c, b: c.put_bucket_acl(Bucket=b, ACL="private"), None),
    ("delete bucket", lambda c, b: c.delete_bucket(Bucket=b), None, None),
])
def test_site_key_cannot_change_any_bucket_setting_which_the_admin_can(s3, what, site_call, admin_call, undo):
    denied(lambda: site_call(s3["site"], s3["bucket"]))
    if admin_call:
        admin_call(s3["admin"], s3["bucket"])  # the same call is a permission the admin has
        if undo:
            undo(s3["admin"], s3["bucket"])


def test_site_key_cannot_shorten_retention_or_lift_a_hold_on_its_own_objects(s3):
    site, bucket, key = s3["site"], s3["bucket"], own_key(s3)
    version = site.head_object(Bucket=bucket, Key=key)["VersionId"]
    denied(lambda: site.put_object_retention(Bucket=bucket, Key=key, VersionId=version, Retention={
        "Mode": "GOVERNANCE", "RetainUntilDate": datetime(2000, 1, 1, tzinfo=UTC)}))
    denied(lambda: site.delete_object(Bucket=bucket, Key=key, VersionId=version))
    denied(lambda: site.put_object_legal_hold(Bucket=bucket, Key=key, VersionId=version,
                                              LegalHold={"Status": "OFF"}))


def test_backup_setup_refuses_an_offsite_lock_shorter_than_the_retention(s3, tmp_path):
    """14 days of lock against 6 monthly snapshots: refused before anything changes on the site."""
    import shutil

    from lpse_ops.lab import lab as lab_actions
    from tests.lab.labkit import on_site, run_cli

    inventory = tmp_path / "inventory"
    shutil.copytree(lab_actions.inventory_path().parent, inventory)
    secrets = inventory / "group_vars" / "sites" / "secrets.yml"
    secrets.write_text(secrets.read_text().replace("backup_s3_lock_days: 190", "backup_s3_lock_days: 14"))
    before = on_site("stat -c %Y /etc/lpse-backup/lpse-backup.json /etc/pgbackrest/pgbackrest.conf")
    code, report, output = run_cli("backup", "setup", "-i", str(inventory / "hosts.yml"), "--limit", "site1",
                                   "--json")
    assert code == 3, output
    assert "shorter than the longest offsite retention, 186 days" in output, output
    assert on_site("stat -c %Y /etc/lpse-backup/lpse-backup.json /etc/pgbackrest/pgbackrest.conf") == before


def test_answering_no_to_an_offsite_as_of_restore_writes_nothing(s3):
    """The plan is read from the version listing; the copy into the views bucket waits for yes."""
    from lpse_ops.backends.s3 import list_versions
    from tests.lab.labkit import run_cli

    def stored(bucket: str) -> int:
        return len(list_versions(s3["admin"], bucket, ""))

    before = {bucket: stored(bucket) for bucket in (s3["bucket"], s3["views"])}
    now = datetime.now(UTC).isoformat()
    code, _, output = run_cli("backup", "restore", "--limit", "site1", "--from", "offsite", "--offsite-as-of", now,
                              "--target-time", now, answer="n\n", check_json=False)
    assert code == 1 and "Aborted" in output, output
    assert "objects" in output and "no Object Lock" in output, output  # the plan was shown first
    # the copy would go to the views bucket only: nothing there; the backup bucket itself keeps receiving
    # the sites' own WAL and 5-minute document snapshots meanwhile, so it may only have grown
    assert stored(s3["views"]) == before[s3["views"]]
    assert stored(s3["bucket"]) >= before[s3["bucket"]]
