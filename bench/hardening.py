"""Lynis's hardening index and our compliance score before and after `lpse-ops harden` (issue 10), by hand.

Lynis takes minutes per run on a lab host (1.5 to 5 on the shared 2-core machine), too long for CI, so
the comparison lives here: this runs the lab test ``tests/lab/test_hardening.py`` with
``LPSE_OPS_TEST_LYNIS=1`` (its audits before and after hardening then run Lynis too, and it asserts the
index reaches 80), on a lab of its own with two fresh sites (the wire audit and the host-key tests use site2),
then reads the audits from that lab's state
store and writes ``bench/results/hardening.json``: score and Lynis index before and after, the failed
and unsupported controls, the wall time.

    .venv/bin/python bench/hardening.py [--lab lpse-bench-harden] [--port-base 2760] [--home DIR]

The lab is the test's (``LPSE_OPS_TEST_LAB_NAME`` etc.); it is left up (``LPSE_OPS_REUSE_LAB=1``); take
it down with ``LPSE_OPS_HOME=DIR LPSE_OPS_LAB_NAME=NAME lpse-ops lab down``. Use a fresh home: the first
audit must be of an unhardened site.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "hardening.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--lab", default="lpse-bench-harden")
    parser.add_argument("--port-base", type=int, default=2760)
    parser.add_argument("--home", type=Path, default=Path("/tmp/lpse-bench-harden-home"))
    args = parser.parse_args(argv)
    env = {**os.environ, "LPSE_OPS_TEST_LYNIS": "1", "LPSE_OPS_TEST_LAB_NAME": args.lab,
           "LPSE_OPS_TEST_PORT_BASE": str(args.port_base), "LPSE_OPS_TEST_HOME": str(args.home),
           "LPSE_OPS_TEST_SITES": "2", "LPSE_OPS_REUSE_LAB": "1"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/lab/test_hardening.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    from lpse_ops.state import StateStore
    from lpse_ops.state.audits import list_audits

    with StateStore.open(f"sqlite:///{args.home / 'state.db'}") as store:
        audits = [row for row in list_audits(store, site="site1", with_results=True)]
    with_lynis = [row for row in audits if row["lynis_index"] is not None]

    def summary(row: dict) -> dict:
        controls = (row.get("results") or {}).get("controls") or []
        return {"audited_at": row["audited_at"], "score": row["score"], "lynis_index": row["lynis_index"],
                "failed": row["failed"], "unsupported": [c["id"] for c in controls if c["status"] == "unsupported"]}

    result = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "lab": args.lab,
              "test_passed": done.returncode == 0, "test_wall_s": round(wall, 1),
              "test_tail": done.stdout[-1500:],
              "before": summary(with_lynis[0]) if with_lynis else None,
              "after": summary(with_lynis[-1]) if len(with_lynis) > 1 else None,
              "targets": {"lynis_index_after": 81, "score_after": 95}}  # issue 19 (issue 10: 80 and 90)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if done.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
