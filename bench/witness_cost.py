"""What the audit-log witness costs an audit write: per lpse-ops process, and per append in a process.

Needs a lab that is up (its witness bucket and identity): ``--lab-home`` is the LPSE_OPS_HOME of that lab.
Measured side by side, alternating, in one run:

- ``process``: a fresh Python process opening the store and appending one entry, with the witness off
  and on (CPU seconds, user + system, of the child; and wall seconds);
- ``append``: appends in one warm process, witness off and on (wall seconds each);
- ``unreachable``: appends while the witness endpoint refuses connections (the first pays the failed
  connect, the next ones are skipped for the back-off).

Writes ``bench/results/witness_cost.json`` (min / median / max of each).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
from lpse_ops.state import StateStore
store = StateStore.open()
store.audit_append("bench.witness", {"n": 1})
"""


def summary(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 4), "median": round(statistics.median(values), 4), "max": round(max(values), 4),
            "n": len(values)}


def witness_env(lab_home: Path) -> dict[str, str]:
    lab = json.loads((lab_home / "lab" / "s3-credentials.json").read_text())
    creds = lab["credentials"]["witness"]
    return {"LPSE_OPS_WITNESS_ENDPOINT": lab["endpoint_control"], "LPSE_OPS_WITNESS_BUCKET": lab["witness_bucket"],
            "LPSE_OPS_WITNESS_CA": lab["ca_cert"], "LPSE_OPS_WITNESS_ACCESS_KEY": creds["access_key"],
            "LPSE_OPS_WITNESS_SECRET_KEY": creds["secret_key"]}


def child_cost(env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD], env=env, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab-home", type=Path, default=Path(os.environ.get("LPSE_OPS_HOME", "/tmp/h2-home")))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "witness_cost.json")
    options = parser.parse_args()
    on = witness_env(options.lab_home)
    home = Path(tempfile.mkdtemp(prefix="lpse-witness-bench-"))
    base = {key: value for key, value in os.environ.items() if not key.startswith("LPSE_OPS_")}
    base["LPSE_OPS_HOME"] = str(home)
    process: dict[str, dict[str, list[float]]] = {"off": {"cpu_s": [], "wall_s": []}, "on": {"cpu_s": [], "wall_s": []}}
    for _ in range(options.rounds):
        for mode in ("off", "on"):
            env = {**base, **(on if mode == "on" else {"LPSE_OPS_WITNESS_ENDPOINT": "off"})}
            cpu, wall = child_cost(env)
            process[mode]["cpu_s"].append(cpu)
            process[mode]["wall_s"].append(wall)

    os.environ.update({"LPSE_OPS_HOME": str(home)})
    from lpse_ops.state import StateStore, witness

    appends: dict[str, list[float]] = {"off": [], "on": [], "unreachable": []}
    with StateStore.open() as store:
        for mode, extra in (("off", {"LPSE_OPS_WITNESS_ENDPOINT": "off"}), ("on", on),
                            ("unreachable", {**on, "LPSE_OPS_WITNESS_ENDPOINT": "https://127.0.0.1:1"})):
            os.environ.update(extra)
            witness._backoff.clear()
            store.audit_append("bench.warmup", {})
            for number in range(options.rounds * 3):
                start = time.perf_counter()
                store.audit_append("bench.witness", {"n": number})
                appends[mode].append(time.perf_counter() - start)
        witness._backoff.clear()
        os.environ.update(on)
        store.audit_append("bench.catch_up", {})
        check = witness.check(store)
    result = {
        "what": "cost of the audit-log witness (one signed PUT per audit write) on a lab's SeaweedFS",
        "machine": {"cpus": os.cpu_count(), "load_1m_at_end": round(os.getloadavg()[0], 1)},
        "rounds": options.rounds,
        "process_one_append": {mode: {key: summary(values) for key, values in data.items()}
                               for mode, data in process.items()},
        "process_cpu_added_median_s": round(statistics.median(process["on"]["cpu_s"])
                                            - statistics.median(process["off"]["cpu_s"]), 4),
        "append_in_warm_process_s": {mode: summary(values) for mode, values in appends.items()},
        "after_catch_up": {"ok": check.ok, "lag": check.lag, "witnessed_seq": check.witnessed_seq},
    }
    options.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
