"""The compliance audit (issue 10; clauses 6.2.7, 6.2.19, 6.1.3, 6.1.4.3): facts from the sites, controls here.

Each site reports its facts in one pass (``lpse-backup audit`` through ``playbooks/audit.yml``); this
module evaluates the catalogue of controls (``lpse_ops/data/controls.yml``) against those facts with pure
functions (``CHECKS``), scores each site 0-100 by severity weight, and stores every audit with its drift
against the site's previous one (``lpse_ops.state.audits``).

A control is ``pass`` or ``fail``; ``unsupported`` when the host cannot enforce it at all (a container
without the capability to load a firewall, audit rules or kernel settings, as the hardening role found
and recorded in its baseline): such a control is listed but left out of the score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import yaml

from lpse_ops import config
from lpse_ops.actions import compliance_wire, fleet, operation, records
from lpse_ops.backends import wire

KIND = "audit"
"""The kind of result record ``playbooks/audit.yml`` emits per host."""

PASS, FAIL, UNSUPPORTED = "pass", "fail", "unsupported"
WEAK_SSH = ("sha1", "cbc", "md5", "arcfour", "3des", "umac-64", "group1-", "group14-sha1", "group-exchange-sha1")
SCAN_MAX_AGE = timedelta(hours=48)

Outcome = tuple[str, str]
"""(status, evidence): what a check found, in words an operator can act on."""


def load_catalogue(path: Path | None = None) -> dict:
    """Return the controls catalogue: ``{"severity_weights": {...}, "controls": [...]}``.

    Raises ValueError when a control lacks a field or names a check or severity that does not exist.
    """
    text = path.read_text() if path else (resources.files("lpse_ops") / "data" / "controls.yml").read_text()
    catalogue = yaml.safe_load(text)
    weights = catalogue["severity_weights"]
    problems = []
    seen: set[str] = set()
    for control in catalogue["controls"]:
        missing = [key for key in ("id", "clause", "severity", "title", "check", "remediation") if not control.get(key)]
        if missing:
            problems.append(f"{control.get('id', '?')}: lacks {', '.join(missing)}")
        if control.get("check") not in CHECKS:
            problems.append(f"{control.get('id')}: unknown check {control.get('check')!r}")
        if control.get("severity") not in weights:
            problems.append(f"{control.get('id')}: unknown severity {control.get('severity')!r}")
        if control.get("id") in seen:
            problems.append(f"{control.get('id')}: listed twice")
        seen.add(control.get("id"))
    if problems:
        raise ValueError("controls catalogue: " + "; ".join(problems))
    return catalogue


# -- the checks: pure functions of one site's facts ------------------------------------------------


def _baseline(facts: dict) -> dict:
    return facts.get("baseline") or {}


def _support(facts: dict, name: str) -> bool:
    """Whether the hardening role found the host able to enforce *name* (True when unknown: no baseline)."""
    return bool((_baseline(facts).get("support") or {}).get(name, True))


def baseline_present(facts: dict) -> Outcome:
    if not facts.get("baseline"):
        return FAIL, "no /etc/lpse-hardening/baseline.json: the site has not been hardened"
    return PASS, "baseline recorded by the hardening role"


def ssh_keys_only(facts: dict) -> Outcome:
    ssh = facts.get("ssh") or {}
    if not ssh.get("ok"):
        return FAIL, f"sshd -T failed: {ssh.get('error')}"
    effective = ssh.get("effective") or {}
    wrong = [f"{key} {effective.get(key)}" for key in ("passwordauthentication", "kbdinteractiveauthentication",
                                                        "permitemptypasswords") if effective.get(key) != "no"]
    return (FAIL, "sshd allows: " + ", ".join(wrong)) if wrong else (PASS, "password logins are off")


def ssh_root_login(facts: dict) -> Outcome:
    value = ((facts.get("ssh") or {}).get("effective") or {}).get("permitrootlogin")
    if value in ("no", "prohibit-password", "without-password", "forced-commands-only"):
        return PASS, f"PermitRootLogin {value}"
    return FAIL, f"PermitRootLogin {value}: root may log in with a password"


def ssh_crypto(facts: dict) -> Outcome:
    effective = (facts.get("ssh") or {}).get("effective") or {}
    weak = [f"{key}: {algorithm}" for key in ("kexalgorithms", "ciphers", "macs")
            for algorithm in (effective.get(key) or "").split(",") if any(mark in algorithm for mark in WEAK_SSH)]
    if not effective.get("kexalgorithms"):
        return FAIL, "sshd's key exchanges could not be read"
    if "curve25519" not in effective["kexalgorithms"]:
        weak.append("kexalgorithms: no curve25519 (the fleet probe needs it)")
    return (FAIL, "weak or missing: " + "; ".join(weak)) if weak else (PASS, "modern algorithms only")


def ssh_session_limits(facts: dict) -> Outcome:
    effective = (facts.get("ssh") or {}).get("effective") or {}
    wrong = [f"{key} {effective.get(key)}" for key in ("x11forwarding", "allowtcpforwarding", "allowagentforwarding")
             if effective.get(key) != "no"]
    tries = effective.get("maxauthtries")
    if not (tries or "").isdigit() or int(tries) > 4:
        wrong.append(f"maxauthtries {tries}")
    return (FAIL, ", ".join(wrong)) if wrong else (PASS, "no forwarding, at most 4 tries")


def sshd_config_unchanged(facts: dict) -> Outcome:
    baseline, ssh = _baseline(facts), facts.get("ssh") or {}
    if not baseline:
        return FAIL, "no baseline to compare with"
    changed = []
    if ssh.get("sshd_config_sha256") != baseline.get("sshd_config_sha256"):
        changed.append("/etc/ssh/sshd_config")
    if ssh.get("dropin_sha256") != baseline.get("sshd_dropin_sha256"):
        changed.append(str(baseline.get("sshd_dropin")))
    if changed:
        return FAIL, "changed since the hardening role wrote it: " + ", ".join(changed)
    return PASS, "as the role wrote them"


def suid_baseline(facts: dict) -> Outcome:
    baseline, suid = _baseline(facts), facts.get("suid") or {}
    if not baseline:
        return FAIL, "no SUID baseline to compare with"
    if not suid.get("ok"):
        return FAIL, f"could not list SUID files: {suid.get('error')}"
    new = sorted(set(suid.get("files") or []) - set(baseline.get("suid_files") or []))
    return (FAIL, "new SUID/SGID files: " + ", ".join(new)) if new else (PASS, f"{len(suid['files'])} as in baseline")


def _release_problems(release: dict) -> list[str]:
    return ([f"modified: {path}" for path in release.get("modified") or []]
            + [f"missing: {path}" for path in release.get("missing") or []]
            + [f"not in manifest: {path}" for path in release.get("extra") or []])


def release_integrity(facts: dict) -> Outcome:
    """Judge the running release and every other folder under ``releases/`` against its signed manifest.

    A site tool that predates ``releases`` reports the running release only; that alone is then judged.
    """
    release = facts.get("release") or {}
    if not release.get("ok"):
        return FAIL, str(release.get("error"))
    problems = _release_problems(release)
    if problems:
        return FAIL, f"SPSE {release.get('version')}: " + ", ".join(problems)
    releases = facts.get("releases")
    if releases is None:
        return PASS, f"SPSE {release.get('version')}: {release.get('files')} files match the manifest"
    if not releases.get("ok"):
        return FAIL, str(releases.get("error"))
    folder = releases.get("folder") or "releases"
    found = [f"{folder}/{name}: not a release folder" for name in releases.get("unexpected") or []]
    for other in releases.get("releases") or []:
        where = other.get("release_dir") or f"{folder}/{other.get('version')}"
        if not other.get("ok"):
            found.append(f"{where}: {other.get('error')}")
        elif problems := _release_problems(other):
            found.append(f"{where} (SPSE {other.get('version')}): " + ", ".join(problems))
    if found:
        return FAIL, "; ".join(found)
    versions = ", ".join(str(other.get("version")) for other in releases.get("releases") or [])
    return PASS, (f"SPSE {release.get('version')}: {release.get('files')} files match the manifest; "
                  f"every release folder ({versions}) matches its signed manifest")


def aide_clean(facts: dict) -> Outcome:
    aide = facts.get("aide") or {}
    if not aide.get("ran"):
        return FAIL, f"AIDE did not run: {aide.get('error')}"
    found = [f"{kind}: {path}" for kind in ("added", "removed", "changed") for path in aide.get(kind) or []]
    return (FAIL, "AIDE: " + ", ".join(found)) if found else (PASS, "AIDE found no change")


def firewall_active(facts: dict) -> Outcome:
    firewall = facts.get("firewall") or {}
    if firewall.get("loaded") and firewall.get("policy_drop"):
        return PASS, "table inet lpse_filter loaded, policy drop"
    if firewall.get("not_permitted") and not _support(facts, "firewall"):
        return UNSUPPORTED, ("this host cannot load a firewall (no CAP_NET_ADMIN: a container); "
                             + ("/etc/nftables.conf is written and checked" if firewall.get("conf_sha256")
                                else "/etc/nftables.conf is missing"))
    return FAIL, f"the lpse_filter table is not loaded: {firewall.get('error')}"


def updates_security(facts: dict) -> Outcome:
    updates = facts.get("updates") or {}
    if not updates.get("installed"):
        return FAIL, "unattended-upgrades is not installed"
    patterns = updates.get("origins_patterns") or []
    other = [pattern for pattern in patterns if "security" not in pattern.lower()]
    problems = [f"non-security origin: {pattern}" for pattern in other]
    if not patterns:
        problems.append("no origin allowed")
    if (updates.get("periodic") or {}).get("Unattended-Upgrade") != "1":
        problems.append("APT::Periodic::Unattended-Upgrade is not 1")
    return (FAIL, "; ".join(problems)) if problems else (PASS, f"{len(patterns)} security origin(s), daily")


def _scan_time(scan: dict) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(scan.get("finished_at")))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def antivirus_scheduled(facts: dict, now: datetime | None = None) -> Outcome:
    clamav = facts.get("clamav") or {}
    if not clamav.get("installed"):
        return FAIL, "ClamAV (clamscan) is not installed"
    if (clamav.get("timer") or {}).get("enabled") != "enabled":
        return FAIL, "lpse-clamscan.timer is not enabled"
    scan = clamav.get("last_scan")
    if not scan:
        return FAIL, "no scan has run yet"
    finished = _scan_time(scan)
    age = (now or datetime.now(UTC)) - finished if finished else None
    if age is None or age > SCAN_MAX_AGE:
        return FAIL, f"the last scan ({scan.get('finished_at')}) is older than 48 hours"
    if scan.get("rc") not in (0, 1):
        return FAIL, f"the last scan failed (rc {scan.get('rc')}): {scan.get('stderr')}"
    return PASS, f"last scan {scan.get('finished_at')}"


def antivirus_clean(facts: dict) -> Outcome:
    scan = (facts.get("clamav") or {}).get("last_scan")
    if not scan:
        return FAIL, "no scan has run yet"
    infected = scan.get("infected") or []
    return (FAIL, "infected: " + ", ".join(infected)) if infected else (PASS, "no infected file")


def antivirus_signatures(facts: dict) -> Outcome:
    scan = (facts.get("clamav") or {}).get("last_scan") or {}
    if scan.get("official_databases"):
        return PASS, "official databases: " + ", ".join(scan["official_databases"])
    return FAIL, scan.get("note") or "no scan record to tell which databases ClamAV has"


def auditd_rules(facts: dict) -> Outcome:
    auditd = facts.get("auditd") or {}
    if not auditd.get("rules_file_sha256"):
        return FAIL, "the hardening audit rules are not installed"
    if (auditd.get("service") or {}).get("active") == "active" and auditd.get("loaded_rules"):
        return PASS, f"auditd active, {auditd['loaded_rules']} rules loaded"
    if not _support(facts, "auditd"):
        return UNSUPPORTED, "this host cannot run auditd (no CAP_AUDIT_CONTROL: a container); the rules are written"
    return FAIL, f"auditd is not running with the rules: {auditd.get('error')}"


def kernel_settings(facts: dict) -> Outcome:
    wanted = _baseline(facts).get("sysctls") or {}
    if not wanted:
        return FAIL, "no kernel settings baseline"
    values = (facts.get("sysctl") or {}).get("values") or {}
    wrong = sorted(f"{key}={values.get(key)} (want {value})" for key, value in wanted.items()
                   if values.get(key) is not None and str(values.get(key)).split() != str(value).split())
    if wrong and not _support(facts, "sysctl"):
        return UNSUPPORTED, f"this host cannot change kernel settings (read-only /proc/sys); {len(wrong)} differ"
    return (FAIL, ", ".join(wrong)) if wrong else (PASS, f"{len(wanted)} settings as set")


def password_policy(facts: dict) -> Outcome:
    login = facts.get("login") or {}
    policy = _baseline(facts).get("password_policy") or {"PASS_MAX_DAYS": 180, "PASS_MIN_DAYS": 1, "minlen": 12}
    defs = login.get("login_defs") or {}
    wrong = []
    if not str(defs.get("PASS_MAX_DAYS", "")).isdigit() or int(defs["PASS_MAX_DAYS"]) > int(policy["PASS_MAX_DAYS"]):
        wrong.append(f"PASS_MAX_DAYS {defs.get('PASS_MAX_DAYS')}")
    if not str(defs.get("PASS_MIN_DAYS", "")).isdigit() or int(defs["PASS_MIN_DAYS"]) < int(policy["PASS_MIN_DAYS"]):
        wrong.append(f"PASS_MIN_DAYS {defs.get('PASS_MIN_DAYS')}")
    if defs.get("UMASK") not in ("027", "077"):
        wrong.append(f"UMASK {defs.get('UMASK')}")
    if not login.get("pam_pwquality"):
        wrong.append("pam_pwquality not in common-password")
    if (login.get("pwquality_minlen") or 0) < int(policy["minlen"]):
        wrong.append(f"pwquality minlen {login.get('pwquality_minlen')}")
    return (FAIL, ", ".join(wrong)) if wrong else (PASS, "ageing, strength and umask as set")


def services_off(facts: dict) -> Outcome:
    running = sorted(name for name, state in (facts.get("services") or {}).items() if state == "active")
    return (FAIL, "running: " + ", ".join(running)) if running else (PASS, "none running")


CHECKS: dict[str, Callable[[dict], Outcome]] = {
    "baseline_present": baseline_present, "ssh_keys_only": ssh_keys_only, "ssh_root_login": ssh_root_login,
    "ssh_crypto": ssh_crypto, "ssh_session_limits": ssh_session_limits,
    "sshd_config_unchanged": sshd_config_unchanged, "suid_baseline": suid_baseline,
    "release_integrity": release_integrity, "aide_clean": aide_clean, "firewall_active": firewall_active,
    "updates_security": updates_security, "antivirus_scheduled": antivirus_scheduled,
    "antivirus_clean": antivirus_clean, "antivirus_signatures": antivirus_signatures, "auditd_rules": auditd_rules,
    "kernel_settings": kernel_settings, "password_policy": password_policy, "services_off": services_off,
    **compliance_wire.CHECKS}
TIMED_CHECKS = frozenset({"antivirus_scheduled"})
"""Checks that judge an age: :func:`evaluate` gives them its *now*."""


@dataclass
class SiteAudit:
    """One site's evaluated controls, score, failed ids and Lynis's index (None when not run)."""

    site: str
    controls: list[dict]
    score: float | None
    failed: list[str]
    lynis_index: int | None = None
    error: str | None = None
    drift: dict = field(default_factory=lambda: {"worse": [], "better": []})
    audit_id: int | None = None

    def as_dict(self) -> dict:
        return {"site": self.site, "score": self.score, "lynis_index": self.lynis_index, "failed": self.failed,
                "drift": self.drift, "error": self.error, "audit_id": self.audit_id, "controls": self.controls}


def score(controls: list[dict], weights: dict[str, int]) -> float:
    """Return 100 x (weight of passed controls) / (weight of evaluated ones); unsupported ones are left out."""
    counted = [control for control in controls if control["status"] in (PASS, FAIL)]
    total = sum(weights[control["severity"]] for control in counted)
    passed = sum(weights[control["severity"]] for control in counted if control["status"] == PASS)
    return round(100.0 * passed / total, 1) if total else 0.0


def evaluate(site: str, facts: dict, catalogue: dict, now: datetime | None = None) -> SiteAudit:
    """Evaluate every control of *catalogue* on one site's *facts* at *now* (default: the clock); return its SiteAudit.

    Checks that judge an age (``TIMED_CHECKS``) are given *now*; the others read the facts alone.
    """
    now = now or datetime.now(UTC)
    controls = []
    for control in catalogue["controls"]:
        try:
            check = CHECKS[control["check"]]
            status, evidence = check(facts, now=now) if control["check"] in TIMED_CHECKS else check(facts)
        except Exception as error:  # noqa: BLE001 (a fact of an unexpected shape fails that control, says why)
            status, evidence = FAIL, f"could not evaluate: {type(error).__name__}: {error}"
        controls.append({"id": control["id"], "clause": str(control["clause"]), "severity": control["severity"],
                         "title": control["title"], "status": status, "evidence": evidence,
                         "remediation": control["remediation"]})
    lynis = facts.get("lynis") or {}
    return SiteAudit(site=site, controls=controls, score=score(controls, catalogue["severity_weights"]),
                     failed=[control["id"] for control in controls if control["status"] == FAIL],
                     lynis_index=lynis.get("hardening_index") if lynis.get("ran") else None)


# -- the operation ----------------------------------------------------------------------------------


@dataclass
class AuditRequest:
    """What to audit: the inventory and host limit; whether to run Lynis and AIDE on the sites."""

    inventory: Path
    limit: str | None = None
    lynis: bool = False
    aide: bool = True
    wire: bool = True
    wire_concurrency: int = 8
    progress: operation.ProgressFactory | None = None
    state_url: str | None = None


@dataclass
class AuditResult:
    """The run and each site's audit (an unreachable or failed site has ``error`` and no score)."""

    run: operation.OperationResult
    sites: list[SiteAudit]

    @property
    def exit_code(self) -> int:
        return self.run.exit_code

    def fleet(self) -> dict:
        scored = [site.score for site in self.sites if site.score is not None]
        return {"sites": len(self.sites), "audited": len(scored),
                "mean_score": round(sum(scored) / len(scored), 1) if scored else None,
                "min_score": min(scored) if scored else None}

    def as_dict(self) -> dict:
        return {"run_id": self.run.run_id, "exit_code": self.exit_code, "fleet": self.fleet(),
                "sites": [site.as_dict() for site in self.sites]}


def audit(request: AuditRequest) -> AuditResult:
    """Collect the facts of every targeted site, evaluate the controls, store each audit with its drift.

    Raises operation.OperationRefused on a bad inventory or limit (no host touched).
    """
    from lpse_ops.state import StateStore
    from lpse_ops.state.audits import record_audit

    catalogue = load_catalogue()
    read = fleet.read(request.inventory, limit=request.limit, validate_for="audit")
    op = operation.OperationContext(
        operation="compliance.audit", playbook="audit.yml", inventory=request.inventory, limit=request.limit,
        extravars={"audit_lynis": request.lynis, "audit_aide": request.aide}, progress=request.progress,
        state_url=request.state_url, record_args={"lynis": request.lynis, "aide": request.aide},
        validate_for="audit", fleet=read)
    result = operation.run(op)
    # What a client is offered, looked at from here while the facts are fresh (docs/audit.md, wire controls).
    looked = wire.look_all(compliance_wire.targets(read), concurrency=request.wire_concurrency) if request.wire else {}
    found = records.read(result, KIND)
    result.exit_code = found.exit_code(result.exit_code)
    sites: list[SiteAudit] = []
    for host, reason in sorted(found.missing.items()):
        sites.append(SiteAudit(site=host, controls=[], score=None, failed=[], error=reason))
    for host, record in sorted(found.found.items()):
        facts = record.get("output")
        if not isinstance(facts, dict) or not facts.get("ok"):
            error = (facts or {}).get("error") if isinstance(facts, dict) else None
            sites.append(SiteAudit(site=host, controls=[], score=None, failed=[],
                                   error=error or str(record.get("stderr") or "no facts")))
            continue
        if request.wire:
            facts["wire"] = {**looked.get(host, {}), **compliance_wire.expectations(read, host)}
        sites.append(evaluate(host, facts, catalogue))
    store = StateStore.open(request.state_url or config.state_url())
    try:
        for site in sites:
            stored = record_audit(store, site.site, score=site.score, failed=site.failed,
                                  lynis_index=site.lynis_index, run_id=result.run_id,
                                  results={"controls": site.controls, "error": site.error})
            site.drift, site.audit_id = stored["drift"], stored["id"]
        store.audit_append("compliance.audit", {"run_id": result.run_id, "sites": {
            site.site: {"score": site.score, "failed": site.failed, "lynis_index": site.lynis_index}
            for site in sites}})
    finally:
        store.close()
    sites.sort(key=lambda site: (site.score is not None, site.score or 0, site.site))
    return AuditResult(run=result, sites=sites)
