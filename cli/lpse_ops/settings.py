"""One schema for every ``LPSE_OPS_*`` environment variable, read and checked in one place.

Each field of :class:`Settings` is one variable: its name, type, default and meaning live in the
field's metadata, and ``docs/settings.md`` is generated from them (:func:`markdown_table`; a unit test
keeps the two equal). :func:`load` reads a mapping (the environment by default) and raises
:class:`SettingsError` naming every bad variable; :func:`current` is the same for ``os.environ``,
read once per distinct set of ``LPSE_OPS_*`` values.

An empty value counts as unset, as it always has for these variables.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "LPSE_OPS_"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
STARTTLS_MODES = ("auto", "require", "off")
ANSIBLE_STRATEGIES = ("mitogen_linear", "linear")


def _setting(env: str, doc: str, *, kind: str = "str", default: Any = None, shown_default: str = "",
             choices: tuple[str, ...] = (), low: int | None = None, high: int | None = None,
             secret: bool = False, area: str = "control", read_by: str = "") -> Any:
    """Declare one setting: *env* is the variable, *kind* one of str, path, int, bool, choice."""
    return field(default=default, repr=not secret, metadata={
        "env": env, "doc": doc, "kind": kind, "shown_default": shown_default, "choices": choices,
        "low": low, "high": high, "secret": secret, "area": area, "read_by": read_by})


@dataclass(frozen=True)
class Settings:
    """Every ``LPSE_OPS_*`` setting, typed; None means unset (the documented default applies)."""

    home: Path | None = _setting(
        "LPSE_OPS_HOME", "Folder for the state store, runner artifacts, bundles, trusted keys and lab files.",
        kind="path", shown_default="~/.local/share/lpse-ops", read_by="config.home")
    state_url: str | None = _setting(
        "LPSE_OPS_STATE_URL", "SQLAlchemy URL of a shared state store, e.g. postgresql://lpse_ops@db/lpse_ops "
        "(it may carry the password: kept out of Ansible's environment and the runner's artifacts).",
        shown_default="an SQLite file, <home>/state.db", secret=True, read_by="config.state_url")
    actor: str | None = _setting(
        "LPSE_OPS_ACTOR", "Name of the engineer recorded in runs, locks and the audit log.",
        shown_default="user@host", read_by="config.actor")
    inventory: Path | None = _setting(
        "LPSE_OPS_INVENTORY", "Default inventory (file or folder) of the fleet commands (-i).",
        kind="path", shown_default="the lab's inventory, if a lab is up", read_by="commands/_options.py")
    vault_password_file: Path | None = _setting(
        "LPSE_OPS_VAULT_PASSWORD_FILE", "ansible-vault password file for the inventory's vault files; given to "
        "every Ansible process (inventory parsing, host matching, playbooks).",
        kind="path", shown_default="none", read_by="backends/ansible.py")
    ansible_strategy: str | None = _setting(
        "LPSE_OPS_ANSIBLE_STRATEGY", "How lpse-ops' playbooks reach the hosts: mitogen_linear (Mitogen's strategy: "
        "one connection and one Python per host for the whole playbook, about a third less CPU on both ends) or "
        "linear (Ansible's own: an SSH session and a fresh Python for every task, as plain ansible-playbook and AWX "
        "run the same playbooks).", kind="choice", choices=ANSIBLE_STRATEGIES, shown_default="mitogen_linear",
        read_by="backends/ansible.py")
    yes: bool = _setting(
        "LPSE_OPS_YES", "Answer yes to confirmations (backup restore, notice send); 1/0, true/false, yes/no, on/off.",
        kind="bool", default=False, shown_default="no", read_by="commands/backup.py, commands/notice.py")
    priority_table: Path | None = _setting(
        "LPSE_OPS_PRIORITY_TABLE", "YAML file of the incident priority table (clause 7.6: P1-P4 response and "
        "resolution targets) and the helpdesk's working days, hours and holidays (clause 7.3); docs/incidents.md.",
        kind="path", shown_default="the packaged default, lpse_ops/data/priorities.yml",
        read_by="actions/incidents.py")
    parent_run: int | None = _setting(
        "LPSE_OPS_PARENT_RUN", "Set by `lpse-ops runbook run` for each step it runs (never by hand): the runbook "
        "run's id. The step's runs are recorded as its children and a site lock held by that run counts as the "
        "step's own, so a step that locks the site (backup restore) does not wait for its own runbook.",
        kind="int", low=1, shown_default="unset", read_by="actions/operation.py")
    trusted_keys: Path | None = _setting(
        "LPSE_OPS_TRUSTED_KEYS", "Folder of trusted release signing keys (*.pub) that bundles must be signed by.",
        kind="path", shown_default="<home>/trusted-keys", area="bundles",
        read_by="commands/install.py, commands/bundle.py, commands/upgrade.py")
    bundle_key_passphrase: str | None = _setting(
        "LPSE_OPS_BUNDLE_KEY_PASSPHRASE", "Passphrase of the release signing key (bundle keygen, bundle build).",
        shown_default="none (key not encrypted)", secret=True, area="bundles", read_by="bundle.py")
    access_ca_passphrase: str | None = _setting(
        "LPSE_OPS_ACCESS_CA_PASSPHRASE", "Passphrase of the LKPP SSH certificate authority's key (access ca init, "
        "access grant); 12 characters or more; environment only.", shown_default="none (required by those commands)",
        secret=True, area="access", read_by="actions/access.py")
    access_max_hours: int = _setting(
        "LPSE_OPS_ACCESS_MAX_HOURS", "Longest validity of an engineer's SSH certificate, in hours (access grant).",
        kind="int", default=168, low=1, high=2160, shown_default="168", area="access", read_by="actions/access.py")
    s3_endpoint: str | None = _setting(
        "LPSE_OPS_S3_ENDPOINT", "Offsite S3 endpoint as the control machine reaches it; setting it requires "
        "LPSE_OPS_S3_BUCKET, LPSE_OPS_S3_ACCESS_KEY and LPSE_OPS_S3_SECRET_KEY.", shown_default="the lab's",
        area="offsite", read_by="actions/offsite.py")
    s3_host_endpoint: str | None = _setting(
        "LPSE_OPS_S3_HOST_ENDPOINT", "Offsite S3 endpoint as the sites reach it.",
        shown_default="LPSE_OPS_S3_ENDPOINT", area="offsite", read_by="actions/offsite.py")
    s3_bucket: str | None = _setting(
        "LPSE_OPS_S3_BUCKET", "Offsite Object-Lock bucket holding the sites' repositories.",
        shown_default="the lab's", area="offsite", read_by="actions/offsite.py")
    s3_views_bucket: str = _setting(
        "LPSE_OPS_S3_VIEWS_BUCKET", "Bucket for the as-of views copied for an offsite restore.",
        default="lpse-restore-views", shown_default="lpse-restore-views", area="offsite",
        read_by="actions/offsite.py")
    s3_ca: Path | None = _setting(
        "LPSE_OPS_S3_CA", "CA certificate of the offsite S3 server.", kind="path",
        shown_default="the system's CAs", area="offsite", read_by="actions/offsite.py")
    s3_access_key: str | None = _setting(
        "LPSE_OPS_S3_ACCESS_KEY", "Offsite admin identity's access key (as-of restores).",
        shown_default="the lab's", area="offsite", read_by="actions/offsite.py")
    s3_secret_key: str | None = _setting(
        "LPSE_OPS_S3_SECRET_KEY", "Offsite admin identity's secret key.",
        shown_default="the lab's", secret=True, area="offsite", read_by="actions/offsite.py")
    witness_endpoint: str | None = _setting(
        "LPSE_OPS_WITNESS_ENDPOINT", "S3 endpoint of the audit-log witness (an Object-Lock bucket that receives "
        "the head hash after every audit write); setting it requires LPSE_OPS_WITNESS_BUCKET, "
        "LPSE_OPS_WITNESS_ACCESS_KEY and LPSE_OPS_WITNESS_SECRET_KEY; 'off' disables the witness.",
        shown_default="the lab's, if a lab is up; else no witness", area="witness", read_by="state/witness.py")
    witness_bucket: str | None = _setting(
        "LPSE_OPS_WITNESS_BUCKET", "Object-Lock (COMPLIANCE) bucket of the audit-log witness.",
        shown_default="the lab's lpse-audit-witness", area="witness", read_by="state/witness.py")
    witness_ca: Path | None = _setting(
        "LPSE_OPS_WITNESS_CA", "CA certificate of the witness S3 server.", kind="path",
        shown_default="the system's CAs", area="witness", read_by="state/witness.py")
    witness_access_key: str | None = _setting(
        "LPSE_OPS_WITNESS_ACCESS_KEY", "Access key of the witness identity (put, get and list in the witness "
        "bucket only).", shown_default="the lab's", area="witness", read_by="state/witness.py")
    witness_secret_key: str | None = _setting(
        "LPSE_OPS_WITNESS_SECRET_KEY", "Secret key of the witness identity.",
        shown_default="the lab's", secret=True, area="witness", read_by="state/witness.py")
    evidence_key: Path | None = _setting(
        "LPSE_OPS_EVIDENCE_KEY", "Evidence signing key (PEM PKCS8 ed25519, from `lpse-ops evidence keygen`).",
        kind="path", shown_default="<home>/evidence-keys/evidence.key", area="evidence",
        read_by="commands/evidence.py")
    evidence_key_passphrase: str | None = _setting(
        "LPSE_OPS_EVIDENCE_KEY_PASSPHRASE", "Passphrase of the evidence signing key (evidence keygen, export).",
        shown_default="none (key not encrypted)", secret=True, area="evidence", read_by="actions/evidence.py")
    smtp_host: str | None = _setting(
        "LPSE_OPS_SMTP_HOST", "SMTP server for the maintenance notices.",
        shown_default="inventory lpse_smtp_host", area="smtp", read_by="backends/smtp.py")
    smtp_port: int | None = _setting(
        "LPSE_OPS_SMTP_PORT", "SMTP port (1-65535).", kind="int", low=1, high=65535,
        shown_default="inventory lpse_smtp_port, else 25", area="smtp", read_by="backends/smtp.py")
    smtp_from: str | None = _setting(
        "LPSE_OPS_SMTP_FROM", "Sender address of the notices.",
        shown_default="inventory lpse_smtp_from", area="smtp", read_by="backends/smtp.py")
    smtp_ca: Path | None = _setting(
        "LPSE_OPS_SMTP_CA", "CA certificate that signed the SMTP server's certificate.", kind="path",
        shown_default="inventory lpse_smtp_ca_cert, else the system's CAs", area="smtp", read_by="backends/smtp.py")
    smtp_starttls: str | None = _setting(
        "LPSE_OPS_SMTP_STARTTLS", "STARTTLS: auto (when offered), require, or off.", kind="choice",
        choices=STARTTLS_MODES, shown_default="inventory lpse_smtp_starttls, else auto", area="smtp",
        read_by="backends/smtp.py")
    smtp_user: str | None = _setting(
        "LPSE_OPS_SMTP_USER", "SMTP login name (set with LPSE_OPS_SMTP_PASSWORD, or neither).",
        shown_default="no login", area="smtp", read_by="backends/smtp.py")
    smtp_password: str | None = _setting(
        "LPSE_OPS_SMTP_PASSWORD", "SMTP login password (environment only, never the inventory).",
        shown_default="no login", secret=True, area="smtp", read_by="backends/smtp.py")
    lab_name: str = _setting(
        "LPSE_OPS_LAB_NAME", "Name of the lab: its containers are <name>-<host>.", default="lpse-lab",
        shown_default="lpse-lab", area="lab", read_by="lab/lab.py")
    lab_sites: int = _setting(
        "LPSE_OPS_LAB_SITES", "Number of sites scripts/demo.sh brings up.", kind="int", default=3, low=1,
        high=99, shown_default="3", area="lab", read_by="scripts/demo.sh")
    debian_mirror: str | None = _setting(
        "LPSE_OPS_DEBIAN_MIRROR", "Debian bookworm mirror URL for the lab's base image.",
        shown_default="the first bookworm mirror in /etc/apt", area="lab", read_by="lab/image.py")
    reference_cache: str | None = _setting(
        "LPSE_OPS_REFERENCE_CACHE", "Folder of compiled reference SPSE jars (reused when the sources are the same), "
        "or `off` to compile every build.", shown_default="$XDG_CACHE_HOME/lpse-ops/reference-jars", area="lab",
        read_by="reference.py")
    reuse_lab: bool = _setting(
        "LPSE_OPS_REUSE_LAB", "Development only: keep one test lab and its home across pytest runs.",
        kind="bool", default=False, shown_default="no", area="tests", read_by="tests/lab/conftest.py")
    keep_lab: bool = _setting(
        "LPSE_OPS_KEEP_LAB", "Development only: leave the test lab up after the lab tests.",
        kind="bool", default=False, shown_default="no", area="tests", read_by="tests/lab/conftest.py")
    test_lab_name: str = _setting(
        "LPSE_OPS_TEST_LAB_NAME", "Development only: name of the lab the lab tests bring up.", default="lpse-test",
        shown_default="lpse-test", area="tests", read_by="tests/lab/labkit.py")
    test_port_base: int = _setting(
        "LPSE_OPS_TEST_PORT_BASE", "Development only: port base of the lab tests' lab.", kind="int", default=2420,
        low=1024, high=60000, shown_default="2420", area="tests", read_by="tests/lab/labkit.py")
    test_sites: int = _setting(
        "LPSE_OPS_TEST_SITES", "Development only: number of sites of the lab tests' lab.", kind="int", default=3,
        low=1, high=99, shown_default="3", area="tests", read_by="tests/lab/labkit.py")
    test_home: Path | None = _setting(
        "LPSE_OPS_TEST_HOME", "Development only: the lpse-ops home kept across runs with LPSE_OPS_REUSE_LAB.",
        kind="path", shown_default="/tmp/lpse-ops-test-home",  # noqa: S108 (only shown in the docs)
        area="tests", read_by="tests/lab/labkit.py")
    test_lynis: bool = _setting(
        "LPSE_OPS_TEST_LYNIS", "Development only: the hardening lab test also runs Lynis before and after "
        "(minutes; bench/hardening.py sets it).", kind="bool", default=False, shown_default="no", area="tests",
        read_by="tests/lab/test_hardening.py")
    test_pg_bindir: Path | None = _setting(
        "LPSE_OPS_TEST_PG_BINDIR", "PostgreSQL bin folder for the integration tests' throwaway server.",
        kind="path", shown_default="the newest /usr/lib/postgresql/*/bin", area="tests",
        read_by="tests/integration/conftest.py")

    def public(self) -> dict[str, Any]:
        """Return the settings that are set, by variable name, with secrets hidden (for reports and logs)."""
        shown: dict[str, Any] = {}
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if value is not None and value != spec.default:
                shown[spec.metadata["env"]] = "<hidden>" if spec.metadata["secret"] else str(value)
        return shown


class SettingsError(ValueError):
    """One or more ``LPSE_OPS_*`` variables have a bad value.

    ``problems`` maps each bad variable to what is wrong; ``partial`` holds the settings with every bad
    variable left at its default, for callers that report settings problems together with their own.
    """

    def __init__(self, problems: dict[str, str], partial: Settings) -> None:
        self.problems = problems
        self.partial = partial
        super().__init__("; ".join(f"{name}: {problem}" for name, problem in problems.items()))


def fields() -> tuple[dataclasses.Field, ...]:
    """Return the schema: one dataclass field per variable, its metadata holding env, doc, kind, ..."""
    return dataclasses.fields(Settings)


def names() -> tuple[str, ...]:
    """Return every variable name of the schema, in schema order."""
    return tuple(spec.metadata["env"] for spec in fields())


def _parse(spec: dataclasses.Field, text: str) -> Any:
    """Return *text* converted to *spec*'s type; raise ValueError saying what is expected."""
    meta = spec.metadata
    kind = meta["kind"]
    if kind == "path":
        return Path(text).expanduser()
    if kind == "bool":
        word = text.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ValueError(f"{text!r} is not a yes/no value: use one of {', '.join(TRUE_WORDS + FALSE_WORDS)}")
    if kind == "int":
        try:
            number = int(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
        low, high = meta["low"], meta["high"]
        if (low is not None and number < low) or (high is not None and number > high):
            raise ValueError(f"{number} is out of range: must be {low}-{high}")
        return number
    if kind == "choice":
        word = text.strip().lower()
        if word not in meta["choices"]:
            raise ValueError(f"{text!r} is not one of {', '.join(meta['choices'])}")
        return word
    return text


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Return the settings read from *environ* (default ``os.environ``).

    Raises SettingsError naming every variable whose value is bad (not a number, not a yes/no word,
    not one of the choices, out of range). Variables absent or empty keep their defaults.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for spec in fields():
        name = spec.metadata["env"]
        text = environ.get(name)
        if text is None or text == "":
            continue
        try:
            values[spec.name] = _parse(spec, text)
        except ValueError as error:
            problems[name] = str(error)
    settings = Settings(**values)
    if problems:
        raise SettingsError(problems, settings)
    return settings


_cache: dict[tuple[tuple[str, str], ...], Settings] = {}


def current() -> Settings:
    """Return the settings of this process's environment (read again only when a variable changes)."""
    key = tuple(sorted((name, value) for name, value in os.environ.items() if name.startswith(PREFIX)))
    found = _cache.get(key)
    if found is None:
        found = load(os.environ)
        _cache.clear()
        _cache[key] = found
    return found


def unknown(environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """Return the ``LPSE_OPS_*`` variables of *environ* that no setting has, each with the closest known name."""
    environ = os.environ if environ is None else environ
    known = names()
    return {name: next(iter(difflib.get_close_matches(name, known, n=1)), None)
            for name in sorted(environ) if name.startswith(PREFIX) and name not in known}


def _cell(text: str) -> str:
    """Return *text* safe in a Markdown table cell (no HTML tags, emphasis or column breaks)."""
    for plain, escaped in (("|", "\\|"), ("<", "&lt;"), (">", "&gt;"), ("*", "\\*")):
        text = text.replace(plain, escaped)
    return text


def markdown_table() -> str:
    """Return the Markdown table of every setting (what ``docs/settings.md`` holds between its markers)."""
    lines = ["| variable | type | default | read by | meaning |", "|---|---|---|---|---|"]
    for spec in fields():
        meta = spec.metadata
        kind = "/".join(meta["choices"]) if meta["kind"] == "choice" else meta["kind"]
        if meta["kind"] == "int" and meta["low"] is not None:
            kind = f"int {meta['low']}-{meta['high']}"
        if meta["secret"]:
            kind += ", secret"
        lines.append(f"| `{meta['env']}` | {_cell(kind)} | {_cell(meta['shown_default'])} | {_cell(meta['read_by'])} "
                     f"| {_cell(meta['doc'])} |")
    return "\n".join(lines) + "\n"


DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "settings.md"
DOC_BEGIN = "<!-- settings table: generated by `python -m lpse_ops.settings`, do not edit by hand -->"
DOC_END = "<!-- end of settings table -->"


def document(text: str) -> str:
    """Return *text* (``docs/settings.md``) with the part between its markers replaced by :func:`markdown_table`."""
    head, found, rest = text.partition(DOC_BEGIN)
    _, found_end, tail = rest.partition(DOC_END)
    if not (found and found_end):
        raise ValueError(f"the settings document has no {DOC_BEGIN!r} ... {DOC_END!r} markers")
    return f"{head}{DOC_BEGIN}\n{markdown_table()}{DOC_END}{tail}"


if __name__ == "__main__":
    DOC_PATH.write_text(document(DOC_PATH.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {DOC_PATH}")
