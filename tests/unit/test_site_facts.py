"""Static checks of the one set of site facts (roles/site, docs/site-facts.md).

PostgreSQL's version, port and paths, the SPSE database, SPSE's port, unit and folders are written
once, in ``roles/site/defaults/main.yml``; every other role depends on the site role and derives its
own defaults from those facts, and the playbooks read them too. These tests scan every file under
``roles/`` and ``playbooks/`` (comments left out) and fail when a copy of a fact's value comes back.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SITE_ROLE = ROOT / "roles" / "site"

# What a copy of a fact looks like. Each pattern matches a literal value, not a derivation: Debian's
# layout written with the role's own variables ("/etc/postgresql/{{ postgresql_version }}/...") is fine.
FACT_PATTERNS: dict[str, re.Pattern[str]] = {
    "PostgreSQL port": re.compile(r"(?<![\w.])5432(?!\d)"),
    "SPSE port": re.compile(r"(?<![\w.])8080(?!\d)"),
    "a port in a loopback URL": re.compile(r"127\.0\.0\.1:\d"),
    "PostgreSQL version": re.compile(r"""(?i)postgres(?:ql)?(?:-client)?[-@/ ]\d|/postgresql/\d|["']15["']"""),
    "PostgreSQL data path": re.compile(r"/var/lib/postgresql"),
    "PostgreSQL configuration path": re.compile(r"/etc/postgresql/(?!\{\{)"),
    "PostgreSQL unit": re.compile(r"postgresql@(?!\{\{)"),
    "SPSE database name": re.compile(r"""(?i)(?:db_?name|database)\S*\s*[:=]\s*["']?spse\b|default\(\s*["']spse["']"""),
    "SPSE unit": re.compile(r"\bspse\.service\b(?!\.j2)"),
    "SPSE base folder": re.compile(r"/opt/spse\b"),
    "SPSE configuration folder": re.compile(r"/etc/spse\b"),
    "SPSE data folder": re.compile(r"/var/lib/spse\b"),
    "documents folder derived outside the site role": re.compile(r"_dir\s*\}\}/documents"),
}

# The one place, and its typed documentation (kept equal to it by test_site_argument_spec_*).
ONE_PLACE = {"roles/site/defaults/main.yml", "roles/site/meta/argument_specs.yml"}

# Copies that remain, each with why; a file may hold at most this many matches of the fact.
KNOWN_COPIES: dict[tuple[str, str], tuple[int, str]] = {}


def strip_comment(line: str) -> str:
    """Return a line without its comment: a whole-line ``#`` or ``{#`` comment, or a trailing `` # ...``."""
    stripped = line.lstrip()
    if stripped.startswith(("#", "{#")):
        return ""
    return re.sub(r"\s+#\s.*$", "", line)


def copies_in(text: str) -> list[tuple[int, str, str]]:
    """Return (line number, fact, line) for every copy of a fact in the text, comments left out."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        code = strip_comment(line)
        for fact, pattern in FACT_PATTERNS.items():
            if pattern.search(code):
                found.append((number, fact, line.strip()))
    return found


def scanned_files() -> list[Path]:
    files = []
    for folder in ("roles", "playbooks"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                files.append(path)
    return files


def test_site_facts_no_role_or_playbook_hard_codes_a_fact() -> None:
    problems = []
    for path in scanned_files():
        relative = path.relative_to(ROOT).as_posix()
        if relative in ONE_PLACE:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        per_fact: dict[str, list[str]] = {}
        for number, fact, line in copies_in(text):
            per_fact.setdefault(fact, []).append(f"{relative}:{number}: {fact}: {line}")
        for fact, hits in per_fact.items():
            allowed, _why = KNOWN_COPIES.get((relative, fact), (0, ""))
            if len(hits) > allowed:
                problems.extend(hits)
    assert not problems, (
        "a site fact is hard-coded outside roles/site/defaults/main.yml; derive it from the site facts "
        "(docs/site-facts.md):\n" + "\n".join(problems))


@pytest.mark.parametrize("line", [
    "nginx_upstream: http://127.0.0.1:8080",
    "__backup_pg_port: 5432",
    'postgresql_version: "15"',
    "__backup_pg_data: /var/lib/postgresql/{{ __backup_pg_version }}/main",
    "__backup_pg_conf_dir: /etc/postgresql/15/main",
    "__backup_pg_unit: postgresql@15-main.service",
    "    - postgresql-15",
    "postgresql_spse_database: spse",
    "__upgrade_db: \"{{ spse_db_name | default('spse') }}\"",
    "      --dbname=spse",
    "    name: spse.service",
    "__upgrade_base: \"{{ spse_base_dir | default('/opt/spse') }}\"",
    "  - /etc/spse",
    "spse_docs_dir: /var/lib/spse/documents",
    'spse_docs_dir: "{{ spse_data_dir }}/documents"',
    "    url: http://127.0.0.1:8080/health",
    "  - port: 5432",
])
def test_site_facts_scan_copy_reintroduced_is_found(line: str) -> None:
    assert copies_in(line), line


@pytest.mark.parametrize("line", [
    "# SPSE listens on 8080 behind nginx (a comment)",
    "spse_port: \"{{ site_spse_port }}\"  # was 8080",
    "__postgresql_conf_dir: /etc/postgresql/{{ postgresql_version }}/{{ postgresql_cluster }}",
    "__postgresql_unit: postgresql@{{ postgresql_version }}-{{ postgresql_cluster }}.service",
    "__backup_scratch_port: 55432",
    "    url: http://127.0.0.1:{{ __upgrade_port }}/documents/{{ __upgrade_known.document }}",
    "backup_stanza: spse",
    "__backup_health_url: \"{{ site_spse_url }}/health\"",
])
def test_site_facts_scan_derivation_or_comment_is_not_a_copy(line: str) -> None:
    assert not copies_in(line), line


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_plays(path: Path) -> list[dict]:
    return [play for play in yaml.safe_load(path.read_text(encoding="utf-8")) or [] if "hosts" in play]


def test_site_argument_spec_types_every_fact_with_its_default() -> None:
    defaults = load(SITE_ROLE / "defaults" / "main.yml")
    options = load(SITE_ROLE / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert set(options) == set(defaults)
    for name, value in defaults.items():
        assert name.startswith("site_"), name
        assert options[name]["type"] in ("str", "int", "path"), name
        assert options[name]["default"] == value, name
        assert options[name].get("description"), name


def test_site_facts_every_role_depends_on_the_site_role() -> None:
    for meta in sorted((ROOT / "roles").glob("*/meta/main.yml")):
        role = meta.parent.parent.name
        if role == "site":
            assert not load(meta).get("dependencies")
            continue
        dependencies = [d if isinstance(d, str) else d.get("role", d.get("name"))
                        for d in load(meta).get("dependencies") or []]
        assert "site" in dependencies, f"roles/{role} must depend on the site role (meta/main.yml)"


ROLE_DEPENDS_ON_SITE = {meta.parent.parent.name for meta in (ROOT / "roles").glob("*/meta/main.yml")}


def roles_a_play_loads_statically(play: dict) -> set[str]:
    """Return the roles a play makes public at parse time: ``roles:`` and every ``import_role``."""
    names = {r if isinstance(r, str) else r.get("role", r.get("name")) for r in play.get("roles") or []}
    stack = [t for section in ("pre_tasks", "tasks", "post_tasks") for t in play.get(section) or []]
    while stack:
        task = stack.pop()
        for inner in ("block", "rescue", "always"):
            stack.extend(task.get(inner) or [])
        module = task.get("ansible.builtin.import_role") or task.get("import_role")
        if isinstance(module, dict):
            names.add(module.get("name"))
    return names


@pytest.mark.parametrize("playbook", sorted((ROOT / "playbooks").glob("*.yml")), ids=lambda p: p.name)
def test_site_facts_a_playbook_that_reads_them_loads_the_site_role(playbook: Path) -> None:
    text = playbook.read_text(encoding="utf-8")
    if not re.search(r"\bsite_(?:pg|db|spse)_\w+", text):
        return
    for play in load_plays(playbook):
        loaded = roles_a_play_loads_statically(play)
        assert loaded & ROLE_DEPENDS_ON_SITE, (
            f"{playbook.name}: play {play.get('name')!r} reads site facts but loads no role at parse time "
            "(add roles: [site], or import a role that depends on it)")
