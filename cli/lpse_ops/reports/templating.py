"""The one Jinja2 environment of the Indonesian documents (notices, statements, the DRP, reports).

Templates live in ``reports/templates``; ``*.html.j2`` are autoescaped, text templates are not; an
undefined variable is an error, never an empty string in an official document.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES = Path(__file__).parent / "templates"


def new_environment() -> Environment:
    """Return a fresh environment (for a caller that adds its own filters)."""
    return Environment(loader=FileSystemLoader(TEMPLATES),
                       autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
                       undefined=StrictUndefined, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


@cache
def environment() -> Environment:
    """Return the shared environment, built once per process."""
    return new_environment()
