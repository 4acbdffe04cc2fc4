#!/usr/bin/python3
"""Scan folders with ClamAV and record the outcome: lpse-clamscan RESULT_JSON PATH...

Writes RESULT_JSON (atomically) with the time, clamscan's exit code, every infected file and whether
the official signature databases are present. Without internet freshclam cannot fetch them: the scan
then runs with the local databases the role ships (lpse-local.hdb, the EICAR test signature) and the
record says so. Exits with clamscan's code (0 clean, 1 infected, 2 error).
"""

import datetime
import glob
import json
import os
import subprocess
import sys

DB_DIR = "/var/lib/clamav"


def main(argv):
    result_path, paths = argv[1], [path for path in argv[2:] if os.path.exists(path)]
    official = sorted(os.path.basename(p) for p in glob.glob(os.path.join(DB_DIR, "*.c[vl]d")))
    local = sorted(os.path.basename(p) for p in glob.glob(os.path.join(DB_DIR, "lpse-*")))
    started = datetime.datetime.now(datetime.UTC)
    done = subprocess.run(["clamscan", "--recursive", "--infected", "--no-summary", "--stdout", *paths],
                          capture_output=True, text=True, errors="replace", check=False)  # spse names files
    infected = [line.rsplit(": ", 1)[0] for line in done.stdout.splitlines() if line.endswith(" FOUND")]
    record = {"started_at": started.isoformat(timespec="seconds"),
              "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "paths": paths, "rc": done.returncode, "infected": infected, "official_databases": official,
              "local_databases": local,
              "note": None if official else "no official signatures: freshclam cannot reach the internet; "
                                             "scanned with the local databases only",
              "stderr": done.stderr[-500:]}
    temporary = result_path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    os.replace(temporary, result_path)
    print(json.dumps(record))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
