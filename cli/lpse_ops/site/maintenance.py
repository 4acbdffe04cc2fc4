"""The maintenance page of an SPSE site: full, read-only or off, switched by flag files nginx checks.

The site configuration nginx serves (roles/nginx/templates/spse.conf.j2) looks on every request for
``FLAG_DIR/full`` and ``FLAG_DIR/read-only``: with ``full`` every request but /health gets the page
(HTTP 503), with ``read-only`` reads reach SPSE and writes get the page. Nothing is rewritten in nginx's
configuration and nginx is not reloaded, so switching is instant and cannot break the site.

The page itself is rendered on the control node from the role's template (maintenance.html.j2, every
input HTML-escaped) and arrives as text; this module only writes it. The paths are the nginx role's
(roles/nginx/vars/main.yml; a unit test holds them equal). Every path here is root's: no lesser account
can put a link in the way.
"""

from __future__ import annotations

import contextlib
import os
import secrets

from lpse_ops.site.errors import Failure

FLAG_DIR = "/etc/nginx/spse-maintenance"
PAGE_ROOT = "/var/www/spse-maintenance"
SITE_ENABLED = "/etc/nginx/sites-enabled/spse.conf"
MODES = ("full", "read-only")


def _write(path: str, text: str) -> bool:
    """Write *text* to *path* (root, 0644) by a rename, unless it holds it already; True when written."""
    data = text.encode("utf-8")
    with contextlib.suppress(OSError), open(path, "rb") as handle:
        if handle.read() == data:
            return False
    temporary = f"{path}.{secrets.token_hex(4)}.tmp"
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)
    return True


def supported(site_conf: str = SITE_ENABLED, flag_dir: str = FLAG_DIR) -> bool:
    """True when the live site configuration checks the maintenance flags."""
    try:
        with open(site_conf, encoding="utf-8", errors="replace") as handle:
            return f"{flag_dir}/full" in handle.read()
    except OSError:
        return False


def set_mode(mode: str, page: str | None = None, *, flag_dir: str = FLAG_DIR, root: str = PAGE_ROOT,
             site_conf: str = SITE_ENABLED) -> dict:
    """Put the site in *mode* (``full``, ``read-only`` or ``off``) with *page* as the page; return what changed.

    The new flag is raised before the others are lowered, so the site is never open in between.
    """
    if mode not in (*MODES, "off"):
        raise Failure("bad_arguments", f"maintenance mode {mode!r} is not full, read-only or off", step="maintenance")
    if not supported(site_conf, flag_dir):
        raise Failure("maintenance_unsupported", f"the live site {site_conf} does not check the maintenance flags: "
                      "run the install with this version of the nginx role first", step="maintenance")
    changed = False
    if mode != "off":
        if not page:
            raise Failure("bad_arguments", f"maintenance mode {mode} needs its page", step="maintenance")
        os.makedirs(root, mode=0o755, exist_ok=True)
        changed |= _write(os.path.join(root, "index.html"), page)
    os.makedirs(flag_dir, mode=0o755, exist_ok=True)
    if mode != "off":
        changed |= _write(os.path.join(flag_dir, mode),
                          f"SPSE maintenance mode {mode}, set by lpse-ops (lpse-backup)\n")
    for other in MODES:
        if other != mode and os.path.lexists(os.path.join(flag_dir, other)):
            os.unlink(os.path.join(flag_dir, other))
            changed = True
    return {"mode": mode, "changed": changed}


def pages_of(given: dict) -> dict[str, str]:
    """The pages from the phase's standard input ``{"pages": {"full": HTML, "read-only": HTML}}``."""
    pages = given.get("pages") if isinstance(given, dict) else None
    if not isinstance(pages, dict) or not all(isinstance(pages.get(mode), str) and pages[mode] for mode in MODES):
        raise Failure("bad_arguments", "standard input must carry {\"pages\": {\"full\": ..., \"read-only\": ...}}",
                      step="maintenance")
    return {mode: pages[mode] for mode in MODES}
