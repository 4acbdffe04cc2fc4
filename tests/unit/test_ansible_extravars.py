"""Free text is data, never code (issue 22): every string an action hands a playbook reaches Ansible tagged
``!unsafe`` (backends/ansible.py, the one place extra vars reach ansible-runner), so a Jinja expression or a
lookup in a freeze reason, a role input, a backup argument or a login name is kept as typed and runs nothing.

Real ansible-playbook runs through ansible-runner against localhost (``ansible_connection=local``); the
lookup would ``touch`` a marker file, and the tests assert it does not exist.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import markupsafe
import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import is_trusted_as_template, trust_as_template

from lpse_ops.actions import access, backup, freeze, harden, runbook_run, upgrade
from lpse_ops.actions.upgrade_catalogue import Release
from lpse_ops.actions.upgrade_plan_types import SitePlan, UpgradePlan
from lpse_ops.backends import ansible
from lpse_ops.reports.notice import Contact, NoticeContent, render
from lpse_ops.reports.statement import StatementContent
from lpse_ops.reports.statement import render as render_statement
from lpse_ops.state import StateStore
from lpse_ops.state import access as sanction_state

PROBE = Path("..") / "tests" / "fixtures" / "ansible" / "extravars_probe.yml"
"""The probe playbook, relative to playbooks/ (run_playbook's folder): writes what Ansible makes of each var."""
NOTICE_PLAYBOOK = Path(ansible.config.PROJECT_DIR) / "tests" / "fixtures" / "ansible" / "nginx_freeze_notice.yml"


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """The file the payload's lookup would create on the control node if Ansible templated it."""
    return tmp_path / f"lookup-ran-{uuid.uuid4().hex}"


@pytest.fixture
def payload(marker: Path) -> str:
    """A Jinja expression and a lookup that runs a command: what an operator (or a survey) might type."""
    return f'audit {{{{ 7*7 }}}} {{{{ lookup("ansible.builtin.pipe", "touch {marker}") }}}} "q" \'s\''


def localhost_inventory(tmp_path: Path, **hostvars: object) -> Path:
    """One site, site1, that is this machine (local connection, this Python, no become: no sudo here)."""
    site = {"site_code": "site1", "ansible_host": "127.0.0.1", "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable, "ansible_become": False, **hostvars}
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {"children": {"sites": {"hosts": {"site1": site}}}}}))
    return path


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


def test_write_extravars_loaded_as_ansible_loads_e_at_file_is_verbatim_and_never_a_template(tmp_path, payload):
    extravars = {"reason": payload, "count": 3, "ratio": 0.5, "flag": True, "nothing": None,
                 "path": [{"version": "1.2", "bundle": "/opt/b u n d l e.tar.gz"}, payload],
                 "nested": {"note": f"line one\nline two ü {payload}", "empty": "", "number_text": "007",
                            "yes_text": "yes", "null_text": "null", "key: value": "- item"}}
    path = ansible.write_extravars(extravars, tmp_path / "runner" / "extravars" / "run.yml")

    # exactly how ansible-core 2.19 reads `-e @FILE` (utils/vars.py load_extra_vars): trusted as template,
    # except what the file tags !unsafe
    loaded = DataLoader().load_from_file(str(path), trusted_as_template=True)

    assert loaded == extravars
    assert isinstance(loaded["count"], int) and loaded["flag"] is True and loaded["nothing"] is None
    assert isinstance(loaded["nested"]["number_text"], str) and isinstance(loaded["nested"]["empty"], str)
    assert _strings(loaded) and not [text for text in _strings(loaded) if is_trusted_as_template(text)]
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    # the way ansible-runner passed a dict before: JSON after -e on the command line, which ansible-core's CLI
    # trusts as a template like every argument it is given (cli/arguments/option_helpers.py)
    assert is_trusted_as_template(DataLoader().load(trust_as_template(json.dumps(extravars)))["reason"])


def test_freeze_warn_reason_with_jinja_and_lookup_reaches_the_site_verbatim_and_runs_nothing(tmp_path, marker,
                                                                                               payload):
    """The reported bug, end to end: lpse-ops warn --reason '... {{ lookup(...) }}' through the real freeze
    playbook, ansible-runner and ansible-playbook; the site's warning file holds the reason as typed."""
    conf_dir = tmp_path / "etc-spse"
    inventory = localhost_inventory(tmp_path, site_spse_conf_dir=str(conf_dir))

    result = freeze.apply(freeze.SanctionRequest(action="warn", site="site1", reason=payload, inventory=inventory))

    assert result.record and result.record["complete"] is True, result.as_dict()
    assert json.loads((conf_dir / "warning").read_text())["reason"] == payload
    assert not marker.exists(), "the lookup in the reason ran a command on the control node"
    with StateStore.open() as store:
        assert [s["reason"] for s in sanction_state.list_sanctions(store)] == [payload]
    # the reason never was on a command line: ansible-runner's record of the argv holds only the file's name
    argv = json.loads((Path(result.run.artifact_dir) / "command").read_text())["command"]
    assert not [arg for arg in argv if "lookup" in arg or "7*7" in arg], argv
    assert any(arg.startswith("@") and arg.endswith(".yml") for arg in argv), argv
    assert list((ansible.runner_dir() / "extravars").iterdir()) == [], "the extra-vars file is left behind"



def _freeze_notice(tmp_path: Path, extra_vars_argument: str) -> str:
    """Run the nginx role's freeze entry point on localhost with *extra_vars_argument* after ``-e``; return
    the notice page it wrote."""
    (tmp_path / "spse.conf").write_text(f"if (-f {tmp_path}/flags/frozen) {{ return 423; }}\n")
    env = {**os.environ, **ansible.environment(), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local")}
    done = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", "-e", extra_vars_argument,
                           str(NOTICE_PLAYBOOK)], capture_output=True, text=True, check=False, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return (tmp_path / "www" / "frozen.html").read_text()


def test_freeze_notice_page_shows_the_reason_as_typed_from_the_extravars_file(tmp_path, marker, payload):
    """The page of the report ("audit 49 root" on the notice page): the nginx role's template, fed the reason
    from the file run_playbook writes (-e @FILE), escapes it and shows it as typed."""
    extravars = ansible.write_extravars({"freeze_reason": payload, "probe_dir": str(tmp_path)},
                                        tmp_path / "extravars" / "run.yml")

    page = _freeze_notice(tmp_path, f"@{extravars}")

    assert f"<td>{markupsafe.escape(payload)}</td>" in page
    assert not marker.exists(), "the lookup in the reason ran a command on the control node"


def test_freeze_notice_page_reason_on_the_command_line_is_templated_which_is_why_the_file_is_needed(
        tmp_path, marker, payload):
    """The same run with the reason as ansible-runner used to pass it (JSON after -e): Ansible renders it and
    the lookup runs, so the test above does detect the hole."""
    page = _freeze_notice(tmp_path, json.dumps({"freeze_reason": payload, "probe_dir": str(tmp_path)}))

    assert "audit 49" in page and markupsafe.escape(payload) not in page
    assert marker.exists()

@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Run the probe playbook in place of an action's own (which needs a real site), through the real
    run_playbook; return the JSON it wrote (what Ansible made of each probed var)."""
    real = ansible.run_playbook
    ran: list[str] = []

    def run_probe(playbook, inventory, on_event, **options):
        ran.append(playbook)
        return real(str(PROBE), inventory, on_event, **options)

    monkeypatch.setattr(ansible, "run_playbook", run_probe)
    output = tmp_path / "probe.json"

    def read() -> dict:
        assert ran, "the action ran no playbook"
        assert output.exists(), "the probe playbook did not run"
        return json.loads(output.read_text())

    return output, read


PROBED = {"_harden": ["hardening_banner", "hardening_allowed", "hardening_days"],
          "_backup": ["backup_action", "backup_args"],
          "_access": ["access_login_user", "access_krl_src"]}
"""The extra vars each entry point's probe reads back."""
BACKUP_VARS = {"backup_cipher_pass": "x", "backup_restic_password": "x", "backup_s3_access_key": "x",
               "backup_s3_secret_key": "x", "backup_s3_endpoint": "https://s3.invalid", "backup_s3_bucket": "b",
               "backup_s3_ca_cert": "x", "backup_s3_lock_days": 7}


def _harden(inventory: Path, text: str) -> dict:
    harden.harden(harden.HardenRequest(inventory=inventory, extravars={
        "hardening_banner": text, "hardening_allowed": [text, {"note": text}], "hardening_days": 3}))
    return {"hardening_banner": text, "hardening_allowed": [text, {"note": text}], "hardening_days": 3}


def _backup(inventory: Path, text: str) -> dict:
    args = ["--note", text]
    backup.execute(backup.BackupContext(inventory=inventory), "list", args)
    return {"backup_action": "list", "backup_args": shlex.join(args)}


def _access(inventory: Path, text: str) -> dict:
    paths = access.CAPaths.default()
    access.ca_init(access.CAInitRequest(paths=paths, passphrase="a long test passphrase"))
    access.setup(access.SetupRequest(inventory=inventory, extravars={"access_login_user": text}))
    return {"access_login_user": text, "access_krl_src": str(paths.krl)}


@pytest.mark.parametrize("entry_point", [_harden, _backup, _access], ids=["harden", "backup", "access"])
def test_action_extravars_with_jinja_and_lookup_reach_the_playbook_verbatim_and_run_nothing(
        entry_point, probe, tmp_path, marker, payload):
    output, read = probe
    inventory = localhost_inventory(tmp_path, probe_output=str(output), probe_names=PROBED[entry_point.__name__],
                                    **BACKUP_VARS)

    expected = entry_point(inventory, payload)

    assert read() == expected
    assert not marker.exists(), "a lookup in an operator's value ran a command on the control node"



def test_upgrade_extravars_with_a_version_a_site_reported_reach_the_playbook_verbatim(tmp_path, marker, payload):
    """upgrade.extravars() carries what a site said about itself (its current version, from /health, into
    the path and the maintenance page's reason): a compromised site must not run code on the control node."""
    group = [SitePlan("site1", payload, ["1.1"], "wave 1")]
    plan = UpgradePlan(target="1.1", waves=[group], excluded=[],
                       releases=[Release("1.1", payload, tmp_path / "spse-1.1.tar.gz", 2)])
    extravars = upgrade.extravars(plan, group, "upgrade-7", upgrade.RolloutOptions(tmp_path / "hosts.yml"),
                                  datetime(2026, 11, 28, 15, 0, tzinfo=UTC))
    names = ["upgrade_from_version", "upgrade_path", "upgrade_maintenance_reason"]
    output = tmp_path / "probe.json"
    inventory = localhost_inventory(tmp_path, probe_output=str(output), probe_names=names)

    ran = ansible.run_playbook(str(PROBE), inventory, lambda event: None, extravars=extravars)

    assert ran.rc == 0, ran
    assert json.loads(output.read_text()) == {name: extravars[name] for name in names}
    assert payload in extravars["upgrade_maintenance_reason"]
    assert not marker.exists()

def test_runbook_set_value_with_jinja_is_one_verbatim_argument_and_refused_by_the_step(tmp_path, marker, payload):
    """runbook run --set target_time='... {{ lookup(...) }}': the value is one argv item of the step (never a
    shell word, never a template); the step's own command refuses it as a time, and nothing ran."""
    inventory = localhost_inventory(tmp_path)
    planned = runbook_run.plan(runbook_run.RunbookRequest("rows-deleted", "site1", inventory,
                                                          values={"target_time": payload}))
    restore = next(step for step in planned.steps if "restore" in step.argv)
    assert restore.argv[restore.argv.index("--target-time") + 1] == payload

    from click.testing import CliRunner

    from lpse_ops.main import main

    argv = [arg for arg in restore.argv if arg != "--yes"]
    outcome = CliRunner().invoke(main, [*argv, "--inventory", str(inventory), "--yes"])
    assert outcome.exit_code != 0 and "cannot read time" in outcome.output, outcome.output
    assert not marker.exists()


def test_notice_text_with_jinja_is_rendered_verbatim(payload):
    """Notices are rendered on the control side by Jinja templates from files: operator text is a value."""
    start = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    notice = render(NoticeContent(kind="maintenance", site_name=payload, timezone="Asia/Jakarta",
                                  contacts=[Contact(payload, "a@example.org")], start=start,
                                  duration=timedelta(hours=1), from_version="1.0", to_version="1.1",
                                  reference="PML-1", helpdesk=payload))
    assert payload in notice.text and "audit 49" not in notice.text and payload in notice.subject


def test_incident_statement_title_and_actions_with_jinja_are_rendered_verbatim(payload):
    """Incident statements too: a title, a description and the actions taken are values, never templates."""
    at = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    statement = render_statement(StatementContent(
        incident_id=7, site_name="LPSE Uji", timezone="Asia/Jakarta", title=payload, description=payload,
        impact=payload, status="open", priority="P2", priority_name="Tinggi", opened_at=at, issued_at=at,
        next_update=at + timedelta(hours=4), actions=[payload]))
    assert statement.text.count(payload) >= 3 and "audit 49" not in statement.text + statement.html



def test_run_playbook_is_the_only_way_to_ansible_runner_or_ansible_playbook():
    """Every action reaches a playbook through backends/ansible.py run_playbook (whose extra vars are data):
    no other control-side module imports ansible-runner or starts ansible-playbook itself."""
    package = Path(ansible.__file__).parents[1]
    offenders = [str(path.relative_to(package)) for path in package.rglob("*.py")
                 if path != Path(ansible.__file__) and not path.is_relative_to(package / "lab")
                 and re.search(r"^\s*(from|import) ansible_runner|[\"']ansible-playbook[\"']", path.read_text(),
                               re.MULTILINE)]
    assert offenders == []
