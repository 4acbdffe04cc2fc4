"""The one Ansible backend: one environment for inventory parsing, host listing and playbook runs, and
failures that carry Ansible's own reason (real ansible-core on local inventories; no host is contacted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lpse_ops import inventory, settings
from lpse_ops.backends import ansible

pytestmark = pytest.mark.clock_free("the environment and argv handed to Ansible's own processes; no clock read")

GOOD = "sites:\n  hosts:\n    site1: {ansible_host: 127.0.0.1, site_code: one}\n    site2: {site_code: two}\n"
BROKEN = "sites:\n  hosts:\n    site1: [oops\n"
VAULT_PASSWORD = "correct horse"  # noqa: S105 - a test fixture's password


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.yml"
    path.write_text(GOOD)
    return path


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yml"
    path.write_text(BROKEN)
    return path


@pytest.fixture
def vaulted(tmp_path: Path) -> Path:
    """An inventory folder whose group_vars/sites/vault.yml is ansible-vault encrypted."""
    folder = tmp_path / "vaulted"
    (folder / "group_vars" / "sites").mkdir(parents=True)
    (folder / "hosts.yml").write_text(GOOD)
    (tmp_path / "vault-pass").write_text(VAULT_PASSWORD + "\n")
    vault = folder / "group_vars" / "sites" / "vault.yml"
    vault.write_text("postgresql_spse_password: s3cret\n")
    subprocess.run([str(Path(sys.executable).with_name("ansible-vault")), "encrypt", "--vault-password-file",
                    str(tmp_path / "vault-pass"), str(vault)], check=True, capture_output=True)
    return folder


def test_list_hosts_group_and_limit(good: Path):
    assert ansible.list_hosts(good, "sites") == ["site1", "site2"]
    assert ansible.list_hosts(good, "sites", "site2") == ["site2"]


def test_list_hosts_empty_match_is_empty_list(good: Path):
    assert ansible.list_hosts(good, "sites", "nosuch") == []
    assert ansible.list_hosts(good, "nogroup") == []


def test_list_hosts_broken_inventory_raises_with_parser_reason(broken: Path):
    with pytest.raises(ansible.AnsibleError) as caught:
        ansible.list_hosts(broken, "sites")

    message = str(caught.value)
    assert "failed to parse inventory source" in message and str(broken) in message
    assert "YAML parsing failed" in message
    assert caught.value.returncode != 0 and caught.value.stderr


def test_list_hosts_missing_inventory_raises(tmp_path: Path):
    with pytest.raises(ansible.AnsibleError, match="failed to parse inventory source"):
        ansible.list_hosts(tmp_path / "absent.yml", "sites")


def test_inventory_load_broken_file_reason_reaches_caller(broken: Path):
    with pytest.raises(inventory.InventoryError) as caught:
        inventory.load(broken)

    assert f"inventory {broken} cannot be parsed" in str(caught.value)
    assert "YAML parsing failed" in str(caught.value)


def test_inventory_without_vault_password_says_so(vaulted: Path):
    with pytest.raises(inventory.InventoryError, match="no vault secrets"):
        inventory.load(vaulted)


def test_vault_password_file_setting_reaches_inventory_and_host_listing(vaulted: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LPSE_OPS_VAULT_PASSWORD_FILE", str(tmp_path / "vault-pass"))

    data = inventory.load(vaulted)

    assert data["_meta"]["hostvars"]["site1"]["postgresql_spse_password"] == "s3cret"
    assert ansible.list_hosts(vaulted, "sites") == ["site1", "site2"]


def test_missing_vault_password_file_is_an_error_not_an_empty_list(vaulted: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LPSE_OPS_VAULT_PASSWORD_FILE", str(tmp_path / "no-such-file"))

    with pytest.raises(ansible.AnsibleError, match="vault password file .*no-such-file was not found"):
        ansible.list_hosts(vaulted, "sites")


def test_inventory_graph_shows_groups_and_hosts(good: Path):
    graph = ansible.inventory_graph(good)

    assert "@sites:" in graph and "site1" in graph and "site2" in graph


def test_environment_from_settings_has_config_roles_and_vault(tmp_path: Path):
    env = ansible.environment(settings.load({"LPSE_OPS_VAULT_PASSWORD_FILE": str(tmp_path / "pw")}))

    assert env["ANSIBLE_CONFIG"].endswith("/ansible.cfg") and env["ANSIBLE_ROLES_PATH"].endswith("/roles")
    assert env["ANSIBLE_VAULT_PASSWORD_FILE"] == str(tmp_path / "pw")
    assert env["PATH"].startswith(str(Path(sys.executable).parent) + ":")
    assert "ANSIBLE_VAULT_PASSWORD_FILE" not in ansible.environment(settings.load({}))


def test_the_strategy_is_mitogens_by_default_and_linear_when_set():
    default = ansible.environment(settings.load({}))
    assert default["ANSIBLE_STRATEGY"] == "mitogen_linear"
    assert (Path(default["ANSIBLE_STRATEGY_PLUGINS"]) / "mitogen_linear.py").is_file(), default
    linear = ansible.environment(settings.load({"LPSE_OPS_ANSIBLE_STRATEGY": "linear"}))
    assert linear["ANSIBLE_STRATEGY"] == "linear" and "ANSIBLE_STRATEGY_PLUGINS" not in linear
    with pytest.raises(settings.SettingsError, match="LPSE_OPS_ANSIBLE_STRATEGY"):
        settings.load({"LPSE_OPS_ANSIBLE_STRATEGY": "free"})


LOCAL_INVENTORY = """sites:
  hosts:
    site1:
      ansible_connection: local
      ansible_python_interpreter: {python}
"""

# The module's own process (the shell's parent): Mitogen runs modules in the interpreter it started once for the
# host, whose argv[0] names it "(mitogen:...)"; linear starts a bare interpreter for the task.
MODULE_PROCESS_PLAYBOOK = """- name: Show the process that runs a task's module
  hosts: sites
  gather_facts: false
  tasks:
    - name: Read the module process's command line
      ansible.builtin.shell: tr '\\0' ' ' < /proc/$PPID/cmdline
      changed_when: false
"""


@pytest.mark.parametrize(("strategy", "in_mitogen"), [(None, True), ("linear", False)])
def test_a_playbook_runs_its_modules_under_the_strategy_the_setting_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strategy: str | None, in_mitogen: bool):
    """Real ansible-runner and ansible-playbook (connection local): by default a task's module runs inside
    Mitogen's interpreter; with LPSE_OPS_ANSIBLE_STRATEGY=linear, in a Python of its own, as AWX runs it."""
    if strategy:
        monkeypatch.setenv("LPSE_OPS_ANSIBLE_STRATEGY", strategy)
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(LOCAL_INVENTORY.format(python=sys.executable))
    playbook = tmp_path / "module-process.yml"
    playbook.write_text(MODULE_PROCESS_PLAYBOOK)
    events: list[dict] = []

    done = ansible.run_playbook(str(playbook), hosts, events.append)

    assert (done.status, done.rc) == ("successful", 0), done
    lines = [event["event_data"]["res"]["stdout"] for event in events if event.get("event") == "runner_on_ok"]
    assert len(lines) == 1 and ("(mitogen:" in lines[0]) is in_mitogen, lines


ENV_INVENTORY = """#!{python}
# An inventory script: real ansible-inventory, ansible and ansible-playbook run it in their own process, so
# it records the environment each of them got (and which tool it was) before printing the inventory.
import json, os, sys
tool = open(f"/proc/{{os.getppid()}}/cmdline", "rb").read().split(b"\\0")
names = [os.path.basename(part.decode()) for part in tool if part]
wanted = ("ANSIBLE_", "LPSE_OPS_", "PATH")
seen = {{"tool": next((name for name in names if name.startswith("ansible")), " ".join(names)),
         "env": {{key: value for key, value in os.environ.items() if key.startswith(wanted)}}}}
with open({log!r}, "a") as log:
    log.write(json.dumps(seen) + "\\n")
if "--host" in sys.argv:
    print("{{}}")
else:
    print(json.dumps({{"sites": {{"hosts": ["site1"]}},
                      "_meta": {{"hostvars": {{"site1": {{"ansible_connection": "local",
                                                      "ansible_python_interpreter": sys.executable}}}}}}}}))
"""

PLAYBOOK = """- name: Show what the play's own environment holds
  hosts: sites
  gather_facts: false
  tasks:
    - name: Read the SMTP password variable from the environment (must be empty)
      ansible.builtin.debug:
        msg: "smtp=[{{ lookup('ansible.builtin.env', 'LPSE_OPS_SMTP_PASSWORD') }}]"
"""


def test_all_three_call_sites_use_the_same_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Real ansible-inventory, ansible and ansible-runner (ansible-playbook against localhost, connection local):
    an inventory script records the environment each process got; none sees lpse-ops' own secrets."""
    (tmp_path / "pw").write_text(VAULT_PASSWORD + "\n")
    monkeypatch.setenv("LPSE_OPS_VAULT_PASSWORD_FILE", str(tmp_path / "pw"))
    monkeypatch.setenv("LPSE_OPS_SMTP_PASSWORD", "smtp-secret")
    monkeypatch.setenv("LPSE_OPS_SMTP_USER", "u")
    # a shared store's URL carries its password: neither Ansible nor the runner's artifacts may keep it
    monkeypatch.setenv("LPSE_OPS_STATE_URL", "postgresql://lpse:state-secret@db.example/lpse_ops")
    log = tmp_path / "seen.jsonl"
    script = tmp_path / "env-inventory.py"
    script.write_text(ENV_INVENTORY.format(python=sys.executable, log=str(log)))
    script.chmod(0o755)
    playbook = tmp_path / "show-env.yml"
    playbook.write_text(PLAYBOOK)
    runner_dir = ansible.runner_dir()
    (runner_dir / "env").mkdir(exist_ok=True)
    (runner_dir / "env" / "extravars").write_text('{"spse_bundle": "/old/run.tar.gz"}')  # a stale file

    assert list(inventory.load(script)["_meta"]["hostvars"]) == ["site1"]
    assert ansible.list_hosts(script, "sites") == ["site1"]
    assert "@sites:" in ansible.inventory_graph(script)
    events: list[dict] = []
    done = ansible.run_playbook(str(playbook), script, events.append)  # an absolute path stays as it is

    assert (done.status, done.rc) == ("successful", 0), done
    messages = [event["event_data"]["res"].get("msg") for event in events if event.get("event") == "runner_on_ok"]
    assert messages == ["smtp=[]"], messages  # the play's own environment has no lpse-ops secret
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    tools = {entry["tool"] for entry in seen}
    assert {"ansible-inventory", "ansible", "ansible-playbook"} <= tools, tools
    expected = {key: value for key, value in ansible.environment().items() if key != "PATH"}
    assert expected["ANSIBLE_VAULT_PASSWORD_FILE"] == str(tmp_path / "pw")
    for entry in seen:
        assert {key: entry["env"].get(key) for key in expected} == expected, entry["tool"]
        assert entry["env"]["PATH"].startswith(str(Path(sys.executable).parent) + ":"), entry["tool"]
        assert "LPSE_OPS_SMTP_PASSWORD" not in entry["env"], entry["tool"]
        assert "LPSE_OPS_STATE_URL" not in entry["env"], entry["tool"]
    kept = [path for path in Path(done.artifact_dir).rglob("*")
            if path.is_file() and b"state-secret" in path.read_bytes()]
    assert kept == [], kept  # the artifacts' `command` file records the environment the runner gave
    assert not (runner_dir / "env" / "extravars").exists()  # the stale file is gone, and none was written
    assert not (runner_dir / "env" / "envvars").exists()  # suppress_env_files: the vault path is not on disk


@pytest.mark.parametrize(("stderr", "expected"), [
    ("[WARNING]: Could not match supplied host pattern, ignoring: nosuch\n"
     "[ERROR]: Specified inventory, host pattern and/or --limit leaves us with no hosts to target.\n",
     "Specified inventory, host pattern and/or --limit leaves us with no hosts to target."),
    ("[ERROR]: Attempting to decrypt but no vault secrets found.\n",
     "Attempting to decrypt but no vault secrets found."),
    ("[WARNING]: Error getting vault password file (default): The vault password file /nope was not found\n"
     "[ERROR]: The vault password file /nope was not found\n",
     "The vault password file /nope was not found"),
    ("ERROR! Completely failed to parse inventory source /x.yml\n",
     "Completely failed to parse inventory source /x.yml"),
    ("", "no reason given"),
    ("something odd happened\nlast words\n", "last words"),
])
def test_error_reason_recorded_stderr(stderr: str, expected: str):
    assert ansible.error_reason(stderr) == expected


def test_error_reason_unparsable_inventory_names_the_parser_and_place():
    stderr = ("[WARNING]: Failed to parse inventory with 'auto' plugin: YAML parsing failed: While parsing a flow "
              "sequence did not find expected ',' or ']'.\n\nFailed to parse inventory with 'auto' plugin.\n\n"
              "<<< caused by >>>\n\nYAML parsing failed.\nOrigin: /tmp/bad.yml:4:1\n\n"
              "[ERROR]: Completely failed to parse inventory source /tmp/bad.yml\n")

    assert ansible.error_reason(stderr) == (
        "Completely failed to parse inventory source /tmp/bad.yml (Failed to parse inventory with 'auto' plugin: "
        "YAML parsing failed: While parsing a flow sequence did not find expected ',' or ']'. at /tmp/bad.yml:4:1)")


def test_parse_list_hosts_recorded_output():
    assert ansible.parse_list_hosts("  hosts (2):\n    site1\n    site2\n") == ["site1", "site2"]
    assert ansible.parse_list_hosts("  hosts (0):\n") == []
