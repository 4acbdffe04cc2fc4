"""Headless Chromium (Debian's ``chromium``): print an HTML file to PDF, and the argv to do it.

Why Chromium and not a PDF library: the reports' charts are inline SVG and the PDF must look like
the HTML the operator opened; Chromium is the engine that renders both, Debian keeps it patched, and
the report tests use the same binary to open the HTML. The browser runs with a new, empty profile,
no network services of its own (no sync, component updates, QUIC or background requests, every host
name unresolvable), in an empty network namespace where the machine allows one, and only ever opens
a local ``file://`` page.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
QUIET_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars", "--no-pings",
               "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--disable-breakpad",
               "--host-resolver-rules=MAP * ~NOTFOUND")
"""Flags for every headless run: no sandbox (the control machine runs as root), nothing reaching out.

Even with the ``--disable-*`` flags Chromium 156 still looks up ``clients2.google.com`` and
``update.googleapis.com`` (seen with strace); the resolver rule answers every name "not found" inside
the browser, so no DNS query leaves it. A local ``file://`` page needs no name."""
TIMEOUT_S = 120


class ChromiumError(Exception):
    """Chromium is missing or could not print: the message says what to do."""


def binary() -> str:
    """Return the path of the Chromium binary; raise ChromiumError naming the package to install."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise ChromiumError("PDF needs Debian's chromium: apt-get install chromium (or bash scripts/setup.sh), "
                        "or ask for --format html only")


def pdf_argv(chromium: str, html: Path, pdf: Path, profile: Path, offline: bool = False) -> list[str]:
    """Return the argv that prints *html* to *pdf* with a fresh *profile* folder (no header or footer).

    *offline*: run the browser in a new, empty network namespace (``unshare --net``), where no packet can
    leave whatever the browser tries."""
    prefix = ["unshare", "--net", "--"] if offline else []
    return [*prefix, chromium, *QUIET_FLAGS, f"--user-data-dir={profile}", "--no-pdf-header-footer",
            "--print-to-pdf-no-header", f"--print-to-pdf={pdf}", html.resolve().as_uri()]


@cache
def can_isolate() -> bool:
    """Return True when ``unshare --net`` works here (root, or a kernel that lets this user make one)."""
    if not shutil.which("unshare"):
        return False
    try:
        return subprocess.run(["unshare", "--net", "--", "true"], capture_output=True, timeout=10,
                              check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def print_to_pdf(html: Path, pdf: Path, timeout_s: float = TIMEOUT_S) -> Path:
    """Print *html* to *pdf* (A4 from the page's CSS) and return *pdf*; raise ChromiumError on failure."""
    chromium = binary()
    pdf = pdf.resolve()
    pdf.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="lpse-ops-chromium-") as profile:
        try:
            done = subprocess.run(pdf_argv(chromium, html, pdf, Path(profile), offline=can_isolate()),
                                  capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as error:
            raise ChromiumError(f"chromium did not print {html} within {timeout_s:.0f}s") from error
    if done.returncode != 0 or not pdf.exists() or pdf.stat().st_size == 0:
        tail = "\n".join((done.stderr or "").strip().splitlines()[-5:])
        raise ChromiumError(f"chromium could not print {html} to PDF (exit {done.returncode}): {tail}")
    return pdf
