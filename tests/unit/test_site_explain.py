"""explain(): engine output recorded on the lab's hosts -> a stable code and a message saying what to do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lpse_ops.site import explain, proc
from lpse_ops.site.errors import Failure

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engines"


def recorded(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.mark.parametrize("name, argv", [
    ("pgbackrest-repo-ls-s3-403", ["pgbackrest", "--stanza=spse", "--repo=2", "repo-ls"]),
    ("pgbackrest-backup-stanza-missing", ["pgbackrest", "--stanza=nosuch", "backup", "--repo=1"]),
    ("restic-wrong-password", ["restic", "--repo", "/var/lib/lpse-backup/restic", "snapshots"]),
    ("restic-repo-missing", ["restic", "--repo", "/var/lib/lpse-backup/no-such-repo", "snapshots"]),
    ("restic-s3-403", ["restic", "--repo", "s3:https://offsite:8333/b/restic/lab01", "snapshots"]),
    ("restic-s3-tls-untrusted", ["restic", "--repo", "s3:https://offsite:8333/b/restic/lab01", "snapshots"]),
    ("restic-s3-unreachable", ["restic", "--repo", "s3:https://offsite:8399/b/restic/lab01", "snapshots"]),
    ("restic-no-space", ["restic", "--repo", "/tmp/rec/tiny/repo", "backup"]),
])
def test_explain_recorded_failure_gives_its_code(name, argv):
    record = recorded(name)
    assert record["exit_code"] != 0
    found = explain.explain(record["stdout"] + "\n" + record["stderr"], argv, step="test")
    assert found.code == record["expected"]["code"], found
    assert found.code in explain.CODES


def test_explain_repo_status_message_from_info_is_refused_credentials():
    (stanza,) = recorded("pgbackrest-info-repo2-refused")["output"]
    message = next(r["status"]["message"] for r in stanza["repo"] if r["key"] == 2)
    found = explain.explain(message, ["pgbackrest", "info", "--repo=2"], "pgbackrest repo2")
    assert found.code == "s3_credentials_refused"
    assert "backup_s3_access_key and backup_s3_secret_key" in found.message


def test_explain_no_space_names_the_backup_root():
    found = explain.explain("ERROR: [047]: unable to write '/var/lib/pgbackrest/backup/spse/x': No space left on "
                            "device", ["pgbackrest", "backup"])
    assert found.code == "no_space" and found.message.startswith("no space left on /var/lib/pgbackrest")


def test_explain_stanza_missing_names_the_stanza_and_what_to_do():
    found = explain.explain("ERROR: [055]: unable to load info file", ["pgbackrest", "backup"],
                            hints=explain.Hints(stanza="spse"))
    assert found == explain.Explanation("stanza_missing",
                                        "stanza spse missing: run `lpse-ops backup setup` (playbooks/backup.yml)")


def test_explain_unknown_output_is_engine_failed_with_the_error_line():
    found = explain.explain("INFO: start\nERROR: [099]: something odd\n", ["pgbackrest", "--stanza=spse", "check"],
                            "check")
    assert found.code == "engine_failed" and "[099]: something odd" in found.message and "(check)" in found.message


def test_proc_run_missing_tool_fails_with_tool_missing():
    with pytest.raises(Failure) as caught:
        proc.run(["lpse-no-such-binary-anywhere"], step="probe")
    assert caught.value.code == "tool_missing" and caught.value.step == "probe"


def test_proc_run_failed_command_is_explained():
    with pytest.raises(Failure) as caught:
        proc.run(["sh", "-c", "echo 'Fatal: wrong password or no key found' >&2; exit 1"], step="restic local")
    assert caught.value.code == "restic_password_wrong" and "wrong password" in caught.value.detail
