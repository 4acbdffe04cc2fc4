"""The one set of site facts: where SPSE, PostgreSQL and nginx live on a site.

Read from ``roles/site/defaults`` and ``roles/nginx/vars`` (the one place those facts are written, for the
roles too) and overridden by the host's inventory variables (``site_*``); docs/site-facts.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lpse_ops import config

FACT_FILES = (("roles", "site", "defaults", "main.yml"), ("roles", "nginx", "vars", "main.yml"))
"""Where the facts the probe needs are written once: the site facts, and nginx's certificate path."""

_REFERENCE = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class SiteFacts:
    """Where things live on one site (``roles/site`` defaults, overridden by the host's variables)."""

    spse_unit: str
    spse_url: str
    spse_base_dir: str
    spse_conf_dir: str
    spse_data_dir: str
    spse_docs_dir: str
    db_name: str
    pg_unit: str
    pg_port: int
    pg_data_dir: str
    nginx_cert_path: str

    @property
    def health_url(self) -> str:
        return self.spse_url.rstrip("/") + "/health"


_defaults_cache: dict[Path, dict[str, Any]] = {}


def role_defaults(project_dir: Path | None = None) -> dict[str, Any]:
    """Return the variables of ``roles/site/defaults`` and ``roles/nginx/vars`` (read once per process)."""
    root = project_dir or config.PROJECT_DIR
    if root not in _defaults_cache:
        merged: dict[str, Any] = {}
        for parts in FACT_FILES:
            merged.update(yaml.safe_load(root.joinpath(*parts).read_text()) or {})
        _defaults_cache[root] = merged
    return _defaults_cache[root]


def _render(name: str, variables: Mapping[str, Any], depth: int = 0) -> str:
    """Return variable *name* with its plain ``{{ other }}`` references resolved (no filters)."""
    value = str(variables.get(name, ""))
    if depth > 10:
        raise ValueError(f"{name}: references nest too deep")
    return _REFERENCE.sub(lambda m: _render(m.group(1), variables, depth + 1), value)


def site_facts(hostvars: Mapping[str, Any], project_dir: Path | None = None) -> SiteFacts:
    """Return *hostvars*' site facts: the roles' defaults with the host's own ``site_*`` values on top."""
    variables = {**role_defaults(project_dir), **{k: v for k, v in hostvars.items() if k.startswith("site_")}}
    return SiteFacts(
        spse_unit=_render("site_spse_unit", variables), spse_url=_render("site_spse_url", variables),
        spse_base_dir=_render("site_spse_base_dir", variables),
        spse_conf_dir=_render("site_spse_conf_dir", variables),
        spse_data_dir=_render("site_spse_data_dir", variables),
        spse_docs_dir=_render("site_spse_docs_dir", variables), db_name=_render("site_db_name", variables),
        pg_unit=_render("site_pg_unit", variables),
        pg_port=int(_render("site_pg_port", variables)), pg_data_dir=_render("site_pg_data_dir", variables),
        nginx_cert_path=_render("__nginx_cert_path", variables))
