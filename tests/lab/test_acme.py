"""Certificates by ACME (issue 19, item 2; clause 6.1.2): one lab site in acme mode gets its certificate from the
offsite host's pebble (Debian's package, a real http-01 validation of the site by its name), serves it, renews
it, and keeps serving the old one when the deploy hook's ``nginx -t`` refuses.

The site is switched through the lab inventory (``site_tls_mode: acme`` in its host_vars) and ``lpse-ops install``,
the path an operator takes; the module switches it back to ``lab`` (self-signed) at the end, through the same
path, so no other module sees an acme site. Site: the lab's last site.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import subprocess
import time

import pytest
import yaml
from cryptography import x509

from tests.lab.labkit import SITES, container_of, on_site, run_cli

SITE = f"site{SITES}"
LIVE = f"/etc/letsencrypt/live/{SITE}"
HOOK = "/etc/letsencrypt/renewal-hooks/deploy/lpse-nginx-reload"
BROKEN = "/etc/nginx/conf.d/lpse-acme-test-broken.conf"
# certbot as certbot.timer runs it (the service's own environment: the CA bundle of the drop-in), forced, at once.
RENEW = (f"env $(systemctl show -p Environment --value certbot.service) certbot renew --force-renewal "
         f"--no-random-sleep-on-renew --cert-name {SITE}")


def https_port(lab: dict) -> int:
    return next(h["https_port"] for h in lab["hosts"] if h["name"] == SITE)


def pebble_root() -> str:
    """Pebble's root (PEM) from its management interface; made when pebble started, not the lab CA."""
    done = subprocess.run(["docker", "exec", container_of("offsite"), "curl", "-sf", "--cacert",
                           "/etc/pebble/lab-ca.crt", "https://localhost:15000/roots/0"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0 and "BEGIN CERTIFICATE" in done.stdout, done.stderr
    return done.stdout


def served(lab: dict, root: str | None = None) -> x509.Certificate:
    """The certificate nginx serves on the site's HTTPS port; with *root*, only after the served chain verified
    against it for the site's name (as a browser trusting that root would)."""
    context = ssl.create_default_context(cadata=root)
    if not root:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", https_port(lab)), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=SITE) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def on_disk_serial() -> int:
    out = on_site(f"openssl x509 -noout -serial -in {LIVE}/cert.pem", site=SITE).strip()
    return int(out.removeprefix("serial="), 16)


def wait_served_serial_changes(lab: dict, old: int, bound_s: float = 30) -> x509.Certificate:
    deadline = time.monotonic() + bound_s
    while (cert := served(lab)).serial_number == old:
        assert time.monotonic() < deadline, f"nginx on {SITE} still serves serial {old:x} after {bound_s} s"
        time.sleep(0.2)
    return cert


def install(release: dict) -> tuple[int, dict | None, str]:
    return run_cli("install", str(release["bundles"]["1.0"]), "--trusted-keys", str(release["trusted"]),
                   "--limit", SITE, "--json")


@pytest.fixture(scope="module")
def acme_site(lab, installed, release):
    """SITE in acme mode through the inventory and ``lpse-ops install``; back in lab mode afterwards, the same way."""
    from lpse_ops.lab import lab as lab_actions

    host_vars = lab_actions.inventory_path().parent / "host_vars" / SITE / "tls_mode.yml"
    host_vars.parent.mkdir(parents=True, exist_ok=True)
    host_vars.write_text(yaml.safe_dump({"site_tls_mode": "acme"}))
    try:
        started = time.monotonic()
        code, report, output = install(release)
        assert code == 0, output
        yield {"report": report, "seconds": time.monotonic() - started}
    finally:
        host_vars.unlink(missing_ok=True)
        code, report, output = install(release)
        assert code == 0, output
        cert = served(lab)
        assert cert.issuer == cert.subject, cert.issuer  # self-signed again: lab mode


def test_acme_site_serves_a_pebble_certificate_of_at_most_90_days(lab, acme_site):
    assert acme_site["report"]["hosts"][SITE]["changed"] > 0, acme_site["report"]["hosts"]
    cert = served(lab, root=pebble_root())  # the served chain verifies against pebble's root for the site's name
    assert "Pebble" in cert.issuer.rfc4514_string(), cert.issuer
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime <= dt.timedelta(days=90), lifetime
    assert cert.serial_number == on_disk_serial()  # certbot's live certificate, not the self-signed fallback
    # the renewal timer is Debian's, enabled; the validation came over port 80 from pebble (its log)
    assert on_site("systemctl is-enabled certbot.timer; systemctl is-active certbot.timer", site=SITE).split() == [
        "enabled", "active"]
    journal = subprocess.run(["docker", "exec", container_of("offsite"), "journalctl", "-u", "pebble", "-o", "cat",
                              "--no-pager"], capture_output=True, text=True, timeout=30, check=True).stdout
    assert f"http://{SITE}:80/.well-known/acme-challenge/" in journal, journal[-2000:]


def test_acme_install_again_changes_nothing(acme_site, release):
    code, report, output = install(release)
    assert code == 0, output
    assert report["hosts"][SITE]["changed"] == 0, report["hosts"][SITE]


def test_probe_reads_the_acme_certificate_nginx_serves(lab, acme_site):
    code, report, output = run_cli("fleet", "status", "--limit", SITE, "--timeout", "60", "--json")
    assert report is not None, output
    (site,) = report["sites"]
    cert = served(lab)
    assert dt.datetime.fromisoformat(site["cert_not_after"]) == cert.not_valid_after_utc, site["cert_not_after"]
    assert not {f["code"] for f in site["faults"]} & {"cert_expired", "cert_expiring", "cert_unreadable"}, site


def test_forced_renewal_is_served_with_a_new_serial(lab, acme_site):
    before = served(lab).serial_number
    out = on_site(f"{RENEW} 2>&1", site=SITE)
    assert "Congratulations, all renewals succeeded" in out, out
    renewed = wait_served_serial_changes(lab, before)
    assert renewed.serial_number == on_disk_serial()
    served(lab, root=pebble_root())  # and its chain verifies against pebble's root
    assert "nginx reloaded" in on_site("journalctl -t lpse-nginx-reload -o cat --no-pager | tail -n 1", site=SITE)


def test_deploy_hook_refusing_leaves_the_old_certificate_served(lab, acme_site):
    before = served(lab).serial_number
    on_site(f"printf 'this_is_not_a_directive;\\n' > {BROKEN}", site=SITE)
    try:
        out = on_site(f"{RENEW} 2>&1; echo exit=$?", site=SITE)
        # the reason, from the hook: nginx -t refused, so no reload; certbot itself renewed
        assert "lpse-nginx-reload: nginx -t refused the configuration, nginx NOT reloaded" in out, out
        assert 'unknown directive "this_is_not_a_directive"' in out, out
        assert on_disk_serial() != before  # the new certificate is on disk ...
        assert served(lab).serial_number == before  # ... and the old one still served
        assert on_site("systemctl is-active nginx", site=SITE).strip() == "active"
    finally:
        on_site(f"rm -f {BROKEN}", site=SITE)
    # the documented recovery: the hook again, once the configuration is fixed
    on_site(f"RENEWED_LINEAGE={LIVE} {HOOK}", site=SITE)
    assert wait_served_serial_changes(lab, before).serial_number == on_disk_serial()
