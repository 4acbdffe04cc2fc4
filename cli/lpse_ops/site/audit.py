"""``lpse-backup audit``: the compliance facts of one site, in one pass (clauses 6.2.7, 6.2.19, 6.1.4.3).

Facts only, each part with what it read: effective sshd settings and config checksums, SUID files, the
SPSE release against its bundle manifest, AIDE's check (the files it names), the firewall, unattended
upgrades, ClamAV's last scan, auditd, kernel settings, the login policy, services, and (``--lynis``)
Lynis's hardening index. The baseline the hardening role wrote (``/etc/lpse-hardening/baseline.json``)
is returned as read. The control machine decides which controls pass (``lpse_ops.actions.compliance``).
Needs no backup settings: it runs on a site that is neither backed up nor hardened.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import time

from lpse_ops.site import release
from lpse_ops.site.clock import iso, now_utc

BASELINE = "/etc/lpse-hardening/baseline.json"
AIDE_CONF = "/etc/aide/aide.conf"
AIDE_DB = "/var/lib/aide/aide.db"
SPSE_BASE = "/opt/spse"
SSHD_KEYS = ("permitrootlogin", "passwordauthentication", "kbdinteractiveauthentication", "permitemptypasswords",
             "pubkeyauthentication", "x11forwarding", "maxauthtries", "allowtcpforwarding", "allowagentforwarding",
             "kexalgorithms", "ciphers", "macs", "loglevel", "clientaliveinterval", "hostbasedauthentication")
LOGIN_KEYS = ("PASS_MAX_DAYS", "PASS_MIN_DAYS", "PASS_WARN_AGE", "UMASK", "ENCRYPT_METHOD")
DEFAULT_SERVICES = ("avahi-daemon.service", "cups.service", "rpcbind.service", "exim4.service",
                    "bluetooth.service")
LYNIS_REPORT = "/var/lib/lpse-hardening/lynis-report.dat"


def _run(argv: list[str], timeout: float = 120) -> tuple[int | None, str, str]:
    """Run *argv*; return (exit code or None when missing or timed out, stdout, stderr)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd="/")
    except FileNotFoundError:
        return None, "", f"{argv[0]} is not installed"
    except subprocess.TimeoutExpired:
        return None, "", f"{argv[0]} did not finish within {timeout} s"
    return done.returncode, done.stdout, done.stderr


def sha256_of(path: str) -> str | None:
    """Return the file's sha256 (hex), or None when it does not exist."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def load_baseline(path: str = BASELINE) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (FileNotFoundError, ValueError):
        return None


def parse_sshd_t(text: str) -> dict[str, str]:
    """Return the ``sshd -T`` output as {keyword: value} (first value of each keyword, lower-case keys)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key and key.lower() not in values:
            values[key.lower()] = value.strip()
    return values


def ssh_facts(baseline: dict | None) -> dict:
    code, out, err = _run(["/usr/sbin/sshd", "-T"])
    effective = parse_sshd_t(out) if code == 0 else {}
    dropin = (baseline or {}).get("sshd_dropin")
    folder = "/etc/ssh/sshd_config.d"
    return {"ok": code == 0, "error": None if code == 0 else err.strip()[-300:],
            "effective": {key: effective.get(key) for key in SSHD_KEYS},
            "sshd_config_sha256": sha256_of("/etc/ssh/sshd_config"),
            "dropin": dropin, "dropin_sha256": sha256_of(dropin) if dropin else None,
            "dropins": sorted(os.listdir(folder)) if os.path.isdir(folder) else []}


def suid_facts() -> dict:
    code, out, err = _run(["find", "/", "-xdev", "-type", "f", "-perm", "/6000", "-not", "-path", "/proc/*"],
                          timeout=300)
    return {"ok": code in (0, 1), "error": None if code in (0, 1) else err.strip()[-300:],
            "files": sorted(line for line in out.splitlines() if line)}


def release_facts(base: str = SPSE_BASE, release_dir: str | None = None) -> dict:
    """Compare a release folder (the current one by default) with the signed manifest its unpack kept:
    modified, missing, extra.

    The same comparison (``site.release.compare_tree``) as when the release was unpacked: every file and
    folder, its mode and owner, nothing followed.
    """
    if release_dir is None:
        current = os.path.join(base, "current")
        if not os.path.exists(current):
            return {"ok": False, "error": f"no SPSE release at {current}", "version": None}
        release_dir = os.path.realpath(current)
    version = os.path.basename(release_dir)
    try:
        signed = release.kept_listing(base, version)
    except (OSError, ValueError, release.BundleRefused) as error:
        return {"ok": False, "error": f"cannot read the signed manifest of SPSE {version} "
                                      f"({release.manifest_paths(base, version)[0]}: {error}); install or upgrade "
                                      "it again with lpse-ops, which keeps it", "version": version,
                "release_dir": release_dir}
    found = release.compare_tree(release_dir, signed)
    by_kind = {kind: sorted({d.path for d in found if d.kind == kind}) for kind in ("modified", "missing", "extra")}
    return {"ok": True, "error": None, "version": version, "release_dir": release_dir, "files": len(signed.files),
            **by_kind}


def release_dir_facts(base: str, release_dir: str) -> dict:
    """Return ``release_facts`` for one release folder (not only ``current``), with the same keys."""
    return release_facts(base, release_dir)


def releases_facts(base: str = SPSE_BASE) -> dict:
    """Judge every entry of ``<base>/releases`` against its kept signed manifest (clause 6.2.19).

    Returns {ok, error, folder, releases: [release_dir_facts per folder, by name], unexpected: [entries that
    are not folders, or are links]}. A folder with no signed manifest (an unknown release) has ``ok: false``.
    """
    folder = os.path.join(base, "releases")
    try:
        names = sorted(os.listdir(folder))
    except OSError as error:
        return {"ok": False, "error": f"cannot list {folder}: {error}", "folder": folder, "releases": [],
                "unexpected": []}
    releases, unexpected = [], []
    for name in names:
        path = os.path.join(folder, name)
        if os.path.islink(path) or not os.path.isdir(path):
            unexpected.append(name)
        else:
            releases.append(release_dir_facts(base, path))
    return {"ok": True, "error": None, "folder": folder, "releases": releases, "unexpected": unexpected}


_AIDE_SECTION = re.compile(r"^(Added|Removed|Changed) entries:$")
_AIDE_ENTRY = re.compile(r"^[a-zA-Z!?][^:]*: (/.*)$")


def parse_aide_report(text: str) -> dict:
    """Return AIDE's report (JSON, or the plain text of older settings) as {added, removed, changed: [paths]}.

    Raises ValueError when the text is neither: an unreadable report must never read as "no change".
    """
    start = text.find("{")
    if start >= 0:
        report = json.loads(text[start:])
        return {kind: sorted(report.get(kind) or {}) for kind in ("added", "removed", "changed")}
    found: dict[str, list[str]] = {"added": [], "removed": [], "changed": []}
    section = None
    for line in text.splitlines():
        heading = _AIDE_SECTION.match(line.strip())
        if heading:
            section = heading.group(1).lower()
            continue
        if line.startswith(("---", "The attributes", "Detailed information")):
            section = None if not line.startswith("---") else section
            continue
        entry = _AIDE_ENTRY.match(line.strip())
        if section and entry:
            found[section].append(entry.group(1))
    if "AIDE found" not in text and "Summary:" not in text:
        raise ValueError("neither JSON nor AIDE's text report")
    return {kind: sorted(paths) for kind, paths in found.items()}


def aide_facts(conf: str = AIDE_CONF, database: str = AIDE_DB) -> dict:
    if not (os.path.exists(conf) and os.path.exists(database)):
        return {"ran": False, "error": "no AIDE configuration or database (the hardening role builds them)"}
    started = time.monotonic()
    code, out, err = _run(["nice", "-n", "10", "aide", "--check", f"--config={conf}"], timeout=900)
    # AIDE's exit code: 0 nothing changed; 1 added, 2 removed, 4 changed (or-ed); 14 and up an error.
    if code is None or code >= 8:
        return {"ran": False, "rc": code, "error": (err or out).strip()[-300:]}
    try:
        found = parse_aide_report(out)
    except ValueError as error:
        return {"ran": False, "rc": code, "error": f"AIDE's report could not be read: {error}"}
    if code and not any(found.values()):
        return {"ran": False, "rc": code, "error": f"AIDE exited {code} (differences) but named no file"}
    return {"ran": True, "rc": code, "error": None, "duration_s": round(time.monotonic() - started, 1), **found}


def firewall_facts(baseline: dict | None) -> dict:
    code, out, err = _run(["nft", "list", "table", "inet", "lpse_filter"])
    conf = (baseline or {}).get("nftables_conf", "/etc/nftables.conf")
    return {"loaded": code == 0, "not_permitted": "Operation not permitted" in err,
            "error": None if code == 0 else err.strip()[-300:], "policy_drop": "policy drop" in out,
            "conf_sha256": sha256_of(conf)}


def updates_facts() -> dict:
    code, out, _err = _run(["apt-config", "dump", "Unattended-Upgrade::Origins-Pattern", "APT::Periodic"])
    patterns = re.findall(r'^Unattended-Upgrade::Origins-Pattern:: "(.*)";$', out, re.MULTILINE)
    periodic = dict(re.findall(r'^APT::Periodic::(\S+) "(.*)";$', out, re.MULTILINE))
    return {"installed": os.path.exists("/usr/bin/unattended-upgrade"), "origins_patterns": patterns,
            "periodic": periodic, "ok": code == 0}


PG_RULES = ("SELECT coalesce(json_agg(r), '[]') FROM (SELECT line_number, type, database, user_name, address, "
            "auth_method, error FROM pg_hba_file_rules) r")


def postgresql_facts() -> dict:
    """The running server's listen_addresses and port, the TCP sockets on that port, and its parsed pg_hba rules
    (``pg_hba_file_rules``): what the audit's postgresql controls judge. ``present`` false without a server."""
    if not os.path.exists("/usr/bin/psql"):
        return {"present": False}
    psql = ["runuser", "-u", "postgres", "--", "psql", "-AtX", "-c"]
    code, out, err = _run([*psql, "SELECT current_setting('listen_addresses') || '|' || current_setting('port')"],
                          timeout=30)
    if code != 0 or "|" not in out:
        return {"present": True, "error": f"psql: {err.strip()[-300:] or out.strip()[-300:]}", "listening": [],
                "hba": None}
    addresses, port = out.strip().rsplit("|", 1)
    _code, sockets, _err = _run(["ss", "-ltnH", f"sport = :{port}"], timeout=30)
    listening = sorted({line.split()[3] for line in sockets.splitlines() if len(line.split()) > 3})
    code, rules, err = _run([*psql, PG_RULES], timeout=30)
    try:
        hba = json.loads(rules) if code == 0 else None
    except ValueError:
        hba = None
    return {"present": True, "listen_addresses": addresses, "port": int(port), "listening": listening, "hba": hba,
            "error": None if hba is not None else f"pg_hba_file_rules: {err.strip()[-300:]}"}


def unit_state(unit: str) -> dict:
    _code, active, _err = _run(["systemctl", "is-active", unit])
    _code, enabled, _err = _run(["systemctl", "is-enabled", unit])
    return {"active": active.strip() or "unknown", "enabled": enabled.strip() or "unknown"}


def clamav_facts(baseline: dict | None) -> dict:
    result_path = (baseline or {}).get("clamscan_result", "/var/lib/lpse-hardening/clamscan.json")
    last = None
    try:
        with open(result_path, encoding="utf-8") as handle:
            last = json.load(handle)
    except (FileNotFoundError, ValueError):
        pass
    return {"installed": os.path.exists("/usr/bin/clamscan"), "timer": unit_state("lpse-clamscan.timer"),
            "last_scan": last}


def auditd_facts(baseline: dict | None) -> dict:
    rules = (baseline or {}).get("audit_rules", "/etc/audit/rules.d/50-lpse.rules")
    code, out, err = _run(["auditctl", "-l"])
    return {"installed": os.path.exists("/sbin/auditctl") or os.path.exists("/usr/sbin/auditctl"),
            "service": unit_state("auditd.service"), "rules_file_sha256": sha256_of(rules),
            "loaded_rules": len([line for line in out.splitlines() if line.startswith("-")]) if code == 0 else None,
            "error": None if code == 0 else err.strip()[-300:]}


def sysctl_facts(baseline: dict | None) -> dict:
    values = {}
    for key in sorted((baseline or {}).get("sysctls") or {}):
        try:
            with open(os.path.join("/proc/sys", key.replace(".", "/")), encoding="utf-8") as handle:
                values[key] = handle.read().strip()
        except OSError:
            values[key] = None
    return {"writable": os.access("/proc/sys/net/ipv4/ip_forward", os.W_OK), "values": values}


def login_facts() -> dict:
    defs: dict[str, str] = {}
    try:
        with open("/etc/login.defs", encoding="utf-8") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) >= 2 and parts[0] in LOGIN_KEYS:
                    defs[parts[0]] = parts[1]
    except FileNotFoundError:
        pass
    minlen = None
    try:
        with open("/etc/security/pwquality.conf", encoding="utf-8") as handle:
            found = re.search(r"^\s*minlen\s*=\s*(\d+)", handle.read(), re.MULTILINE)
            minlen = int(found.group(1)) if found else None
    except FileNotFoundError:
        pass
    try:
        with open("/etc/pam.d/common-password", encoding="utf-8") as handle:
            pam_pwquality = bool(re.search(r"^\s*password\s.*pam_pwquality\.so", handle.read(), re.MULTILINE))
    except FileNotFoundError:
        pam_pwquality = False
    return {"login_defs": defs, "pwquality_minlen": minlen, "pam_pwquality": pam_pwquality}


def services_facts(baseline: dict | None) -> dict:
    names = (baseline or {}).get("disabled_services") or list(DEFAULT_SERVICES)
    _code, out, _err = _run(["systemctl", "is-active", *names])
    states = out.split()
    return {name: (states[index] if index < len(states) else "unknown") for index, name in enumerate(names)}


def parse_lynis_report(text: str) -> dict:
    """Return Lynis's report (key=value lines) as {hardening_index, tests_performed, warnings, suggestions}."""
    index = re.search(r"^hardening_index=(\d+)$", text, re.MULTILINE)
    tests = re.search(r"^lynis_tests_done=(\d+)$", text, re.MULTILINE)
    return {"hardening_index": int(index.group(1)) if index else None,
            "tests_performed": int(tests.group(1)) if tests else None,
            "warnings": re.findall(r"^warning\[\]=([^|]+)", text, re.MULTILINE),
            "suggestions": re.findall(r"^suggestion\[\]=([^|]+)", text, re.MULTILINE)}


def lynis_facts(report: str = LYNIS_REPORT) -> dict:
    started = time.monotonic()
    os.makedirs(os.path.dirname(report), mode=0o750, exist_ok=True)  # an unhardened site lacks the folder
    with contextlib.suppress(FileNotFoundError):
        os.unlink(report)  # never read a previous run's report as this one's
    code, _out, err = _run(["lynis", "audit", "system", "--quick", "--no-colors", "--no-log", "--report-file",
                            report], timeout=1800)
    if code is None:
        return {"ran": False, "error": err}
    try:
        with open(report, encoding="utf-8") as handle:
            parsed = parse_lynis_report(handle.read())
    except FileNotFoundError:
        return {"ran": False, "error": f"lynis wrote no report (rc {code}): {err.strip()[-300:]}"}
    return {"ran": True, "rc": code, "duration_s": round(time.monotonic() - started, 1), **parsed}


def collect(with_lynis: bool = False, with_aide: bool = True) -> dict:
    """Return every compliance fact of this host (see the module docstring)."""
    started = time.monotonic()
    baseline = load_baseline()
    facts = {"action": "audit", "ok": True, "time": iso(now_utc()), "hostname": os.uname().nodename,
             "baseline": baseline, "ssh": ssh_facts(baseline), "suid": suid_facts(), "release": release_facts(),
             "releases": releases_facts(),
             "aide": aide_facts((baseline or {}).get("aide_conf", AIDE_CONF), (baseline or {}).get("aide_db", AIDE_DB))
             if with_aide and baseline else {"ran": False, "error": "no hardening baseline" if with_aide
                                             else "not asked (--no-aide)"},
             "firewall": firewall_facts(baseline), "updates": updates_facts(), "clamav": clamav_facts(baseline),
             "auditd": auditd_facts(baseline), "sysctl": sysctl_facts(baseline), "login": login_facts(),
             "services": services_facts(baseline), "postgresql": postgresql_facts()}
    facts["lynis"] = lynis_facts() if with_lynis else {"ran": False, "error": "not asked"}
    facts["duration_s"] = round(time.monotonic() - started, 1)
    return facts


def main(_settings, args) -> dict:
    """The ``audit`` subcommand (needs no backup settings)."""
    return collect(with_lynis=getattr(args, "lynis", False), with_aide=not getattr(args, "no_aide", False))
