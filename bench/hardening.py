"""Lynis's hardening index and our compliance score before and after `lpse-ops harden` (issue 10), by hand.

Lynis takes minutes per run on a lab host (over five on the shared 2-core machine), too long for CI, so
the comparison lives here. Runs against a lab that is already up (set LPSE_OPS_HOME and LPSE_OPS_LAB_NAME
to it; never `lpse-test`), on ONE site with SPSE installed and backups set up:

    .venv/bin/python bench/hardening.py --site site1 --phase before   # before `lpse-ops harden`
    .venv/bin/lpse-ops harden --limit site1 --yes                      # (or the lab test, which hardens it)
    .venv/bin/python bench/hardening.py --site site1 --phase after

Each phase runs `lpse-ops audit --limit SITE --lynis --json` (Debian's lynis, `lynis audit system
--quick`) and keeps the score, Lynis's index, the failed controls, Lynis's warnings and the wall times.
Writes (merging the phases) `bench/results/hardening.json`. Targets: Lynis >= 80 and score >= 90 after.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

RESULT = Path(__file__).resolve().parent / "results" / "hardening.json"
CLI = str(Path(sys.executable).with_name("lpse-ops"))


def measure(site: str) -> dict:
    started = time.monotonic()
    done = subprocess.run([CLI, "audit", "--limit", site, "--lynis", "--json"], capture_output=True, text=True,
                          check=False, timeout=3600)
    wall = time.monotonic() - started
    if done.returncode != 0:
        return {"error": (done.stderr + done.stdout)[-2000:], "wall_s": round(wall, 1)}
    (audit,) = json.loads(done.stdout)["sites"]
    return {"at": datetime.now(UTC).isoformat(timespec="seconds"), "wall_s": round(wall, 1),
            "score": audit["score"], "lynis_index": audit["lynis_index"], "failed": audit["failed"],
            "unsupported": [c["id"] for c in audit["controls"] if c["status"] == "unsupported"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", default="site1")
    parser.add_argument("--phase", choices=["before", "after"], required=True)
    args = parser.parse_args(argv)
    results = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    results[args.phase] = measure(args.site)
    results["targets"] = {"lynis_index_after": 80, "score_after": 90}
    after = results.get("after") or {}
    if "lynis_index" in after:
        results["met"] = {"lynis": (after["lynis_index"] or 0) >= 80, "score": (after["score"] or 0) >= 90}
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results[args.phase], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
