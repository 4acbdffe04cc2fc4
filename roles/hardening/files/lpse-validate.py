#!/usr/bin/python3
"""Check a configuration file before the hardening role puts it in place: lpse-validate KIND FILE.

Kinds: sysctl (every "key = value" names a kernel setting this host has), audit-rules (every line is an
auditctl rule, watch or control line), login-defs ("NAME VALUE" lines), pwquality ("name = value" with
known names), clamav-hdb (the hash database loads and finds EICAR), unit FILE NAME (systemd-analyze verify
under its real name). Prints each problem and exits 1 when there is one; exits 0 silently otherwise.
"""

import os
import re
import sys

PWQUALITY = {"difok", "minlen", "dcredit", "ucredit", "lcredit", "ocredit", "minclass", "maxrepeat",
             "maxsequence", "maxclassrepeat", "gecoscheck", "dictcheck", "usercheck", "usersubstr",
             "enforcing", "badwords", "dictpath", "retry", "enforce_for_root", "local_users_only"}
AUDIT_START = ("-a ", "-A ", "-w ", "-W ", "-D", "-b ", "-f ", "-e ", "-r ", "--backlog_wait_time ", "-i",
               "--loginuid-immutable", "-c")


def lines(path):
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, 1):
            text = raw.strip()
            if text and not text.startswith("#"):
                yield number, text


def check_sysctl(path):
    problems, missing = [], []
    for number, text in lines(path):
        match = re.fullmatch(r"-?([A-Za-z0-9_.\-/]+)\s*=\s*(\S.*)", text)
        if not match:
            problems.append(f"line {number}: not 'key = value': {text}")
            continue
        key = match.group(1).replace(".", "/")
        if not os.path.exists(os.path.join("/proc/sys", key)):
            missing.append(f"line {number}: this kernel has no setting {match.group(1)}")
    # A container sees only part of /proc/sys, read-only: there a missing key is a warning, not an error.
    if os.access("/proc/sys/net/ipv4/ip_forward", os.W_OK):
        return problems + missing
    for warning in missing:
        print(f"warning (read-only /proc/sys): {warning}", file=sys.stderr)
    return problems


def check_audit_rules(path):
    return [f"line {number}: not an audit rule: {text}" for number, text in lines(path)
            if not text.startswith(AUDIT_START)]


def check_login_defs(path):
    return [f"line {number}: not 'NAME VALUE': {text}" for number, text in lines(path)
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*\s+\S.*", text)]


def check_pwquality(path):
    problems = []
    for number, text in lines(path):
        match = re.fullmatch(r"([a-z_]+)(\s*=\s*\S.*)?", text)
        if not match or match.group(1) not in PWQUALITY:
            problems.append(f"line {number}: not a pwquality setting: {text}")
    return problems


def check_unit(path, name):
    """Verify a systemd unit under its real NAME (systemd-analyze needs the suffix) in a scratch folder."""
    import shutil
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        target = os.path.join(folder, name)
        shutil.copyfile(path, target)
        done = subprocess.run(["systemd-analyze", "verify", "--man=no", target], capture_output=True, text=True,
                              check=False)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()] if done.returncode else []


EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def check_clamav_hash_db(path):
    """Load a ClamAV hash database (.hdb) on its own and check it finds the EICAR test file."""
    import shutil
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        database = os.path.join(folder, "candidate.hdb")
        shutil.copyfile(path, database)
        sample = os.path.join(folder, "eicar.txt")
        with open(sample, "wb") as handle:
            handle.write(EICAR)
        done = subprocess.run(["clamscan", f"--database={database}", "--no-summary", "--stdout", sample],
                              capture_output=True, text=True, check=False)
    if done.returncode != 1 or "FOUND" not in done.stdout:
        return [f"clamscan with this database does not find the EICAR test file (rc {done.returncode}): "
                f"{(done.stdout + done.stderr).strip()[-300:]}"]
    return []


CHECKS = {"sysctl": check_sysctl, "audit-rules": check_audit_rules, "login-defs": check_login_defs,
          "pwquality": check_pwquality, "clamav-hdb": check_clamav_hash_db}


def main(argv):
    if len(argv) == 4 and argv[1] == "unit":
        problems = check_unit(argv[2], argv[3])
    elif len(argv) == 3 and argv[1] in CHECKS:
        problems = CHECKS[argv[1]](argv[2])
    else:
        print(f"usage: lpse-validate {{{','.join(CHECKS)}}} FILE | lpse-validate unit FILE NAME", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
