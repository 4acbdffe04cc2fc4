"""The one Ansible backend: parses inventories, matches hosts and runs playbooks (through ansible-runner,
AWX's engine), every one of them with the same environment (:func:`environment`).

A failure carries Ansible's own reason (:class:`AnsibleError`): an unparsable inventory, a missing
vault password, ... never an empty host list that reads "no host matches".

Extra variables are data, never code (:func:`unsafe_extravars_yaml`): every string lpse-ops hands a playbook
(a freeze reason, a role input, a value a runbook step got from ``--set``, a path) reaches Ansible under
``!unsafe`` in a private file, so Ansible never templates it: ``{{ lookup('pipe', ...) }}`` in a reason is
shown as typed and runs nothing. (ansible-runner would pass a dict as JSON on the command line, which
ansible-core 2.19 trusts as a template, and which ``ps`` shows.)
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from lpse_ops import config
from lpse_ops import settings as settings_schema
from lpse_ops.backends import inventory_cache
from lpse_ops.site import build as site_build

ARTIFACTS_KEPT = 200
TIMEOUT_S = 120
# Files ansible-runner (before suppress_env_files) wrote once into <runner>/env/ and then applied to every
# later run, whatever that run asked for: the first run's extra vars, environment and options.
STALE_ENV_FILES = ("envvars", "extravars", "cmdline", "passwords", "settings", "ssh_key")
NO_HOSTS_LEFT = "leaves us with no hosts to target"
DEFAULT_STRATEGY = "mitogen_linear"
"""Ansible's strategy when LPSE_OPS_ANSIBLE_STRATEGY is unset (the setting's shown default)."""
SITE_TOOL_VAR = "site_tool_zipapp"
"""The extra variable naming the site tool this process built (roles/site/tasks/tool_copy.yml installs it)."""


class AnsibleError(Exception):
    """Ansible could not do what was asked; the message is Ansible's own reason (from its stderr).

    ``argv``, ``returncode`` and ``stderr`` are kept for logs and tests.
    """

    def __init__(self, message: str, *, argv: tuple[str, ...] = (), returncode: int | None = None,
                 stderr: str = "") -> None:
        super().__init__(message)
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


@dataclass
class PlaybookRun:
    """What ansible-runner reported: status, return code and the artifact folder."""

    ident: str
    status: str
    rc: int
    artifact_dir: str


def environment(app_settings: settings_schema.Settings | None = None) -> dict[str, str]:
    """Return the variables every Ansible process of lpse-ops runs with (on top of the inherited environment).

    Given the settings (default: the current ones), returns this project's ``ansible.cfg`` and roles, the
    virtualenv's ``bin`` first on PATH, no colour, an inventory that fails when any source cannot be
    parsed, the vault password file of ``LPSE_OPS_VAULT_PASSWORD_FILE`` (when set), and the strategy of
    ``LPSE_OPS_ANSIBLE_STRATEGY`` (default Mitogen's, with its plugin folder; ``linear`` is Ansible's own).
    """
    app_settings = app_settings or settings_schema.current()
    bin_dir = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ANSIBLE_CONFIG": str(config.PROJECT_DIR / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(config.PROJECT_DIR / "roles"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
    }
    if app_settings.vault_password_file:
        env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(app_settings.vault_password_file)
    strategy = app_settings.ansible_strategy or DEFAULT_STRATEGY
    env["ANSIBLE_STRATEGY"] = strategy
    if strategy.startswith("mitogen"):
        env["ANSIBLE_STRATEGY_PLUGINS"] = str(mitogen_strategy_plugins())
    return env


def mitogen_strategy_plugins() -> Path:
    """Return the folder of Mitogen's strategy plugins (package ``mitogen``, found without importing it).

    Mitogen keeps one connection and one Python interpreter per host for a whole playbook and runs each task's
    module in it; Ansible's own linear strategy opens an SSH session and starts a fresh Python, which compiles
    ``module_utils`` out of AnsiballZ's zip again, for every task on every host (bench/results/ansible_strategy.json).
    Raises :class:`AnsibleError` with what to do when the package is missing.
    """
    spec = importlib.util.find_spec("ansible_mitogen")
    if spec is None or not spec.submodule_search_locations:
        raise AnsibleError("Mitogen is not installed (pip install mitogen), or set LPSE_OPS_ANSIBLE_STRATEGY=linear "
                           "to run the playbooks with Ansible's own strategy")
    return Path(next(iter(spec.submodule_search_locations))) / "plugins" / "strategy"


def secret_names() -> tuple[str, ...]:
    """Return the ``LPSE_OPS_*`` variables that hold secrets: never handed to an Ansible process."""
    return tuple(spec.metadata["env"] for spec in settings_schema.fields() if spec.metadata["secret"])


def process_environment(base: Mapping[str, str] | None = None,
                        app_settings: settings_schema.Settings | None = None) -> dict[str, str]:
    """Return the full environment of an ``ansible``/``ansible-inventory`` process: *base* (default
    ``os.environ``) without lpse-ops' own secrets, plus :func:`environment`."""
    base = os.environ if base is None else base
    hidden = set(secret_names())
    return {**{name: value for name, value in base.items() if name not in hidden}, **environment(app_settings)}


def error_reason(stderr: str) -> str:
    """Return the useful part of an Ansible command's *stderr*: its error line, and for an inventory that
    cannot be parsed, the first parser's reason and where (pure; tested with recorded output)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [re.sub(r"^(\[ERROR\]:|ERROR!)\s*", "", line) for line in lines
              if line.startswith(("[ERROR]", "ERROR!"))]
    reason = "; ".join(dict.fromkeys(errors)) or next((line for line in lines if "Vault" in line or "vault" in line),
                                                      lines[-1] if lines else "no reason given")
    if "parse inventory" in reason:
        parser = next((re.sub(r"^\[WARNING\]:\s*", "", line) for line in lines
                       if re.match(r"^\[WARNING\]:\s*(Failed to parse|\S+ declined parsing)", line)), None)
        origin = next((line.removeprefix("Origin:").strip() for line in lines if line.startswith("Origin:")), None)
        if parser:
            reason += f" ({parser}{f' at {origin}' if origin and origin not in parser else ''})"
    return reason


def _run(tool: str, args: list[str], app_settings: settings_schema.Settings | None) -> subprocess.CompletedProcess:
    argv = [str(Path(sys.executable).with_name(tool)), *args]
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=TIMEOUT_S,
                              env=process_environment(app_settings=app_settings))
    except (OSError, subprocess.TimeoutExpired) as error:
        raise AnsibleError(f"cannot run {tool}: {error}", argv=tuple(argv)) from error


def _failed(what: str, done: subprocess.CompletedProcess) -> AnsibleError:
    return AnsibleError(f"{what}: {error_reason(done.stderr)}", argv=tuple(done.args), returncode=done.returncode,
                        stderr=done.stderr)


def parse_list_hosts(stdout: str) -> list[str]:
    """Return the host names of ``ansible PATTERN --list-hosts`` output (pure)."""
    hosts: list[str] = []
    listing = False
    for line in stdout.splitlines():
        if re.fullmatch(r"\s*hosts \(\d+\):\s*", line):
            listing = True
        elif listing and line.strip():
            hosts.append(line.strip())
    return hosts


def list_hosts(inventory: Path, group: str, limit: str | None = None, *,
               app_settings: settings_schema.Settings | None = None) -> list[str]:
    """Return the hosts a playbook on *group* limited by *limit* would touch (Ansible's own matching).

    An empty match (no such group, or a limit that leaves nothing) is an empty list. Raises AnsibleError
    carrying Ansible's reason when the inventory cannot be read (missing, unparsable, vault password
    missing or wrong, ...).
    """
    args = [group, "-i", str(inventory), "--list-hosts"]
    if limit:
        args += ["--limit", limit]
    done = _run("ansible", args, app_settings)
    if done.returncode != 0:
        if NO_HOSTS_LEFT in done.stderr and "parse" not in done.stderr:
            return []
        raise _failed(f"cannot list the hosts of inventory {inventory}", done)
    return parse_list_hosts(done.stdout)


def inventory_list(inventory: Path, *, app_settings: settings_schema.Settings | None = None) -> dict:
    """Return ``ansible-inventory --list`` of *inventory* (groups and ``_meta.hostvars``, vault decrypted).

    Raises AnsibleError with Ansible's reason when the inventory cannot be read. The output is kept in
    ``<home>/cache/inventory`` and reused while nothing Ansible reads changes (:mod:`inventory_cache`: never
    for a dynamic inventory or vault content).
    """
    cache_key = inventory_cache.key(inventory, process_environment(app_settings=app_settings), _cache_extra())
    cache_dir = config.home() / "cache" / "inventory"
    if cache_key and (cached := inventory_cache.load(cache_dir, cache_key)) is not None:
        return cached
    done = _run("ansible-inventory", ["-i", str(inventory), "--list"], app_settings)
    if done.returncode != 0:
        raise _failed(f"inventory {inventory} cannot be parsed", done)
    try:
        data = json.loads(done.stdout)
    except json.JSONDecodeError as error:
        raise AnsibleError(f"ansible-inventory printed no JSON for {inventory}: {error}", argv=tuple(done.args),
                           returncode=done.returncode, stderr=done.stderr) from error
    if cache_key:
        inventory_cache.store(cache_dir, cache_key, data)
    return data


def _cache_extra() -> bytes:
    """What else ``ansible-inventory --list`` output depends on: the project's ansible.cfg and ansible-core."""
    cfg = config.PROJECT_DIR / "ansible.cfg"
    return cfg.read_bytes() + b"\0" + importlib.metadata.version("ansible-core").encode()


def inventory_graph(inventory: Path, group: str = "all", *,
                    app_settings: settings_schema.Settings | None = None) -> str:
    """Return ``ansible-inventory --graph`` of *group* in *inventory* (a text tree of groups and hosts).

    Raises AnsibleError with Ansible's reason when the inventory cannot be read.
    """
    done = _run("ansible-inventory", ["-i", str(inventory), "--graph", group], app_settings)
    if done.returncode != 0:
        raise _failed(f"inventory {inventory} cannot be parsed", done)
    return done.stdout


def runner_dir() -> Path:
    """Return ansible-runner's private data folder (its artifacts/ holds one folder per run)."""
    path = config.home() / "runner"
    path.mkdir(parents=True, exist_ok=True)
    for name in STALE_ENV_FILES:
        (path / "env" / name).unlink(missing_ok=True)
    return path


class _UnsafeMapping(dict):
    """The extra-vars mapping, which :class:`_UnsafeDumper` writes with Ansible's ``!unsafe`` tag."""


class _UnsafeDumper(yaml.SafeDumper):
    """YAML for ``ansible-playbook -e @FILE``: the whole mapping tagged ``!unsafe``, its values plain YAML."""


_UnsafeDumper.add_representer(_UnsafeMapping, lambda dumper, data: dumper.represent_mapping("!unsafe", dict(data)))


def unsafe_extravars_yaml(extravars: Mapping) -> str:
    """Return *extravars* as the YAML of an extra-vars file that Ansible reads as data only: every string,
    at any depth, is never templated (pure).

    The document is one mapping tagged ``!unsafe``; ansible-core 2.19 marks everything under such a node
    untrusted. (Tagging each string instead is wrong: 2.19 re-resolves an ``!unsafe`` scalar as if it were
    plain, so ``!unsafe "007"`` loads as 7 and ``!unsafe ""`` as null.) Numbers, booleans and null keep
    their types; quoted strings stay strings. Raises yaml.representer.RepresenterError for a value that is
    not plain data (a Path, a datetime: pass text).
    """
    return yaml.dump(_UnsafeMapping({str(key): value for key, value in extravars.items()}), Dumper=_UnsafeDumper,
                     allow_unicode=True, sort_keys=True, default_flow_style=False, width=2**20)


def write_extravars(extravars: Mapping, path: Path) -> Path:
    """Write *extravars* (:func:`unsafe_extravars_yaml`) to *path*, readable by its owner only (0600, in a
    0700 folder); return *path* (what ``-e @PATH`` reads)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(unsafe_extravars_yaml(extravars))
    return path


def run_playbook(playbook: str, inventory: Path, on_event: Callable[[dict], None], *, limit: str | None = None,
                 extravars: dict | None = None, check: bool = False, forks: int = 10,
                 app_settings: settings_schema.Settings | None = None) -> PlaybookRun:
    """Run ``playbooks/<playbook>`` against *inventory*, calling *on_event* for every runner event.

    The run has :func:`environment` (the same as inventory parsing and host listing). *extravars* reach
    the playbook as data only (:func:`write_extravars`: every string ``!unsafe``, in a 0600 file given as
    ``-e @FILE`` and removed after the run, never on the command line). Secrets never travel in
    *extravars* (they are recorded with the run): they come from the inventory's vault files; lpse-ops'
    own secret settings are removed from the environment the runner records.
    """
    from ansible_runner.interface import init_runner

    ident = f"{Path(playbook).stem}-{uuid.uuid4().hex[:10]}"
    cmdline = ["--forks", str(forks)]
    if check:
        cmdline.append("--check")

    def handler(event: dict) -> bool:
        on_event(event)
        return True

    private_dir = runner_dir()
    # The site tool, built here in this process (deterministic: same sources, same bytes) so the playbook's
    # roles/site tasks copy it instead of building it in three control-node tasks of their own.
    tool = site_build.build(private_dir / "extravars" / f"{ident}.lpse-backup")
    extravars_file = write_extravars({**(extravars or {}), SITE_TOOL_VAR: str(tool)},
                                     private_dir / "extravars" / f"{ident}.yml")
    try:
        runner = init_runner(
            private_data_dir=str(private_dir), project_dir=str(config.PROJECT_DIR), ident=ident,
            playbook=str(config.PROJECT_DIR / "playbooks" / playbook), inventory=str(inventory.resolve()),
            limit=limit, extravars=str(extravars_file), envvars=environment(app_settings),
            cmdline=" ".join(cmdline), rotate_artifacts=ARTIFACTS_KEPT, quiet=True, suppress_env_files=True,
            event_handler=handler,
        )
        for name in secret_names():
            runner.config.env.pop(name, None)
        runner.run()
    finally:
        extravars_file.unlink(missing_ok=True)
        tool.unlink(missing_ok=True)
    return PlaybookRun(ident=ident, status=runner.status, rc=runner.rc, artifact_dir=str(runner.config.artifact_dir))
